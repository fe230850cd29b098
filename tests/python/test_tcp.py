"""TcpListener / TcpStream on 127.0.0.1, port 0."""

import array
import errno
import random
import socket
import threading

import pytest

import treadle

HOST = "127.0.0.1"


async def echo_handler(stream):
    try:
        while True:
            data = await stream.read(65536)
            if not data:
                break
            await stream.write(data)
    finally:
        stream.close()


async def echo_server(listener):
    async for stream, _addr in listener:
        treadle.spawn(echo_handler(stream))


async def start_echo():
    listener = await treadle.TcpListener.bind(HOST, 0)
    port = listener.local_addr[1]
    return listener, port, treadle.spawn(echo_server(listener))


async def stop_server(listener, jh):
    jh.abort()
    try:
        await jh
    except (treadle.CancelledError, treadle.ClosedError):
        pass
    listener.close()


async def read_all(stream):
    chunks = []
    while True:
        d = await stream.read(65536)
        if not d:
            return b"".join(chunks)
        chunks.append(d)


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


# ---------------------------------------------------------------- echo

SIZES = [0, 1, 2, 7, 100, 1000, 4095, 4096, 4097, 65535, 65536, 65537, 100_000, 1 << 20, 3 << 20]


def test_echo_many_sizes_many_connections(run):
    nconn = 48

    async def client(i, port):
        size = SIZES[i % len(SIZES)]
        payload = random.Random(i).randbytes(size)
        s = await treadle.TcpStream.connect(HOST, port)

        async def writer():
            await s.write(payload)
            await s.shutdown()

        wj = treadle.spawn(writer())
        got = await read_all(s)
        await wj
        s.close()
        if got != payload:
            return f"conn {i} size {size}: got {len(got)} bytes, first difference at {first_difference(got, payload)}"
        return None

    async def main():
        listener, port, server = await start_echo()
        jhs = [treadle.spawn(client(i, port)) for i in range(nconn)]
        errors = [e for e in [await jh for jh in jhs] if e]
        await stop_server(listener, server)
        return errors

    assert run(main(), limit=120) == []


def test_echo_many_round_trips(run):
    async def client(i, port):
        rnd = random.Random(1000 + i)
        s = await treadle.TcpStream.connect(HOST, port)
        s.set_nodelay(True)
        bad = 0
        for k in range(20):
            msg = rnd.randbytes(rnd.randint(1, 300))
            await s.write(msg)
            got = b""
            while len(got) < len(msg):
                d = await s.read(len(msg) - len(got))
                assert d, "early EOF"
                got += d
            bad += got != msg
        s.close()
        return bad

    async def main():
        listener, port, server = await start_echo()
        jhs = [treadle.spawn(client(i, port)) for i in range(150)]
        bad = sum([await jh for jh in jhs])
        await stop_server(listener, server)
        return bad

    assert run(main(), limit=120) == 0


def test_echo_against_plain_socket_client(run):
    payload = random.Random(7).randbytes(1 << 20)

    def blocking_client(port):
        with socket.create_connection((HOST, port), timeout=20) as c:
            def send():
                c.sendall(payload)
                c.shutdown(socket.SHUT_WR)

            t = threading.Thread(target=send)
            t.start()
            chunks = []
            while True:
                d = c.recv(65536)
                if not d:
                    break
                chunks.append(d)
            t.join()
            return b"".join(chunks)

    async def main():
        listener, port, server = await start_echo()
        got = await treadle.spawn_blocking(blocking_client, port)
        await stop_server(listener, server)
        return got

    assert run(main()) == payload


def test_client_against_plain_socket_server(run):
    payload = random.Random(8).randbytes(300_000)
    srv = socket.create_server((HOST, 0))
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(20)
            data = b""
            while True:
                d = conn.recv(65536)
                if not d:
                    break
                data += d
            conn.sendall(data[::-1])

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    async def main():
        s = await treadle.TcpStream.connect(HOST, port)
        await s.write(payload)
        await s.shutdown()
        got = await read_all(s)
        s.close()
        return got

    try:
        assert run(main()) == payload[::-1]
    finally:
        t.join(10)
        srv.close()


# ---------------------------------------------------------------- read / read_into / write

async def pair():
    """A connected (client, server_stream, listener) triple."""
    listener = await treadle.TcpListener.bind(HOST, 0)
    client = await treadle.TcpStream.connect(HOST, listener.local_addr[1])
    server, _ = await listener.accept()
    return client, server, listener


def test_read_n_limits_size(run):
    async def main():
        c, s, lst = await pair()
        await s.write(b"0123456789")
        got = b""
        while len(got) < 10:
            d = await c.read(4)
            assert 1 <= len(d) <= 4, d
            got += d
        for x in (c, s, lst):
            x.close()
        return got

    assert run(main()) == b"0123456789"


def test_read_into(run):
    data = bytes(range(256)) * 40

    async def main():
        c, s, lst = await pair()
        await s.write(data)
        s.close()
        got = bytearray()
        buf = bytearray(1000)
        # a plain bytearray
        n = await c.read_into(buf)
        assert isinstance(n, int) and 1 <= n <= 1000
        got += buf[:n]
        # a memoryview into the middle of a bytearray: only that window is written
        buf2 = bytearray(b"\xee" * 300)
        n = await c.read_into(memoryview(buf2)[100:200])
        assert 1 <= n <= 100
        assert buf2[:100] == b"\xee" * 100 and buf2[100 + n:] == b"\xee" * (200 - n)
        got += buf2[100:100 + n]
        # an array.array
        arr = array.array("B", bytes(500))
        n = await c.read_into(arr)
        assert 1 <= n <= 500
        got += arr.tobytes()[:n]
        while True:
            n = await c.read_into(buf)
            if n == 0:
                break
            got += buf[:n]
        assert await c.read_into(buf) == 0  # EOF stays EOF
        c.close()
        lst.close()
        return bytes(got)

    assert run(main()) == data


def test_read_into_rejects_read_only(run):
    async def main():
        c, s, lst = await pair()
        with pytest.raises((TypeError, BufferError)):
            await c.read_into(b"immutable")
        with pytest.raises((TypeError, BufferError)):
            await c.read_into("str")
        for x in (c, s, lst):
            x.close()
        return "ok"

    assert run(main()) == "ok"


def test_write_buffer_types(run):
    ba = bytearray(b"from-bytearray|")
    big = bytearray(random.Random(3).randbytes(200_000))
    parts = [
        b"from-bytes|",
        ba,
        memoryview(b"from-memoryview|"),
        memoryview(b"xxfrom-slice|xx")[2:-2],
        array.array("B", b"from-array|"),
        b"",
        memoryview(big),
    ]
    expected = b"".join(bytes(p) for p in parts)

    async def main():
        c, s, lst = await pair()

        async def writer():
            for p in parts:
                r = await c.write(p)
                assert r is None or r == len(bytes(p))
            await c.shutdown()

        wj = treadle.spawn(writer())
        got = await read_all(s)
        await wj
        for x in (c, s, lst):
            x.close()
        return got

    assert run(main()) == expected


# More than the socket buffers of both ends hold: such a write waits.
BIG = 32 << 20

MUTABLE_BUFFERS = {
    "bytearray": lambda data: bytearray(data),
    "memoryview": lambda data: memoryview(bytearray(data)),
    "array": lambda data: array.array("B", data),
}


def refill(buf, byte):
    memoryview(buf).cast("B")[:] = bytes([byte]) * len(memoryview(buf).cast("B"))


async def read_while_writing(c, s, lst, writers):
    """Reads s to its end while the `writers` tasks finish writing on c,
    then closes all three; returns what s read."""
    reader = treadle.spawn(read_all(s))
    for w in writers:
        await w
    await c.shutdown()
    got = await reader
    for x in (c, s, lst):
        x.close()
    return got


@pytest.mark.parametrize("kind", MUTABLE_BUFFERS)
def test_issue13_write_takes_a_mutable_buffer_at_the_call(run, kind):
    # the bytes sent are those the buffer held when write() was called, as
    # with asyncio's transports: a change after it (before the await, or
    # while the write waits for the peer) is not sent
    async def main():
        c, s, lst = await pair()
        buf = MUTABLE_BUFFERS[kind](b"a" * BIG)
        op = c.write(buf)
        refill(buf, ord("b"))  # before the await
        writer = treadle.spawn(op)
        await treadle.sleep(0.05)
        assert not writer.done()  # nobody reads: it waits
        refill(buf, ord("c"))  # while it waits
        return await read_while_writing(c, s, lst, [writer])

    got = run(main())
    assert len(got) == BIG
    assert got == b"a" * BIG, f"changed at byte {first_difference(got, b'a' * BIG)}"


def test_issue13_writers_of_several_tasks_go_out_whole_in_order(run):
    n = BIG // 4
    log = []

    async def writer(stream, i, buf):
        op = stream.write(buf)  # takes the bytes now
        log.append(i)
        await op

    async def main():
        c, s, lst = await pair()
        buf = bytearray(n)  # one buffer, refilled for every writer
        writers = []
        for i in range(4):
            refill(buf, ord("A") + i)
            writers.append(treadle.spawn(writer(c, i, buf)))
            while len(log) <= i:  # this write has queued before the next one
                await treadle.sleep(0.001)
            await treadle.sleep(0.01)
        assert not any(w.done() for w in writers)  # nobody reads yet
        return await read_while_writing(c, s, lst, writers)

    got = run(main())
    expected = b"".join(bytes([ord("A") + i]) * n for i in range(4))
    assert len(got) == len(expected)
    assert got == expected, f"differs at byte {first_difference(got, expected)}"


def test_write_rejects_bad_types(run):
    async def main():
        c, s, lst = await pair()
        with pytest.raises(TypeError):
            await c.write("text")
        with pytest.raises(TypeError):
            await c.write(42)
        with pytest.raises((TypeError, BufferError, ValueError)):
            await c.write(memoryview(b"abcdef")[::2])  # not contiguous
        # the stream still works afterwards
        await c.write(b"still-fine")
        await c.shutdown()
        got = await read_all(s)
        for x in (c, s, lst):
            x.close()
        return got

    assert run(main()) == b"still-fine"


def test_eof_reads_empty(run):
    async def main():
        c, s, lst = await pair()
        s.close()
        assert await c.read() == b""
        assert await c.read() == b""
        assert await c.read(10) == b""
        c.close()
        lst.close()
        return "ok"

    assert run(main()) == "ok"


def test_half_close(run):
    async def main():
        c, s, lst = await pair()
        await c.write(b"hello")
        await c.shutdown()  # our write side only
        assert await read_all(s) == b"hello"  # the server sees EOF after the data
        await s.write(b"bye")  # and can still answer
        s.close()
        assert await read_all(c) == b"bye"  # we can still read
        with pytest.raises((OSError, treadle.Error)):
            await c.write(b"after shutdown")
        c.close()
        lst.close()
        return "ok"

    assert run(main()) == "ok"


# ---------------------------------------------------------------- errors

def test_connect_refused(run):
    holder = socket.socket()
    holder.bind((HOST, 0))  # bound, not listening: connecting is refused
    port = holder.getsockname()[1]

    async def main():
        with pytest.raises(ConnectionRefusedError) as info:
            await treadle.TcpStream.connect(HOST, port)
        return info.value.errno

    try:
        assert run(main()) == errno.ECONNREFUSED
    finally:
        holder.close()


def test_port_in_use(run):
    holder = socket.create_server((HOST, 0))
    port = holder.getsockname()[1]

    async def main():
        with pytest.raises(OSError) as info:
            await treadle.TcpListener.bind(HOST, port)
        first = info.value.errno
        lst = await treadle.TcpListener.bind(HOST, 0)
        with pytest.raises(OSError) as info:
            await treadle.TcpListener.bind(HOST, lst.local_addr[1])
        lst.close()
        return first, info.value.errno

    try:
        assert run(main()) == (errno.EADDRINUSE, errno.EADDRINUSE)
    finally:
        holder.close()


def test_reuse_port(run):
    async def main():
        a = await treadle.TcpListener.bind(HOST, 0, reuse_port=True)
        port = a.local_addr[1]
        b = await treadle.TcpListener.bind(HOST, port, reuse_port=True, backlog=16)
        assert b.local_addr == (HOST, port)
        a.close()
        b.close()
        return "ok"

    assert run(main()) == "ok"


@pytest.mark.parametrize("port", [-1, 65536, 100_000, 2**40])
def test_bad_port_value_error(run, port):
    async def main():
        with pytest.raises(ValueError):
            await treadle.TcpListener.bind(HOST, port)
        with pytest.raises(ValueError):
            await treadle.TcpStream.connect(HOST, port)
        return "ok"

    assert run(main()) == "ok"


@pytest.mark.parametrize("host, port", [(HOST, "80"), (HOST, 1.5), (123, 80), (b"127.0.0.1", 80)])
def test_bad_argument_types(run, host, port):
    async def main():
        with pytest.raises(TypeError):
            await treadle.TcpListener.bind(host, port)
        with pytest.raises(TypeError):
            await treadle.TcpStream.connect(host, port)
        return "ok"

    assert run(main()) == "ok"


def test_unknown_host(run):
    # one real lookup each (the resolver may ask DNS: up to a few seconds here)
    async def main():
        with pytest.raises(socket.gaierror) as info:
            await treadle.TcpStream.connect("no-such-host.invalid", 80)
        assert isinstance(info.value, OSError)
        with pytest.raises(socket.gaierror):
            await treadle.TcpListener.bind("no-such-host.invalid", 0)
        # a malformed name fails in the resolver without any query
        with pytest.raises(socket.gaierror):
            await treadle.TcpStream.connect("bad host", 80)
        return "ok"

    assert run(main()) == "ok"


def test_close_wakes_reader(run):
    async def main():
        c, s, lst = await pair()
        started = []

        async def reader():
            started.append(1)
            return await c.read()

        jh = treadle.spawn(reader())
        while not started:
            await treadle.sleep(0.001)
        await treadle.sleep(0.02)
        assert not jh.done()
        c.close()
        with pytest.raises(treadle.ClosedError) as e:
            await treadle.timeout(5, jh)
        # issue 13: the message says which side closed it
        assert "closed on this side" in str(e.value), str(e.value)
        with pytest.raises(treadle.ClosedError, match="closed on this side"):
            await c.read()  # a new read of a stream closed here
        s.close()
        lst.close()
        return "ok"

    assert run(main()) == "ok"


def test_close_wakes_blocked_writer(run):
    async def main():
        c, s, lst = await pair()  # nobody reads s: c's write fills the buffers and waits
        progress = []

        async def writer():
            chunk = bytes(1 << 20)
            while True:
                await c.write(chunk)
                progress.append(1)

        jh = treadle.spawn(writer())
        await treadle.sleep(0.1)
        n = len(progress)
        await treadle.sleep(0.05)
        assert len(progress) == n and not jh.done()  # blocked in write
        c.close()
        with pytest.raises(treadle.ClosedError):
            await treadle.timeout(5, jh)
        s.close()
        lst.close()
        return "ok"

    assert run(main()) == "ok"


def test_close_wakes_accept(run):
    async def main():
        lst = await treadle.TcpListener.bind(HOST, 0)

        async def acceptor():
            return await lst.accept()

        jh = treadle.spawn(acceptor())
        await treadle.sleep(0.02)
        lst.close()
        with pytest.raises(treadle.ClosedError):
            await treadle.timeout(5, jh)
        return "ok"

    assert run(main()) == "ok"


def test_operations_after_close(run):
    async def main():
        c, s, lst = await pair()
        c.close()
        c.close()  # twice is harmless
        with pytest.raises(treadle.ClosedError):
            await c.read()
        with pytest.raises(treadle.ClosedError):
            await c.read_into(bytearray(10))
        with pytest.raises(treadle.ClosedError):
            await c.write(b"x")
        with pytest.raises(treadle.ClosedError):
            await c.shutdown()
        assert await read_all(s) == b""  # the peer sees EOF
        s.close()
        lst.close()
        lst.close()
        with pytest.raises(treadle.ClosedError):
            await lst.accept()
        return "ok"

    assert run(main()) == "ok"


def test_closed_error_attributes(run):
    async def main():
        lst = await treadle.TcpListener.bind(HOST, 0)
        lst.close()
        try:
            await lst.accept()
        except treadle.ClosedError as e:
            return e
        return None

    e = run(main())
    assert isinstance(e, treadle.Error)
    assert isinstance(e.code, int) and e.code < 0
    assert isinstance(e.name, str) and e.name


# ---------------------------------------------------------------- iteration, context managers, addresses

def test_async_for_over_listener(run):
    async def main():
        lst = await treadle.TcpListener.bind(HOST, 0)
        port = lst.local_addr[1]
        clients = [await treadle.TcpStream.connect(HOST, port) for _ in range(5)]
        seen = []
        async for stream, addr in lst:
            seen.append((stream, addr))
            if len(seen) == 5:
                break
        assert sorted(a for _, a in seen) == sorted(c.local_addr for c in clients)
        assert all(st.peer_addr == a for st, a in seen)
        for st, _ in seen:
            await st.write(b"hi")
            st.close()
        for c in clients:
            assert await read_all(c) == b"hi"
            c.close()
        lst.close()
        return "ok"

    assert run(main()) == "ok"


def test_listener_async_with(run):
    async def main():
        lst = await treadle.TcpListener.bind(HOST, 0)
        port = lst.local_addr[1]
        async with lst:
            c = await treadle.TcpStream.connect(HOST, port)
            s, _ = await lst.accept()
            s.close()
            c.close()
        with pytest.raises(treadle.ClosedError):
            await lst.accept()
        with pytest.raises(ConnectionRefusedError):
            await treadle.TcpStream.connect(HOST, port)
        return "ok"

    assert run(main()) == "ok"


def test_stream_async_with(run):
    async def main():
        lst = await treadle.TcpListener.bind(HOST, 0)
        async with await treadle.TcpStream.connect(HOST, lst.local_addr[1]) as c:
            s, _ = await lst.accept()
            await c.write(b"in-with")
        assert await read_all(s) == b"in-with"  # leaving the block closed c
        with pytest.raises(treadle.ClosedError):
            await c.read()
        s.close()
        lst.close()
        return "ok"

    assert run(main()) == "ok"


def test_stream_async_with_closes_on_exception(run):
    async def main():
        c, s, lst = await pair()
        with pytest.raises(KeyError):
            async with c:
                raise KeyError("inside")
        assert await read_all(s) == b""
        with pytest.raises(treadle.ClosedError):
            await c.write(b"x")
        s.close()
        lst.close()
        return "ok"

    assert run(main()) == "ok"


def test_addresses(run):
    async def main():
        lst = await treadle.TcpListener.bind(HOST, 0)
        host, port = lst.local_addr
        assert host == HOST and isinstance(port, int) and 0 < port < 65536
        c = await treadle.TcpStream.connect(HOST, port)
        s, addr = await lst.accept()
        assert isinstance(addr, tuple) and len(addr) == 2
        assert addr == s.peer_addr == c.local_addr
        assert c.peer_addr == s.local_addr == (HOST, port)
        assert c.local_addr[0] == HOST and c.local_addr[1] != port
        for x in (c, s, lst):
            x.close()
        return "ok"

    assert run(main()) == "ok"


def test_set_nodelay(run):
    async def main():
        c, s, lst = await pair()
        assert c.set_nodelay(True) is None
        assert s.set_nodelay(False) is None
        await c.write(b"ping")
        got = await s.read()
        for x in (c, s, lst):
            x.close()
        return got

    assert run(main()) == b"ping"


def test_backlog_option(run):
    async def main():
        lst = await treadle.TcpListener.bind(HOST, 0, backlog=4)
        cs = [await treadle.TcpStream.connect(HOST, lst.local_addr[1]) for _ in range(3)]
        ss = [(await lst.accept())[0] for _ in range(3)]
        for x in cs + ss + [lst]:
            x.close()
        return len(ss)

    assert run(main()) == 3
