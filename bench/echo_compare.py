#!/usr/bin/env python3
"""Runs treadle's echo server beside ../shared/bench's peer echo servers
under echoload, interleaved, and prints medians and ratios as Markdown.

    bench/echo_compare.py [--servers treadle-current,c-epoll-1t,...]
                          [--extra NAME=CMD ...] [--conns "100 1000"]
                          [--sizes "64 4096"] [--reps 3] [--duration 5]
                          [--warmup 1] [--port-base 19100] [--json FILE]

Servers (PORT is replaced by a fresh port at every start; relative paths in
a command are relative to the repository root):

    treadle-current  build-release/examples/c/echo_server PORT current_thread 1
    treadle-multi2   build-release/examples/c/echo_server PORT multi_thread 2
    c-epoll-1t       <peers>/servers/c-epoll/echo_epoll PORT 1
    tokio-current    <peers>/rust/target/release/echo_tokio PORT current
    tokio-multi2     <peers>/rust/target/release/echo_tokio PORT multi 2

--extra NAME=CMD adds a server (repeatable; always run, whatever --servers
says; a built-in NAME is replaced), e.g.
    --extra 'treadle-py=/usr/bin/python3 examples/python/echo_server.py PORT current_thread 1'

Placement is run_all.sh's "split": the server under `taskset -c 0`, echoload
under `taskset -c 1` with one thread and --server-pid. Every repetition
visits every server once (order reversed on every second one), starting
it, waiting for its port, running echoload once per conns x size and
stopping it by PID (SIGTERM, SIGKILL after 3 s). Efficiency is rps / (server
CPU% / 100): requests per second of server CPU time; 1e6 / efficiency is the
server's CPU µs per request, which stays meaningful when echoload (not the
server) is the limit (‡: echoload used >= 90% of its core).

Builds what is missing: treadle's echo_server (cmake --preset release), and
in a copy of ../shared/bench at $TREADLE_PEERS_DIR (/tmp/treadle-peers)
echoload and echo_epoll (make) and echo_tokio (cargo, offline, Debian's
vendored crates). A server whose binary is still missing is skipped with a
warning. This host drifts by ~30% over minutes: compare ratios from one run.
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
PEERS = os.environ.get("TREADLE_PEERS_DIR", "/tmp/treadle-peers")
TREADLE = os.path.join(ROOT, "build-release", "examples", "c", "echo_server")
ECHOLOAD = os.path.join(PEERS, "echoload", "echoload")
EPOLL = os.path.join(PEERS, "servers", "c-epoll", "echo_epoll")
TOKIO = os.path.join(PEERS, "rust", "target", "release", "echo_tokio")

SERVERS = {
    "treadle-current": f"{TREADLE} PORT current_thread 1",
    "treadle-multi2": f"{TREADLE} PORT multi_thread 2",
    "c-epoll-1t": f"{EPOLL} PORT 1",
    "tokio-current": f"{TOKIO} PORT current",
    "tokio-multi2": f"{TOKIO} PORT multi 2",
}

# (label, numerator server, denominator server, field)
RATIOS = [
    ("treadle-current / c-epoll-1t efficiency", "treadle-current",
     "c-epoll-1t", "eff"),
    ("treadle-current / tokio-current efficiency", "treadle-current",
     "tokio-current", "eff"),
    ("treadle-current / tokio-current rps", "treadle-current",
     "tokio-current", "rps"),
    ("treadle-multi2 / tokio-multi2 efficiency", "treadle-multi2",
     "tokio-multi2", "eff"),
]

SERVER_CPU, CLIENT_CPU = "0", "1"
BUILD_TIMEOUT = 1200
START_TIMEOUT = 10.0
STOP_GRACE = 3.0


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, cwd, logdir, name):
    """Runs a build step, output to logdir/build-NAME.log; True if it worked."""
    path = os.path.join(logdir, f"build-{name}.log")
    try:
        with open(path, "a") as f:
            r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                               timeout=BUILD_TIMEOUT)
        if r.returncode == 0:
            return True
        log(f"build step failed ({' '.join(cmd)}), see {path}")
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"build step failed ({' '.join(cmd)}): {e}; see {path}")
    return False


def copy_peer(sub):
    """Copies ../shared/bench/SUB into the peers folder if it is not there
    (the shared tree is read-only, so the copy is made writable)."""
    dst = os.path.join(PEERS, sub)
    if os.path.isdir(dst):
        return
    shutil.copytree(os.path.join(SHARED, sub), dst, dirs_exist_ok=True)
    for d, _, files in os.walk(dst):
        os.chmod(d, os.stat(d).st_mode | 0o700)
        for f in files:
            p = os.path.join(d, f)
            os.chmod(p, os.stat(p).st_mode | 0o600)


def cargo():
    return (os.environ.get("CARGO") or shutil.which("cargo")
            or os.path.expanduser("~/.cargo/bin/cargo"))


def build(needed, logdir):
    """Builds the binaries in `needed` (and echoload) if they are missing."""
    if not os.path.exists(ECHOLOAD):
        copy_peer("echoload")
        sh(["make", "-C", "echoload"], PEERS, logdir, "echoload")
    if TREADLE in needed and not os.path.exists(TREADLE):
        log("building treadle echo_server (release preset)")
        if sh(["cmake", "--preset", "release"], ROOT, logdir, "treadle"):
            sh(["cmake", "--build", "--preset", "release", "-j",
                str(os.cpu_count() or 2), "--target", "echo_server"],
               ROOT, logdir, "treadle")
    if EPOLL in needed and not os.path.exists(EPOLL):
        copy_peer(os.path.join("servers", "c-epoll"))
        sh(["make", "-C", os.path.join("servers", "c-epoll")], PEERS, logdir,
           "c-epoll")
    if TOKIO in needed and not os.path.exists(TOKIO):
        copy_peer("rust")
        log("building echo_tokio (cargo --offline)")
        sh([cargo(), "build", "--release", "--offline", "--bin", "echo_tokio"],
           os.path.join(PEERS, "rust"), logdir, "tokio")


def executable(cmd):
    prog = shlex.split(cmd)[0]
    if os.sep in prog:
        return os.access(os.path.join(ROOT, prog), os.X_OK)
    return shutil.which(prog) is not None


def port_open(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _die_with_parent():
    # If this script is killed outright, its server goes with it (Linux only;
    # the flag survives the exec of taskset and of the server).
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Server:
    """One server process, started under taskset, stopped by its PID."""

    def __init__(self, name, argv, logpath):
        self.name, self.argv, self.logpath = name, argv, logpath
        self.proc = None

    def start(self, port):
        self.logf = open(self.logpath, "a")
        self.logf.write(f"$ {' '.join(self.argv)}\n")
        self.logf.flush()
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU] + self.argv, cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=self.logf,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log(f"{self.name} exited at start, rc {self.proc.returncode} "
                    f"(see {self.logpath})")
                self.stop()
                return False
            if port_open(port):
                return True
            time.sleep(0.1)
        log(f"{self.name} did not listen on {port} within {START_TIMEOUT:.0f} s")
        self.stop()
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for {STOP_GRACE:.0f} s, SIGKILL")
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log(f"{self.name} (pid {p.pid}) did not die after SIGKILL")
            except ProcessLookupError:
                pass
        self.logf.close()


def echoload(port, conns, size, args, server_pid):
    cmd = ["taskset", "-c", CLIENT_CPU, ECHOLOAD, "--host", "127.0.0.1",
           "--port", str(port), "--conns", str(conns), "--size", str(size),
           "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--threads", "1", "--server-pid", str(server_pid)]
    # echoload's own budget: 20 s to connect, alarm() 45 s past the window.
    limit = args.warmup + args.duration + 75
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=_die_with_parent)
    try:
        stdout, stderr = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        return -1, None, f"timed out after {limit} s"
    finally:
        if p.poll() is None:  # timed out or interrupted: kill and reap it
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
    return p.returncode, r, stderr.strip()[-500:]


def efficiency(r):
    cpu = r.get("server_cpu_pct")
    if not r.get("rps") or not cpu:
        return None
    return r["rps"] / (cpu / 100.0)


def fresh_port(state):
    while True:
        port = state["next"]
        state["next"] += 1
        if state["next"] > 65000:
            state["next"] = 19100
        if not port_open(port, 0.05):
            return port
        log(f"port {port} already has a listener, skipping it")


def summarize(runs, servers, conns, sizes):
    """(server, conns, size) -> dict of medians, ranges and totals."""
    cells = {}
    for name in servers:
        for c in conns:
            for s in sizes:
                rs = [x for x in runs if x["server"] == name
                      and x["conns"] == c and x["size"] == s]
                ok = [x["r"] for x in rs if x["r"] is not None]
                rps = [r["rps"] for r in ok if r.get("rps") is not None]
                eff = [e for e in map(efficiency, ok) if e]
                p99 = [r["p99_us"] for r in ok if r.get("p99_us") is not None]
                cli = [r["client_cpu_pct"] for r in ok
                       if r.get("client_cpu_pct") is not None]
                srv = [r["server_cpu_pct"] for r in ok
                       if r.get("server_cpu_pct") is not None]
                cells[name, c, s] = {
                    "n": len(rs), "ok": len(ok),
                    "rps": statistics.median(rps) if rps else None,
                    "rps_min": min(rps) if rps else None,
                    "rps_max": max(rps) if rps else None,
                    "eff": statistics.median(eff) if eff else None,
                    "p99": statistics.median(p99) if p99 else None,
                    "client_cpu": statistics.median(cli) if cli else None,
                    "server_cpu": statistics.median(srv) if srv else None,
                    "errors": sum(max(r.get("errors") or 0, 0) for r in ok),
                    "mismatches": sum(r.get("mismatches") or 0 for r in ok),
                    "failed": len(rs) - len(ok),
                }
    return cells


def paired_ratio(runs, a, b, c, s, field):
    """Median over repetitions of a/b, each from one repetition (where the
    two servers ran minutes apart at most, so the host's drift mostly
    cancels), and how many repetitions had both."""
    value = {"rps": lambda r: r.get("rps"), "eff": efficiency}[field]
    by_rep = {}
    for x in runs:
        if x["conns"] == c and x["size"] == s and x["r"] is not None:
            v = value(x["r"])
            if v:
                by_rep.setdefault(x["rep"], {})[x["server"]] = v
    ratios = [d[a] / d[b] for d in by_rep.values() if a in d and b in d]
    return (statistics.median(ratios) if ratios else None), len(ratios)


def k(x, digits=1):
    return "–" if x is None else f"{x / 1000:,.{digits}f}"


def report(cells, runs, servers, conns, sizes, args, skipped):
    out = []
    w = out.append
    w(f"Echo, split placement (server on CPU {SERVER_CPU}, echoload on CPU "
      f"{CLIENT_CPU}, 1 thread), {args.duration} s + {args.warmup} s warm-up, "
      f"medians of {args.reps} interleaved rep(s).")
    w("rps: k round trips/s, median [min–max] (‡: echoload ≥ 90% of its "
      "core, so the client is the limit). eff: k requests per second of "
      "server CPU time (server CPU µs per request). p99: µs.")
    for s in sizes:
        w("")
        w(f"### {s}-byte messages")
        w("")
        head = ["server"]
        for c in conns:
            head += [f"c={c} rps k", f"c={c} eff k (µs/req)", f"c={c} p99 µs"]
        head.append("errors / mismatches")
        w("| " + " | ".join(head) + " |")
        w("|---|" + "---:|" * (len(head) - 1))
        for name in servers:
            row = [name]
            err = mis = failed = 0
            for c in conns:
                x = cells[name, c, s]
                err += x["errors"]
                mis += x["mismatches"]
                failed += x["failed"]
                if x["rps"] is None:
                    row.append("–")
                else:
                    mark = "‡" if (x["client_cpu"] or 0) >= 90 else ""
                    row.append(f"{k(x['rps'])} [{k(x['rps_min'])}–"
                               f"{k(x['rps_max'])}]{mark}")
                row.append("–" if x["eff"] is None else
                           f"{k(x['eff'])} ({1e6 / x['eff']:.2f})")
                row.append("–" if x["p99"] is None else f"{x['p99']:,.0f}")
            tail = f"{err} / {mis}"
            if failed:
                tail += f" ({failed} failed run{'s' if failed > 1 else ''})"
            row.append(tail)
            w("| " + " | ".join(row) + " |")
    w("")
    w("### Ratios (of the medians)")
    w("")
    ratios = [x for x in RATIOS if x[1] in servers and x[2] in servers]
    if not ratios:
        pairs = dict.fromkeys(f"{a} and {b}" for _, a, b, _ in RATIOS)
        w("No ratio: each needs both of its servers (" + "; ".join(pairs)
          + ").")
    else:
        head = ["ratio"] + [f"c={c} {s} B" for s in sizes for c in conns]
        w("| " + " | ".join(head) + " |")
        w("|---|" + "---:|" * (len(head) - 1))
        for label, a, b, field in ratios:
            row = [label]
            for s in sizes:
                for c in conns:
                    x, y = cells[a, c, s][field], cells[b, c, s][field]
                    row.append(f"{x / y:.2f}x" if x and y else "–")
            w("| " + " | ".join(row) + " |")
        w("")
        w("### Ratios (paired: median of each repetition's ratio)")
        w("")
        w("| " + " | ".join(head) + " |")
        w("|---|" + "---:|" * (len(head) - 1))
        for label, a, b, field in ratios:
            row = [label]
            for s in sizes:
                for c in conns:
                    r, n = paired_ratio(runs, a, b, c, s, field)
                    row.append(f"{r:.2f}x" if r else "–")
            w("| " + " | ".join(row) + " |")
    if skipped:
        w("")
        w("Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped) + ".")
    return "\n".join(out)


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma-separated subset of the built-in servers "
                         f"(default: all: {','.join(SERVERS)})")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=CMD",
                    help="add a server; CMD contains PORT (repeatable)")
    ap.add_argument("--conns", default="100 1000",
                    help='connection counts (default "100 1000")')
    ap.add_argument("--sizes", default="64 4096",
                    help='message sizes in bytes (default "64 4096")')
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5,
                    help="measured seconds per echoload run (max 30)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unmeasured seconds per echoload run (max 10)")
    ap.add_argument("--port-base", type=int, default=19100)
    ap.add_argument("--json", metavar="FILE", help="save the raw runs here")
    args = ap.parse_args()
    args.conns = [int(x) for x in args.conns.replace(",", " ").split()]
    args.sizes = [int(x) for x in args.sizes.replace(",", " ").split()]
    if args.reps < 1 or not args.conns or not args.sizes:
        ap.error("need --reps >= 1 and at least one conns and size")
    if not 1 <= args.duration <= 30 or not 0 <= args.warmup <= 10:
        ap.error("echoload takes --duration 1..30 and --warmup 0..10")
    servers = {}
    for name in args.servers.replace(" ", "").split(","):
        if not name:
            continue
        if name not in SERVERS:
            ap.error(f"unknown server {name!r} (known: {', '.join(SERVERS)}; "
                     "use --extra NAME=CMD for others)")
        servers[name] = SERVERS[name]
    for e in args.extra:
        name, sep, cmd = e.partition("=")
        if not sep or not name or "PORT" not in cmd:
            ap.error(f"--extra wants NAME=CMD with PORT in CMD, got {e!r}")
        servers[name.strip()] = cmd.strip()
    if not servers:
        ap.error("no servers selected")
    return args, servers


def main():
    args, servers = parse_args()
    logdir = tempfile.mkdtemp(prefix="echo_compare-")
    log(f"logs in {logdir}")
    needed = {shlex.split(cmd)[0] for cmd in servers.values()}
    build(needed, logdir)
    if not os.access(ECHOLOAD, os.X_OK):
        sys.exit(f"echoload missing at {ECHOLOAD} (build log in {logdir})")
    if not shutil.which("taskset"):
        sys.exit("taskset not found (util-linux)")
    skipped = []
    for name, cmd in list(servers.items()):
        if not executable(cmd):
            why = f"{shlex.split(cmd)[0]} missing"
            log(f"WARNING: skipping {name}: {why}")
            skipped.append((name, why))
            del servers[name]
    if not servers:
        sys.exit("no server binary available")
    order = list(servers)
    log(f"echo matrix: {', '.join(order)}; conns {args.conns} sizes "
        f"{args.sizes}; {args.duration} s + {args.warmup} s warm-up; "
        f"{args.reps} rep(s), interleaved")

    runs = []
    ports = {"next": args.port_base}
    current = None
    interrupted = False

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM, and SIGINT even where the shell started us with it ignored,
    # end the matrix through the finally below (which stops the server).
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        for rep in range(args.reps):
            names = order[::-1] if rep % 2 else order
            for name in names:
                port = fresh_port(ports)
                argv = [t.replace("PORT", str(port))
                        for t in shlex.split(servers[name])]
                log(f"rep {rep + 1}/{args.reps}: {name} on 127.0.0.1:{port}: "
                    f"{' '.join(argv)}")
                current = Server(name, argv,
                                 os.path.join(logdir, f"server-{name}.log"))
                started = current.start(port)
                for c in args.conns:
                    for s in args.sizes:
                        run = {"server": name, "rep": rep + 1, "port": port,
                               "conns": c, "size": s, "argv": argv,
                               "rc": None, "r": None}
                        runs.append(run)
                        if not started:
                            run["note"] = "server did not start"
                            continue
                        if not current.alive():
                            run["note"] = "server died"
                            log(f"  {name} died (see {current.logpath})")
                            continue
                        rc, r, err = echoload(port, c, s, args,
                                              current.proc.pid)
                        run["rc"], run["r"] = rc, r
                        if r is None:
                            run["note"] = err
                            log(f"  {name} c={c} s={s}: echoload rc {rc}, "
                                f"no result: {err}")
                        else:
                            e = efficiency(r)
                            log(f"  {name:<16} c={c:<4} s={s:<5} "
                                f"rps={r.get('rps', 0):,.0f} "
                                f"p50={r.get('p50_us')}us "
                                f"p99={r.get('p99_us')}us "
                                f"err={r.get('errors')} "
                                f"mis={r.get('mismatches')} "
                                f"cli={r.get('client_cpu_pct')}% "
                                f"srv={r.get('server_cpu_pct')}% "
                                f"eff={'-' if e is None else f'{e:,.0f}'}")
                        time.sleep(0.3)
                current.stop()
                current = None
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping the server and reporting what ran")
        if runs and runs[-1]["rc"] is None and "note" not in runs[-1]:
            runs.pop()  # the echoload run that was cut short
    finally:
        if current is not None:
            current.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    cells = summarize(runs, order, args.conns, args.sizes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "placement": "split", "server_cpu": SERVER_CPU,
                       "client_cpu": CLIENT_CPU, "reps": args.reps,
                       "duration_s": args.duration, "warmup_s": args.warmup,
                       "conns": args.conns, "sizes": args.sizes,
                       "interrupted": interrupted,
                       "servers": servers, "skipped": dict(skipped),
                       "runs": runs,
                       "medians": [dict(server=n, conns=c, size=s, **v)
                                   for (n, c, s), v in cells.items()]},
                      f, indent=1)
        log(f"raw runs written to {args.json}")
    print(report(cells, runs, order, args.conns, args.sizes, args, skipped))
    if interrupted:
        print("\n(Interrupted: partial results.)")
        sys.exit(130)


if __name__ == "__main__":
    main()
