#!/usr/bin/env python3
"""Runs treadle's Lua front door beside ../shared/bench's Lua peers (luv and
cqueues), interleaved, and prints medians and ratios as Markdown: the echo
benchmark (echoload) and the spawn_many, ping_pong and timers
microbenchmarks, with the goals of issue 6.

    bench/lua_compare.py [--reps 3] [--duration 5] [--warmup 1]
                         [--conns "100 1000"] [--sizes "64 4096"]
                         [--servers treadle-lua-current,...]
                         [--runtimes treadle-lua-current,...]
                         [--benches spawn_many,ping_pong,timers,at_timers]
                         [--spawn-n 200000] [--pingpong-n 100000]
                         [--timers-n 100000] [--yield-n 1000]
                         [--cpath DIR] [--no-build]
                         [--skip-echo] [--skip-micro] [--json FILE]

Echo servers (PORT is replaced by a fresh port at every start):

    treadle-lua-current  lua5.4 examples/lua/echo_server.lua PORT current_thread 1  split
    treadle-lua-multi2   lua5.4 examples/lua/echo_server.lua PORT multi_thread 2    shared
    lua-luv              lua5.4 <peers>/servers/lua/echo_luv.lua PORT                split
    lua-cqueues          lua5.4 <peers>/servers/lua/echo_cqueues.lua PORT            split

Placement as ../shared/bench/run_all.sh: "split" = the server under
`taskset -c 0` and echoload under `taskset -c 1`; "shared" = neither pinned
(both may use every CPU; the 2-worker server's scaling is measured where more
cores are available). echoload runs one thread with --server-pid, so every
result has the server's CPU time: efficiency = rps / (server CPU% / 100),
requests per second of server CPU (1e6 / efficiency = server CPU µs per
request; ‡ marks runs where echoload used >= 90% of its core, so the client,
not the server, was the limit). Every repetition starts every server once
(order reversed every second repetition), runs echoload once per conns x
size and stops the server by PID (SIGTERM, SIGKILL after 3 s). On SIGTERM
echo_server.lua prints "served N connections; per worker: 0:A 1:B": the
report shows that split for every treadle-lua-multi2 block (it includes the
driver's own port probes). Starting, stopping, echoload and its build come
from bench/echo_compare.py.

Microbenchmarks (unpinned, one process per run, also interleaved):
treadle-lua-current runs bench/lua_micro.lua (current_thread),
treadle-lua-multi2 runs it with --multi (worker 0 of 2); lua-cqueues,
lua-coro (bare coroutines on a FIFO, no I/O or timers: a floor, not a
runtime) and lua-luv (timers only) run
../shared/bench/micro/lua/micro_lua.lua. Headlines: spawn_many tasks_per_sec,
ping_pong round_trips_per_sec, timers overshoot_p99_us (yield_many
yields_per_sec when asked for).

Goals (issue 6): treadle-lua-current >= 1.15x lua-luv's efficiency and
>= 1.0x its rps (every cell); spawn_many >= 1.5x cqueues; ping_pong >= 1.0x
cqueues. Ratios are given of the medians and paired (the median of each
repetition's ratio: the two ran minutes apart at most, so this host's drift
of ~30% mostly cancels).

The module: LUA_CPATH gets DIR/?.so, DIR = --cpath, else
build-release/bindings/lua (built with `cmake --preset release` and
`cmake --build --preset release --target treadle_lua` when missing, unless
--no-build), else build/bindings/lua. LUA_PATH gets examples/lua.
"""
import os
import re
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
LUA = os.environ.get("TREADLE_LUA", "lua5.4")
ECHO_LUV = os.path.join(ec.SHARED, "servers", "lua", "echo_luv.lua")
ECHO_CQ = os.path.join(ec.SHARED, "servers", "lua", "echo_cqueues.lua")
MICRO_LUA = os.path.join(ec.SHARED, "micro", "lua", "micro_lua.lua")
LUA_MICRO = os.path.join(ROOT, "bench", "lua_micro.lua")
ECHO_SERVER = "examples/lua/echo_server.lua"
RELEASE_DIR = os.path.join(ROOT, "build-release", "bindings", "lua")
DEFAULT_DIR = os.path.join(ROOT, "build", "bindings", "lua")

# name -> (command with PORT, placement)
SERVERS = {
    "treadle-lua-current": (f"{LUA} {ECHO_SERVER} PORT current_thread 1", "split"),
    "treadle-lua-multi2": (f"{LUA} {ECHO_SERVER} PORT multi_thread 2", "shared"),
    "lua-luv": (f"{LUA} {ECHO_LUV} PORT", "split"),
    "lua-cqueues": (f"{LUA} {ECHO_CQ} PORT", "split"),
}
DEFAULT_SERVERS = list(SERVERS)

# (label, numerator, denominator, field, goal: (">=" or "<=", x) or None)
ECHO_RATIOS = [
    ("treadle-lua-current / lua-luv efficiency", "treadle-lua-current",
     "lua-luv", "eff", (">=", 1.15)),
    ("treadle-lua-current / lua-luv rps", "treadle-lua-current",
     "lua-luv", "rps", (">=", 1.0)),
    ("treadle-lua-current / lua-cqueues efficiency", "treadle-lua-current",
     "lua-cqueues", "eff", None),
    ("treadle-lua-current / lua-cqueues rps", "treadle-lua-current",
     "lua-cqueues", "rps", None),
    ("treadle-lua-multi2 / lua-luv rps", "treadle-lua-multi2",
     "lua-luv", "rps", None),
    ("treadle-lua-multi2 / treadle-lua-current rps", "treadle-lua-multi2",
     "treadle-lua-current", "rps", None),
]

RUNTIMES = {
    "treadle-lua-current": [LUA, LUA_MICRO],
    "treadle-lua-multi2": [LUA, LUA_MICRO, "--multi"],
    "lua-cqueues": [LUA, MICRO_LUA, "cqueues"],
    "lua-coro": [LUA, MICRO_LUA, "coro"],
    "lua-luv": [LUA, MICRO_LUA, "luv"],
}
# what each runtime can run (micro_lua.lua: luv has only timers, coro no timers)
SUPPORTS = {
    "treadle-lua-current": {"spawn_many", "ping_pong", "timers", "at_timers", "yield_many"},
    "treadle-lua-multi2": {"spawn_many", "ping_pong", "timers", "at_timers", "yield_many"},
    "lua-cqueues": {"spawn_many", "ping_pong", "timers", "yield_many"},
    "lua-coro": {"spawn_many", "ping_pong", "yield_many"},
    "lua-luv": {"timers", "at_timers"},  # at_timers: its uv.new_timer timers
}

# bench -> (headline field, higher is better, unit, other fields shown)
HEADLINES = {
    "spawn_many": ("tasks_per_sec", True, "tasks/s", []),
    "ping_pong": ("round_trips_per_sec", True, "round trips/s",
                  ["ns_per_round_trip"]),
    "yield_many": ("yields_per_sec", True, "yields/s", []),
    "timers": ("overshoot_p99_us", False, "p99 overshoot µs",
               ["overshoot_p50_us", "wall_ms", "all_started_ms"]),
    # throughput: N / wall_ms, so a wall ratio <= 1.0 is >= 1.0x the timers/s
    "at_timers": ("wall_ms", False, "wall ms for N timers",
                  ["all_started_ms", "overshoot_p99_us"]),
}

# (bench, numerator, denominator, goal): ratio of the headline field
MICRO_RATIOS = [
    ("spawn_many", "treadle-lua-current", "lua-cqueues", (">=", 1.5)),
    ("spawn_many", "treadle-lua-current", "lua-coro", None),
    ("ping_pong", "treadle-lua-current", "lua-cqueues", (">=", 1.0)),
    ("ping_pong", "treadle-lua-current", "lua-coro", None),
    ("yield_many", "treadle-lua-current", "lua-cqueues", None),
    ("timers", "treadle-lua-current", "lua-cqueues", None),
    ("timers", "treadle-lua-current", "lua-luv", None),
    ("at_timers", "treadle-lua-current", "lua-luv", ("<=", 1.0)),
]

SPLIT_RE = re.compile(r"served (\d+) connections; per worker: ([\d: ]+)")
log = ec.log


def lua_version():
    r = subprocess.run([LUA, "-v"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    return (r.stdout or r.stderr).strip() or "?"


def lua_can(module):
    r = subprocess.run([LUA, "-e", f'require "{module}"'], cwd=ROOT,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[0]


def module_dir(args, logdir):
    """The folder with treadle.so for LUA_CPATH (see the docstring)."""
    if args.cpath:
        return os.path.abspath(args.cpath)
    so = os.path.join(RELEASE_DIR, "treadle.so")
    if not args.no_build:  # incremental: a stale module would mislead
        log("building the Lua module (release preset, target treadle_lua)")
        if ec.sh(["cmake", "--preset", "release"], ROOT, logdir, "treadle_lua"):
            ec.sh(["cmake", "--build", "--preset", "release", "-j",
                   str(os.cpu_count() or 2), "--target", "treadle_lua"],
                  ROOT, logdir, "treadle_lua")
    if os.path.exists(so):
        return RELEASE_DIR
    log(f"WARNING: no release build of the module; using {DEFAULT_DIR}")
    return DEFAULT_DIR


def server_split(logpath):
    """The last "served ... per worker" line the server printed after its
    latest start in its log (echo_compare's Server appends "$ argv" at each
    start)."""
    try:
        with open(logpath, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    text = text[text.rfind("\n$ ") + 1:] if "\n$ " in text else text
    found = SPLIT_RE.findall(text)
    if not found:
        return "interrupted" if "interrupted" in text else None
    served, per = found[-1]
    return {"served": int(served),
            "per_worker": {int(w): int(n) for w, n in
                           (x.split(":") for x in per.split())}}


# ------------------------------------------------------------------ echo

def run_echo(args, servers, logdir):
    """peer_bench's echo matrix, plus the connections per worker that each
    treadle-lua block's server printed at SIGTERM."""
    splits = []

    def after_block(name, rep, started, logpath):
        if name.startswith("treadle-lua") and started:
            sp = server_split(logpath)
            splits.append({"server": name, "rep": rep, "split": sp})
            log(f"  {name} split: {sp}")

    runs, interrupted = peer_bench.run_echo(args, servers, logdir, after_block)
    return runs, splits, interrupted


def echo_report(runs, splits, servers, args, skipped):
    out = []
    w = out.append
    cells, table = echo_tables(w, runs, servers, args, ECHO_RATIOS)
    if splits:
        w("")
        w("### Connections per worker (echo_server.lua's line at SIGTERM; "
          "includes the driver's port probes)")
        w("")
        w("| server | rep | served | per worker |")
        w("|---|---:|---:|---|")
        for x in splits:
            sp = x["split"]
            if isinstance(sp, dict):
                per = " ".join(f"{wk}: {n}" for wk, n in
                               sorted(sp["per_worker"].items()))
                w(f"| {x['server']} | {x['rep']} | {sp['served']} | {per} |")
            else:
                w(f"| {x['server']} | {x['rep']} | – | {sp or 'no summary line'} |")
    if skipped:
        w("")
        w("Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped) + ".")
    return "\n".join(out), cells, table


# ----------------------------------------------------------------- micro

def micro_cmd(runtime, bench, args):
    n = {"spawn_many": args.spawn_n, "ping_pong": args.pingpong_n,
         "timers": args.timers_n, "at_timers": args.timers_n,
         "yield_many": args.yield_n}[bench]
    if bench == "at_timers" and not runtime.startswith("treadle"):
        bench = "timers"  # the peers' timers are callback timers already
    return RUNTIMES[runtime] + [bench, str(n)]


def micro_report(runs, runtimes, args, skipped):
    out = []
    w = out.append
    w("## Microbenchmarks (unpinned)")
    w("")
    w(f"Medians of {args.reps} interleaved rep(s) [min–max]. spawn_many "
      f"N={args.spawn_n:,}, ping_pong N={args.pingpong_n:,}, timers "
      f"N={args.timers_n:,}"
      + (f", yield_many 1000 tasks x {args.yield_n:,}"
         if "yield_many" in args.benches else "")
      + ". lua-coro: bare coroutines on a FIFO (a floor, not a runtime); "
        "lua-luv: timers only.")
    ratios = [r for r in MICRO_RATIOS if r[0] in args.benches
              and r[1] in runtimes and r[2] in runtimes]
    med, table = micro_tables(
        w, runs, lambda bench: [n for n in runtimes if bench in SUPPORTS[n]], args.benches, HEADLINES, ratios,
        "Micro ratios (of the headline field: tasks/s, round trips/s, yields/s, or p99 overshoot)",
        "✓ / ✗: the paired ratio meets / misses the goal (timers: lower is better).")
    if skipped:
        w("")
        w("Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped) + ".")
    return "\n".join(out), {f"{n}|{b}|{f}": v for (n, b, f), v in med.items()}, table


# ------------------------------------------------------------------ main

def parse_args():
    ap = peer_bench.compare_arg_parser(
        __doc__, "100 1000", SERVERS, DEFAULT_SERVERS, RUNTIMES,
        "spawn_many,ping_pong,timers", 19700)
    ap.add_argument("--pingpong-n", type=int, default=100000)
    ap.add_argument("--cpath", metavar="DIR",
                    help="folder with treadle.so (default: build-release/"
                         "bindings/lua, else build/bindings/lua)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not build a missing release module")
    return peer_bench.compare_parse(ap, SERVERS, RUNTIMES, HEADLINES)



def main():
    args, servers, runtimes = parse_args()
    logdir = tempfile.mkdtemp(prefix="lua_compare-")
    log(f"logs in {logdir}")
    if not shutil.which(LUA):
        sys.exit(f"{LUA} not found (set TREADLE_LUA)")
    need_treadle = any(n.startswith("treadle") for n in
                       (list(servers) if not args.skip_echo else [])
                       + (runtimes if not args.skip_micro else []))
    mdir = module_dir(args, logdir) if need_treadle else None
    if mdir:
        os.environ["LUA_CPATH"] = f"{mdir}/?.so;;"
        log(f"LUA_CPATH={os.environ['LUA_CPATH']}")
    os.environ["LUA_PATH"] = f"{os.path.join(ROOT, 'examples', 'lua')}/?.lua;;"

    # What can run: treadle (built?), luv, cqueues (Debian's lua-luv, lua-cqueues).
    missing = {}
    for what, mod in (("treadle", "treadle"), ("luv", "luv"),
                      ("cqueues", "cqueues")):
        if what == "treadle" and not need_treadle:
            continue
        ok, why = lua_can(mod)
        if not ok:
            missing[what] = f'require "{mod}" failed: {why}'
            log(f"WARNING: {missing[what]}")

    def needs(name):
        if name.startswith("treadle"):
            return "treadle"
        return {"lua-luv": "luv", "lua-cqueues": "cqueues"}.get(name)

    skipped, micro_skipped = [], []
    for name in list(servers):
        if needs(name) in missing:
            skipped.append((name, missing[needs(name)]))
            del servers[name]
    for name in list(runtimes):
        if needs(name) in missing:
            micro_skipped.append((name, missing[needs(name)]))
            runtimes.remove(name)

    peer_bench.stop_on_signals()
    echo_runs, splits, micro_runs, interrupted = [], [], [], False
    try:
        if not args.skip_echo and servers:
            ec.build(set(), logdir)  # echoload, when missing
            if not os.access(ec.ECHOLOAD, os.X_OK):
                sys.exit(f"echoload missing at {ec.ECHOLOAD} (build log in "
                         f"{logdir})")
            if not shutil.which("taskset"):
                sys.exit("taskset not found (util-linux)")
            echo_runs, splits, interrupted = run_echo(args, servers, logdir)
        if not args.skip_micro and runtimes and not interrupted:
            micro_runs, interrupted = peer_bench.run_micro(
                args.reps, runtimes, args.benches,
                lambda name, bench: (micro_cmd(name, bench, args)
                                     if bench in SUPPORTS[name] else None),
                HEADLINES)
    finally:
        peer_bench.restore_signals()

    parts = [f"# treadle (Lua) vs luv / cqueues\n\n"
             f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}, {os.cpu_count()} CPUs, "
             f"{lua_version()}; module from {mdir or '–'}."]
    saved = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reps": args.reps,
             "interrupted": interrupted, "lua": LUA, "module_dir": mdir}
    if echo_runs:
        text, cells, table = echo_report(echo_runs, splits, servers, args,
                                         skipped)
        parts.append(text)
        saved["echo"] = peer_bench.echo_record(
            args, servers, skipped, echo_runs, cells, table, splits=splits)
    elif skipped and not args.skip_echo:
        parts.append(peer_bench.skipped_section("Echo", skipped))
    if micro_runs:
        text, medians, table = micro_report(micro_runs, runtimes, args,
                                            micro_skipped)
        parts.append(text)
        saved["micro"] = peer_bench.micro_record(
            {"benches": args.benches, "spawn_n": args.spawn_n,
             "pingpong_n": args.pingpong_n, "timers_n": args.timers_n,
             "yield_n": args.yield_n},
            {n: RUNTIMES[n] for n in runtimes}, micro_skipped, micro_runs,
            medians, table)
    elif micro_skipped and not args.skip_micro:
        parts.append(peer_bench.skipped_section("Microbenchmarks",
                                                micro_skipped))
    peer_bench.save_and_print(args, parts, saved, interrupted)


if __name__ == "__main__":
    main()
