"""treadle.EventLoop's C stream transport (issue 15 item 2: transport.c):
TCP and Unix stream sockets read and send on the runtime's threads without
the GIL, with asyncio's flow control, close, abort and error semantics.
Counts, never times: the C task's recv/send calls, bytes, callbacks, fds
and gc objects."""

import asyncio
import gc
import logging
import os
import socket
import tempfile

import pytest

import treadle
from treadle import _core
from treadle._loop import _DatagramTransport, _StreamTransport
from transport_util import Recorder, until


async def accepted_pair(loop, factory=None):
    """A server, a client transport (Recorder) and the accepted side's
    protocol (a Recorder unless factory says otherwise)."""
    sides = []

    def make():
        p = factory() if factory else Recorder(loop)
        sides.append(p)
        return p

    server = await loop.create_server(make, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rec = Recorder(loop)
    tr, _ = await loop.create_connection(lambda: rec, "127.0.0.1", port)
    while not sides or sides[0].transport is None:
        await asyncio.sleep(0)
    return server, tr, rec, sides[0]


def test_stream_sockets_get_the_c_transport_and_read_off_the_gil(loop):
    async def main():
        server, tr, rec, peer = await accepted_pair(loop)
        assert isinstance(tr, _StreamTransport) and isinstance(peer.transport, _StreamTransport)
        sock = tr.get_extra_info("socket")
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert tr.get_extra_info("sockname") == sock.getsockname()
        assert tr.get_extra_info("peername") == sock.getpeername()
        assert tr.get_protocol() is rec and tr.is_reading() and not tr.is_closing()
        for i in range(10):
            peer.transport.write(b"%d;" % i)
            await until(lambda: rec.data.endswith(b"%d;" % i))
        recvs, task_sends, inline_sends = tr._counts()
        p_recvs, p_task_sends, p_inline = peer.transport._counts()
        tr.close()
        await rec.done
        await peer.done
        server.close()
        await server.wait_closed()
        return bytes(rec.data), recvs, p_task_sends, p_inline, repr(tr)

    data, recvs, p_task_sends, p_inline, r = loop.run_until_complete(main())
    assert data == b"".join(b"%d;" % i for i in range(10))
    assert recvs >= 10  # each chunk was read by the C task, without the GIL
    # each small write went out in the C task's send, off the GIL
    assert (p_task_sends, p_inline) == (10, 0)
    assert "closed" in r


def test_small_writes_of_one_iteration_go_out_in_one_send(loop):
    # An HTTP server writes a response's header, then its body: the C task
    # sends both at once after the iteration (uvloop queues its writes to
    # the end of the iteration too), where asyncio's transport makes a
    # send() each. A write of COALESCE_MAX (16 KiB) or more, with nothing
    # pending, is sent at once.
    async def main():
        server, tr, rec, peer = await accepted_pair(loop)
        before = peer.transport._counts()
        for i in range(5):
            peer.transport.write(b"head%d;" % i)
            peer.transport.write(b"body%d;" % i)  # the same iteration
            await until(lambda: rec.data.endswith(b"body%d;" % i))
        after_small = peer.transport._counts()
        big = b"x" * (64 * 1024)
        peer.transport.write(big)
        await until(lambda: len(rec.data) == 60 + len(big))
        after_big = peer.transport._counts()
        tr.close()
        await rec.done
        await peer.done
        server.close()
        await server.wait_closed()
        return bytes(rec.data), before, after_small, after_big

    data, before, after_small, after_big = loop.run_until_complete(main())
    assert data.startswith(b"".join(b"head%d;body%d;" % (i, i) for i in range(5)))
    assert after_small[1] - before[1] == 5, "one task send per iteration's two writes"
    assert after_small[2] == before[2], "no inline send for small writes"
    assert after_big[2] == after_small[2] + 1, "a big write is sent at once"


def test_udp_sockets_get_the_datagram_transport(loop):
    async def main():
        tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                    local_addr=("127.0.0.1", 0))
        kind = type(tr)
        tr.close()
        await asyncio.sleep(0)
        return kind

    # test_loop_datagram_transport.py tests it
    assert loop.run_until_complete(main()) is _DatagramTransport


def test_flow_control_byte_exact(loop):
    """The peer reads nothing: pause_writing comes once, when the buffer
    passes the high mark; once the peer reads, resume_writing comes when
    it falls to the low mark, and every byte arrives."""
    async def main():
        server, tr, rec, peer = await accepted_pair(loop)
        peer.transport.pause_reading()
        tr.set_write_buffer_limits(high=100_000, low=10_000)
        assert tr.get_write_buffer_limits() == (10_000, 100_000)
        chunk = bytes(range(256)) * 64  # 16 KiB
        sent = 0
        while "pause" not in rec.calls:
            tr.write(chunk)
            sent += len(chunk)
            if "pause" not in rec.calls:
                assert tr.get_write_buffer_size() <= 100_000
            await asyncio.sleep(0)
        assert rec.calls.count("pause") == 1
        tr.write(chunk)  # more while paused: no second pause
        sent += len(chunk)
        assert rec.calls.count("pause") == 1
        peer.transport.resume_reading()
        await until(lambda: len(peer.data) == sent)
        await until(lambda: "resume" in rec.calls)
        _, task_sends, _ = tr._counts()
        tr.close()
        await rec.done
        server.close()
        await server.wait_closed()
        return rec, sent, bytes(peer.data), task_sends, chunk

    rec, sent, got, task_sends, chunk = loop.run_until_complete(main())
    assert got == chunk * (sent // len(chunk))
    assert rec.calls == ["made", "pause", "resume", "lost"]
    pause_size, resume_size = rec.sizes
    assert pause_size > 100_000
    assert resume_size <= 10_000
    assert task_sends > 0  # the C task drained the buffer


def test_pause_reading_holds_what_was_read(loop):
    async def main():
        server, tr, rec, peer = await accepted_pair(loop)
        peer.transport.write(b"first")
        await until(lambda: rec.data == b"first")
        tr.pause_reading()
        tr.pause_reading()  # twice is fine
        assert not tr.is_reading()
        peer.transport.write(b"second")
        recvs_before = tr._counts()[0]
        for _ in range(50):
            await asyncio.sleep(0.001)
        held = bytes(rec.data)
        recvs_paused = tr._counts()[0] - recvs_before
        tr.resume_reading()
        assert tr.is_reading()
        await until(lambda: rec.data == b"firstsecond")
        tr.close()
        assert not tr.is_reading()
        await rec.done
        server.close()
        await server.wait_closed()
        return held, recvs_paused

    held, recvs_paused = loop.run_until_complete(main())
    assert held == b"first"
    assert recvs_paused <= 1  # at most the chunk read before the pause landed


def test_write_eof_and_eof_received_half_close(loop):
    async def main():
        server, tr, rec, peer = await accepted_pair(loop, lambda: Recorder(loop, keep_open=True))
        tr.write(b"request")
        tr.write_eof()
        tr.write_eof()  # twice is fine
        with pytest.raises(RuntimeError):
            tr.write(b"after eof")
        await until(lambda: "eof" in peer.calls)
        assert peer.data == b"request" and not peer.transport.is_closing()
        peer.transport.write(b"reply")  # the peer still writes
        peer.transport.close()
        await rec.done
        await peer.done
        server.close()
        await server.wait_closed()
        return bytes(rec.data), rec.calls, peer.calls

    data, calls, peer_calls = loop.run_until_complete(main())
    assert data == b"reply"
    assert calls == ["made", "data", "eof", "lost"]
    assert peer_calls == ["made", "data", "eof", "lost"]


def test_close_with_pending_writes_delivers_every_byte(loop):
    async def main():
        server, tr, rec, peer = await accepted_pair(loop)
        peer.transport.pause_reading()
        big = os.urandom(1 << 16) * 64  # 4 MiB
        tr.write(big)
        pending = tr.get_write_buffer_size()
        tr.close()
        assert tr.is_closing()
        await asyncio.sleep(0.01)
        lost_early = "lost" in rec.calls
        peer.transport.resume_reading()
        await rec.done
        await peer.done
        server.close()
        await server.wait_closed()
        return pending, lost_early, bytes(peer.data) == big, peer.calls, rec.lost_exc

    pending, lost_early, same, peer_calls, exc = loop.run_until_complete(main())
    assert pending > 0
    assert not lost_early  # connection_lost waits for the buffer to drain
    assert same
    assert peer_calls == ["made", "data", "eof", "lost"]
    assert exc is None


def test_abort_drops_the_buffer(loop):
    async def main():
        server, tr, rec, peer = await accepted_pair(loop)
        peer.transport.pause_reading()
        tr.write(b"z" * (8 << 20))
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert tr.get_write_buffer_size() == 0 and tr.is_closing()
        await rec.done
        peer.transport.resume_reading()
        await peer.done
        server.close()
        await server.wait_closed()
        return rec.calls, rec.lost_exc, len(peer.data)

    calls, exc, got = loop.run_until_complete(main())
    assert calls == ["made", "pause", "lost"] and exc is None  # no resume after abort
    assert got < 8 << 20


class Buffered(asyncio.BufferedProtocol):
    """A BufferedProtocol with a small buffer: get_buffer comes many times."""

    def __init__(self, loop, size):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.gets = 0
        self.done = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.gets += 1
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.done.set_result(exc)


def test_buffered_protocol(loop):
    async def main():
        server, tr, rec, peer = await accepted_pair(loop, lambda: Buffered(loop, 1000))
        payload = os.urandom(100_000)
        tr.write(payload)
        tr.write_eof()
        exc = await peer.done
        tr.close()
        await rec.done
        server.close()
        await server.wait_closed()
        return bytes(peer.data) == payload, peer.gets, exc

    same, gets, exc = loop.run_until_complete(main())
    assert same and exc is None
    assert gets >= 100  # 1000 bytes a buffer


def test_protocol_errors_reach_the_exception_handler(loop):
    class Raises(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError("in data_received")

    async def main():
        seen = []
        loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
        server, tr, rec, peer = await accepted_pair(loop, lambda: Raises(loop))
        tr.write(b"boom")
        await peer.done
        await rec.done
        server.close()
        await server.wait_closed()
        return seen, peer.lost_exc

    seen, exc = loop.run_until_complete(main())
    assert len(seen) == 1
    assert seen[0]["message"] == "Fatal error: protocol.data_received() call failed."
    assert isinstance(seen[0]["exception"], ZeroDivisionError)
    assert exc is seen[0]["exception"]


def test_bad_input_and_writes_after_close(loop, caplog):
    async def main():
        server, tr, rec, peer = await accepted_pair(loop)
        for bad in ("text", 12, None, [b"x"]):
            with pytest.raises(TypeError):
                tr.write(bad)
        with pytest.raises(TypeError):
            tr.writelines([b"a", "b"])
        tr.write(b"")  # nothing
        tr.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
        await until(lambda: peer.data == b"abc")
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(TypeError):
            _core.StreamCore("not a loop", 0, tr)
        with pytest.raises(OSError):
            _core.StreamCore(loop, 10_000, tr)  # no such fd
        tr.abort()
        await rec.done
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(7):
                tr.write(b"after close")  # ignored, counted as asyncio does
        peer.transport.close()
        server.close()
        await server.wait_closed()
        return tr._conn_lost

    conn_lost = loop.run_until_complete(main())
    assert conn_lost == 8
    warned = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
    assert len(warned) == 3  # from the fifth write after the loss on


def test_unix_and_ipv6_streams(loop):
    async def echo(reader, writer):
        writer.write(await reader.read())
        writer.close()

    async def main():
        out = []
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s")
            server = await asyncio.start_unix_server(echo, path)
            r, w = await asyncio.open_unix_connection(path)
            out.append(isinstance(w.transport, _StreamTransport))
            w.write(b"unix")
            w.write_eof()
            out.append(await r.read())
            w.close()
            await w.wait_closed()
            server.close()
            await server.wait_closed()
        if socket.has_ipv6:
            try:
                server = await asyncio.start_server(echo, "::1", 0)
            except OSError:  # no ::1 here
                return out
            port = server.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("::1", port)
            out.append(isinstance(w.transport, _StreamTransport))
            w.write(b"six")
            w.write_eof()
            out.append(await r.read())
            w.close()
            await w.wait_closed()
            server.close()
            await server.wait_closed()
        return out

    out = loop.run_until_complete(main())
    assert out[:2] == [True, b"unix"]
    assert out[2:] in ([], [True, b"six"])


def test_a_connection_holds_one_fd_per_end(loop):
    """The C transports watch the socket itself, not a dup of it: 50
    connections made on the loop (both ends here) open 100 fds, as on
    asyncio's loops; the peer of a closed transport reads its end of file
    (the socket really closed), and every fd comes back."""
    def fds():
        return len(os.listdir("/proc/self/fd"))

    async def main():
        accepted = []

        def make():
            p = Recorder(loop)
            accepted.append(p)
            return p

        server = await loop.create_server(make, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def round_of(n):
            """n connections: the fds they opened, once all are up; then
            closed, and every fd back."""
            before = fds()
            clients = [(await loop.create_connection(lambda: Recorder(loop),
                                                     "127.0.0.1", port))[0]
                       for _ in range(n)]
            await until(lambda: len(accepted) == n and all(p.transport for p in accepted))
            opened = fds() - before
            for tr in clients:
                tr.close()
            # each accepted side reads the end of file and closes (Recorder)
            await until(lambda: all("eof" in p.calls and p.done.done() for p in accepted))
            await until(lambda: fds() == before)
            accepted.clear()
            return opened

        await round_of(1)  # what the runtime opens at its first use is open now
        opened = await round_of(50)
        server.close()
        await server.wait_closed()
        return opened

    assert loop.run_until_complete(main()) == 100


def test_loop_closes_with_transports_open(flavor):
    lp = treadle.new_event_loop(flavor=flavor, workers=2 if flavor == "multi_thread" else None)
    fds_before = len(os.listdir("/proc/self/fd"))

    async def main():
        server, tr, rec, peer = await accepted_pair(lp)
        tr.write(b"x")
        await until(lambda: peer.data == b"x")
        peer.transport.pause_reading()
        tr.write(b"y" * (4 << 20))  # pending when the loop closes
        return server, tr, peer.transport

    server, tr, ptr = lp.run_until_complete(main())
    lp.close()
    with pytest.warns(ResourceWarning):
        del tr, ptr
        gc.collect()
    server.close()
    del server
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_sendfile_and_ssl_over_the_c_transport(loop):
    """loop.sendfile's native path waits for the C buffer to empty; ssl=
    is asyncio's SSL protocol over the C transport (a BufferedProtocol)."""
    try:
        from test.test_asyncio import utils as test_utils  # Debian's libpython3.11-testsuite
    except ImportError:
        test_utils = None

    async def main():
        got = bytearray()
        done = loop.create_future()

        async def sink(reader, writer):
            got.extend(await reader.read())
            writer.close()
            done.set_result(None)

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        data = os.urandom(3 << 20)
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            f.seek(0)
            w.write(b"head")
            sent = await loop.sendfile(w.transport, f)
        w.write(b"tail")
        w.write_eof()
        await done
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        out = [sent == len(data), bytes(got) == b"head" + data + b"tail"]
        if test_utils is None:
            return out

        async def echo(reader, writer):
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0,
                                            ssl=test_utils.simple_server_sslcontext())
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port,
                                             ssl=test_utils.simple_client_sslcontext())
        raw = w.transport._ssl_protocol._transport
        w.write(b"hello")
        out.append(await r.readexactly(5))
        out.append(isinstance(raw, _StreamTransport))
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        return out

    out = loop.run_until_complete(main())
    assert out[:2] == [True, True]
    if test_utils is not None:
        assert out[2:] == [b"hello", True]
