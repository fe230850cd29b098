#!/usr/bin/env python3
"""Runs treadle's TLS echo server beside the same server written with
OpenSSL on bare epoll, under tlsload, interleaved, and prints medians and
ratios as Markdown (issue 14: efficiency >= 0.95x at 100 connections).

    bench/tls_compare.py [--reps 5] [--conns "100"] [--size 64]
                         [--duration 5] [--warmup 1] [--port-base 19300]
                         [--instructions N] [--syscalls N] [--json FILE]

Servers (PORT, CERT and KEY are filled in at every start):

    treadle-tls  build-release/examples/c/tls_echo_server CERT KEY PORT
                 (current_thread, one task per connection)
    epoll-tls    build-release/bench/tls_echo_epoll CERT KEY PORT
                 (one thread, level-triggered epoll, OpenSSL's socket BIO)

Both use one throwaway certificate made here with the openssl command (EC
P-256, CN=localhost), and OpenSSL's defaults (TLS 1.3,
TLS_AES_256_GCM_SHA384). Placement as bench/echo_compare.py: the server
under `taskset -c 0`, tlsload under `taskset -c 1` with --server-pid.
Every repetition runs both servers (order reversed on every second one).
Efficiency is rps / (server CPU% / 100): requests per second of server
CPU time; 1e6 / efficiency is the server's CPU µs per request. On this
shared 2-core host rps drifts by 30% and more; efficiency, and the counts
below, are the figures to compare.

--instructions N runs each server once more under callgrind
(../shared/bench/tools/instructions.sh's way) for N requests and for 0
(the handshakes alone) and prints (Ir(N) - Ir(0)) / N: user-space
instructions per request. --syscalls N runs each under `strace -c -f`
for N requests and prints the system calls per request (handshakes and
start-up included, which N makes small).

Builds what is missing with the release preset (tls_echo_server, tlsload,
tls_echo_epoll).
"""
import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import echo_compare as ec  # noqa: E402  (Server, ports, logging)

ROOT = ec.ROOT
REL = os.path.join(ROOT, "build-release")
TREADLE = os.path.join(REL, "examples", "c", "tls_echo_server")
EPOLL = os.path.join(REL, "bench", "tls_echo_epoll")
TLSLOAD = os.path.join(REL, "bench", "tlsload")

SERVERS = {
    "treadle-tls": f"{TREADLE} CERT KEY PORT",
    "epoll-tls": f"{EPOLL} CERT KEY PORT",
}
A, B = "treadle-tls", "epoll-tls"


def build(logdir):
    if all(os.path.exists(p) for p in (TREADLE, EPOLL, TLSLOAD)):
        return
    ec.log("building tls_echo_server, tlsload, tls_echo_epoll (release preset)")
    if ec.sh(["cmake", "--preset", "release"], ROOT, logdir, "treadle"):
        ec.sh(["cmake", "--build", "--preset", "release", "-j2", "--target",
               "tls_echo_server", "tlsload", "tls_echo_epoll"],
              ROOT, logdir, "treadle")
    for p in (TREADLE, EPOLL, TLSLOAD):
        if not os.access(p, os.X_OK):
            sys.exit(f"{p} missing (TLS not built? see {logdir})")


def make_cert(d):
    key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"],
                   check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return cert, key


def argv_of(name, port, cert, key, prefix=()):
    return list(prefix) + [t.replace("PORT", str(port)).replace("CERT", cert)
                           .replace("KEY", key)
                           for t in shlex.split(SERVERS[name])]


def tlsload(port, conns, size, extra, server_pid, limit, pin=True):
    cmd = (["taskset", "-c", ec.CLIENT_CPU] if pin else []) + [
        TLSLOAD, "--port", str(port), "--conns", str(conns), "--size",
        str(size), "--server-pid", str(server_pid)] + extra
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=limit)
    lines = p.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None, p.stderr[-500:]
    except ValueError:
        return None, p.stderr[-500:]


def wait_listening(logpath, proc, timeout=60.0):
    """The port the server printed ("listening on 127.0.0.1:PORT")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with open(logpath) as f:
                m = re.search(r"listening on [0-9.]+:(\d+)", f.read())
            if m:
                return int(m.group(1))
        except OSError:
            pass
        time.sleep(0.1)
    return None


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def stop(proc, traced=False):
    """SIGINT (both servers print "bye" and exit); under strace, to the
    traced server, so that strace writes its summary as it ends."""
    if proc.poll() is None:
        for pid in (children(proc.pid) if traced else []):
            os.kill(pid, signal.SIGINT)
        if traced:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def counted_run(name, prefix, cert, key, conns, size, requests, logdir):
    """Starts the server under `prefix` (callgrind, strace) on port 0, runs
    tlsload for `requests` round trips (unpinned), stops it; the log."""
    logpath = os.path.join(logdir, f"counted-{name}-{requests}.log")
    with open(logpath, "w") as logf:
        proc = subprocess.Popen(argv_of(name, 0, cert, key, prefix), cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT,
                                preexec_fn=ec._die_with_parent)
        try:
            port = wait_listening(logpath, proc)
            if port is None:
                sys.exit(f"{name} did not start under {prefix[0]} ({logpath})")
            extra = ["--duration", "30"]
            extra += ["--requests", str(requests)] if requests else \
                ["--requests", "1"]
            r, err = tlsload(port, conns, size, extra, proc.pid, 120, False)
            if r is None or r.get("errors"):
                sys.exit(f"tlsload failed against {name}: {err}")
        finally:
            stop(proc, traced=prefix[0] == "strace")
    return logpath, r


def instructions(name, cert, key, conns, size, n, logdir):
    """User-space instructions per request under callgrind."""
    irs = []
    for requests in (1, n):
        out = os.path.join(logdir, f"cg-{name}-{requests}.out")
        counted_run(name, ["valgrind", "--tool=callgrind",
                           f"--callgrind-out-file={out}"],
                    cert, key, conns, size, requests, logdir)
        text = subprocess.run(["callgrind_annotate", out], capture_output=True,
                              text=True).stdout
        m = re.search(r"([0-9,]+) \(100.0%\)\s+PROGRAM TOTALS", text)
        irs.append(int(m.group(1).replace(",", "")))
    return (irs[1] - irs[0]) / (n - 1), irs


def syscalls(name, cert, key, conns, size, n, logdir):
    """System calls per request (whole run) and the top calls, strace -c."""
    out = os.path.join(logdir, f"strace-{name}.txt")
    counted_run(name, ["strace", "-c", "-f", "-o", out], cert, key, conns,
                size, n, logdir)
    calls, top = 0, {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                c = int(parts[3])
                calls += c
                top[parts[-1]] = c
    return calls / n, dict(sorted(top.items(), key=lambda kv: -kv[1])[:4])


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--conns", default="100")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--port-base", type=int, default=19300)
    ap.add_argument("--instructions", type=int, default=0, metavar="N")
    ap.add_argument("--syscalls", type=int, default=0, metavar="N")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    args.conns = [int(x) for x in args.conns.replace(",", " ").split()]
    if args.reps < 1 or not args.conns:
        ap.error("need --reps >= 1 and a connection count")
    return args


def fmt(x, digits=1):
    return "–" if x is None else f"{x / 1000:,.{digits}f}"


def main():
    args = parse_args()
    logdir = tempfile.mkdtemp(prefix="tls_compare-")
    ec.log(f"logs in {logdir}")
    build(logdir)
    cert, key = make_cert(logdir)
    runs = []
    ports = {"next": args.port_base}
    order = list(SERVERS)
    try:
        for rep in range(args.reps):
            for name in (order[::-1] if rep % 2 else order):
                port = ec.fresh_port(ports)
                argv = argv_of(name, port, cert, key)
                srv = ec.Server(name, argv,
                                os.path.join(logdir, f"server-{name}.log"))
                started = srv.start(port)
                for c in args.conns:
                    run = {"server": name, "rep": rep + 1, "conns": c,
                           "size": args.size, "r": None}
                    runs.append(run)
                    if not started or not srv.alive():
                        run["note"] = "server not running"
                        continue
                    r, err = tlsload(port, c, args.size,
                                     ["--duration", str(args.duration),
                                      "--warmup", str(args.warmup)],
                                     srv.proc.pid,
                                     args.duration + args.warmup + 90)
                    run["r"] = r
                    if r is None:
                        ec.log(f"  {name} c={c}: no result: {err}")
                        continue
                    e = ec.efficiency(r)
                    ec.log(f"  rep {rep + 1} {name:<12} c={c:<4} "
                           f"rps={r['rps']:,.0f} srv={r['server_cpu_pct']}% "
                           f"cli={r['client_cpu_pct']}% "
                           f"eff={'-' if e is None else f'{e:,.0f}'} "
                           f"err={r['errors']} mis={r['mismatches']}")
                    time.sleep(0.3)
                srv.stop()
    except KeyboardInterrupt:
        ec.log("interrupted: reporting what ran")

    counts = {}
    for name in order:
        if args.syscalls:
            ec.log(f"strace -c -f: {name}, {args.syscalls} requests")
            counts.setdefault(name, {})["syscalls"] = syscalls(
                name, cert, key, args.conns[0], args.size, args.syscalls,
                logdir)
        if args.instructions:
            ec.log(f"callgrind: {name}, 1 and {args.instructions} requests")
            counts.setdefault(name, {})["instructions"] = instructions(
                name, cert, key, args.conns[0], args.size, args.instructions,
                logdir)

    cells = ec.summarize(runs, order, args.conns, [args.size])
    out = [f"TLS echo, {args.size}-byte messages, server on CPU "
           f"{ec.SERVER_CPU}, tlsload on CPU {ec.CLIENT_CPU}; {args.duration}"
           f" s + {args.warmup} s warm-up; medians of {args.reps} interleaved "
           "rep(s). rps: k round trips/s, median [min–max]; eff: k requests "
           "per server CPU-second (server CPU µs per request).", "",
           "| server | conns | rps k | eff k (µs/req) | p99 µs | server CPU % "
           "| errors / mismatches |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in order:
        for c in args.conns:
            x = cells[name, c, args.size]
            eff = "–" if x["eff"] is None else \
                f"{fmt(x['eff'])} ({1e6 / x['eff']:.2f})"
            p99 = "–" if x["p99"] is None else f"{x['p99']:,.0f}"
            cpu = "–" if x["server_cpu"] is None else f"{x['server_cpu']:.1f}"
            out.append(f"| {name} | {c} | {fmt(x['rps'])} [{fmt(x['rps_min'])}"
                       f"–{fmt(x['rps_max'])}] | {eff} | {p99} | {cpu} | "
                       f"{x['errors']} / {x['mismatches']} |")
    out += ["", "| ratio treadle-tls / epoll-tls | conns | of the medians | "
            "paired (median of each rep's ratio) |", "|---|---:|---:|---:|"]
    for field, label in (("eff", "efficiency"), ("rps", "rps")):
        for c in args.conns:
            x, y = cells[A, c, args.size][field], cells[B, c, args.size][field]
            pr, n = ec.paired_ratio(runs, A, B, c, args.size, field)
            out.append(f"| {label} | {c} | "
                       f"{'–' if not (x and y) else f'{x / y:.3f}x'} | "
                       f"{'–' if pr is None else f'{pr:.3f}x'} (n={n}) |")
    if counts:
        out += ["", f"Counts ({args.conns[0]} connections, unpinned):", "",
                "| server | instructions / request | syscalls / request | "
                "top syscalls (whole run) |", "|---|---:|---:|---|"]
        for name in order:
            d = counts.get(name, {})
            ins = d.get("instructions")
            sc = d.get("syscalls")
            out.append(f"| {name} | {'–' if ins is None else f'{ins[0]:,.0f}'}"
                       f" | {'–' if sc is None else f'{sc[0]:.2f}'} | "
                       f"{'–' if sc is None else sc[1]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "runs": runs, "counts": counts,
                       "args": vars(args)}, f, indent=1)
    print("\n".join(out))


if __name__ == "__main__":
    main()
