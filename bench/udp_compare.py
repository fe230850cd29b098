#!/usr/bin/env python3
"""UDP echo: treadle's examples/c/udp_echo (recvmmsg/sendmmsg batches of
32) beside Tokio's (bench/rust/src/bin/udp_echo_tokio.rs: one task looping
recv_from/send_to) under bench/udpload, interleaved, and prints medians and
ratios as Markdown.

    bench/udp_compare.py [--servers treadle-current,tokio-current,...]
                         [--conns "64"] [--size 64] [--reps 5]
                         [--duration 4] [--warmup 1] [--json FILE]
                         [--syscalls] [--instructions]

Servers (PORT is replaced by a fresh port at every start):

    treadle-current  build-release/examples/c/udp_echo PORT
    tokio-current    build-bench/rust-target/release/udp_echo_tokio PORT current
    tokio-multi2     build-bench/rust-target/release/udp_echo_tokio PORT multi 2

    py-treadle-current  examples/python/udp_echo_server.py PORT on treadle's
                        asyncio loop (asyncio_on_treadle.py), current_thread
    py-treadle-multi2   the same, multi_thread with 2 workers
    py-asyncio          the same on asyncio's own loop
    py-uvloop           the same on uvloop's (uvloop.install())

(udp_echo has a current_thread mode only.) Placement as
bench/echo_compare.py: the server under `taskset -c 0`, udpload under
`taskset -c 1` with --server-pid. Every repetition starts every server once
(in reverse order every second time), waits until it echoes a probe, runs
udpload once per --conns value, and stops it by its PID (SIGTERM, SIGKILL
after 3 s). Efficiency is rps / (server CPU% / 100): requests per second of
server CPU; 1e6 / efficiency is the server's CPU µs per datagram echoed.

--syscalls then runs each server once more under `strace -c -f -p PID`
while udpload sends a fixed load (--conns' first value, 3 s), and divides
the calls by the datagrams the server says it echoed; without ptrace in
the way, it also counts the server's system calls with perf's syscall
tracepoints (`perf stat -e raw_syscalls:sys_enter ...`, when perf can) to
say how often the server found its socket empty (a receive that failed
with EAGAIN): the share of starved receives tells whether udpload kept the
server busy. --instructions runs each server under callgrind
(../shared/bench/tools/instructions.sh) through a fixed load and divides
its user-space instructions by the datagrams echoed.

Builds first (only what changed): treadle's release preset (udp_echo, udpload) and
the Tokio program (cargo, offline, Debian's crates, into
build-bench/rust-target).
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
REL = os.path.join(ROOT, "build-release")
UDP_ECHO = os.path.join(REL, "examples", "c", "udp_echo")
UDPLOAD = os.path.join(REL, "bench", "udpload")
TARGET = os.path.join(ROOT, "build-bench", "rust-target")
TOKIO = os.path.join(TARGET, "release", "udp_echo_tokio")
INSTRUCTIONS = os.path.join(SHARED, "tools", "instructions.sh")

PY = "/usr/bin/python3"
PY_ECHO = os.path.join(ROOT, "examples", "python", "udp_echo_server.py")
ON_TREADLE = os.path.join(ROOT, "examples", "python", "asyncio_on_treadle.py")
ON_UVLOOP = ["-c", "import runpy, sys, uvloop; uvloop.install(); "
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
SERVERS = {
    "treadle-current": [UDP_ECHO, "PORT"],
    "tokio-current": [TOKIO, "PORT", "current"],
    "tokio-multi2": [TOKIO, "PORT", "multi", "2"],
    # examples/python/udp_echo_server.py (create_datagram_endpoint, sendto
    # in datagram_received) on treadle's loop, asyncio's and uvloop's.
    "py-treadle-current": [PY, ON_TREADLE, PY_ECHO, "PORT"],
    "py-treadle-multi2": [PY, ON_TREADLE, "--flavor", "multi_thread", "--workers", "2",
                          PY_ECHO, "PORT"],
    "py-asyncio": [PY, PY_ECHO, "PORT"],
    "py-uvloop": [PY] + ON_UVLOOP + [PY_ECHO, "PORT"],
}
RATIOS = [  # (numerator, denominator, field)
    ("treadle-current", "tokio-current", "eff"),
    ("treadle-current", "tokio-current", "rps"),
    ("treadle-current", "tokio-multi2", "eff"),
    ("treadle-current", "tokio-multi2", "rps"),
    ("py-treadle-current", "py-uvloop", "eff"),
    ("py-treadle-current", "py-uvloop", "rps"),
    ("py-treadle-current", "py-asyncio", "eff"),
    ("py-treadle-current", "py-asyncio", "rps"),
    ("py-treadle-multi2", "py-uvloop", "eff"),
    ("py-treadle-multi2", "py-uvloop", "rps"),
]
SERVER_CPU, CLIENT_CPU = "0", "1"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(servers):
    """Brings the programs up to date (cmake and cargo rebuild only what
    changed; the Python extension in place, for the py- servers), so a run
    always measures the tree as it is."""
    if any(s.startswith("py-") for s in servers):
        subprocess.run(["scripts/build_python.sh"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    if not os.path.exists(os.path.join(ROOT, "build-release",
                                       "CMakeCache.txt")):
        log("configuring treadle's release preset")
        subprocess.run(["cmake", "--preset", "release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", "--preset", "release", "-j",
                    str(min(os.cpu_count() or 2, 2)), "--target", "udp_echo",
                    "udpload"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    if not any(s.startswith("tokio-") for s in servers):
        return
    cargo = os.environ.get("CARGO", "cargo")
    subprocess.run([cargo, "build", "--quiet", "--release", "--offline",
                    "--bin", "udp_echo_tokio"],
                   cwd=os.path.join(ROOT, "bench", "rust"), check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=TARGET),
                   stdout=subprocess.DEVNULL)


def probe(port, timeout):
    """True once a datagram sent to the port comes back."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                s.send(b"probe")
                if s.recv(64) == b"probe":
                    return True
            except OSError:  # ECONNREFUSED before the bind, or a timeout
                time.sleep(0.05)
    return False


class Server:
    """One server, under taskset (or a wrapper), stopped by its PID."""

    def __init__(self, name, port, wrap=None, pin=True):
        argv = [port if a == "PORT" else a for a in SERVERS[name]]
        argv = [str(a) for a in argv]
        if wrap:
            argv = wrap + argv
        if pin:
            argv = ["taskset", "-c", SERVER_CPU] + argv
        self.out = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self.out,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, PYTHONPATH=os.path.join(
                                         ROOT, "bindings", "python")))
        self.port = port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.seek(0)
        text = self.out.read()
        self.out.close()
        return text


def echoed(text):
    m = re.search(r"(?:echoed|stopped after) (\d+) datagrams", text)
    return int(m.group(1)) if m else None


def udpload(port, conns, size, duration, warmup, server_pid):
    cmd = ["taskset", "-c", CLIENT_CPU, UDPLOAD, "--port", str(port),
           "--conns", str(conns), "--size", str(size),
           "--duration", str(duration), "--warmup", str(warmup)]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True,
                         timeout=duration + warmup + 60).stdout
    return json.loads(out.strip().splitlines()[-1])


def eff(r):
    cpu = r.get("server_cpu_pct")
    return r["rps"] / (cpu / 100.0) if cpu else None


def measure(args, servers, conns_list):
    runs = []
    port = args.port_base
    for rep in range(args.reps):
        order = servers if rep % 2 == 0 else list(reversed(servers))
        for name in order:
            port += 1
            srv = Server(name, port)
            if not probe(port, 10):
                log(f"{name} did not answer on port {port}: "
                    f"{srv.stop().strip()}")
                continue
            for conns in conns_list:
                r = udpload(port, conns, args.size, args.duration,
                            args.warmup, srv.proc.pid)
                r.update(server=name, rep=rep, eff=eff(r))
                runs.append(r)
                log(f"rep {rep + 1} {name} c={conns}: "
                    f"{r['rps'] / 1e3:.1f}k rps, srv {r['server_cpu_pct']}%, "
                    f"cli {r['client_cpu_pct']}%, lost {r['lost']}, "
                    f"mismatches {r['mismatches']}")
            srv.stop()
    return runs


def k(x, digits=1):
    return "–" if x is None else f"{x / 1e3:,.{digits}f}"


def report(runs, servers, conns_list, args):
    print(f"UDP echo, {args.size}-byte datagrams: medians of {args.reps} "
          f"interleaved runs of {args.duration:g} s (after {args.warmup:g} s "
          f"of warm-up); server on CPU {SERVER_CPU}, udpload on CPU "
          f"{CLIENT_CPU}. rps: thousand round trips/s [min–max]; eff: "
          f"thousand datagrams per second of server CPU (server CPU µs per "
          f"datagram).\n")
    print("| server | conns | rps k | eff k (µs/dgram) | p50 µs | p99 µs | "
          "server CPU % | udpload CPU % | lost / late / stray / mismatches |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    cells = {}
    for name in servers:
        for c in conns_list:
            rs = [r for r in runs if r["server"] == name and r["conns"] == c]
            if not rs:
                continue
            rps = [r["rps"] for r in rs]
            effs = [r["eff"] for r in rs if r["eff"]]
            cell = {
                "rps": statistics.median(rps),
                "eff": statistics.median(effs) if effs else None,
                "p50": statistics.median(r["p50_us"] for r in rs),
                "p99": statistics.median(r["p99_us"] for r in rs),
                "srv": statistics.median(r["server_cpu_pct"] or 0 for r in rs),
                "cli": statistics.median(r["client_cpu_pct"] for r in rs),
            }
            cells[(name, c)] = cell
            e = cell["eff"]
            print(f"| {name} | {c} | {k(cell['rps'])} [{k(min(rps))}–"
                  f"{k(max(rps))}] | {k(e)} ({1e6 / e:.2f}) | "
                  f"{cell['p50']:,.0f} | {cell['p99']:,.0f} | "
                  f"{cell['srv']:.0f} | {cell['cli']:.0f} | "
                  f"{sum(r['lost'] for r in rs)} / "
                  f"{sum(r['late'] for r in rs)} / "
                  f"{sum(r.get('stray', 0) for r in rs)} / "
                  f"{sum(r['mismatches'] for r in rs)} |")
    print("\n| ratio | " + " | ".join(f"c={c}" for c in conns_list) +
          " |\n|---|" + "---:|" * len(conns_list))
    for a, b, field in RATIOS:
        if a not in servers or b not in servers:
            continue
        row = []
        for c in conns_list:
            ca, cb = cells.get((a, c)), cells.get((b, c))
            if not ca or not cb or not ca[field] or not cb[field]:
                row.append("–")
                continue
            paired = []
            for rep in range(args.reps):
                ra = [r for r in runs if (r["server"], r["conns"], r["rep"])
                      == (a, c, rep)]
                rb = [r for r in runs if (r["server"], r["conns"], r["rep"])
                      == (b, c, rep)]
                if ra and rb and ra[0][field] and rb[0][field]:
                    paired.append(ra[0][field] / rb[0][field])
            p = f" / {statistics.median(paired):.2f}x" if paired else ""
            row.append(f"{ca[field] / cb[field]:.2f}x{p}")
        label = "efficiency" if field == "eff" else "rps"
        print(f"| {a} / {b} {label} | " + " | ".join(row) + " |")
    print("\nRatios: of the medians / paired (the median of each "
          "repetition's ratio).")
    return cells


STRACE_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+\s+)?(\w+)$")


def strace_counts(text):
    calls = {}
    for line in text.splitlines():
        m = STRACE_LINE.match(line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = (int(m.group(1)),
                                 int(m.group(2) or 0))
    return calls


def syscalls(args, servers, conns):
    print(f"\nSystem calls per datagram echoed: `strace -c -f -p PID` over "
          f"udpload --conns {conns} --duration 3 (calls / datagrams the "
          f"server echoed; errors in brackets):\n")
    rows = []
    for i, name in enumerate(servers):
        port = args.port_base + 500 + i
        srv = Server(name, port)
        if not probe(port, 10):
            srv.stop()
            continue
        st = subprocess.Popen(["strace", "-c", "-f", "-p",
                               str(srv.proc.pid)], stderr=subprocess.PIPE,
                              text=True)
        time.sleep(0.5)
        r = udpload(port, conns, args.size, 3, 0.5, srv.proc.pid)
        st.send_signal(signal.SIGINT)
        text = st.communicate(timeout=30)[1]
        n = (echoed(srv.stop()) or 1) - 1  # less the probe
        rows.append((name, n, r, strace_counts(text)))
    names = sorted({c for _, _, _, calls in rows for c in calls},
                   key=lambda c: -max(calls.get(c, (0, 0))[0] / max(n, 1)
                                     for _, n, _, calls in rows))
    print("| syscall | " + " | ".join(n for n, *_ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for c in names:
        cells = []
        for _, n, _, calls in rows:
            v, e = calls.get(c, (0, 0))
            cells.append(f"{v / max(n, 1):.4f}" + (f" ({e / max(n, 1):.4f})"
                                                    if e else ""))
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("| **all** | " + " | ".join(
        f"**{sum(v for v, _ in calls.values()) / max(n, 1):.3f}**"
        for _, n, _, calls in rows) + " |")
    print("| datagrams echoed (under strace) | " +
          " | ".join(f"{n:,}" for _, n, _, _ in rows) + " |")
    if subprocess.run(["perf", "stat", "-e", "raw_syscalls:sys_enter",
                       "true"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        return
    events = ["raw_syscalls:sys_enter", "syscalls:sys_enter_recvmmsg",
              "syscalls:sys_exit_recvmmsg", "syscalls:sys_enter_sendmmsg",
              "syscalls:sys_enter_recvfrom", "syscalls:sys_exit_recvfrom",
              "syscalls:sys_enter_sendto", "syscalls:sys_enter_epoll_wait",
              "syscalls:sys_enter_epoll_pwait2"]
    print(f"\nWithout ptrace (perf stat, syscall tracepoints, all threads, "
          f"udpload --conns {conns} --duration 3), per datagram echoed; "
          f"starved: the share of receives that found the socket empty "
          f"(EAGAIN):\n")
    print("| server | rps k | datagrams | syscalls/dgram | receive calls/dgram"
          " | starved receives | epoll waits/dgram |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for i, name in enumerate(servers):
        port = args.port_base + 600 + i
        srv = Server(name, port)
        if not probe(port, 10):
            srv.stop()
            continue
        cmd = ["perf", "stat", "-x", ",", "-p", str(srv.proc.pid)]
        for ev in events:
            cmd += ["-e", ev]
            if ev.startswith("syscalls:sys_exit_"):
                cmd += ["--filter", "ret < 0"]
        pf = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        r = udpload(port, conns, args.size, 3, 0.5, srv.proc.pid)
        pf.send_signal(signal.SIGINT)
        text = pf.communicate(timeout=30)[1]
        n = (echoed(srv.stop()) or 1) - 1
        cnt = {}
        for line in text.splitlines():
            f = line.split(",")
            if len(f) > 3 and f[0].strip().isdigit():
                cnt[f[2]] = int(f[0])
        recv = (cnt.get("syscalls:sys_enter_recvmmsg", 0) +
                cnt.get("syscalls:sys_enter_recvfrom", 0))
        starved = (cnt.get("syscalls:sys_exit_recvmmsg", 0) +
                   cnt.get("syscalls:sys_exit_recvfrom", 0))
        waits = (cnt.get("syscalls:sys_enter_epoll_wait", 0) +
                 cnt.get("syscalls:sys_enter_epoll_pwait2", 0))
        print(f"| {name} | {r['rps'] / 1e3:.1f} | {n:,} | "
              f"{cnt.get('raw_syscalls:sys_enter', 0) / max(n, 1):.3f} | "
              f"{recv / max(n, 1):.4f} | "
              f"{100.0 * starved / max(recv, 1):.2f}% | "
              f"{waits / max(n, 1):.5f} |")


def instructions(args, servers, conns):
    if not os.path.exists(INSTRUCTIONS):
        log(f"{INSTRUCTIONS} not found: no instruction counts")
        return
    print(f"\nUser-space instructions per datagram echoed (callgrind, "
          f"../shared/bench/tools/instructions.sh; udpload --conns {conns} "
          f"for 5 s; start-up included, under 0.5 M). Valgrind slows the "
          f"server, which changes how full its batches are and how often "
          f"it waits: compare servers at the same --conns only.\n")
    print("| server | datagrams echoed | instructions | per datagram |")
    print("|---|---:|---:|---:|")
    for i, name in enumerate(servers):
        port = args.port_base + 700 + i
        srv = Server(name, port, wrap=[INSTRUCTIONS], pin=False)
        if not probe(port, 60):
            log(f"{name} under callgrind did not answer: {srv.stop()}")
            continue
        udpload(port, conns, args.size, 5, 0, 0)
        # SIGTERM goes to the program under valgrind (the wrapper's child).
        kids = open(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children"
                    ).read().split()
        for kid in kids:
            os.kill(int(kid), signal.SIGTERM)
        srv.proc.wait(timeout=120)
        text = srv.stop()
        n = echoed(text)
        m = re.search(r'"instructions":(\d+)', text)
        if n and m:
            ir = int(m.group(1))
            print(f"| {name} | {n:,} | {ir:,} | {ir / n:,.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--conns", default="64")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--port-base", type=int, default=19300)
    ap.add_argument("--json")
    ap.add_argument("--syscalls", action="store_true")
    ap.add_argument("--instructions", action="store_true")
    args = ap.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    for s in servers:
        if s not in SERVERS:
            sys.exit(f"unknown server {s}; known: {', '.join(SERVERS)}")
    conns_list = [int(c) for c in args.conns.split()]
    build(servers)
    log(f"uptime: {os.popen('uptime').read().strip()}")
    runs = measure(args, servers, conns_list) if args.reps > 0 else []
    if runs:
        report(runs, servers, conns_list, args)
    if args.json:
        with open(args.json, "w") as f:
            for r in runs:
                f.write(json.dumps(r) + "\n")
    if args.syscalls:
        syscalls(args, servers, conns_list[0])
    if args.instructions:
        instructions(args, servers, conns_list[0])
    log(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
