"""asyncio libraries beyond aiohttp, unchanged, on treadle's loop (issue 15:
"Python async scripts are written against asyncio and its libraries"):
Debian's websockets, httpx, anyio and aiosqlite, each on both flavors. Every
result is checked exactly; every wait is bounded (LIMIT_S) so that a hang
fails the test; servers listen on 127.0.0.1 on a free port."""

import asyncio
import os
import sys
import threading

import pytest

import treadle

websockets = pytest.importorskip("websockets")
httpx = pytest.importorskip("httpx")
anyio = pytest.importorskip("anyio")
aiosqlite = pytest.importorskip("aiosqlite")
web = pytest.importorskip("aiohttp.web")
test_utils = pytest.importorskip("test.test_asyncio.utils")  # its TLS certificates

LIMIT_S = 30


@pytest.fixture(autouse=True)
def threads_joined():
    """The libraries' own threads (anyio's workers, aiosqlite's) end with
    the test: one still ending later would drop the last reference to a
    closed loop inside another test's counts."""
    before = set(threading.enumerate())
    yield
    for t in set(threading.enumerate()) - before:
        t.join(LIMIT_S)
        assert not t.is_alive(), f"{t!r} did not end"


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, LIMIT_S))


# ------------------------------------------------------------- websockets


async def ws_echo(conn):
    async for message in conn:
        await conn.send(message)


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_websockets_echo(loop, tls):
    """websockets' server and client (asyncio streams' protocol underneath;
    wss: asyncio's SSL protocol over treadle's transport): text and binary
    frames, a 1 MiB frame, ping/pong, a clean close with its code."""
    server_ssl = test_utils.simple_server_sslcontext() if tls else None
    client_ssl = test_utils.simple_client_sslcontext() if tls else None

    async def main():
        async with websockets.serve(ws_echo, "127.0.0.1", 0, ssl=server_ssl,
                                    max_size=2**21) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"
            async with websockets.connect(url, ssl=client_ssl, max_size=2**21) as c:
                texts = []
                for i in range(100):
                    await c.send(f"message {i}")
                    texts.append(await c.recv())
                big = os.urandom(1 << 20)
                await c.send(big)
                echoed = await c.recv()
                latency = await (await c.ping())
                await c.close(code=4000, reason="done")
                return texts, echoed == big, latency, c.close_code, c.close_reason

    texts, big_ok, latency, code, reason = run(loop, main())
    assert texts == [f"message {i}" for i in range(100)]
    assert big_ok
    assert latency is None or latency >= 0  # websockets 10 answers None, later ones a float
    assert (code, reason) == (4000, "done")


def test_websockets_server_sees_client_vanish(loop):
    """A client whose transport is aborted (no close frame): the server's
    handler ends with ConnectionClosedError, code 1006, and nothing hangs."""

    async def main():
        ended = loop.create_future()

        async def handler(conn):
            try:
                await conn.recv()
            except websockets.ConnectionClosedError as e:
                ended.set_result(e.rcvd is None and conn.close_code)

        async with websockets.serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            c = await websockets.connect(f"ws://127.0.0.1:{port}")
            c.transport.abort()
            code = await ended
            await c.wait_closed()
            return code

    assert run(loop, main()) == 1006


# ------------------------------------------------------------------ httpx


async def start_aiohttp():
    """An aiohttp app (GET echoes a query value; POST answers the body's
    length and its SHA-256) on 127.0.0.1; returns (runner, base url)."""
    import hashlib

    async def get(request):
        return web.Response(text="hello " + request.query.get("n", ""))

    async def post(request):
        body = await request.read()
        return web.json_response({"len": len(body),
                                  "sha": hashlib.sha256(body).hexdigest()})

    async def stream(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(100):
            await resp.write(b"%d\n" % i)
        await resp.write_eof()
        return resp

    app = web.Application(client_max_size=2**24)
    app.router.add_get("/", get)
    app.router.add_post("/", post)
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def test_httpx_client(loop):
    """httpx's AsyncClient (httpcore on anyio's asyncio backend) against an
    aiohttp server on the same loop: 50 concurrent GETs on a pool of
    keep-alive connections, an 8 MiB POST, a chunked streamed response, and a
    refused connection raising httpx.ConnectError."""
    import hashlib

    async def main():
        runner, url = await start_aiohttp()
        try:
            limits = httpx.Limits(max_connections=10)
            async with httpx.AsyncClient(limits=limits) as client:
                rs = await asyncio.gather(*(client.get(url, params={"n": i})
                                            for i in range(50)))
                texts = [r.text for r in rs]
                body = os.urandom(8 << 20)
                posted = (await client.post(url, content=body)).json()
                lines = []
                async with client.stream("GET", url + "/stream") as r:
                    async for line in r.aiter_lines():
                        lines.append(line)
            refused = None
            async with httpx.AsyncClient() as client:
                try:
                    await client.get("http://127.0.0.1:1/")
                except httpx.ConnectError as e:
                    refused = e
            return texts, posted, hashlib.sha256(body).hexdigest(), lines, refused
        finally:
            await runner.cleanup()

    texts, posted, sha, lines, refused = run(loop, main())
    assert texts == [f"hello {i}" for i in range(50)]
    assert posted == {"len": 8 << 20, "sha": sha}
    # httpx 0.23 keeps each line's end; later ones drop it
    assert [line.rstrip("\n") for line in lines] == [str(i) for i in range(100)]
    assert refused is not None


# ------------------------------------------------------------------ anyio


async def anyio_program():
    """TCP through anyio's streams, a task group, a thread, a process, a
    cancel scope, and the result of each."""
    out = {}

    async def handle(stream):
        async with stream:
            async for chunk in stream:
                await stream.send(chunk.upper())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with await anyio.connect_tcp("127.0.0.1", port) as s:
            got = b""
            await s.send(b"abc" * 1000)
            while len(got) < 3000:
                got += await s.receive()
            out["tcp"] = got == b"ABC" * 1000
        out["thread"] = await anyio.to_thread.run_sync(sum, range(10))
        # the interpreter as the child: under TSan's LD_PRELOAD, sh crashes
        done = await anyio.run_process([sys.executable, "-c", "print('hi'); exit(3)"],
                                       check=False)
        out["process"] = (done.returncode, done.stdout)
        with anyio.move_on_after(0.01) as scope:
            await anyio.sleep(60)
        out["cancelled"] = scope.cancel_called
        send, receive = anyio.create_memory_object_stream(10)
        async with send, receive:
            tg.start_soon(send.send, "item")
            out["memory"] = await receive.receive()
        tg.cancel_scope.cancel()
    await listener.aclose()
    return out


ANYIO_EXPECTED = {"tcp": True, "thread": 45, "process": (3, b"hi\n"), "cancelled": True,
                  "memory": "item"}


def test_anyio_on_the_loop(loop):
    """anyio's asyncio backend inside a coroutine on treadle's loop."""
    assert run(loop, anyio_program()) == ANYIO_EXPECTED


def test_anyio_run_with_the_policy(flavor):
    """anyio.run(..., backend="asyncio") with treadle.EventLoopPolicy
    installed: anyio's own runner makes treadle's loop (checked from inside)."""
    old = asyncio.get_event_loop_policy()
    treadle.install(flavor=flavor)
    try:
        async def main():
            kind = type(asyncio.get_running_loop())
            return kind, await anyio_program()

        kind, out = anyio.run(main, backend="asyncio")
    finally:
        asyncio.set_event_loop_policy(old)
    assert kind is treadle.EventLoop
    assert out == ANYIO_EXPECTED


# --------------------------------------------------------------- aiosqlite


def test_aiosqlite(loop, tmp_path):
    """aiosqlite runs sqlite3 on its own thread and answers through
    call_soon_threadsafe: 1,000 rows in, a sum and a row count out, a
    constraint error raised to the awaiting task."""
    import sqlite3

    async def main():
        async with aiosqlite.connect(tmp_path / "t.db") as db:
            await db.execute("create table t (a integer primary key, b text)")
            await db.executemany("insert into t values (?, ?)",
                                 [(i, str(i)) for i in range(1000)])
            await db.commit()
            async with db.execute("select sum(a), count(*) from t") as cur:
                row = await cur.fetchone()
            try:
                await db.execute("insert into t values (1, 'again')")
                dup = None
            except sqlite3.IntegrityError as e:
                dup = e
            return tuple(row), dup

    row, dup = run(loop, main())
    assert row == (499500, 1000)
    assert isinstance(dup, sqlite3.IntegrityError)
