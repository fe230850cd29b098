#!/usr/bin/env python3
"""Shared-dict incr from 2 workers: treadle's Lua module beside OpenResty's
ngx.shared.DICT:incr, medians of interleaved runs (issue 16: >= 1.0x).

    /usr/bin/python3 bench/shdict_compare.py [--reps 5] [--n 5000000]
                                             [--workers 2] [--cpath DIR]

treadle: `lua5.4 bench/shdict_incr.lua N WORKERS`, every worker of a
multi_thread(WORKERS) runtime calling d:incr("hits", 1, 0) N times on one
treadle.shared dict. OpenResty: Debian's nginx with libnginx-mod-http-lua,
WORKERS worker processes sharing a lua_shared_dict
(bench/shdict_nginx.conf.in); WORKERS concurrent requests to /incr?n=N, each
running ngx.shared.bench:incr("hits", 1, 0) N times in a
content_by_lua_block loop (the loop LuaJIT compiles, calling the shdict
through lua-resty-core's FFI). A round whose requests did not land on
WORKERS different workers (reuseport picks one per connection) is run
again. Both report the time from the first worker's start to the last
one's end; incr/s = N x WORKERS / that time, and both check that "hits"
ends at N x WORKERS. Each repetition runs the two in turn, the order
reversed every second one; nothing is pinned (both use the 2 CPUs).

The module: LUA_CPATH gets DIR/?.so, DIR = --cpath, else
build-release/bindings/lua (built with the release preset when missing).
Missing Debian packages (nginx, libnginx-mod-http-lua, lua5.4) are
installed with scripts/setup.sh.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "bench", "shdict_nginx.conf.in")
RELEASE_DIR = os.path.join(ROOT, "build-release", "bindings", "lua")


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


def get(url, timeout=120):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class Nginx:
    def __init__(self, workers):
        self.dir = tempfile.mkdtemp(prefix="treadle-shdict-nginx-")
        self.port = free_port()
        with open(CONF) as f:
            conf = f.read()
        conf = (conf.replace("NGINX_DIR", self.dir).replace("PORT", str(self.port))
                .replace("WORKERS", str(workers)))
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["nginx", "-c", path, "-p", self.dir, "-e",
                                      os.path.join(self.dir, "error.log")])
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                get(self.base + "/hits", 1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start: " + self.error_log())

    def error_log(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def run(self, n, workers):
        """One round: incr/s, or None when two requests shared a worker."""
        get(self.base + "/reset")
        out = [None] * workers

        def one(i):
            out[i] = get(f"{self.base}/incr?n={n}").split()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len({o[0] for o in out}) < workers:
            return None
        hits = int(get(self.base + "/hits"))
        if hits != n * workers:
            raise RuntimeError(f"nginx: hits {hits}, expected {n * workers}")
        span = max(float(o[2]) for o in out) - min(float(o[1]) for o in out)
        return n * workers / span

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_treadle(cpath, n, workers):
    env = dict(os.environ, LUA_CPATH=os.path.join(cpath, "?.so") + ";;")
    out = subprocess.run(["lua5.4", os.path.join(ROOT, "bench", "shdict_incr.lua"),
                          str(n), str(workers)], env=env, check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])["incr_per_sec"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=5000000, help="incr calls per worker")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpath", help="the folder of treadle.so")
    args = ap.parse_args()
    subprocess.run([os.path.join(ROOT, "scripts", "setup.sh"), "nginx",
                    "libnginx-mod-http-lua", "lua5.4"], check=True)
    cpath = module_dir(args.cpath)
    nginx = Nginx(args.workers)
    results = {"treadle": [], "openresty": []}
    try:
        for rep in range(args.reps):
            order = ["treadle", "openresty"] if rep % 2 == 0 else ["openresty", "treadle"]
            for who in order:
                if who == "treadle":
                    r = run_treadle(cpath, args.n, args.workers)
                else:
                    for _ in range(20):
                        r = nginx.run(args.n, args.workers)
                        if r is not None:
                            break
                    else:
                        raise RuntimeError("nginx: 20 rounds without one request per worker")
                results[who].append(r)
                log(f"rep {rep + 1}: {who} {r / 1e6:.2f} M incr/s")
    finally:
        nginx.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    paired = statistics.median(t / o for t, o in zip(results["treadle"], results["openresty"]))
    print(f"Shared-dict incr, {args.workers} workers x {args.n} incr on one key, "
          f"median of {args.reps} interleaved runs:\n")
    print("| runtime | incr/s (median) | runs (M incr/s) |")
    print("|---|---|---|")
    for k, label in (("treadle", f"treadle Lua, multi_thread({args.workers})"),
                     ("openresty", f"OpenResty (nginx {args.workers} workers)")):
        runs = ", ".join(f"{x / 1e6:.2f}" for x in results[k])
        print(f"| {label} | {med[k] / 1e6:.2f} M | {runs} |")
    print(f"\ntreadle / OpenResty: {med['treadle'] / med['openresty']:.2f}x of the medians, "
          f"{paired:.2f}x paired (goal >= 1.0x)")


if __name__ == "__main__":
    main()
