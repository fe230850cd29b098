#!/usr/bin/env python3
"""Spawning and waiting for processes: treadle_bench spawn_processes beside
Tokio's (bench/rust/src/bin/processes_tokio.rs, tokio::process::Command),
interleaved (A B B A ...), medians and ratios as a Markdown table.

    bench/process_compare.py [--reps 7] [--n 1000] [--in-flight 64]
                             [--flavors current,multi] [--program /bin/true]
                             [--syscalls] [--instructions] [--json FILE]
                             [--with-sigchld]

Each run spawns N children of the program (default 1000 of /bin/true), at
most K at once (default 64): K tasks each take the next number, spawn,
wait, until N are done. Headline: processes per second (N over the time
from the first spawn to the last exit). Beside it, the parent's CPU per
process (getrusage RUSAGE_SELF over the run, user + system: the runtime's
own cost, children not included) and the children's (RUSAGE_CHILDREN:
what exec, the dynamic loader and /bin/true cost, the same for both).
Runs are unpinned (both cores: a child runs beside its parent).

--with-sigchld adds treadle-sigchld: treadle_bench --wait-sigchld, which
waits for the children through SIGCHLD (as Tokio 1.24 does) instead of
pidfds, to tell what the exit-wait mechanism costs from the rest.

--syscalls runs each once more under `strace -f` and counts the system
calls per process, split into the parent's (every thread of the runtime)
and the child's (the clone from posix_spawn's clone3 to its exit: what it
runs before exec and /bin/true itself); --instructions counts the parent's
user-space instructions per process under callgrind
(../shared/bench/tools/instructions.sh; valgrind follows no child).

Builds first (only what changed): treadle's release preset (treadle_bench) and the
Tokio program (cargo, offline, Debian's crates, into build-bench/rust-target).
"""
import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
TREADLE = os.path.join(ROOT, "build-release", "bench", "treadle_bench")
TARGET = os.path.join(ROOT, "build-bench", "rust-target")
TOKIO = os.path.join(TARGET, "release", "processes_tokio")
INSTRUCTIONS = os.path.join(SHARED, "tools", "instructions.sh")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build():
    """Brings the programs up to date (cmake and cargo rebuild only what
    changed), so a run always measures the tree as it is."""
    if not os.path.exists(os.path.join(ROOT, "build-release",
                                       "CMakeCache.txt")):
        log("configuring treadle's release preset")
        subprocess.run(["cmake", "--preset", "release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", "--preset", "release", "-j",
                    str(min(os.cpu_count() or 2, 2)), "--target",
                    "treadle_bench"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    cargo = os.environ.get("CARGO", "cargo")
    subprocess.run([cargo, "build", "--quiet", "--release", "--offline",
                    "--bin", "processes_tokio"],
                   cwd=os.path.join(ROOT, "bench", "rust"), check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=TARGET),
                   stdout=subprocess.DEVNULL)


def command(who, flavor, args):
    if who.startswith("treadle"):
        return [TREADLE, "spawn_processes", "--flavor", flavor,
                "--in-flight", str(args.in_flight), "--program", args.program,
                str(args.n)] + (["--wait-sigchld"] if who.endswith("sigchld")
                                else [])
    return [TOKIO, flavor, str(args.n), str(args.in_flight), args.program]


def run(cmd):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True,
                         timeout=600).stdout
    rec = json.loads(out.strip().splitlines()[-1])
    if rec.get("failed"):
        sys.exit(f"{cmd[0]}: {rec['failed']} children failed")
    return rec


SYSCALL = re.compile(r"^(\d+)\s+(?:<\.\.\. )?(\w+)")


def strace_per_process(cmd, n):
    """Runs cmd under strace -f; returns (parent, child) call counts per
    process, by syscall. A child is a task other than the first that calls
    execve (the clone from posix_spawn, then the program); the first task
    (which strace itself started with an execve) and the runtime's other
    threads are the parent."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace")
        subprocess.run(["strace", "-f", "-qq", "-o", path] + cmd,
                       stdout=subprocess.DEVNULL, check=True, timeout=600)
        per_pid = collections.defaultdict(collections.Counter)
        first = None
        with open(path) as f:
            for line in f:
                if first is None and line[:1].isdigit():
                    first = int(line.split()[0])
                if "resumed>" in line:
                    continue  # the second half of an interrupted call
                m = SYSCALL.match(line)
                if m and not line.startswith(m.group(1) + " +++") and \
                        not line.startswith(m.group(1) + " ---"):
                    per_pid[int(m.group(1))][m.group(2)] += 1
    parent, child = collections.Counter(), collections.Counter()
    for pid, calls in per_pid.items():
        (child if calls.get("execve") and pid != first else parent).update(
            calls)
    return ({k: v / n for k, v in parent.items()},
            {k: v / n for k, v in child.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--flavors", default="current,multi")
    ap.add_argument("--program", default="/bin/true")
    ap.add_argument("--syscalls", action="store_true")
    ap.add_argument("--instructions", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--with-sigchld", action="store_true")
    args = ap.parse_args()
    whos = ["treadle", "tokio"] + (["treadle-sigchld"] if args.with_sigchld
                                   else [])
    build()
    flavors = args.flavors.split(",")
    log(f"uptime: {os.popen('uptime').read().strip()}")
    runs = collections.defaultdict(list)
    for rep in range(args.reps):
        for flavor in flavors:
            order = list(whos)
            if rep % 2:
                order.reverse()
            for who in order:
                rec = run(command(who, flavor, args))
                rec.update(rep=rep, flavor=flavor, who=who)
                runs[(flavor, who)].append(rec)
                log(json.dumps(rec))
    if args.json:
        with open(args.json, "w") as f:
            for rs in runs.values():
                for r in rs:
                    f.write(json.dumps(r) + "\n")

    def med(flavor, who, key):
        return statistics.median(r[key] for r in runs[(flavor, who)])

    if args.reps > 0:
        print(f"spawn_processes: {args.n} children of {args.program}, at most "
              f"{args.in_flight} at once; medians of {args.reps} interleaved "
              f"runs [min–max], unpinned. CPU per process in µs: the "
              f"parent's (RUSAGE_SELF) and its children's "
              f"(RUSAGE_CHILDREN).\n")
        print("| flavor | runtime | processes/s | parent CPU µs/process | "
              "children CPU µs/process |")
        print("|---|---|---:|---:|---:|")
        for flavor in flavors:
            for who in whos:
                rs = runs[(flavor, who)]
                pps = [r["processes_per_sec"] for r in rs]
                print(f"| {flavor} | {who} | {med(flavor, who, 'processes_per_sec'):,.0f} "
                      f"[{min(pps):,.0f}–{max(pps):,.0f}] | "
                      f"{1e6 * med(flavor, who, 'cpu_self_secs') / args.n:.1f} | "
                      f"{1e6 * med(flavor, who, 'cpu_children_secs') / args.n:.1f} |")
        print("\n| flavor | treadle/Tokio processes/s (of the medians / paired) "
              "| treadle/Tokio parent CPU per process (of the medians / "
              "paired) |")
        print("|---|---:|---:|")
        for flavor in flavors:
            for who in whos:
                if who == "tokio":
                    continue
                a, b = runs[(flavor, who)], runs[(flavor, "tokio")]
                paired = statistics.median(
                    x["processes_per_sec"] / y["processes_per_sec"]
                    for x, y in zip(a, b))
                pcpu = statistics.median(
                    x["cpu_self_secs"] / y["cpu_self_secs"]
                    for x, y in zip(a, b))
                print(f"| {flavor} ({who}) | "
                      f"{med(flavor, who, 'processes_per_sec') / med(flavor, 'tokio', 'processes_per_sec'):.2f}x"
                      f" / {paired:.2f}x | "
                      f"{med(flavor, who, 'cpu_self_secs') / med(flavor, 'tokio', 'cpu_self_secs'):.2f}x"
                      f" / {pcpu:.2f}x |")

    if args.syscalls:
        print(f"\nSystem calls per process (`strace -f`, one run of "
              f"{args.n}): the parent's (all runtime threads) and the "
              f"child's (posix_spawn's clone before exec, then the program)."
              f"\n")
        cols = []
        for flavor in flavors:
            for who in whos:
                p, c = strace_per_process(command(who, flavor, args), args.n)
                cols.append((f"{who} {flavor}", p, c))
        names = sorted({k for _, p, _ in cols for k in p},
                       key=lambda k: -max(p.get(k, 0) for _, p, _ in cols))
        print("| parent's calls per process | " +
              " | ".join(n for n, _, _ in cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for k in names:
            if max(p.get(k, 0) for _, p, _ in cols) < 0.005:
                continue
            print(f"| {k} | " + " | ".join(f"{p.get(k, 0):.2f}"
                                          for _, p, _ in cols) + " |")
        print("| **parent, all** | " + " | ".join(
            f"**{sum(p.values()):.2f}**" for _, p, _ in cols) + " |")
        print("| child, all (rt_sigaction of them) | " + " | ".join(
            f"{sum(c.values()):.1f} ({c.get('rt_sigaction', 0):.1f})"
            for _, _, c in cols) + " |")

    if args.instructions and os.path.exists(INSTRUCTIONS):
        print(f"\nThe parent's user-space instructions per process "
              f"(callgrind, ../shared/bench/tools/instructions.sh, one run of "
              f"{args.n}, start-up included):\n")
        print("| flavor | treadle | Tokio | treadle/Tokio |")
        print("|---|---:|---:|---:|")
        for flavor in flavors:
            ir = {}
            for who in ("treadle", "tokio"):
                out = subprocess.run([INSTRUCTIONS] + command(who, flavor, args),
                                     stdout=subprocess.PIPE, text=True,
                                     check=True, timeout=1200).stdout
                ir[who] = int(re.search(r'"instructions":(\d+)', out).group(1))
            print(f"| {flavor} | {ir['treadle'] / args.n:,.0f} | "
                  f"{ir['tokio'] / args.n:,.0f} | "
                  f"{ir['treadle'] / ir['tokio']:.2f}x |")
    log(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
