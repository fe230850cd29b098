#!/usr/bin/env python3
"""Runs treadle's Python front door beside asyncio and uvloop, interleaved,
and prints medians and ratios as Markdown: the echo benchmark (echoload) and
the spawn_many and timers microbenchmarks, with the goals of issue 5.

    bench/py_compare.py [--reps 3] [--duration 5] [--warmup 1]
                        [--conns "1000"] [--sizes "64 4096"]
                        [--servers treadle-py-current,...]
                        [--runtimes treadle-py-current,...]
                        [--benches spawn_many,timers] [--spawn-n 200000]
                        [--timers-n 100000] [--yield-n 1000]
                        [--skip-echo] [--skip-micro] [--json FILE]

Echo servers (PORT is replaced by a fresh port at every start):

    treadle-py-current  examples/python/echo_server.py PORT current_thread 1   split
    treadle-py-multi2   examples/python/echo_server.py PORT multi_thread 2     shared
    uvloop-streams      <peers>/servers/python/echo_py.py PORT uvloop streams  split
    asyncio-streams     <peers>/servers/python/echo_py.py PORT asyncio streams split
  and, only when named in --servers:
    uvloop-streams-shared   uvloop-streams, unpinned
    uvloop-protocol         echo_py.py PORT uvloop protocol                    split
    treadle-loop-streams    echo_py.py streams, unchanged, on treadle's asyncio
                            loop (examples/python/asyncio_on_treadle.py)       split
    treadle-loop-protocol   the same, protocol                                 split
    treadle-loop-streams-multi2  treadle-loop-streams on multi_thread(2)       shared
    treadle-loop-protocol-multi2 treadle-loop-protocol on multi_thread(2)      shared

Placement as ../shared/bench/run_all.sh: "split" = the server under
`taskset -c 0` and echoload under `taskset -c 1`; "shared" = neither pinned
(both may use every CPU). echoload runs one thread with --server-pid, so
every result has the server's CPU time: efficiency = rps / (server CPU% /
100), requests per second of server CPU (1e6 / efficiency = server CPU µs
per request; ‡ marks runs where echoload used >= 90% of its core, so the
client, not the server, was the limit). Every repetition starts every
server once (order reversed every second repetition), runs echoload once
per conns x size and stops the server by PID (SIGTERM, SIGKILL after 3 s).
Starting, stopping, echoload and its build come from bench/echo_compare.py.

Microbenchmarks (unpinned, one process per run, also interleaved):
treadle-py-current / treadle-py-multi2 run bench/py_micro.py (--flavor
current_thread / multi_thread --workers 2), asyncio / uvloop run
../shared/bench/micro/python/micro_py.py. Headlines: spawn_many
tasks_per_sec, timers overshoot_p99_us (yield_many yields_per_sec when
asked for).

Goals (issue 5): treadle-py-current >= 1.0x uvloop-streams in rps and in
efficiency; treadle-py-multi2 >= 1.3x uvloop-streams rps; spawn_many >= 2x
asyncio; timers p99 overshoot <= 0.5x uvloop's. Ratios are given of the
medians and paired (the median of each repetition's ratio: the two ran
minutes apart at most, so this host's drift of ~30% mostly cancels).
Python is Debian's /usr/bin/python3 (the pyenv one cannot see uvloop);
PYTHONPATH gets bindings/python.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import echo_compare as ec  # noqa: E402
import peer_bench  # noqa: E402
from peer_bench import echo_tables, micro_tables  # noqa: E402

ROOT = ec.ROOT
PY = os.environ.get("TREADLE_PYTHON", "/usr/bin/python3")
BINDINGS = os.path.join(ROOT, "bindings", "python")
ECHO_PY = os.path.join(ec.SHARED, "servers", "python", "echo_py.py")
MICRO_PY = os.path.join(ec.SHARED, "micro", "python", "micro_py.py")
PY_MICRO = os.path.join(ROOT, "bench", "py_micro.py")
ECHO_SERVER = "examples/python/echo_server.py"
ON_TREADLE = os.path.join(ROOT, "examples", "python", "asyncio_on_treadle.py")

# name -> (command with PORT, placement)
SERVERS = {
    "treadle-py-current": (f"{PY} {ECHO_SERVER} PORT current_thread 1", "split"),
    "treadle-py-multi2": (f"{PY} {ECHO_SERVER} PORT multi_thread 2", "shared"),
    "uvloop-streams": (f"{PY} {ECHO_PY} PORT uvloop streams", "split"),
    "asyncio-streams": (f"{PY} {ECHO_PY} PORT asyncio streams", "split"),
    "uvloop-streams-shared": (f"{PY} {ECHO_PY} PORT uvloop streams", "shared"),
    "uvloop-protocol": (f"{PY} {ECHO_PY} PORT uvloop protocol", "split"),
    "treadle-loop-streams": (f"{PY} {ON_TREADLE} {ECHO_PY} PORT asyncio streams", "split"),
    "treadle-loop-protocol": (f"{PY} {ON_TREADLE} {ECHO_PY} PORT asyncio protocol", "split"),
    "treadle-loop-streams-multi2": (f"{PY} {ON_TREADLE} --flavor multi_thread --workers 2 {ECHO_PY} PORT asyncio streams", "shared"),
    "treadle-loop-protocol-multi2": (f"{PY} {ON_TREADLE} --flavor multi_thread --workers 2 {ECHO_PY} PORT asyncio protocol", "shared"),
}
DEFAULT_SERVERS = ["treadle-py-current", "treadle-py-multi2", "uvloop-streams",
                   "asyncio-streams"]

# (label, numerator, denominator, field, goal: (">=" or "<=", x) or None)
ECHO_RATIOS = [
    ("treadle-py-current / uvloop-streams rps", "treadle-py-current",
     "uvloop-streams", "rps", (">=", 1.0)),
    ("treadle-py-current / uvloop-streams efficiency", "treadle-py-current",
     "uvloop-streams", "eff", (">=", 1.0)),
    ("treadle-py-multi2 / uvloop-streams rps", "treadle-py-multi2",
     "uvloop-streams", "rps", (">=", 1.3)),
    ("treadle-py-multi2 / uvloop-streams efficiency", "treadle-py-multi2",
     "uvloop-streams", "eff", None),
    ("treadle-py-multi2 / uvloop-streams-shared rps", "treadle-py-multi2",
     "uvloop-streams-shared", "rps", None),
    ("treadle-py-current / asyncio-streams rps", "treadle-py-current",
     "asyncio-streams", "rps", None),
    ("treadle-py-current / asyncio-streams efficiency", "treadle-py-current",
     "asyncio-streams", "eff", None),
]

RUNTIMES = {
    "treadle-py-current": [PY, PY_MICRO, "--flavor", "current_thread"],
    "treadle-py-multi2": [PY, PY_MICRO, "--flavor", "multi_thread",
                          "--workers", "2"],
    "asyncio": [PY, MICRO_PY, "asyncio"],
    "uvloop": [PY, MICRO_PY, "uvloop"],
}
TREADLE_RUNTIMES = ("treadle-py-current", "treadle-py-multi2")

# bench -> (headline field, higher is better, unit, other fields shown)
HEADLINES = {
    "spawn_many": ("tasks_per_sec", True, "tasks/s", []),
    "yield_many": ("yields_per_sec", True, "yields/s", []),
    "timers": ("overshoot_p99_us", False, "p99 overshoot µs",
               ["overshoot_p50_us", "wall_ms", "all_started_ms"]),
}

# (bench, numerator, denominator, goal): ratio of the headline field
MICRO_RATIOS = [
    ("spawn_many", "treadle-py-current", "asyncio", (">=", 2.0)),
    ("spawn_many", "treadle-py-multi2", "asyncio", (">=", 2.0)),
    ("spawn_many", "treadle-py-current", "uvloop", None),
    ("spawn_many", "treadle-py-multi2", "uvloop", None),
    ("yield_many", "treadle-py-current", "asyncio", None),
    ("yield_many", "treadle-py-current", "uvloop", None),
    ("timers", "treadle-py-current", "uvloop", ("<=", 0.5)),
    ("timers", "treadle-py-multi2", "uvloop", ("<=", 0.5)),
    ("timers", "treadle-py-current", "asyncio", None),
]

log = ec.log


def python_version():
    r = subprocess.run([PY, "-c", "import sys; print(sys.version.split()[0])"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return r.stdout.strip() or "?"


def python_can(module):
    r = subprocess.run([PY, "-c", f"import {module}"], cwd=ROOT,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]


# ------------------------------------------------------------------ echo

def echo_report(runs, servers, args, skipped):
    out = []
    w = out.append
    cells, table = echo_tables(w, runs, servers, args, ECHO_RATIOS)
    if skipped:
        w("")
        w("Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped) + ".")
    return "\n".join(out), cells, table


# ----------------------------------------------------------------- micro

def micro_cmd(runtime, bench, args):
    n = {"spawn_many": args.spawn_n, "timers": args.timers_n,
         "yield_many": args.yield_n}[bench]
    return RUNTIMES[runtime] + [bench, str(n)]


def micro_report(runs, runtimes, args, skipped):
    out = []
    w = out.append
    w("## Microbenchmarks (unpinned)")
    w("")
    w(f"Medians of {args.reps} interleaved rep(s) [min–max]. spawn_many "
      f"N={args.spawn_n:,}, timers N={args.timers_n:,}"
      + (f", yield_many 1000 tasks x {args.yield_n:,}"
         if "yield_many" in args.benches else "") + ".")
    ratios = [r for r in MICRO_RATIOS if r[0] in args.benches
              and r[1] in runtimes and r[2] in runtimes]
    med, table = micro_tables(
        w, runs, lambda bench: runtimes, args.benches, HEADLINES, ratios,
        "Micro ratios (of the headline field: tasks/s, yields/s, or p99 overshoot)",
        "✓ / ✗: the paired ratio meets / misses the goal (timers: lower is better, so the goal is a ceiling).")
    if skipped:
        w("")
        w("Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped) + ".")
    return "\n".join(out), {f"{n}|{b}|{f}": v for (n, b, f), v in med.items()}, table


# ------------------------------------------------------------------ main

def parse_args():
    ap = peer_bench.compare_arg_parser(
        __doc__, "1000", SERVERS, DEFAULT_SERVERS, RUNTIMES,
        "spawn_many,timers", 19400)
    return peer_bench.compare_parse(
        ap, SERVERS, RUNTIMES, HEADLINES,
        "; ping_pong needs a queue, which treadle's Python API does not have")



def main():
    args, servers, runtimes = parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [BINDINGS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    logdir = tempfile.mkdtemp(prefix="py_compare-")
    log(f"logs in {logdir}")
    if not os.access(PY, os.X_OK):
        sys.exit(f"{PY} not found (set TREADLE_PYTHON)")

    # What can run: treadle (built in place?), uvloop (python3-uvloop).
    skipped = []
    missing = {}
    ok, why = python_can("treadle")
    if not ok:
        missing["treadle"] = f"import treadle failed: {why} (build it: " \
            "PYTHON=/usr/bin/python3 bash scripts/build_python.sh)"
    ok, why = python_can("uvloop")
    if not ok:
        missing["uvloop"] = f"import uvloop failed: {why}"
    for what, why in missing.items():
        log(f"WARNING: {why}")

    def needs(name):
        return "treadle" if name.startswith("treadle") else (
            "uvloop" if name.startswith("uvloop") else None)

    for name in list(servers):
        if needs(name) in missing:
            skipped.append((name, missing[needs(name)]))
            del servers[name]
    micro_skipped = []
    for name in list(runtimes):
        if needs(name) in missing:
            micro_skipped.append((name, missing[needs(name)]))
            runtimes.remove(name)

    peer_bench.stop_on_signals()
    echo_runs, micro_runs, interrupted = [], [], False
    try:
        if not args.skip_echo and servers:
            ec.build(set(), logdir)  # echoload, when missing
            if not os.access(ec.ECHOLOAD, os.X_OK):
                sys.exit(f"echoload missing at {ec.ECHOLOAD} (build log in "
                         f"{logdir})")
            if not shutil.which("taskset"):
                sys.exit("taskset not found (util-linux)")
            echo_runs, interrupted = peer_bench.run_echo(args, servers,
                                                         logdir)
        if not args.skip_micro and runtimes and not interrupted:
            micro_runs, interrupted = peer_bench.run_micro(
                args.reps, runtimes, args.benches,
                lambda name, bench: micro_cmd(name, bench, args), HEADLINES)
    finally:
        peer_bench.restore_signals()

    parts = [f"# treadle (Python) vs asyncio / uvloop\n\n"
             f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}, {os.cpu_count()} CPUs, "
             f"{PY} {python_version()}."]
    saved = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reps": args.reps,
             "interrupted": interrupted, "python": PY}
    if echo_runs:
        text, cells, table = echo_report(echo_runs, servers, args, skipped)
        parts.append(text)
        saved["echo"] = peer_bench.echo_record(
            args, servers, skipped, echo_runs, cells, table)
    elif skipped and not args.skip_echo:
        parts.append(peer_bench.skipped_section("Echo", skipped))
    if micro_runs:
        text, medians, table = micro_report(micro_runs, runtimes, args,
                                            micro_skipped)
        parts.append(text)
        saved["micro"] = peer_bench.micro_record(
            {"benches": args.benches, "spawn_n": args.spawn_n,
             "timers_n": args.timers_n, "yield_n": args.yield_n},
            {n: RUNTIMES[n] for n in runtimes}, micro_skipped, micro_runs,
            medians, table)
    elif micro_skipped and not args.skip_micro:
        parts.append(peer_bench.skipped_section("Microbenchmarks",
                                                micro_skipped))
    peer_bench.save_and_print(args, parts, saved, interrupted)


if __name__ == "__main__":
    main()
