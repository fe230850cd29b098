#!/usr/bin/env python3
"""RESP under redis-benchmark: treadle's Lua example
(examples/lua/resp_server.lua, a Lua table behind treadle.tcp.serve) beside
redis-server, medians of interleaved runs (issue 16: >= 0.8x redis-server's
efficiency).

    /usr/bin/python3 bench/resp_compare.py [--reps 5] [--n 500000] [--cpath DIR]
    /usr/bin/python3 bench/resp_compare.py --counts [--n 20000] [--lua PATH]

Each run starts the server under `taskset -c 0` (redis-server with
../shared/bench/servers/http/redis.conf, its port replaced), runs
`redis-benchmark -t ping,set,get -c 50 -P 16 -n N --csv` under
`taskset -c 1` and reads the server's utime + stime from /proc before and
after. Efficiency = requests (4 x N: PING_INLINE, PING_MBULK, SET, GET;
every line redis-benchmark prints) per second of server CPU. Repetitions
alternate the order of the two servers.

--counts measures what the noisy host cannot blur, once per server under
the same load: user-space instructions per request of the whole server
process (valgrind's callgrind, counters zeroed once the server listens and
dumped after the load, so start-up is left out) and system calls per
request (`strace -c -f` attached to the server during the load).
"""
import argparse
import csv
import io
import os
import re
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


def start(name, cpath, wrap=(), lua="lua5.4"):
    """Starts a server on a free port under `taskset -c 0` (and wrap, a
    command such as valgrind's; lua, the interpreter of the Lua server);
    returns the process, its port and the config file to remove."""
    port = free_port()
    env = dict(os.environ, LUA_CPATH=os.path.join(cpath, "?.so") + ";;")
    tmp = None
    if name == "treadle-lua":
        argv = [lua, os.path.join(ROOT, "examples", "lua", "resp_server.lua"), str(port)]
    else:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        with open(os.path.join(PEERS, "redis.conf")) as f:
            conf = f.read()
        tmp.write("\n".join(f"port {port}" if line.startswith("port ") else line
                            for line in conf.splitlines()) + "\n")
        tmp.close()
        argv = ["redis-server", tmp.name]
    p = subprocess.Popen(["taskset", "-c", "0"] + list(wrap) + argv, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return p, port, tmp


def stop(p, tmp, wait_s=5):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(wait_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if tmp:
        os.unlink(tmp.name)


def load(port, n):
    return subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-t",
                           "ping,set,get", "-c", "50", "-P", "16", "-n", str(n), "--csv"],
                          capture_output=True, text=True, timeout=600).stdout


def run(name, cpath, n):
    p, port, tmp = start(name, cpath)
    try:
        c0 = ticks(p.pid)
        out = load(port, n)
        c1 = ticks(p.pid)
    finally:
        stop(p, tmp)
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    rps = {r[0]: float(r[1]) for r in rows}
    cpu = (c1 - c0) / TICK
    return {"rps": rps, "cpu_s": cpu, "efficiency": len(rows) * n / cpu if cpu else None}


# Where a Lua server's instructions go: (part, the functions' name pattern),
# first match wins; the Lua interpreter's functions have names only when it
# is bench/lua_profiled (Debian's lua5.4 is stripped).
PARTS = [
    ("treadle's C: receive, send, ops, I/O driver, scheduler", r"treadle\.so$", None),
    ("malloc, free", r"libc\.so", r"malloc|free|realloc|arena"),
    ("libc: memchr, memcpy, memcmp, snprintf", r"libc\.so", None),
    ("Lua VM executing bytecode (luaV_execute)", None, r"^luaV_execute$"),
    ("Lua string library: find, sub, byte, tonumber, concat", None,
     r"^(str_|match|classend|singlematch|max_expand|min_expand|start_capture|end_capture|"
     r"push_onecapture|push_captures|get_onecapture|lmemfind|nospecials|posrelat|"
     r"luaO_str2num|l_str2|luaB_tonumber|tconcat|addfield)"),
    ("Lua GC", None, r"^(luaC_|sweep|propagate|singlestep|atomic|traverse|freeobj|"
     r"reallymark|markobject|luaM_|luaF_free|luaH_free|luaS_remove|GCTM|entersweep)"),
    ("Lua string creation (interning)", None, r"^(internshrstr|luaS_)"),
    ("Lua calls, returns, coroutine switches", None,
     r"^(luaD_|luaE_|resume|lua_resume|lua_yield|unroll|finishCcall|ccall|luaT_)"),
    ("Lua C API, tables, equality (lua_*, luaL_*, luaH_*)", None, r"^(lua|index2)"),
]


def exclusive(path):
    """{(object, function): exclusive Ir} of a callgrind out file."""
    names, objs, cost = {}, {}, {}
    ob = fn = None
    after_calls = False

    def name(table, v):  # callgrind's name compression: "(id) name" or "(id)"
        m = re.match(r"\((\d+)\)(?: (.*))?$", v)
        if not m:
            return v
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), v)

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("ob="):
                ob = name(objs, line[3:])
            elif line.startswith("fn="):
                fn = re.sub(r"'\d+$", "", name(names, line[3:]))
            elif line.startswith("cob="):
                name(objs, line[4:])
            elif line.startswith("cfn="):
                name(names, line[4:])
            elif line.startswith("calls="):
                after_calls = True  # the next cost line is the callee's, inclusive
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_calls:
                    after_calls = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    cost[(ob, fn)] = cost.get((ob, fn), 0) + int(parts[1])
    return cost


def parts(cost):
    """[(part, Ir)] of exclusive costs, largest first."""
    out = {}
    for (ob, fn), ir in cost.items():
        part = "other"
        for label, ob_re, fn_re in PARTS:
            if (ob_re is None or re.search(ob_re, ob or "")) and \
               (fn_re is None or re.search(fn_re, fn or "")):
                part = label
                break
        out[part] = out.get(part, 0) + ir
    return sorted(out.items(), key=lambda kv: -kv[1])


def instructions(name, cpath, n, lua="lua5.4"):
    """User-space instructions of the server during the load (callgrind):
    the total, the request count and the exclusive costs."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        p, port, tmp = start(name, cpath, ["valgrind", "--tool=callgrind",
                                           f"--callgrind-out-file={out}"], lua)
        try:
            subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
            rows = [r for r in csv.reader(io.StringIO(load(port, n))) if r and r[0] != "test"]
            subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
        finally:
            stop(p, tmp, 60)
        cost = exclusive(out + ".1")
        return sum(cost.values()), len(rows) * n, cost


def syscalls(name, cpath, n):
    """System calls of the server during the load: {name: count} (strace -c -f)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "strace.txt")
        p, port, tmp = start(name, cpath)
        try:
            st = subprocess.Popen(["strace", "-c", "-f", "-p", str(p.pid), "-o", out],
                                  stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # attached to every thread before the load
            rows = [r for r in csv.reader(io.StringIO(load(port, n))) if r and r[0] != "test"]
            st.send_signal(signal.SIGINT)
            st.wait(30)
        finally:
            stop(p, tmp)
        calls = {}
        with open(out) as f:
            for line in f:
                parts = line.split()
                # % time, seconds, usecs/call, calls, [errors,] syscall
                if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                    calls[parts[-1]] = int(parts[3])
        return calls, len(rows) * n


def counts(cpath, n, lua):
    print(f"redis-benchmark -t ping,set,get -c 50 -P 16 -n {n}, one run per server; "
          f"the Lua server under {lua}\n")
    print("| server | instructions per request | system calls per request "
          "| of which read, write (or recvfrom, sendto) |")
    print("|---|---:|---:|---:|")
    lua_cost = None
    for name in ["treadle-lua", "redis-server"]:
        ir, reqs, cost = instructions(name, cpath, n, lua)
        if name == "treadle-lua":
            lua_cost = (cost, ir, reqs)
        calls, sreqs = syscalls(name, cpath, n)
        io_calls = sum(v for k, v in calls.items() if k in ("read", "write", "recvfrom", "sendto"))
        print(f"| {name} | {ir / reqs:,.0f} | {sum(calls.values()) / sreqs:.4f} | "
              f"{io_calls / sreqs:.4f} |", flush=True)
    cost, ir, reqs = lua_cost
    print("\nwhere treadle-lua's instructions go (exclusive, callgrind)\n")
    print("| part | share | per request |")
    print("|---|---:|---:|")
    for label, part_ir in parts(cost):
        print(f"| {label} | {100 * part_ir / ir:.0f}% | {part_ir / reqs:,.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, help="requests per test (default 500000; 20000 with --counts)")
    ap.add_argument("--cpath", default=os.path.join(ROOT, "build-release", "bindings", "lua"))
    ap.add_argument("--lua", help="the interpreter for --counts (default: "
                    "build-release/bench/lua_profiled if built, else lua5.4)")
    ap.add_argument("--counts", action="store_true",
                    help="instructions and system calls per request instead of timings")
    args = ap.parse_args()
    subprocess.run([os.path.join(ROOT, "scripts", "setup.sh"), "redis-server", "redis-tools",
                    "lua5.4", "valgrind", "strace"], check=True)
    if args.counts:
        lua = args.lua or os.path.join(ROOT, "build-release", "bench", "lua_profiled")
        if not os.path.exists(lua):
            lua = "lua5.4"  # stripped: its part of the breakdown has no names
        return counts(args.cpath, args.n or 20000, lua)
    args.n = args.n or 500000
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
