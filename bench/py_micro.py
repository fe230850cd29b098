#!/usr/bin/env python3
"""treadle's Python microbenchmarks, the same work as ../shared/bench's
micro_py.py (asyncio / uvloop); each run prints one JSON line with
micro_py.py's fields.

    PYTHONPATH=bindings/python /usr/bin/python3 bench/py_micro.py
        [--flavor current_thread|multi_thread] [--workers 2] BENCH [N]

  spawn_many [N=200000]  spawn N trivial tasks, wait until all have run
  yield_many [Y=1000]    1000 tasks each `await treadle.yield_now()` Y times
  timers     [N=100000]  N tasks each `await treadle.sleep(random 0..100 ms)`

micro_py.py's ping_pong is left out: it needs a bounded queue between two
tasks (asyncio.Queue(maxsize=1)), and treadle's Python API has none.

As in micro_py.py all work starts inside a spawned root task. treadle has no
Future, so where micro_py.py's last task sets a future, here it aborts a
task that sleeps forever and the root awaits that task (a one-shot signal
made of a JoinHandle); timers joins its tasks in order where micro_py.py
uses gather. The "runtime" field is "python-treadle-current" or
"python-treadle-multiN".
"""
import argparse
import json
import math
import sys
import time

import treadle


async def _forever():
    await treadle.sleep(math.inf)


async def _wait(signal):
    try:
        await signal
    except treadle.CancelledError:
        pass


def spawn_many(n):
    async def run():
        done = treadle.spawn(_forever())
        left = [n]

        async def task():
            left[0] -= 1
            if left[0] == 0:
                done.abort()

        spawn = treadle.spawn
        t0 = time.perf_counter()
        for _ in range(n):
            spawn(task())
        await _wait(done)
        s = time.perf_counter() - t0
        return {"bench": "spawn_many", "n": n, "secs": round(s, 6),
                "tasks_per_sec": round(n / s)}
    return run()


def yield_many(tasks, yields):
    async def run():
        done = treadle.spawn(_forever())
        left = [tasks]
        yield_now = treadle.yield_now

        async def task():
            for _ in range(yields):
                await yield_now()
            left[0] -= 1
            if left[0] == 0:
                done.abort()

        t0 = time.perf_counter()
        for _ in range(tasks):
            treadle.spawn(task())
        await _wait(done)
        s = time.perf_counter() - t0
        return {"bench": "yield_many", "tasks": tasks, "yields_per_task": yields,
                "secs": round(s, 6), "yields_per_sec": round(tasks * yields / s)}
    return run()


def pct(sorted_vals, p):
    idx = int(p / 100 * (len(sorted_vals) - 1) + 0.5)
    return sorted_vals[min(idx, len(sorted_vals) - 1)]


def timers(n):
    async def run():
        x = 0x9E3779B97F4A7C15  # same xorshift64 sequence as the other runtimes
        mask = (1 << 64) - 1
        durs = []
        for _ in range(n):
            x ^= (x << 13) & mask
            x ^= x >> 7
            x ^= (x << 17) & mask
            durs.append(x % 100001)  # microseconds
        over = [0.0] * n
        starts = [0.0] * n
        wakes = [0.0] * n
        now = time.perf_counter
        sleep = treadle.sleep

        async def task(i, d_us):
            d = d_us / 1e6
            st = now()
            await sleep(d)
            w = now()
            o = (w - (st + d)) * 1e6
            over[i] = o if o > 0 else 0.0
            starts[i] = st
            wakes[i] = w

        t0 = now()
        ts = [treadle.spawn(task(i, d)) for i, d in enumerate(durs)]
        for t in ts:
            await t
        wall = now() - t0
        early = sum(1 for i in range(n)  # 1 µs of slack for rounding
                    if wakes[i] < starts[i] + (durs[i] - 1) / 1e6)
        over.sort()
        out = {"bench": "timers", "n": n, "wall_ms": round(wall * 1e3, 3),
               "all_started_ms": round((max(starts) - t0) * 1e3, 3),
               "overshoot_p50_us": round(pct(over, 50), 1),
               "overshoot_p99_us": round(pct(over, 99), 1),
               "overshoot_max_us": round(over[-1], 1),
               "last_wake_late_us": round((max(wakes) - t0) * 1e6 - max(durs), 1)}
        if early:
            out["woke_early"] = early  # never expected; micro_py.py has no such field
        return out
    return run()


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--flavor", default="current_thread",
                    choices=("current_thread", "multi_thread"))
    ap.add_argument("--workers", type=int, default=2,
                    help="multi_thread worker count (default 2)")
    ap.add_argument("bench", choices=("spawn_many", "yield_many", "timers"))
    ap.add_argument("n", type=int, nargs="?", default=None)
    args = ap.parse_args()
    if args.bench == "spawn_many":
        coro = spawn_many(args.n or 200000)
    elif args.bench == "yield_many":
        coro = yield_many(1000, args.n or 1000)
    else:
        coro = timers(args.n or 100000)

    async def root():
        # run inside a spawned task, like the other runtimes' root task
        return await treadle.spawn(coro)

    multi = args.flavor == "multi_thread"
    res = treadle.run(root(), flavor=args.flavor,
                      workers=args.workers if multi else None)
    out = {"runtime": "python-treadle-"
           + (f"multi{args.workers}" if multi else "current")}
    out.update(res)
    out["python"] = sys.version.split()[0]
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
