"""What bench/py_compare.py and bench/lua_compare.py share: CPU placement
for bench/echo_compare.py's Server and echoload, running one
microbenchmark process, paired ratios, goal marks, and the microbenchmark
tables of their Markdown reports."""
import json
import os
import statistics
import subprocess

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
