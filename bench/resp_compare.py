#!/usr/bin/env python3
"""RESP under redis-benchmark: treadle's Lua example
(examples/lua/resp_server.lua, a Lua table behind treadle.tcp.serve) beside
redis-server, medians of interleaved runs (issue 16: >= 0.8x redis-server's
efficiency).

    /usr/bin/python3 bench/resp_compare.py [--reps 5] [--n 500000] [--cpath DIR]

Each run starts the server under `taskset -c 0` (redis-server with
../shared/bench/servers/http/redis.conf, its port replaced), runs
`redis-benchmark -t ping,set,get -c 50 -P 16 -n N --csv` under
`taskset -c 1` and reads the server's utime + stime from /proc before and
after. Efficiency = requests (3 x N: PING_INLINE, PING_MBULK counted as
one ping test each, SET, GET; every line redis-benchmark prints) per
second of server CPU. Repetitions alternate the order of the two servers.
"""
import argparse
import csv
import io
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = "/work/shared/bench/servers/http"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(name, cpath, n):
    port = free_port()
    env = dict(os.environ, LUA_CPATH=os.path.join(cpath, "?.so") + ";;")
    tmp = None
    if name == "treadle-lua":
        argv = ["lua5.4", os.path.join(ROOT, "examples", "lua", "resp_server.lua"), str(port)]
    else:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        with open(os.path.join(PEERS, "redis.conf")) as f:
            conf = f.read()
        tmp.write("\n".join(f"port {port}" if line.startswith("port ") else line
                            for line in conf.splitlines()) + "\n")
        tmp.close()
        argv = ["redis-server", tmp.name]
    p = subprocess.Popen(["taskset", "-c", "0"] + argv, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        c0 = ticks(p.pid)
        out = subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-t",
                              "ping,set,get", "-c", "50", "-P", "16", "-n", str(n), "--csv"],
                             capture_output=True, text=True, timeout=300).stdout
        c1 = ticks(p.pid)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if tmp:
            os.unlink(tmp.name)
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    rps = {r[0]: float(r[1]) for r in rows}
    cpu = (c1 - c0) / TICK
    return {"rps": rps, "cpu_s": cpu, "efficiency": len(rows) * n / cpu if cpu else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=500000)
    ap.add_argument("--cpath", default=os.path.join(ROOT, "build-release", "bindings", "lua"))
    args = ap.parse_args()
    subprocess.run([os.path.join(ROOT, "scripts", "setup.sh"), "redis-server", "redis-tools",
                    "lua5.4"], check=True)
    names = ["treadle-lua", "redis-server"]
    runs = {k: [] for k in names}
    for rep in range(args.reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            r = run(name, args.cpath, args.n)
            runs[name].append(r)
            print(f"# rep {rep + 1} {name}: {r['efficiency'] or 0:,.0f} req per CPU-s, "
                  + ", ".join(f"{k} {v:,.0f}/s" for k, v in r["rps"].items()), flush=True)
    print(f"\nredis-benchmark -t ping,set,get -c 50 -P 16 -n {args.n}, medians of {args.reps}\n")
    tests = list(runs[names[0]][0]["rps"])
    print("| server | " + " | ".join(f"{t} req/s" for t in tests) + " | req per CPU-s |")
    print("|---|" + "---:|" * (len(tests) + 1))
    for name in names:
        cells = [f"{statistics.median(r['rps'].get(t, 0) for r in runs[name]):,.0f}" for t in tests]
        eff = statistics.median(r["efficiency"] for r in runs[name])
        print(f"| {name} | " + " | ".join(cells) + f" | {eff:,.0f} |")
    a = [r["efficiency"] for r in runs["treadle-lua"]]
    b = [r["efficiency"] for r in runs["redis-server"]]
    print(f"\nefficiency treadle-lua / redis-server: {statistics.median(a) / statistics.median(b):.2f}x "
          f"of the medians, {statistics.median(x / y for x, y in zip(a, b)):.2f}x paired (goal >= 0.8x)")


if __name__ == "__main__":
    main()
