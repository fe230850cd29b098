"""Long loops of sleeps, spawns and connections leave memory and the number of
Python objects flat.

Each test warms up first (allocator pools, free lists, the runtime's slabs),
then measures; the loops are sized so that the whole file takes about two
minutes on a small machine (deselect with -m "not leak").
"""

import asyncio
import gc
import os
import sys

import pytest

import treadle
from conftest import run_on

pytestmark = pytest.mark.leak

OBJ_SLACK = 300          # gc-tracked objects
RSS_SLACK = 4 << 20      # bytes

# Under AddressSanitizer (quarantine) or ThreadSanitizer (shadow memory) RSS
# grows by design: only the object and fd counts are checked there.
SANITIZER = os.environ.get("TREADLE_SANITIZER") or (
    "san.so" in os.environ.get("LD_PRELOAD", "") and "sanitizer") or ""


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def nfds():
    return len(os.listdir("/proc/self/fd"))


def snapshot():
    gc.collect()
    gc.collect()
    return len(gc.get_objects()), rss(), nfds()


def check(flavor, what, before, after, per_iter_n, rss_slack=RSS_SLACK):
    objs = after[0] - before[0]
    mem = after[1] - before[1]
    fds = after[2] - before[2]
    print(f"[{flavor}] {what}: {per_iter_n} iterations: objects {objs:+d}, "
          f"RSS {mem / 1024:+.0f} KiB, fds {fds:+d}")
    assert objs < OBJ_SLACK, f"{objs} more gc objects after {per_iter_n} {what}"
    if not SANITIZER:
        assert mem < rss_slack, f"RSS grew {mem / 1024:.0f} KiB after {per_iter_n} {what}"
    assert fds <= 0, f"{fds} more file descriptors after {per_iter_n} {what}"


def test_sleep_zero_loop(flavor):
    n, warm = 100_000, 10_000

    async def main():
        for _ in range(warm):
            await treadle.sleep(0)
        before = snapshot()
        for _ in range(n):
            await treadle.sleep(0)
        return before, snapshot()

    before, after = run_on(flavor, main(), limit=120)
    check(flavor, "sleep(0)", before, after, n)


def test_short_sleep_and_timeout_loop(flavor):
    # each iteration waits for a timer tick (about 1 ms): keep the count small
    n, warm = 3_000, 300

    async def late():
        await treadle.sleep(1)

    async def body():
        await treadle.sleep(1e-6)
        try:
            await treadle.timeout(0, late())
        except TimeoutError:
            pass

    async def main():
        for _ in range(warm):
            await body()
        before = snapshot()
        for _ in range(n):
            await body()
        return before, snapshot()

    before, after = run_on(flavor, main(), limit=120)
    check(flavor, "sleep+timeout", before, after, n)


def test_spawn_loop(flavor):
    n, warm, batch = 100_000, 10_000, 500

    async def child(i):
        return i

    async def spawn_some(count):
        total = 0
        for _ in range(count // batch):
            jhs = [treadle.spawn(child(i)) for i in range(batch)]
            for jh in jhs:
                total += await jh
        return total

    async def main():
        await spawn_some(warm)
        before = snapshot()
        total = await spawn_some(n)
        return before, snapshot(), total

    before, after, total = run_on(flavor, main(), limit=120)
    assert total == (n // batch) * (batch * (batch - 1) // 2)
    check(flavor, "spawns", before, after, n)


def test_spawn_error_and_abort_loop(flavor):
    n, warm = 10_000, 1_000

    async def bad():
        raise ValueError("x")

    async def forever():
        await treadle.sleep(float("inf"))

    async def some(count):
        for _ in range(count):
            try:
                await treadle.spawn(bad())
            except ValueError:
                pass
            jh = treadle.spawn(forever())
            await treadle.yield_now()
            jh.abort()
            try:
                await jh
            except treadle.CancelledError:
                pass

    async def main():
        await some(warm)
        before = snapshot()
        await some(n)
        return before, snapshot()

    before, after = run_on(flavor, main(), limit=120)
    check(flavor, "failed+aborted spawns", before, after, n)


def test_spawn_blocking_loop(flavor):
    n, warm = 5_000, 500

    async def main():
        for i in range(warm):
            await treadle.spawn_blocking(abs, -i)
        before = snapshot()
        for i in range(n):
            assert await treadle.spawn_blocking(abs, -i) == i
        return before, snapshot()

    before, after = run_on(flavor, main(), limit=120)
    check(flavor, "spawn_blocking", before, after, n)


def test_connection_loop(flavor):
    n, warm = 2_000, 300

    async def handler(s):
        try:
            d = await s.read()
            await s.write(d)
        finally:
            s.close()

    async def server(lst):
        async for s, _ in lst:
            treadle.spawn(handler(s))

    async def conns(port, count):
        for i in range(count):
            msg = b"%d" % i
            c = await treadle.TcpStream.connect("127.0.0.1", port)
            await c.write(msg)
            got = await c.read()
            assert got == msg, (got, msg)
            assert await c.read() == b""
            c.close()

    async def main():
        lst = await treadle.TcpListener.bind("127.0.0.1", 0)
        port = lst.local_addr[1]
        srv = treadle.spawn(server(lst))
        await conns(port, warm)
        before = snapshot()
        await conns(port, n)
        srv.abort()
        try:
            await srv
        except treadle.CancelledError:
            pass
        lst.close()
        # let the last handlers finish and close
        await treadle.sleep(0.05)
        after = snapshot()
        return before, after

    before, after = run_on(flavor, main(), limit=120)
    # the listener's own fd is gone in `after`, hence fds <= 0 as well
    check(flavor, "connections", before, after, n)


def test_runtime_create_destroy_loop(flavor):
    n, warm = 200, 20

    async def main():
        return 1

    def some(count):
        for _ in range(count):
            with treadle.Runtime(flavor=flavor, workers=2) as rt:
                rt.block_on(main())

    some(warm)
    before = snapshot()
    some(n)
    check(flavor, "runtimes", before, snapshot(), n)


# The plain build makes 100,000 connections; the debug interpreter and the
# sanitizer builds, which look for reference and memory errors rather than
# growth, make 10,000 (they run several times slower).
LOOP_CONNECTIONS = 10_000 if SANITIZER or hasattr(sys, "gettotalrefcount") else 100_000


def test_event_loop_connection_loop(flavor):
    """treadle.EventLoop's C stream transport: connections 100 at a time, each
    a round trip through open_connection and a create_server protocol, then a
    close from the client: objects, RSS and fds stay flat."""
    n, warm, batch = LOOP_CONNECTIONS, LOOP_CONNECTIONS // 5, 100
    loop = treadle.new_event_loop(flavor=flavor, workers=2 if flavor == "multi_thread" else None)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def one(port, i):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        msg = b"%d\n" % i
        w.write(msg)
        assert await r.readexactly(len(msg)) == msg
        w.close()
        await w.wait_closed()

    async def conns(port, count):
        for start in range(0, count, batch):
            await asyncio.gather(*(one(port, start + i) for i in range(batch)))
        # the server sides see the end of file and close after the clients
        for _ in range(1000):
            if not loop._transports:
                break
            await asyncio.sleep(0.005)
        assert not loop._transports

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=2 * batch)
        port = server.sockets[0].getsockname()[1]
        await conns(port, warm)
        before = snapshot()
        await conns(port, n)
        after = snapshot()
        server.close()
        await server.wait_closed()
        return before, after

    try:
        before, after = loop.run_until_complete(asyncio.wait_for(main(), 600))
    finally:
        loop.close()
    # On multi_thread, glibc's per-thread arenas move RSS by a few MiB either
    # way over such a run (measured: 38 to 41.5 to 40.6 MiB over 200,000); a
    # leak of 100 bytes a connection would be 10 MiB.
    check(flavor, "event loop connections", before, after, n, rss_slack=8 << 20)
