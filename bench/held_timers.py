#!/usr/bin/env python3
"""The CPU a runtime uses while it only waits: treadle_bench's held_timers
beside Tokio's (bench/rust/src/bin/held_timers_tokio.rs), interleaved
(A B B A ...), medians and ratios as a Markdown table.

    bench/held_timers.py [--reps 5] [--seconds 10] [--timers 1000]
                         [--flavors current,multi]

Each run holds 1,000 timers spread from 1 ms to 60 s (evenly on a log
scale) for 10 s. Two figures per run: the process's CPU over the hold as
the program reads it (getrusage), and the whole process's as wait4 reports
it (start-up and shutdown included). Issue 18's targets: treadle at most
1.0x Tokio's CPU, and under 1% of a core.

Builds what is missing: treadle's release preset (treadle_bench) and the
Tokio program (cargo, offline, Debian's librust-tokio-dev) in
build-bench/rust-target.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREADLE = os.path.join(ROOT, "build-release", "bench", "treadle_bench")
TARGET = os.path.join(ROOT, "build-bench", "rust-target")
TOKIO = os.path.join(TARGET, "release", "held_timers_tokio")


def build():
    if not os.path.exists(TREADLE):
        subprocess.run(["cmake", "--preset", "release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "--preset", "release", "-j",
                        str(os.cpu_count() or 2), "--target", "treadle_bench"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(TOKIO):
        cargo = os.environ.get("CARGO", "cargo")
        subprocess.run([cargo, "build", "--release", "--offline"],
                       cwd=os.path.join(ROOT, "bench", "rust"), check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=TARGET),
                       stdout=subprocess.DEVNULL)


def run(cmd):
    """One run: its JSON line plus the whole process's CPU from wait4."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed with status {p.returncode}")
    rec = json.loads(out.strip().splitlines()[-1])
    rec["process_cpu_secs"] = ru.ru_utime + ru.ru_stime
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--timers", type=int, default=1000)
    ap.add_argument("--flavors", default="current,multi")
    args = ap.parse_args()
    build()
    flavors = args.flavors.split(",")
    runs = {}
    for rep in range(args.reps):
        for flavor in flavors:
            pair = [
                ("treadle", [TREADLE, "held_timers", "--flavor", flavor,
                             "--seconds", str(args.seconds),
                             str(args.timers)]),
                ("tokio", [TOKIO, flavor, str(args.timers),
                           str(args.seconds)]),
            ]
            if rep % 2:
                pair.reverse()
            for who, cmd in pair:
                rec = run(cmd)
                print(json.dumps(rec), file=sys.stderr)
                runs.setdefault((flavor, who), []).append(rec)

    def med(flavor, who, key):
        return statistics.median(r[key] for r in runs[(flavor, who)])

    print(f"held_timers: {args.timers} timers from 1 ms to 60 s held for "
          f"{args.seconds:g} s; medians of {args.reps} interleaved runs\n")
    print("| flavor | runtime | CPU over the hold ms | % of a core | "
          "whole process CPU ms | fired |")
    print("|---|---|---:|---:|---:|---:|")
    ok = True
    for flavor in flavors:
        for who in ("treadle", "tokio"):
            print(f"| {flavor} | {who} | "
                  f"{1e3 * med(flavor, who, 'cpu_secs'):.1f} | "
                  f"{med(flavor, who, 'cpu_pct'):.3f} | "
                  f"{1e3 * med(flavor, who, 'process_cpu_secs'):.1f} | "
                  f"{med(flavor, who, 'fired'):.0f} |")
    print()
    for flavor in flavors:
        ratio = med(flavor, "treadle", "cpu_secs") / med(flavor, "tokio",
                                                         "cpu_secs")
        whole = (med(flavor, "treadle", "process_cpu_secs") /
                 med(flavor, "tokio", "process_cpu_secs"))
        pct = med(flavor, "treadle", "cpu_pct")
        met = ratio <= 1.0 and pct < 1.0
        ok = ok and met
        print(f"- {flavor}: treadle/tokio CPU {ratio:.2f}x over the hold, "
              f"{whole:.2f}x whole process; treadle {pct:.3f}% of a core"
              f" ({'meets' if met else 'misses'} <= 1.0x and < 1%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
