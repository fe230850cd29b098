"""What bench/py_compare.py, bench/lua_compare.py and bench/report.py
share: CPU placement for bench/echo_compare.py's Server and echoload, the
interleaved echo and microbenchmark loops, paired ratios, goal marks, and
the echo and microbenchmark tables of their Markdown reports."""
import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time

import echo_compare as ec

MICRO_TIMEOUT = 300  # seconds for one microbenchmark process


def all_cpus():
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))


def place(placement):
    """Points echo_compare's Server and echoload at the placement's CPUs:
    "split" pins the server to CPU 0 and echoload to CPU 1; "shared" gives
    both every CPU (the same as not pinning them)."""
    if placement == "split":
        ec.SERVER_CPU, ec.CLIENT_CPU = "0", "1"
    else:
        ec.SERVER_CPU = ec.CLIENT_CPU = all_cpus()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_signals():
    """SIGTERM, and SIGINT even where the shell started us with it ignored,
    raise KeyboardInterrupt, which ends run_echo and run_micro early (they
    stop their server first); restore_signals() undoes it."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)


def restore_signals():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_echo(args, servers, logdir, after_block=None):
    """The echo matrix, interleaved: every repetition starts every server
    once (order reversed every second repetition) in its placement, runs
    echoload once per args.conns x args.sizes and stops the server by PID.
    servers maps a name to (command with PORT, placement). after_block(name,
    rep, started, logpath) runs after each server stops. Returns the runs
    and whether SIGINT/SIGTERM (as KeyboardInterrupt) cut it short."""
    runs = []
    order = list(servers)
    ports = {"next": args.port_base}
    current = None
    interrupted = False
    ec.log(f"echo: {', '.join(order)}; conns {args.conns} sizes {args.sizes}; "
           f"{args.duration} s + {args.warmup} s warm-up; {args.reps} rep(s), "
           f"interleaved")
    try:
        for rep in range(args.reps):
            for name in (order[::-1] if rep % 2 else order):
                cmd, placement = servers[name]
                place(placement)
                port = ec.fresh_port(ports)
                argv = [t.replace("PORT", str(port)) for t in shlex.split(cmd)]
                ec.log(f"rep {rep + 1}/{args.reps}: {name} ({placement}) on "
                       f"127.0.0.1:{port}: {' '.join(argv)}")
                logpath = os.path.join(logdir, f"server-{name}.log")
                current = ec.Server(name, argv, logpath)
                started = current.start(port)
                for c in args.conns:
                    for s in args.sizes:
                        run = {"server": name, "placement": placement,
                               "rep": rep + 1, "port": port, "conns": c,
                               "size": s, "argv": argv, "rc": None, "r": None}
                        runs.append(run)
                        if not started:
                            run["note"] = "server did not start"
                            continue
                        if not current.alive():
                            run["note"] = "server died"
                            ec.log(f"  {name} died (see {current.logpath})")
                            continue
                        rc, r, err = ec.echoload(port, c, s, args,
                                                 current.proc.pid)
                        run["rc"], run["r"] = rc, r
                        if r is None:
                            run["note"] = err
                            ec.log(f"  {name} c={c} s={s}: echoload rc {rc}, "
                                   f"no result: {err}")
                        else:
                            e = ec.efficiency(r)
                            ec.log(f"  {name:<20} c={c:<4} s={s:<5} "
                                   f"rps={r.get('rps', 0):,.0f} "
                                   f"p99={r.get('p99_us')}us "
                                   f"err={r.get('errors')} "
                                   f"mis={r.get('mismatches')} "
                                   f"cli={r.get('client_cpu_pct')}% "
                                   f"srv={r.get('server_cpu_pct')}% "
                                   f"eff={'-' if e is None else f'{e:,.0f}'}")
                        time.sleep(0.3)
                current.stop()
                current = None
                if after_block:
                    after_block(name, rep + 1, started, logpath)
    except KeyboardInterrupt:
        interrupted = True
        ec.log("interrupted; stopping the server")
        if runs and runs[-1]["rc"] is None and "note" not in runs[-1]:
            runs.pop()  # the echoload run that was cut short
    finally:
        if current is not None:
            current.stop()
        place("split")
    return runs, interrupted


def run_micro(reps, runtimes, benches, cmd_of, headlines):
    """The microbenchmarks, one process per run, interleaved: for each
    repetition and benchmark every runtime once (order reversed every second
    repetition). cmd_of(runtime, bench) is the argv, or None where that
    runtime lacks that benchmark; headlines[bench] = (field, higher is
    better, unit, other fields) names what is logged. Returns the runs and
    whether SIGINT/SIGTERM (as KeyboardInterrupt) cut it short."""
    runs = []
    interrupted = False
    ec.log(f"micro: {', '.join(runtimes)}; {', '.join(benches)}; "
           f"{reps} rep(s), interleaved")
    try:
        for rep in range(reps):
            for bench in benches:
                field = headlines[bench][0]
                names = [n for n in runtimes if cmd_of(n, bench) is not None]
                for name in (names[::-1] if rep % 2 else names):
                    cmd = cmd_of(name, bench)
                    rc, r, err = run_one_micro(cmd)
                    run = {"runtime": name, "bench": bench, "rep": rep + 1,
                           "argv": cmd, "rc": rc, "r": r}
                    if r is None:
                        run["note"] = err
                        ec.log(f"  {name} {bench}: rc {rc}, no result: {err}")
                    else:
                        extra = " ".join(f"{f}={r.get(f)}"
                                         for f in headlines[bench][3])
                        ec.log(f"  rep {rep + 1} {bench:<10} {name:<20} "
                               f"{field}={r.get(field)} {extra}")
                    runs.append(run)
    except KeyboardInterrupt:
        interrupted = True
        ec.log("interrupted")
    return runs, interrupted


def goal_mark(value, goal):
    if goal is None or value is None:
        return ""
    op, x = goal
    return " ✓" if (value >= x if op == ">=" else value <= x) else " ✗"


def run_one_micro(cmd):
    p = subprocess.Popen(cmd, cwd=ec.ROOT, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=ec._die_with_parent)
    try:
        stdout, stderr = p.communicate(timeout=MICRO_TIMEOUT)
    except subprocess.TimeoutExpired:
        return -1, None, f"timed out after {MICRO_TIMEOUT} s"
    finally:
        if p.poll() is None:
            p.kill()
            try:
                p.communicate(timeout=5)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                pass
    lines = stdout.strip().splitlines()
    try:
        r = json.loads(lines[-1]) if lines else None
    except ValueError:
        r = None
    if p.returncode != 0:
        r = None
    return p.returncode, r, stderr.strip()[-500:]


def micro_paired(runs, bench, a, b, field):
    by_rep = {}
    for x in runs:
        if x["bench"] == bench and x["r"] is not None:
            v = x["r"].get(field)
            if v is not None:
                by_rep.setdefault(x["rep"], {})[x["runtime"]] = v
    ratios = [d[a] / d[b] for d in by_rep.values()
              if a in d and b in d and d[b]]
    return (statistics.median(ratios) if ratios else None), len(ratios)


def micro_tables(w, runs, names_of, benches, headlines, ratios, ratio_title,
                 footnote):
    """Writes one table per benchmark (runtimes names_of(bench)) and the
    ratio table; returns the medians {(runtime, bench, field): value} and
    the ratio rows."""
    med = {}
    for bench in benches:
        field, higher, unit, others = headlines[bench]
        w("")
        w(f"### {bench}")
        w("")
        head = ["runtime", f"{field} ({unit}, {'higher' if higher else 'lower'}"
                f" is better)"] + others + ["failed runs"]
        w("| " + " | ".join(head) + " |")
        w("|---|" + "---:|" * (len(head) - 1))
        for name in names_of(bench):
            rs = [x for x in runs if x["runtime"] == name and x["bench"] == bench]
            ok = [x["r"] for x in rs if x["r"] is not None]
            row = [name]
            for i, f in enumerate([field] + others):
                vals = [r[f] for r in ok if r.get(f) is not None]
                m = statistics.median(vals) if vals else None
                med[name, bench, f] = m
                if m is None:
                    row.append("–")
                elif i == 0:
                    row.append(f"{m:,.1f} [{min(vals):,.1f}–{max(vals):,.1f}]"
                               if not higher else
                               f"{m:,.0f} [{min(vals):,.0f}–{max(vals):,.0f}]")
                else:
                    row.append(f"{m:,.1f}")
            row.append(str(len(rs) - len(ok)))
            w("| " + " | ".join(row) + " |")
    table = []
    if ratios:
        w("")
        w(f"### {ratio_title}")
        w("")
        w("| benchmark | ratio | goal | of the medians | paired |")
        w("|---|---|---|---:|---:|")
        for bench, a, b, goal in ratios:
            field, higher = headlines[bench][:2]
            x, y = med.get((a, bench, field)), med.get((b, bench, field))
            m = x / y if x is not None and y else None
            paired, n = micro_paired(runs, bench, a, b, field)
            table.append({"bench": bench, "ratio": f"{a} / {b}",
                          "field": field, "of_medians": m, "paired": paired,
                          "paired_n": n, "goal": goal})
            w(f"| {bench} | {a} / {b} {field} | "
              f"{'–' if goal is None else f'{goal[0]} {goal[1]}x'} | "
              f"{'–' if m is None else f'{m:.2f}x'} | "
              f"{'–' if paired is None else f'{paired:.2f}x'}"
              f"{goal_mark(paired if paired is not None else m, goal)} |")
        w("")
        w(footnote)
    return med, table


def echo_tables(w, runs, servers, args, echo_ratios):
    """Writes the echo tables (one per message size) and the ratio table;
    returns echo_compare's summary cells and the ratio rows. servers maps a
    name to (argv, placement)."""
    order = list(servers)
    cells = ec.summarize(runs, order, args.conns, args.sizes)
    k = ec.k
    w("## Echo (echoload, 1 client thread)")
    w("")
    w(f"{args.duration} s measured + {args.warmup} s warm-up per run, medians "
      f"of {args.reps} interleaved rep(s). split: server on CPU 0, echoload "
      f"on CPU 1; shared: neither pinned. rps: k round trips/s, median "
      f"[min–max] (‡: echoload ≥ 90% of its core). eff: k requests per "
      f"second of server CPU (server CPU µs per request). p99: µs.")
    for s in args.sizes:
        w("")
        w(f"### {s}-byte messages")
        w("")
        w("| server | placement | conns | rps k | eff k (µs/req) | p99 µs "
          "| server CPU % | echoload CPU % | errors / mismatches |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for name in order:
            for c in args.conns:
                x = cells[name, c, s]
                if x["rps"] is None:
                    rps = "–"
                else:
                    mark = "‡" if (x["client_cpu"] or 0) >= 90 else ""
                    rps = (f"{k(x['rps'])} [{k(x['rps_min'])}–"
                           f"{k(x['rps_max'])}]{mark}")
                eff = ("–" if x["eff"] is None else
                       f"{k(x['eff'])} ({1e6 / x['eff']:.2f})")
                p99 = "–" if x["p99"] is None else f"{x['p99']:,.0f}"
                srv = "–" if x["server_cpu"] is None else f"{x['server_cpu']:.0f}"
                cli = "–" if x["client_cpu"] is None else f"{x['client_cpu']:.0f}"
                tail = f"{x['errors']} / {x['mismatches']}"
                if x["failed"]:
                    tail += f" ({x['failed']} failed run(s))"
                w(f"| {name} | {servers[name][1]} | {c} | {rps} | {eff} | {p99} "
                  f"| {srv} | {cli} | {tail} |")
    ratios = [r for r in echo_ratios if r[1] in servers and r[2] in servers]
    w("")
    w("### Echo ratios: of the medians / paired (median of each repetition's "
      "ratio)")
    w("")
    table = []
    if not ratios:
        w("No ratio: each needs both of its servers.")
    else:
        cols = [(s, c) for s in args.sizes for c in args.conns]
        w("| ratio | goal | " + " | ".join(f"c={c} {s} B" for s, c in cols)
          + " |")
        w("|---|---|" + "---:|" * len(cols))
        for label, a, b, field, goal in ratios:
            row = [label, "–" if goal is None else f"{goal[0]} {goal[1]}x"]
            for s, c in cols:
                x, y = cells[a, c, s][field], cells[b, c, s][field]
                med = x / y if x and y else None
                paired, n = ec.paired_ratio(runs, a, b, c, s, field)
                table.append({"ratio": label, "field": field, "conns": c,
                              "size": s, "of_medians": med, "paired": paired,
                              "paired_n": n, "goal": goal})
                row.append(("–" if med is None else f"{med:.2f}x") + " / "
                           + ("–" if paired is None else f"{paired:.2f}x")
                           + goal_mark(paired if paired is not None else med,
                                       goal))
            w("| " + " | ".join(row) + " |")
        w("")
        w("✓ / ✗: the paired ratio meets / misses the goal.")
    return cells, table


# ------------------------------------------------------- command line


def compare_arg_parser(doc, conns, servers, default_servers, runtimes,
                       benches, port_base):
    """The options py_compare and lua_compare share; each adds its own
    (--spawn-n, ...) and then calls compare_parse."""
    ap = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(doc.split("\n\n")[1:]))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5,
                    help="measured seconds per echoload run (max 30)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unmeasured seconds per echoload run (max 10)")
    ap.add_argument("--conns", default=conns,
                    help=f'echo connection counts (default "{conns}")')
    ap.add_argument("--sizes", default="64 4096",
                    help='echo message sizes in bytes (default "64 4096")')
    ap.add_argument("--servers", default=",".join(default_servers),
                    help=f"echo servers (default {','.join(default_servers)};"
                         f" known: {','.join(servers)})")
    ap.add_argument("--runtimes", default=",".join(runtimes),
                    help=f"micro runtimes (default all: {','.join(runtimes)})")
    ap.add_argument("--benches", default=benches,
                    help=f"microbenchmarks (default {benches})")
    ap.add_argument("--spawn-n", type=int, default=200000)
    ap.add_argument("--timers-n", type=int, default=100000)
    ap.add_argument("--yield-n", type=int, default=1000,
                    help="yields per task in yield_many (1000 tasks)")
    ap.add_argument("--skip-echo", action="store_true")
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--port-base", type=int, default=port_base)
    ap.add_argument("--json", metavar="FILE", help="save the raw runs here")
    return ap


def _names(text):
    return [n for n in text.replace(" ", "").split(",") if n]


def compare_parse(ap, servers, runtimes, headlines, bench_note=""):
    """Parses and checks compare_arg_parser's options: returns args (conns,
    sizes and benches as lists), the chosen servers {name: spec} and the
    chosen runtimes [name]."""
    args = ap.parse_args()
    args.conns = [int(x) for x in args.conns.replace(",", " ").split()]
    args.sizes = [int(x) for x in args.sizes.replace(",", " ").split()]
    args.benches = _names(args.benches)
    if args.reps < 1 or not args.conns or not args.sizes:
        ap.error("need --reps >= 1 and at least one conns and size")
    if not 1 <= args.duration <= 30 or not 0 <= args.warmup <= 10:
        ap.error("echoload takes --duration 1..30 and --warmup 0..10")
    for b in args.benches:
        if b not in headlines:
            ap.error(f"unknown benchmark {b!r} (known: {', '.join(headlines)})"
                     + bench_note)
    for kind, chosen, known in (("server", args.servers, servers),
                                ("runtime", args.runtimes, runtimes)):
        for name in _names(chosen):
            if name not in known:
                ap.error(f"unknown {kind} {name!r} (known: {', '.join(known)})")
    return (args, {n: servers[n] for n in _names(args.servers)},
            _names(args.runtimes))


# ----------------------------------------------------------- the output


def echo_record(args, servers, skipped, runs, cells, table, **extra):
    """The "echo" entry of a compare script's --json file."""
    return {"duration_s": args.duration, "warmup_s": args.warmup,
            "conns": args.conns, "sizes": args.sizes,
            "servers": {n: {"command": c, "placement": p}
                        for n, (c, p) in servers.items()},
            "skipped": dict(skipped), "runs": runs, **extra,
            "medians": [dict(server=n, conns=c, size=s, **v)
                        for (n, c, s), v in cells.items()],
            "ratios": table}


def micro_record(counts, runtimes, skipped, runs, medians, table):
    """The "micro" entry of a compare script's --json file; counts holds
    the benches and their N."""
    return {**counts, "runtimes": runtimes, "skipped": dict(skipped),
            "runs": runs, "medians": medians, "ratios": table}


def skipped_section(title, skipped):
    return f"## {title}\n\nSkipped: " + "; ".join(
        f"{n} ({why})" for n, why in skipped) + "."


def save_and_print(args, parts, saved, interrupted):
    """Writes --json, prints the report, and exits 130 when interrupted."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(saved, f, indent=1)
        ec.log(f"raw runs written to {args.json}")
    print("\n\n".join(parts))
    if interrupted:
        print("\n(Interrupted: partial results.)")
        sys.exit(130)
