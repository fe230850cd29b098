#!/usr/bin/env python3
"""HTTP/1.1 keep-alive "Hello, World!" under wrk: treadle's Lua example
(examples/lua/http_server.lua, on treadle.tcp.serve) beside OpenResty and
luv (issue 16), or the aiohttp app of ../shared/bench/servers/http/
http_peers.py on treadle's asyncio loop beside uvloop and asyncio (issue
15); medians of interleaved runs.

    /usr/bin/python3 bench/http_compare.py [--suite lua|aiohttp] [--reps 5]
                                           [--duration 5] [--warmup 1]
                                           [--conns 100] [--servers NAME,...]
                                           [--cpath DIR] [--json FILE]

Servers (PORT filled in; the same response bytes: Content-Type text/plain,
Content-Length 13). --suite lua (the default):

    treadle-lua-current  lua5.4 examples/lua/http_server.lua PORT current_thread   split
    openresty            nginx, 1 worker, no master (content_by_lua_block)      split
    lua-luv              lua5.4 ../shared/bench/servers/http/http_luv.lua PORT     split
    treadle-lua-multi2   lua5.4 examples/lua/http_server.lua PORT multi_thread 2   shared
    openresty-2          nginx, master + 2 workers (reuseport)                   shared

--suite aiohttp (Debian's python3-aiohttp, /usr/bin/python3; the same app,
unchanged, on each loop; treadle's through examples/python/asyncio_on_treadle.py):

    aiohttp-treadle-current  http_peers.py PORT aiohttp-asyncio on treadle, current_thread  split
    aiohttp-uvloop           http_peers.py PORT aiohttp-uvloop                      split
    aiohttp-asyncio          http_peers.py PORT aiohttp-asyncio                     split
    aiohttp-treadle-multi2   the first on multi_thread(2)                           shared

OpenResty is Debian's nginx with libnginx-mod-http-lua and
../shared/bench/servers/http/openresty.conf.in (worker_processes and
master_process changed for openresty-2). "split": the server under
`taskset -c 0`, wrk under `taskset -c 1`; "shared": neither pinned.
wrk: `wrk -t1 -cCONNS -dDURATION` after a warm-up run of WARMUP seconds.
Server CPU: utime + stime from /proc/PID/stat over the measured run (nginx:
the master and its workers summed), and the user share of it; wrk's CPU from
os.times() of the children; efficiency = requests per second of server CPU. Every repetition starts every server once (the order reversed
every second repetition), runs wrk twice (warm-up, measured) and stops it
with SIGINT (then SIGTERM, then SIGKILL). Ratios: of the medians, and paired (the median of the
repetitions' own ratios: this host drifts ~30% over minutes).

Goals: treadle-lua-current >= 1.0x openresty's efficiency and rps;
treadle-lua-multi2 >= 1.0x openresty-2's. aiohttp-treadle-current >= 1.0x
aiohttp-uvloop's rps and efficiency; aiohttp-treadle-multi2 >= 1.3x
aiohttp-uvloop's rps.

The module: LUA_CPATH gets DIR/?.so, DIR = --cpath, else
build-release/bindings/lua (built with the release preset when missing).
Missing Debian packages (wrk, nginx, libnginx-mod-http-lua, lua-luv) are
installed with scripts/setup.sh.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "bench", "servers", "http")
if not os.path.isdir(PEERS):
    PEERS = "/work/shared/bench/servers/http"
RELEASE_DIR = os.path.join(ROOT, "build-release", "bindings", "lua")
EXAMPLE = os.path.join(ROOT, "examples", "lua", "http_server.lua")
TICK = os.sysconf("SC_CLK_TCK")

ON_TREADLE = os.path.join(ROOT, "examples", "python", "asyncio_on_treadle.py")
PY = "/usr/bin/python3"

SERVERS = {
    # name: (kind, split)
    "treadle-lua-current": ("treadle", True),
    "openresty": ("nginx1", True),
    "lua-luv": ("luv", True),
    "treadle-lua-multi2": ("treadle2", False),
    "openresty-2": ("nginx2", False),
    "aiohttp-treadle-current": ("aiohttp-treadle", True),
    "aiohttp-uvloop": ("aiohttp-uvloop", True),
    "aiohttp-asyncio": ("aiohttp-asyncio", True),
    "aiohttp-treadle-multi2": ("aiohttp-treadle2", False),
}
SUITES = {
    "lua": ["treadle-lua-current", "openresty", "lua-luv", "treadle-lua-multi2", "openresty-2"],
    "aiohttp": ["aiohttp-treadle-current", "aiohttp-uvloop", "aiohttp-asyncio",
                "aiohttp-treadle-multi2"],
}
GOALS = [("treadle-lua-current", "openresty"), ("treadle-lua-current", "lua-luv"),
         ("treadle-lua-multi2", "openresty-2"),
         ("aiohttp-treadle-current", "aiohttp-uvloop"),
         ("aiohttp-treadle-current", "aiohttp-asyncio"),
         ("aiohttp-treadle-multi2", "aiohttp-uvloop")]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def module_dir(cpath):
    if cpath:
        return cpath
    if not os.path.exists(os.path.join(RELEASE_DIR, "treadle.so")):
        log("building the Lua module (release preset, target treadle_lua)")
        subprocess.run(["cmake", "--preset", "release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "--preset", "release", "-j2",
                        "--target", "treadle_lua"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return RELEASE_DIR


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def cpu_ticks(pid):
    """(utime, stime) of pid and its children processes (nginx's workers)."""
    user = system = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except OSError:
            pass
    return user, system


class Server:
    def __init__(self, name, cpath):
        self.name = name
        self.kind, self.split = SERVERS[name]
        self.cpath = cpath
        self.proc = None
        self.dir = None

    def argv(self, port):
        if self.kind.startswith("aiohttp"):
            peers = [os.path.join(PEERS, "http_peers.py"), str(port)]
            if self.kind == "aiohttp-treadle":
                return [PY, ON_TREADLE] + peers + ["aiohttp-asyncio"]
            if self.kind == "aiohttp-treadle2":
                return [PY, ON_TREADLE, "--flavor", "multi_thread", "--workers", "2"] + peers + ["aiohttp-asyncio"]
            return [PY] + peers + [self.kind]
        if self.kind.startswith("treadle"):
            flavor = ["current_thread"] if self.kind == "treadle" else ["multi_thread", "2"]
            return ["lua5.4", EXAMPLE, str(port)] + flavor
        if self.kind == "luv":
            return ["lua5.4", os.path.join(PEERS, "http_luv.lua"), str(port)]
        self.dir = tempfile.mkdtemp(prefix="treadle-http-nginx-")
        with open(os.path.join(PEERS, "openresty.conf.in")) as f:
            conf = f.read().replace("NGINX_DIR", self.dir).replace("PORT", str(port))
        if self.kind == "nginx2":
            conf = conf.replace("master_process off;", "master_process on;")
            conf = conf.replace("worker_processes 1;", "worker_processes 2;")
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return ["nginx", "-c", path, "-p", self.dir, "-e", os.path.join(self.dir, "error.log")]

    def start(self, port):
        env = dict(os.environ)
        env["LUA_CPATH"] = os.path.join(self.cpath, "?.so") + ";;"
        env["PYTHONPATH"] = os.path.join(ROOT, "bindings", "python")
        argv = self.argv(port)
        if self.split:
            argv = ["taskset", "-c", "0"] + argv
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if port_open(port):
                return
            time.sleep(0.05)
        self.log.seek(0)
        out = self.log.read().decode(errors="replace")
        self.stop()
        raise RuntimeError(f"{self.name} did not start: {out[-500:]}")

    def stop(self):
        p, self.proc = self.proc, None
        # SIGINT first (nginx without a master ignored SIGTERM here), then
        # SIGTERM (luv's loop, in C, does not see lua5.4's SIGINT handler)
        for sig, grace in ((signal.SIGINT, 2), (signal.SIGTERM, 3), (signal.SIGKILL, 5)):
            if p is None or p.poll() is not None:
                break
            p.send_signal(sig)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def wrk(port, conns, secs, split):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", f"http://127.0.0.1:{port}/"]
    if split:
        argv = ["taskset", "-c", "1"] + argv
    out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if not m:
        raise RuntimeError("wrk said: " + out[-500:])
    return float(m.group(1)), (errors.group(0) if errors else None)


def one_run(server, args):
    port = free_port()
    server.start(port)
    try:
        if args.warmup > 0:
            wrk(port, args.conns, args.warmup, server.split)
        (u0, s0), t0 = cpu_ticks(server.proc.pid), time.monotonic()
        w0 = os.times()
        rps, errors = wrk(port, args.conns, args.duration, server.split)
        (u1, s1), t1 = cpu_ticks(server.proc.pid), time.monotonic()
        w1 = os.times()
    finally:
        server.stop()
    cpu_s = (u1 - u0 + s1 - s0) / TICK
    wrk_s = (w1.children_user - w0.children_user) + (w1.children_system - w0.children_system)
    return {"rps": rps, "cpu_pct": 100.0 * cpu_s / (t1 - t0),
            "user_pct": 100.0 * (u1 - u0) / TICK / cpu_s if cpu_s > 0 else None,
            "wrk_cpu_pct": 100.0 * wrk_s / (t1 - t0),
            "efficiency": rps * (t1 - t0) / cpu_s if cpu_s > 0 else None,
            "errors": errors}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--suite", choices=sorted(SUITES), default="lua")
    ap.add_argument("--servers", help="default: the suite's")
    ap.add_argument("--cpath")
    ap.add_argument("--json")
    args = ap.parse_args()
    names = [n for n in (args.servers or ",".join(SUITES[args.suite])).split(",") if n]
    for n in names:
        if n not in SERVERS:
            sys.exit(f"unknown server {n!r} (have {', '.join(SERVERS)})")
    subprocess.run([os.path.join(ROOT, "scripts", "setup.sh"), "wrk", "nginx",
                    "libnginx-mod-http-lua", "lua-luv", "lua5.4", "python3-aiohttp",
                    "python3-uvloop"], check=True)
    lua = any(SERVERS[n][0] in ("treadle", "treadle2") for n in names)
    cpath = module_dir(args.cpath) if lua else ""
    if any(n.startswith("aiohttp-treadle") for n in names):
        # the extension in place, for Debian's python3 (as the tests build it)
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "build_python.sh")], check=True,
                       env=dict(os.environ, PYTHON=PY), stdout=subprocess.DEVNULL)
    runs = {n: [] for n in names}
    for rep in range(args.reps):
        order = names if rep % 2 == 0 else list(reversed(names))
        for n in order:
            r = one_run(Server(n, cpath), args)
            runs[n].append(r)
            log(f"rep {rep + 1}/{args.reps} {n}: {r['rps']:.0f} req/s, server CPU "
                f"{r['cpu_pct']:.0f}%, {r['efficiency'] or 0:.0f} req per CPU-s"
                + (f" ({r['errors']})" if r["errors"] else ""))
    print(f"HTTP keep-alive hello, wrk -t1 -c{args.conns} -d{args.duration}s, "
          f"medians of {args.reps} interleaved runs\n")
    print("| server | placement | req/s | server CPU % | of it user % | wrk CPU % | req per CPU-s |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        rs = runs[n]
        print(f"| {n} | {'split' if SERVERS[n][1] else 'shared'} | "
              f"{med([r['rps'] for r in rs]):,.0f} | {med([r['cpu_pct'] for r in rs]):.0f} | "
              f"{med([r['user_pct'] for r in rs]) or 0:.0f} | {med([r['wrk_cpu_pct'] for r in rs]):.0f} | "
              f"{med([r['efficiency'] for r in rs]) or 0:,.0f} |")
    print("\n| goal | req/s ratio (paired) | efficiency ratio (paired) |")
    print("|---|---|---|")
    for a, b in GOALS:
        if a not in runs or b not in runs:
            continue
        cells = []
        for field in ("rps", "efficiency"):
            ra, rb = [r[field] for r in runs[a]], [r[field] for r in runs[b]]
            ratio = med(ra) / med(rb) if med(ra) and med(rb) else None
            paired = med([x / y for x, y in zip(ra, rb) if x and y])
            cells.append(f"{ratio:.2f}x ({paired:.2f}x)" if ratio and paired else "?")
        print(f"| {a} / {b} | {cells[0]} | {cells[1]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
