#!/usr/bin/env python3
"""The soak test (issue 17 item 1): each echo server under a mix of hostile
and well-behaved load on 127.0.0.1, sampled every second. Run it through
scripts/soak.sh, which builds what it needs first:

    /usr/bin/python3 tests/soak/soak.py [--minutes N] [--servers c,python,lua,lua-http,...]
                                        [--out build-soak] [--valgrind]

For each server (the C, Python and Lua echo examples; lua-http, the Lua
HTTP/1.1 example, gets pipelined GET / requests instead of bytes to echo,
and must answer each with the exact response; aiohttp, the aiohttp example
on treadle's loop, and aiohttp-asyncio, the same on asyncio's own loop (not
in the default list: the reference), get the same with aiohttp's headers:
see AiohttpHttp) it starts the example under
`prlimit --nofile=1024` (so the storms reach a known limit), waits for
"listening on HOST:PORT" (or a connection), and runs,
all at once, from one asyncio process (its own load generator, not treadle):

  steady     8 clients: random sizes up to 64 KiB, every byte checked, a
             fresh connection every 50-300 messages
  half-open  2 clients: send up to 256 KiB, shutdown(SHUT_WR), read to EOF,
             every byte checked
  slowloris  4 clients: one byte a second for 20 s, each echo checked
  reset      4 clients: send, maybe read, close with SO_LINGER 0 (RST) at a
             random point
  never-read 2 clients: write until the server's writes back up, hold,
             then reset (none for aiohttp: see AiohttpHttp)
  storm      every 20 s (first at warm-up/2): open connections until the
             server holds 1024 fds (or 1124 were tried), hold 2 s, close
             (half with RST); under valgrind up to 960 fds (see storm_to)
  probe      every second a fresh connection sends 16 bytes and must get
             them back (within 30 s; 120 s under valgrind)
  sampler    every second: the server's RSS, open fds and threads (/proc)

At the end, under full load, it sends SIGTERM and waits for the exit.
It writes build-soak/<server>.csv and <server>.png, and passes when:
  * in the second half of the run, RSS stays under the first half's
    highest sample + max(20%, 8 MiB) (a leak grows all the way; a heap's
    high-water mark under the storms levels off); after warm-up (the
    first minute, or the first 20% of a shorter run) open fds stay under
    the fds before the load + the client connections open at the time
    (highest of the last 10 s) + 16, and threads never above the
    warm-up's highest count (RSS is not bounded under valgrind: its own);
  * every well-behaved client (steady, half-open, slowloris, probe) got
    every byte back, with no error before the SIGTERM;
  * every probe was answered;
  * the server exited 0 after SIGTERM (under valgrind: also no leak and no
    error, through --error-exitcode).
It prints a summary table and exits 1 when any server failed.
"""
import argparse
import asyncio
import csv
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FD_LIMIT = 1024
MIB = 1024 * 1024

SERVERS = {
    "c": ["build-release/examples/c/echo_server", "0", "multi_thread", "2"],
    "python": ["/usr/bin/python3", "examples/python/echo_server.py", "0",
               "current_thread"],
    "lua": ["lua5.4", "examples/lua/echo_server.lua", "0", "current_thread"],
    # HTTP/1.1 keep-alive, GET / answers "Hello, World!"; it says no
    # "listening on": PORT becomes a free port, and a connect says it is up
    "lua-http": ["lua5.4", "examples/lua/http_server.lua", "PORT", "current_thread"],
    # the aiohttp example (a plain asyncio program) on treadle's loop
    "aiohttp": ["/usr/bin/python3", "examples/python/asyncio_on_treadle.py",
                "examples/python/aiohttp_server.py", "0"],
    # the same on asyncio's own loop: the reference for the one above
    "aiohttp-asyncio": ["/usr/bin/python3", "examples/python/aiohttp_server.py", "0"],
    # the soak's own check, not in the default list: it must fail
    "leaky": ["/usr/bin/python3", "tests/soak/leaky_echo.py", "0"],
}
VALGRIND = ["valgrind", "--leak-check=full", "--show-leak-kinds=all",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=99", "--fair-sched=yes"]

# One random block; messages are slices of it at random offsets.
BLOCK = random.Random(17).randbytes(1 << 20)


def payload(rng, size):
    off = rng.randrange(0, len(BLOCK) - size)
    return BLOCK[off:off + size]


class Echo:
    """What the echo servers are sent, and must answer: the same bytes."""
    never_read_clients = 2

    def message(self, rng, size):
        data = payload(rng, size)
        return data, data

    def slow(self, rng):
        """A slowloris exchange: (byte to send, answer due after it)."""
        return [(bytes([b]),) * 2 for b in rng.randbytes(20)]

    # The server answers what was sent before the client's EOF.
    answers_after_eof = True

    def same(self, got, want):
        return got == want


class Http:
    """What the HTTP example is sent: pipelined GET / requests, each
    answered with the exact bytes of RESPONSE."""
    never_read_clients = 2
    REQUEST = b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"
    RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 13\r\n\r\nHello, World!")

    def message(self, rng, size):
        n = max(1, size // len(self.REQUEST))
        return self.REQUEST * n, self.RESPONSE * n

    def slow(self, rng):
        r = self.REQUEST
        return [(r[i:i + 1], self.RESPONSE if i == len(r) - 1 else b"")
                for i in range(len(r))]

    answers_after_eof = True

    def same(self, got, want):
        return got == want


class AiohttpHttp(Http):
    """The aiohttp example's answers: aiohttp's own headers, with a Date
    (always 29 bytes) that is masked before comparing. aiohttp closes a
    connection at the client's EOF without answering what is still
    unanswered (asyncio's eof_received returning None; the same on
    asyncio's own loop), so half-open clients read their answers first
    and half-close after."""
    DATE = re.compile(rb"Date: [^\r]{29}\r\n")
    MASK = b"Date: " + b"?" * 29 + b"\r\n"

    def __init__(self):
        from aiohttp.http import SERVER_SOFTWARE
        self.RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Length: 13\r\n" + self.MASK + b"Server: "
                         + SERVER_SOFTWARE.encode() + b"\r\n\r\nHello, World!")

    answers_after_eof = False
    # aiohttp 3.8 parses and queues every pipelined request it reads
    # (web_protocol.py's data_received) and never pauses reading while its
    # answers wait to drain, so a client that sends without reading grows
    # the server without bound on any loop (2.2 GiB in 15 s with one such
    # client on asyncio's own loop): that is aiohttp's to fix, and these
    # servers get no never-read clients.
    never_read_clients = 0

    def same(self, got, want):
        return self.DATE.sub(self.MASK, got) == want


async def finish(task):
    """Waits for a writer task that the reader beside it may have outlived:
    its failure is the reader's too (a reset), so it is not reported twice."""
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class Soak:
    """One server's run: its process, its clients' counts, its samples.
    valgrind is the path of valgrind's log when the server runs under it,
    else None."""

    def __init__(self, name, addr, proc, seconds, warmup, valgrind):
        self.name, self.addr, self.proc = name, addr, proc
        self.proto = (AiohttpHttp() if name.startswith("aiohttp") else
                      Http() if name.endswith("http") else Echo())
        self.seconds, self.warmup, self.valgrind = seconds, warmup, valgrind
        self.stopping = False      # SIGTERM sent: client failures no longer count
        self.open = 0              # client sockets open now
        self.conns = 0             # connections made, all kinds
        self.bytes = 0             # bytes echoed back and checked
        self.errors = []           # well-behaved clients' failures
        self.counts = {k: 0 for k in ("steady", "half-open", "slowloris",
                                      "reset", "never-read", "storm", "probe")}
        self.probing = True        # off just before the SIGTERM
        self.probe_tasks = set()
        self.probes_sent = 0
        self.probes_ok = 0
        self.samples = []          # (t, rss_kib, fds, threads, open, probes_ok, bytes)
        self.t0 = time.monotonic()
        self.op_timeout = 120 if valgrind else 30
        # Valgrind keeps its own fds at the top of the range and closes an
        # accepted fd that lands there (the client sees a reset, which is
        # valgrind's doing): its storms stop 64 short of the limit.
        self.storm_to = FD_LIMIT - 64 if valgrind else FD_LIMIT

    def now(self):
        return time.monotonic() - self.t0

    def error(self, what):
        if not self.stopping:
            self.errors.append(f"{self.now():.1f}s {what}")

    async def connect(self, timeout=None):
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        self.open += 1
        try:
            await asyncio.wait_for(loop.sock_connect(s, self.addr),
                                   timeout or self.op_timeout)
        except BaseException:
            self.close(s)
            raise
        self.conns += 1
        return s

    def close(self, s, rst=False):
        if s.fileno() < 0:
            return
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
        s.close()
        self.open -= 1

    async def recv_exact(self, s, n):
        loop = asyncio.get_running_loop()
        got = bytearray()
        while len(got) < n:
            chunk = await asyncio.wait_for(loop.sock_recv(s, min(65536, n - len(got))),
                                           self.op_timeout)
            if not chunk:
                raise ConnectionError(f"EOF after {len(got)} of {n} bytes")
            got += chunk
        return bytes(got)

    # -- well-behaved clients: every byte back, or an error ----------------

    async def steady(self, seed):
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        while not self.stopping:
            s = None
            try:
                s = await self.connect()
                self.counts["steady"] += 1
                for _ in range(rng.randint(50, 300)):
                    if self.stopping:
                        break
                    data, want = self.proto.message(rng, rng.randint(1, 65536))
                    send = loop.create_task(loop.sock_sendall(s, data))
                    try:
                        back = await self.recv_exact(s, len(want))
                    finally:
                        await finish(send)
                    if not self.proto.same(back, want):
                        self.error("steady: answer differs")
                        break
                    self.bytes += len(want)
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                self.error(f"steady: {e!r}")
                await asyncio.sleep(0.5)
            finally:
                if s is not None:
                    self.close(s)

    async def half_open(self, seed):
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        while not self.stopping:
            s = None
            try:
                s = await self.connect()
                self.counts["half-open"] += 1
                data, want = self.proto.message(rng, rng.randint(1, 256 * 1024))

                async def send_then_shut():
                    await loop.sock_sendall(s, data)
                    s.shutdown(socket.SHUT_WR)
                answered_first = not self.proto.answers_after_eof
                send = loop.create_task(loop.sock_sendall(s, data) if answered_first
                                        else send_then_shut())
                try:
                    back = await self.recv_exact(s, len(want))
                finally:
                    await finish(send)
                if answered_first:
                    s.shutdown(socket.SHUT_WR)
                rest = await asyncio.wait_for(loop.sock_recv(s, 1), self.op_timeout)
                if not self.proto.same(back, want) or rest:
                    self.error("half-open: answer differs or no EOF")
                else:
                    self.bytes += len(want)
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                self.error(f"half-open: {e!r}")
                await asyncio.sleep(0.5)
            finally:
                if s is not None:
                    self.close(s)

    async def slowloris(self, seed):
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(rng.random() * 5)
        while not self.stopping:
            s = None
            try:
                s = await self.connect()
                self.counts["slowloris"] += 1
                for b, want in self.proto.slow(rng):
                    if self.stopping:
                        break
                    await loop.sock_sendall(s, b)
                    if want and not self.proto.same(await self.recv_exact(s, len(want)), want):
                        self.error("slowloris: answer differs")
                        break
                    self.bytes += len(want)
                    await asyncio.sleep(1)
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                self.error(f"slowloris: {e!r}")
                await asyncio.sleep(0.5)
            finally:
                if s is not None:
                    self.close(s)

    async def probe(self):
        """One probe: a fresh connection, 16 bytes there and back."""
        self.probes_sent += 1
        s = None
        try:
            s = await self.connect()
            data, want = self.proto.message(random, 16)
            await asyncio.get_running_loop().sock_sendall(s, data)
            if self.proto.same(await self.recv_exact(s, len(want)), want):
                self.probes_ok += 1
                self.counts["probe"] += 1
            else:
                self.error("probe: echo differs")
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            self.error(f"probe: {e!r}")
        finally:
            if s is not None:
                self.close(s)

    # -- hostile clients: their failures are expected ----------------------

    async def reset(self, seed):
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        while not self.stopping:
            s = None
            try:
                s = await self.connect()
                self.counts["reset"] += 1
                await loop.sock_sendall(s, self.proto.message(rng, rng.randint(1, 200000))[0])
                if rng.random() < 0.5:
                    await asyncio.wait_for(loop.sock_recv(s, rng.randint(1, 65536)), 5)
                await asyncio.sleep(rng.random() * 0.2)
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.1)
            finally:
                if s is not None:
                    self.close(s, rst=True)

    async def never_read(self, seed):
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        while not self.stopping:
            s = None
            try:
                s = await self.connect()
                self.counts["never-read"] += 1
                # Write until a write stalls for 2 s: both directions full.
                while not self.stopping:
                    try:
                        await asyncio.wait_for(
                            loop.sock_sendall(s, self.proto.message(rng, 65536)[0]), 2)
                    except asyncio.TimeoutError:
                        break
                await asyncio.sleep(rng.uniform(3, 8))
            except OSError:
                await asyncio.sleep(0.1)
            finally:
                if s is not None:
                    self.close(s, rst=True)

    async def storm(self):
        socks = []
        rng = random.Random(1)
        try:
            for _ in range(FD_LIMIT + 100):
                if self.stopping or self.fds() >= self.storm_to:
                    break
                try:
                    socks.append(await self.connect(timeout=3))
                except (OSError, asyncio.TimeoutError):
                    break          # backlog full: the server is at its limit
            self.counts["storm"] += 1
            await asyncio.sleep(2)
        finally:
            for s in socks:
                self.close(s, rst=rng.random() < 0.5)

    async def storms(self):
        await asyncio.sleep(self.warmup / 2)
        while not self.stopping:
            await self.storm()
            await asyncio.sleep(18)

    # -- the server, seen from /proc ---------------------------------------

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return -1

    def status(self):
        rss = threads = -1
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
        except OSError:
            pass
        return rss, threads

    async def sampler(self):
        while not self.stopping:
            rss, threads = self.status()
            self.samples.append((round(self.now(), 1), rss, self.fds(), threads,
                                 self.open, self.probes_ok, self.bytes))
            if self.probing:
                t = asyncio.get_running_loop().create_task(self.probe())
                self.probe_tasks.add(t)
                t.add_done_callback(self.probe_tasks.discard)
            await asyncio.sleep(1)

    async def run(self):
        rng = random.Random(self.name)
        kinds = ([self.steady] * 8 + [self.half_open] * 2 + [self.slowloris] * 4
                 + [self.reset] * 4 + [self.never_read] * self.proto.never_read_clients)
        self.base_fds = self.fds()
        tasks = [asyncio.get_running_loop().create_task(k(rng.random()))
                 for k in kinds]
        tasks.append(asyncio.get_running_loop().create_task(self.storms()))
        sampler = asyncio.get_running_loop().create_task(self.sampler())
        await asyncio.sleep(self.seconds)
        # The last probes finish (each within its timeout), then, with the
        # full load still on, SIGTERM.
        self.probing = False
        await asyncio.gather(*self.probe_tasks, return_exceptions=True)
        self.stopping = True
        self.proc.send_signal(signal.SIGTERM)
        await sampler
        deadline = time.monotonic() + (300 if self.valgrind else 60)
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()
        # A client that died of an exception it did not expect is a bug
        # here, and its load went missing: that fails the run too.
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(r, Exception):
                self.errors.append(f"client task died: {r!r}")
        if self.proc.poll() is None:
            self.proc.kill()
            self.exit = "hung after SIGTERM (killed)"
        else:
            self.exit = self.proc.returncode

    # -- the verdict -------------------------------------------------------

    def check(self):
        fails = []
        after = [s for s in self.samples if s[0] >= self.warmup]
        during = [s for s in self.samples if s[0] < self.warmup] or self.samples[:1]
        ref_threads = max(s[3] for s in during)
        # RSS: the second half against the first half's highest sample. A
        # leak grows all the way; a heap's high-water mark under storms (the
        # Lua HTTP server's rose for 4 of 10 minutes, then held) levels off.
        rss_from = max(self.warmup, self.seconds / 2)
        first = [s for s in self.samples if s[0] < rss_from] or self.samples[:1]
        ref_rss = max(s[1] for s in first)
        self.rss_bound = ref_rss + max(ref_rss // 5, 8 * 1024)
        self.rss_from = rss_from
        for i, s in enumerate(self.samples):
            if s[0] < self.warmup:
                continue
            t, rss, fds, threads = s[:4]
            if rss < 0:
                continue           # the process was gone
            # a storm's 1000 closes may take the server seconds to see
            recent = max(x[4] for x in self.samples[max(0, i - 10):i + 1])
            if not self.valgrind and t >= rss_from and rss > self.rss_bound:
                fails.append(f"{t}s: RSS {rss} KiB over {self.rss_bound} KiB")
            if fds > self.base_fds + recent + 16:
                fails.append(f"{t}s: {fds} fds over {self.base_fds} + {recent} clients + 16")
            if threads > ref_threads:
                fails.append(f"{t}s: {threads} threads, warm-up had {ref_threads}")
        if not after:
            fails.append("no sample after warm-up")
        fails += self.errors
        if self.probes_ok < self.probes_sent:
            fails.append(f"{self.probes_sent - self.probes_ok} of {self.probes_sent} probes unanswered")
        if self.exit != 0:
            fails.append(f"exit after SIGTERM: {self.exit}")
        if self.valgrind:
            log = open(self.valgrind).read()
            if "ERROR SUMMARY: 0 errors" not in log:
                fails.append(f"valgrind found errors or leaks: see {self.valgrind}")
        return fails


def write_csv(path, soak):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "rss_kib", "fds", "threads", "client_conns_open",
                     "probes_ok", "bytes_checked"])
        w.writerows(soak.samples)


def write_png(path, soak):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s[0] for s in soak.samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(t, [s[1] / 1024 for s in soak.samples], label="RSS")
    if not soak.valgrind:
        axes[0].hlines(soak.rss_bound / 1024, soak.rss_from, max(t), color="r", ls="--",
                       label="bound")
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].legend(loc="upper left")
    axes[1].plot(t, [s[2] for s in soak.samples], label="server fds")
    axes[1].plot(t, [s[4] for s in soak.samples], label="client conns", alpha=0.6)
    axes[1].set_ylabel("fds")
    axes[1].legend(loc="upper left")
    axes[2].plot(t, [s[3] for s in soak.samples])
    axes[2].set_ylabel("threads")
    axes[2].set_xlabel("seconds")
    for ax in axes:
        ax.axvline(soak.warmup, color="gray", ls=":")
    fig.suptitle(f"treadle soak: {soak.name} echo server")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, valgrind, outdir):
    port = free_port() if "PORT" in SERVERS[name] else None
    cmd = [str(port) if c == "PORT" else c for c in SERVERS[name]]
    if valgrind:
        cmd = VALGRIND + [f"--log-file={outdir}/{name}-valgrind.log"] + cmd
    cmd = ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--"] + cmd
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "bindings", "python")
    env["LUA_CPATH"] = os.path.join(ROOT, "build-release", "bindings", "lua", "?.so") + ";;"
    label = name + ("-valgrind" if valgrind else "")
    err = open(os.path.join(outdir, f"{label}.stderr"), "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=err, text=True)
    deadline = time.monotonic() + (120 if valgrind else 30)
    addr = None
    while port is not None and time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            addr = ("127.0.0.1", port)
            break
        except OSError:
            time.sleep(0.1)
    # Reading stdout until "listening on" (a line, flushed by every example).
    while addr is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"listening on ([\d.]+):(\d+)", line)
        if m:
            addr = (m.group(1), int(m.group(2)))
            break
    if addr is None:
        proc.kill()
        proc.wait()
        raise SystemExit(f"soak: {label} did not start listening (see {outdir}/{label}.stderr)")
    return label, addr, proc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--servers", default="c,python,lua,lua-http,aiohttp")
    ap.add_argument("--out", default=os.path.join(ROOT, "build-soak"))
    ap.add_argument("--valgrind", action="store_true",
                    help="only the C server, under valgrind memcheck")
    a = ap.parse_args()
    servers = ["c"] if a.valgrind else [s for s in a.servers.split(",") if s]
    for s in servers:
        if s not in SERVERS:
            raise SystemExit(f"soak: unknown server {s!r} (have {', '.join(SERVERS)})")
    os.makedirs(a.out, exist_ok=True)
    # The storms need room on this side too.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    seconds = a.minutes * 60
    warmup = min(60.0, seconds * 0.2)
    rows, failed = [], False
    for name in servers:
        label, addr, proc = start(name, a.valgrind, a.out)
        print(f"=== soak: {label} on {addr[0]}:{addr[1]} for {seconds:.0f}s "
              f"(warm-up {warmup:.0f}s)", flush=True)
        vlog = os.path.join(a.out, f"{label}.log") if a.valgrind else None
        soak = Soak(label, addr, proc, seconds, warmup, vlog)
        try:
            asyncio.run(soak.run())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        fails = soak.check()
        write_csv(os.path.join(a.out, f"{label}.csv"), soak)
        write_png(os.path.join(a.out, f"{label}.png"), soak)
        peak_rss = max(s[1] for s in soak.samples)
        peak_fds = max(s[2] for s in soak.samples)
        counts = " ".join(f"{k}:{v}" for k, v in soak.counts.items())
        print(f"{label}: {soak.conns} connections ({counts}); "
              f"fds before load {soak.base_fds}; exit {soak.exit}")
        # the first 5 of each kind (a leak fails every sample after a point)
        kinds = {}
        for f in fails:
            kind = re.sub(r"[\d.]+", "N", f.split(": ", 1)[-1])[:30]
            kinds.setdefault(kind, []).append(f)
        for same in kinds.values():
            for f in same[:5]:
                print(f"  FAIL {f}")
            if len(same) > 5:
                print(f"  ... and {len(same) - 5} more like it")
        failed |= bool(fails)
        rows.append((label, f"{seconds / 60:.1f}", f"{peak_rss / 1024:.1f} MiB",
                     str(peak_fds), str(soak.conns), str(soak.bytes),
                     str(len(fails)), "FAIL" if fails else "ok"))
    head = ("server", "minutes", "peak RSS", "peak fds", "clients", "bytes",
            "errors", "result")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print("=== soak summary (CSV and PNG per server in %s)" % a.out)
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
