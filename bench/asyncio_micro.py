#!/usr/bin/env python3
"""asyncio loop microbenchmarks: treadle.EventLoop vs uvloop vs asyncio's own
loop, the same asyncio program on each (issue 15).

    PYTHONPATH=bindings/python /usr/bin/python3 bench/asyncio_micro.py [--reps 5]
        [--loops treadle,uvloop,asyncio] [--benches call_soon,gather,sleeps]

  call_soon  N=1,000,000 loop.call_soon callbacks, each counting down; the
             last sets a future (callbacks per second)
  gather     create_task + asyncio.gather of N=100,000 coroutines that
             return at once (tasks per second)
  sleeps     N=100,000 tasks each `await asyncio.sleep(random 0..100 ms)`,
             gathered (timers per second of the whole run, 100 ms of it
             waiting, and the mean lateness past each deadline)

Each (loop, bench) pair runs in a fresh subprocess; the pairs are interleaved
for --reps rounds and the medians printed, with each loop's ratio to uvloop.
The treadle loop is current_thread unless --flavor says otherwise.

Instruction counts of one run (repeatable where wall time is not):

    PYTHONPATH=bindings/python ../shared/bench/tools/instructions.sh \
        /usr/bin/python3 bench/asyncio_micro.py --one treadle call_soon --n 200000
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def new_loop(name, flavor):
    import asyncio
    if name == "treadle":
        import treadle
        return treadle.new_event_loop(flavor=flavor,
                                      workers=2 if flavor == "multi_thread" else None)
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def call_soon(n):
    import asyncio
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [n]

    def cb():
        left[0] -= 1
        if left[0] == 0:
            done.set_result(None)

    t0 = time.perf_counter()
    soon = loop.call_soon
    for _ in range(n):
        soon(cb)
    await done
    s = time.perf_counter() - t0
    return {"n": n, "secs": s, "per_sec": n / s}


async def gather(n):
    import asyncio

    async def nothing():
        return 1

    t0 = time.perf_counter()
    create = asyncio.get_running_loop().create_task
    total = sum(await asyncio.gather(*[create(nothing()) for _ in range(n)]))
    s = time.perf_counter() - t0
    assert total == n
    return {"n": n, "secs": s, "per_sec": n / s}


async def sleeps(n):
    import asyncio
    loop = asyncio.get_running_loop()
    rnd = random.Random(42)
    late = []

    async def one(d):
        start = loop.time()
        await asyncio.sleep(d)
        late.append(loop.time() - start - d)

    t0 = time.perf_counter()
    await asyncio.gather(*[one(rnd.random() * 0.1) for _ in range(n)])
    s = time.perf_counter() - t0
    return {"n": n, "secs": s, "per_sec": n / s,
            "mean_late_ms": 1000 * statistics.fmean(late)}


BENCHES = {"call_soon": (call_soon, 1_000_000), "gather": (gather, 100_000),
           "sleeps": (sleeps, 100_000)}


def one_run(loop_name, bench, flavor, n=None):
    fn, default_n = BENCHES[bench]
    n = n or default_n
    loop = new_loop(loop_name, flavor)
    try:
        out = loop.run_until_complete(fn(n))
    finally:
        loop.close()
    out.update(loop=loop_name, bench=bench)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--loops", default="treadle,uvloop,asyncio")
    ap.add_argument("--benches", default="call_soon,gather,sleeps")
    ap.add_argument("--flavor", default="current_thread")
    ap.add_argument("--one", nargs=2, metavar=("LOOP", "BENCH"),
                    help="one run in this process (for instructions.sh)")
    ap.add_argument("--n", type=int, help="with --one: the operation count")
    args = ap.parse_args()
    if args.one:
        one_run(args.one[0], args.one[1], args.flavor, args.n)
        return
    loops = args.loops.split(",")
    benches = args.benches.split(",")
    results = {}
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(HERE), "bindings", "python"))
    for rep in range(args.reps):
        for bench in benches:
            for name in loops:  # interleaved: each round runs every loop once
                out = subprocess.run([sys.executable, __file__, "--flavor", args.flavor,
                                      "--one", name, bench],
                                     env=env, capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((bench, name), []).append(r)
    print(f"{'bench':10} {'loop':8} {'median/s':>12} {'vs uvloop':>9} {'late ms':>8}")
    for bench in benches:
        base = statistics.median(r["per_sec"] for r in results.get((bench, "uvloop"), [{"per_sec": float("nan")}]))
        for name in loops:
            rs = results[(bench, name)]
            med = statistics.median(r["per_sec"] for r in rs)
            late = (f"{statistics.median(r['mean_late_ms'] for r in rs):8.2f}"
                    if "mean_late_ms" in rs[0] else "")
            print(f"{bench:10} {name:8} {med:12,.0f} {med / base:9.2f} {late}")


if __name__ == "__main__":
    main()
