#!/usr/bin/env python3
"""Runs treadle_bench beside ../shared/bench's micro_tokio, interleaved
(A B A B ...), and prints medians and ratios as a Markdown table.

    bench/compare.py [--reps 5] [--benches spawn_many,yield_many,...]
                     [--flavors current,multi] [--workers 2] [--scaling]

--scaling adds treadle's cpu_bound run on 1 and on --workers workers
(Tokio has no such benchmark) and prints the speed-up.

Builds treadle in release mode (cmake --preset release) and micro_tokio from
a copy of ../shared/bench/rust (cargo, offline, Debian's vendored crates)
when they are missing. This host drifts by ~30% over minutes: interleaving
keeps the drift from landing on one side, and medians of 5 or more runs keep
one slow run from deciding.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
TREADLE = os.path.join(ROOT, "build-release", "bench", "treadle_bench")
PEERS = os.environ.get("TREADLE_PEERS_DIR", "/tmp/treadle-peers")
TOKIO = os.path.join(PEERS, "rust", "target", "release", "micro_tokio")

# bench -> (headline field, higher is better, unit label)
HEADLINES = {
    "spawn_many": ("tasks_per_sec", True, "tasks/s"),
    "yield_many": ("yields_per_sec", True, "yields/s"),
    "chained_spawn": ("tasks_per_sec", True, "tasks/s"),
    "ping_pong": ("round_trips_per_sec", True, "round trips/s"),
    "timers": ("overshoot_p99_us", False, "p99 overshoot µs"),
    "idle_timers": ("overshoot_p99_us", False, "p99 lateness µs"),
}


def build():
    if not os.path.exists(TREADLE):
        subprocess.run(["cmake", "--preset", "release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "--preset", "release", "-j",
                        str(os.cpu_count() or 2), "--target", "treadle_bench"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(TOKIO):
        if not os.path.isdir(os.path.join(PEERS, "rust")):
            shutil.copytree(SHARED, PEERS, dirs_exist_ok=True)
        subprocess.run(["cargo", "build", "--release", "--offline", "--bin",
                        "micro_tokio"], cwd=os.path.join(PEERS, "rust"),
                       check=True, stdout=subprocess.DEVNULL)


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def commands(bench, flavor, workers):
    t = [TREADLE, bench, "--flavor", flavor, "--workers", str(workers)]
    tokio_bench = "timers" if bench == "idle_timers" else bench
    k = [TOKIO, flavor, tokio_bench]
    if bench == "idle_timers":
        k.append("1000")
    return t, k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--benches",
                    default="spawn_many,yield_many,chained_spawn,ping_pong,"
                            "timers,idle_timers")
    ap.add_argument("--flavors", default="current")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scaling", action="store_true")
    args = ap.parse_args()
    build()
    rows = []
    for flavor in args.flavors.split(","):
        for bench in args.benches.split(","):
            field, higher, unit = HEADLINES[bench]
            tcmd, kcmd = commands(bench, flavor, args.workers)
            ts, ks = [], []
            for rep in range(args.reps):
                pair = [(tcmd, ts), (kcmd, ks)]
                if rep % 2:
                    pair.reverse()
                for cmd, acc in pair:
                    acc.append(run(cmd)[field])
            tm, km = statistics.median(ts), statistics.median(ks)
            ratio = tm / km if higher else km / tm
            rows.append((flavor, bench, unit, tm, km, ratio, ts, ks))
            print(f"{flavor} {bench}: treadle {tm:,.1f} tokio {km:,.1f} "
                  f"ratio {ratio:.2f}", file=sys.stderr)
    scaling = None
    if args.scaling:
        one = [TREADLE, "cpu_bound", "--flavor", "multi", "--workers", "1"]
        many = [TREADLE, "cpu_bound", "--flavor", "multi", "--workers",
                str(args.workers)]
        s1, sn = [], []
        for rep in range(args.reps):
            pair = [(one, s1), (many, sn)]
            if rep % 2:
                pair.reverse()
            for cmd, acc in pair:
                acc.append(run(cmd)["secs"])
        scaling = (statistics.median(s1), statistics.median(sn))
        print(f"cpu_bound: 1 worker {scaling[0]:.3f}s, {args.workers} workers "
              f"{scaling[1]:.3f}s, speed-up {scaling[0] / scaling[1]:.2f}",
              file=sys.stderr)
    print(f"| flavor | benchmark | unit | treadle (median of {args.reps}) "
          f"| Tokio (median of {args.reps}) | treadle / Tokio |")
    print("|---|---|---|---:|---:|---:|")
    for flavor, bench, unit, tm, km, ratio, _, _ in rows:
        fl = flavor if flavor == "current" else f"multi({args.workers})"
        better = "" if HEADLINES[bench][1] else " (lower is better; ratio = Tokio / treadle)"
        print(f"| {fl} | {bench} | {unit}{better} | {tm:,.0f} | {km:,.0f} "
              f"| {ratio:.2f}x |")
    if scaling:
        print(f"\ncpu_bound (64 tasks of pure arithmetic), medians of "
              f"{args.reps}: 1 worker {scaling[0]:.3f} s, {args.workers} "
              f"workers {scaling[1]:.3f} s: {scaling[0] / scaling[1]:.2f}x "
              f"as fast")


if __name__ == "__main__":
    main()
