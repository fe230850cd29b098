#!/usr/bin/env python3
"""Runs treadle's C, Python and Lua echo servers and microbenchmarks beside
../shared/bench's peers, interleaved, and writes a Markdown report with
PNG charts: bench/report/REPORT.md, bench/report/*.png and every run as one
JSON line in bench/report/raw.jsonl.

    bench/report.py [--quick] [--reps 3] [--duration 5] [--warmup 1]
                    [--conns "10 100 1000"] [--sizes "64"] [--only REGEX]
                    [--out bench/report]
    bench/report.py --from bench/report/raw.jsonl [--out DIR]

scripts/bench_report.sh installs what is missing, builds treadle and the
peers (in build-bench/peers, TREADLE_PEERS_DIR) and runs this; run by hand
it skips, with a note in the report, whatever is not built. --from redraws
the report and charts from saved runs without running anything.

Echo: every server under echoload (one client thread, --server-pid) at
each connection count and message size; single-thread servers run "split"
(server on CPU 0, echoload on CPU 1), the 2-thread ones "shared" (neither
pinned). Microbenchmarks run unpinned: spawn_many (each program's default
N) and timers (100,000 sleeps of 0-100 ms; timers/s = N / wall time).
Servers and runtimes are interleaved within each repetition (order
reversed every second one) and the report gives medians of --reps.
--quick: 1 repetition, 2 s per echo run, 10 and 1000 connections.
The loops, tables, placement and process handling come from
bench/peer_bench.py and bench/echo_compare.py.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullLocator  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as cmp  # noqa: E402
import echo_compare as ec  # noqa: E402
import lua_compare as lua  # noqa: E402
import peer_bench  # noqa: E402
import py_compare as py  # noqa: E402

ROOT = ec.ROOT
OUT = os.path.join(ROOT, "bench", "report")
LOGS = os.path.join(ROOT, "build-bench", "logs")
GO_ECHO = os.path.join(ec.PEERS, "go", "echo_go")
GO_MICRO = os.path.join(ec.PEERS, "go", "micro_go")
ECHO_UV = os.path.join(ec.PEERS, "servers", "libuv", "echo_uv")
COMPILED, SCRIPTED = "C, Rust and Go servers", "Python and Lua servers"

# name -> (command with PORT, placement, chart panel)
SERVERS = {
    "treadle-c-current": (ec.SERVERS["treadle-current"], "split", COMPILED),
    "treadle-c-multi2": (ec.SERVERS["treadle-multi2"], "shared", COMPILED),
    "tokio-current": (ec.SERVERS["tokio-current"], "split", COMPILED),
    "tokio-multi2": (ec.SERVERS["tokio-multi2"], "shared", COMPILED),
    "go-gomaxprocs1": (f"env GOMAXPROCS=1 {GO_ECHO} PORT", "split", COMPILED),
    "go-gomaxprocs2": (f"env GOMAXPROCS=2 {GO_ECHO} PORT", "shared", COMPILED),
    "libuv": (f"{ECHO_UV} PORT", "split", COMPILED),
    "c-epoll-1t": (ec.SERVERS["c-epoll-1t"], "split", COMPILED),
    **{n: py.SERVERS[n] + (SCRIPTED,) for n in py.DEFAULT_SERVERS},
    **{n: lua.SERVERS[n] + (SCRIPTED,) for n in lua.DEFAULT_SERVERS},
}

# name -> argv, BENCH standing for the benchmark's name
RUNTIMES = {
    "treadle-c-current": [cmp.TREADLE, "BENCH", "--flavor", "current"],
    "treadle-c-multi2": [cmp.TREADLE, "BENCH", "--flavor", "multi",
                         "--workers", "2"],
    "tokio-current": [cmp.TOKIO, "current", "BENCH"],
    "tokio-multi2": [cmp.TOKIO, "multi", "BENCH"],
    "go-gomaxprocs1": ["env", "GOMAXPROCS=1", GO_MICRO, "BENCH"],
    "go-gomaxprocs2": ["env", "GOMAXPROCS=2", GO_MICRO, "BENCH"],
    **{n: py.RUNTIMES[n] + ["BENCH"] for n in py.RUNTIMES},
    **{n: lua.RUNTIMES[n] + ["BENCH"]
       for n in ("treadle-lua-current", "treadle-lua-multi2", "lua-cqueues",
                 "lua-luv")},
}
BENCHES = ["spawn_many", "timers"]

# bench -> (headline field, higher is better, unit, other fields shown)
HEADLINES = {
    "spawn_many": ("tasks_per_sec", True, "tasks/s", []),
    "timers": ("timers_per_sec", True, "timers/s = N / wall time",
               ["overshoot_p99_us", "overshoot_p50_us", "wall_ms",
                "all_started_ms"]),
}

# what run_micro logs: timers_per_sec is derived from wall_ms afterwards
LOGGED = dict(HEADLINES, timers=("wall_ms",) + HEADLINES["timers"][1:])

# (label, numerator, denominator, field, goal)
ECHO_RATIOS = [
    (f"{a} / {b} {'efficiency' if f == 'eff' else f}", a, b, f, None)
    for a, b, f in [
        ("treadle-c-current", "tokio-current", "rps"),
        ("treadle-c-current", "tokio-current", "eff"),
        ("treadle-c-current", "c-epoll-1t", "eff"),
        ("treadle-c-multi2", "tokio-multi2", "rps"),
        ("treadle-py-current", "uvloop-streams", "rps"),
        ("treadle-py-current", "uvloop-streams", "eff"),
        ("treadle-lua-current", "lua-luv", "rps"),
        ("treadle-lua-current", "lua-luv", "eff"),
    ]]

# (bench, numerator, denominator, goal)
MICRO_RATIOS = [(b, x, y, None) for b, x, y in [
    ("spawn_many", "treadle-c-current", "tokio-current"),
    ("spawn_many", "treadle-c-multi2", "tokio-multi2"),
    ("spawn_many", "treadle-c-current", "go-gomaxprocs1"),
    ("spawn_many", "treadle-py-current", "uvloop"),
    ("spawn_many", "treadle-lua-current", "lua-cqueues"),
    ("timers", "treadle-c-current", "tokio-current"),
    ("timers", "treadle-c-multi2", "tokio-multi2"),
    ("timers", "treadle-py-current", "uvloop"),
    ("timers", "treadle-lua-current", "lua-luv"),
]]

# what a server or runtime loads: (name prefix, checker, module)
MODULES = [("treadle-py", py.python_can, "treadle"),
           ("uvloop", py.python_can, "uvloop"),
           ("treadle-lua", lua.lua_can, "treadle"),
           ("lua-luv", lua.lua_can, "luv"),
           ("lua-cqueues", lua.lua_can, "cqueues")]

VERSIONS = {
    "Python": [py.PY, "--version"],
    "uvloop": [py.PY, "-c", "import uvloop; print(uvloop.__version__)"],
    "Lua": [lua.LUA, "-v"],
    "lua-luv": ["dpkg-query", "-W", "-f", "${Version}", "lua-luv"],
    "lua-cqueues": ["dpkg-query", "-W", "-f", "${Version}", "lua-cqueues"],
    "Go": ["go", "version"],
    "rustc": ["rustc", "--version"],
    "Tokio": ["dpkg-query", "-W", "-f", "${Version}", "librust-tokio-dev"],
    "libuv": ["pkg-config", "--modversion", "libuv"],
}

log = ec.log


def micro_cmd(name, bench):
    """The argv of one run, or None where the runtime lacks the benchmark."""
    if name in lua.SUPPORTS and bench not in lua.SUPPORTS[name]:
        return None
    return [bench if a == "BENCH" else a for a in RUNTIMES[name]]


def why_missing(name, argv, loaded):
    """Why NAME cannot run (a file or module missing), or None."""
    for a in argv:
        if os.sep in a and not os.path.exists(os.path.join(ROOT, a)):
            return f"{a} missing"
    for prefix, can, module in MODULES:
        if name.startswith(prefix):
            if module not in loaded:
                loaded[module] = can(module)
            ok, why = loaded[module]
            if not ok:
                return f"{module} does not load: {why}"
    return None


def first_line(cmd):
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (r.stdout or r.stderr).strip().splitlines()
    return lines[0] if r.returncode == 0 and lines else None


def version(cmd):
    m = re.search(r"\d+(\.\d+)*", first_line(cmd) or "")
    return m and m.group()


def host():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = first_line(["git", "-C", ROOT, "describe", "--always",
                         "--dirty"])
    return {"nproc": os.cpu_count(), "cpu": model,
            "kernel": os.uname().release, "commit": commit,
            "versions": {k: version(v) for k, v in VERSIONS.items()}}


# ---------------------------------------------------------------- charts

def human(v, _=None):
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def ms(v, _=None):
    return f"{v:,.0f} ms" if v >= 10 else f"{v:.2g} ms"


def style(name, i):
    """treadle solid and thick, peers dashed; colours by place in a panel."""
    treadle = name.startswith("treadle")
    return {"color": plt.get_cmap("tab10")(i % 10),
            "linestyle": "-" if treadle else "--",
            "linewidth": 2.2 if treadle else 1.2}


def echo_chart(path, cells, servers, conns, size, key, scale, ylabel, title,
               logy):
    panels = [p for p in (COMPILED, SCRIPTED)
              if any(v[2] == p for v in servers.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8),
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        names = [n for n in servers if servers[n][2] == panel]
        for i, name in enumerate(names):
            pts = [(c, cells[name, c, size][key] * scale) for c in conns
                   if cells[name, c, size][key] is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=f"{name} ({servers[name][1]})",
                        **style(name, i))
        ax.set_xscale("log")
        ax.set_xticks(conns, [str(c) for c in conns])
        ax.xaxis.set_minor_locator(NullLocator())
        if logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel(f"connections (one {size}-byte message in flight each)")
        ax.set_ylabel(ylabel)
        ax.set_title(panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bars(ax, names, values, xlabel, fmt, logx):
    ys = range(len(names))
    ax.barh(ys, values, color=["tab:red" if n.startswith("treadle")
                               else "tab:gray" for n in names])
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    for y, v in zip(ys, values):
        ax.text(v, y, " " + fmt(v), va="center", fontsize=8)
    if logx:
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 2, max(values) * 5)
    else:
        ax.set_xlim(0, max(values) * 1.2)
    ax.xaxis.set_major_formatter(FuncFormatter(fmt))
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def micro_chart(path, med, runtimes, panels, title):
    """panels: (bench, field, scale, x label, number format, log x) each."""
    fig, axes = plt.subplots(1, len(panels), figsize=(
        6.5 * len(panels), 1.5 + 0.35 * len(runtimes)), squeeze=False)
    for ax, (bench, field, scale, xlabel, fmt, logx) in zip(axes[0], panels):
        pts = [(n, med[n, bench, field] * scale) for n in runtimes
               if med.get((n, bench, field))]
        if pts:
            bars(ax, *zip(*pts), xlabel, fmt, logx)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- report

def with_timer_rates(runs):
    """The micro runs, timers ones with timers_per_sec = n / wall time."""
    out = []
    for x in runs:
        r = x["r"]
        if x["bench"] == "timers" and r and r.get("wall_ms"):
            r = dict(r, timers_per_sec=r["n"] / (r["wall_ms"] / 1e3))
        out.append(dict(x, r=r))
    return out


def report(meta, echo_runs, micro_runs, out):
    """Writes out/REPORT.md and its charts from saved runs."""
    lines = []
    w = lines.append
    h = meta["host"]
    servers = {n: (v["command"], v["placement"], v["panel"])
               for n, v in meta["servers"].items()}
    two = [n for n, v in servers.items() if v[1] == "shared"]
    args = argparse.Namespace(**{k: meta[k] for k in
                                 ("reps", "duration", "warmup", "conns",
                                  "sizes")})
    w("# treadle benchmark report")
    w("")
    w(f"Measured {meta['date']} on a {h['nproc']}-CPU host ({h['cpu']}, "
      f"Linux {h['kernel']}), treadle {h['commit']}; "
      f"{meta['reps']} repetition(s), medians"
      + (" (a --quick run: short and noisy)" if meta["quick"] else "") + ". "
      "Servers and runtimes are interleaved within each repetition (A B C "
      "…, then … C B A), because this shared host's speed drifts by up to "
      "30% over minutes: compare figures within one report only. "
      "Versions: " + ", ".join(f"{k} {v}" for k, v in h["versions"].items()
                               if v) + ".")
    w("")
    w("Made by `scripts/bench_report.sh"
      + (" --quick" if meta["quick"] else "") + "` (treadle's release "
      "build, the peers from `../shared/bench`); redraw with "
      "`bench/report.py --from bench/report/raw.jsonl`.")
    if meta["skipped"]:
        w("")
        w("Not run: " + "; ".join(f"{n} ({why})" for n, why in
                                   meta["skipped"].items()) + ".")
    if meta["interrupted"]:
        w("")
        w("**Interrupted: partial results.**")
    if echo_runs:
        w("")
        w("## Echo charts")
        w("")
        w("echoload (`../shared/bench/echoload`, one client thread) keeps one "
          "message in flight per connection and measures round trips. "
          "Placement: the single-thread servers run *split*, the server "
          "pinned to CPU 0 and echoload to CPU 1 (as bench/py_compare.py and "
          "bench/lua_compare.py do)"
          + (f"; the 2-thread servers ({', '.join(two)}) run *shared*: "
             "neither pinned, so their two threads share both CPUs with "
             "echoload" if two else "") + ". Near 100k+ requests/s the "
          "one-thread load generator saturates its core (‡ in the tables), "
          "so the requests per second of server CPU (efficiency) tells the "
          "fastest servers apart better than requests per second.")
        tables = []
        cells, _ = peer_bench.echo_tables(tables.append, echo_runs, servers,
                                          args, ECHO_RATIOS)
        for s in args.sizes:
            for key, scale, ylabel, what, logy in (
                    ("rps", 1e-3, "k round trips / s", "requests per second",
                     False),
                    ("p99", 1e-3, "p99 round-trip latency, ms (log)",
                     "p99 latency", True),
                    ("eff", 1e-3, "k requests / s of server CPU",
                     "efficiency", False)):
                name = f"echo_{key}_{s}B.png"
                echo_chart(os.path.join(out, name), cells, servers,
                           args.conns, s, key, scale, ylabel,
                           f"Echo, {s}-byte messages: {what} by connection "
                           f"count", logy)
                w("")
                w(f"![echo {what}, {s}-byte messages]({name})")
        w("")
        lines.extend(tables)
    if micro_runs:
        runs = with_timer_rates(micro_runs)
        runtimes = list(meta["runtimes"])
        w("")
        w("## Microbenchmarks (unpinned)")
        w("")
        w("One process per run. spawn_many: the root task spawns N tasks "
          "that each decrement a shared counter; tasks/s = N / time to the "
          "last (N is each program's default: 1,000,000 for C, Rust and Go, "
          "200,000 for Python and Lua). timers: 100,000 tasks each sleep a "
          "pseudo-random 0–100 ms; timers/s = N / wall time from the first "
          "spawn to the last wake (the longest sleep, 100 ms, caps it at "
          "1,000,000/s); overshoot = wake time − (sleep call + duration), "
          "µs. Every runtime here takes longer to start 100,000 sleeps than "
          "the longest sleep, so overshoot mostly measures how long expired "
          "timers wait behind tasks not yet started.")
        w("")
        w("![spawn throughput](spawn.png)")
        w("")
        w("![timer throughput and p99 overshoot](timers.png)")
        med, _ = peer_bench.micro_tables(
            w, runs, lambda bench: [n for n in runtimes if any(
                x["runtime"] == n and x["bench"] == bench for x in runs)],
            BENCHES, HEADLINES, [r for r in MICRO_RATIOS
                                 if r[1] in runtimes and r[2] in runtimes],
            "Micro ratios (tasks/s or timers/s; above 1x: the first is "
            "faster)",
            f"Paired: the median of each repetition's ratio, over "
            f"{meta['reps']} repetition(s).")
        micro_chart(os.path.join(out, "spawn.png"), med, runtimes,
                    [("spawn_many", "tasks_per_sec", 1, "tasks / s (log)",
                      human, True)],
                    "spawn_many: spawn throughput (higher is better)")
        micro_chart(os.path.join(out, "timers.png"), med, runtimes,
                    [("timers", "timers_per_sec", 1,
                      "timers / s = 100,000 / wall time", human, False),
                     ("timers", "overshoot_p99_us", 1e-3,
                      "p99 overshoot (log; lower is better)", ms, True)],
                    "timers: 100,000 sleeps of 0–100 ms")
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    log(f"wrote {os.path.join(out, 'REPORT.md')} and its charts")


# ------------------------------------------------------------------ main

def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--quick", action="store_true",
                    help="1 rep, 2 s per echo run, 10 and 1000 connections")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=int,
                    help="measured seconds per echoload run (max 30; "
                         "default 5, --quick 2)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unmeasured seconds per echoload run (max 10)")
    ap.add_argument("--conns", help='connection counts (default '
                    '"10 100 1000", --quick "10 1000")')
    ap.add_argument("--sizes", default="64",
                    help='message sizes in bytes (default "64")')
    ap.add_argument("--only", default=".",
                    help="regex: only the servers and runtimes it matches")
    ap.add_argument("--port-base", type=int, default=20100)
    ap.add_argument("--out", default=OUT,
                    help="folder for REPORT.md, the PNGs and raw.jsonl")
    ap.add_argument("--from", dest="source", metavar="RAW",
                    help="redraw from a raw.jsonl; runs nothing")
    args = ap.parse_args()
    q = args.quick
    args.reps = args.reps or (1 if q else 3)
    args.duration = args.duration or (2 if q else 5)
    args.conns = [int(x) for x in (args.conns or ("10 1000" if q else
                                                  "10 100 1000")).split()]
    args.sizes = [int(x) for x in args.sizes.replace(",", " ").split()]
    if args.reps < 1 or not args.conns or not args.sizes:
        ap.error("need --reps >= 1 and at least one conns and size")
    if not 1 <= args.duration <= 30 or not 0 <= args.warmup <= 10:
        ap.error("echoload takes --duration 1..30 and --warmup 0..10")
    return args


def redraw(args):
    meta, echo_runs, micro_runs = None, [], []
    with open(args.source) as f:
        for line in f:
            x = json.loads(line)
            kind = x.pop("kind")
            if kind == "meta":
                meta = x
            else:
                (echo_runs if kind == "echo" else micro_runs).append(x)
    if meta is None:
        sys.exit(f"{args.source}: no meta line")
    os.makedirs(args.out, exist_ok=True)
    report(meta, echo_runs, micro_runs, args.out)


def main():
    args = parse_args()
    if args.source:
        return redraw(args)
    started = time.time()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [py.BINDINGS] + [p for p in os.environ.get("PYTHONPATH", "")
                         .split(os.pathsep) if p])
    os.environ["LUA_CPATH"] = f"{lua.RELEASE_DIR}/?.so;;"
    os.environ["LUA_PATH"] = f"{os.path.join(ROOT, 'examples', 'lua')}/?.lua;;"
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(LOGS, exist_ok=True)
    only = re.compile(args.only)
    loaded, skipped = {}, {}
    servers, runtimes = {}, []
    for name, (cmd, placement, panel) in SERVERS.items():
        if only.search(name):
            why = why_missing(name, shlex.split(cmd), loaded)
            if why:
                skipped[f"{name} (echo)"] = why
            else:
                servers[name] = (cmd, placement, panel)
    for name in RUNTIMES:
        if only.search(name):
            why = why_missing(name, micro_cmd(name, "timers"), loaded)
            if why:
                skipped[f"{name} (micro)"] = why
            else:
                runtimes.append(name)
    for n, why in skipped.items():
        log(f"WARNING: not running {n}: {why}")
    if servers and not os.access(ec.ECHOLOAD, os.X_OK):
        sys.exit(f"echoload missing at {ec.ECHOLOAD} (scripts/bench_report.sh "
                 "builds it)")

    peer_bench.stop_on_signals()
    echo_runs, micro_runs, interrupted = [], [], False
    try:
        if servers:
            echo_runs, interrupted = peer_bench.run_echo(
                args, {n: v[:2] for n, v in servers.items()}, LOGS)
        if runtimes and not interrupted:
            micro_runs, interrupted = peer_bench.run_micro(
                args.reps, runtimes, BENCHES, micro_cmd, LOGGED)
    finally:
        peer_bench.restore_signals()

    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "host": host(),
            "quick": args.quick, "reps": args.reps,
            "duration": args.duration, "warmup": args.warmup,
            "conns": args.conns, "sizes": args.sizes,
            "servers": {n: {"command": c, "placement": p, "panel": g}
                        for n, (c, p, g) in servers.items()},
            "runtimes": {n: RUNTIMES[n] for n in runtimes},
            "skipped": skipped, "interrupted": interrupted,
            "elapsed_s": round(time.time() - started)}
    raw = os.path.join(args.out, "raw.jsonl")
    with open(raw, "w") as f:
        for kind, xs in (("meta", [meta]), ("echo", echo_runs),
                         ("micro", micro_runs)):
            for x in xs:
                f.write(json.dumps(dict(kind=kind, **x)) + "\n")
    log(f"raw runs written to {raw}; logs in {LOGS}")
    report(meta, echo_runs, micro_runs, args.out)
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
