"""treadle.EventLoop's TCP transports and servers (issue 15 phase 2):
create_connection, create_server, connect_accepted_socket and asyncio's
streams on top; flow control counted, peer reset, close and abort, bad
input."""

import asyncio
import socket
import struct

import pytest

from transport_util import Recorder


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.transport.write_eof()
        return True


def test_streams_echo_round_trip(loop):
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        assert server.is_serving()
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = bytes(range(256)) * 1024  # more than one read and one write
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        writer.write_eof()
        rest = await reader.read()
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return echoed, rest, peer, sock.family == socket.AF_INET, server.is_serving()

    echoed, rest, peer, has_sock, serving = loop.run_until_complete(main())
    assert echoed == bytes(range(256)) * 1024
    assert rest == b""
    assert peer[0] == "127.0.0.1"
    assert has_sock and not serving


def test_protocol_echo_and_callback_order(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, reuse_address=True,
                                          backlog=10)
        port = server.sockets[0].getsockname()[1]
        rec = Recorder(loop)
        tr, proto = await loop.create_connection(lambda: rec, "127.0.0.1", port)
        assert proto is rec and rec.transport is tr
        assert tr.get_extra_info("sockname")[0] == "127.0.0.1"
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        assert tr.can_write_eof()
        tr.write(b"ping")
        tr.write(b"pong")
        tr.write_eof()  # the server echoes, then shuts its side
        await rec.done
        server.close()
        await server.wait_closed()
        return rec

    rec = loop.run_until_complete(main())
    assert bytes(rec.data) == b"pingpong"
    assert rec.calls == ["made", "data", "eof", "lost"]
    assert rec.lost_exc is None


def test_flow_control_pause_and_resume_counted(loop):
    async def main():
        accepted = loop.create_future()

        def on_accept(reader, writer):
            accepted.set_result((reader, writer))

        server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        rec = Recorder(loop)
        tr, _ = await loop.create_connection(lambda: rec, "127.0.0.1", port)
        reader, writer = await accepted
        tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b"x" * 65536
        sent = 0
        # The peer reads nothing: the kernel's buffers fill, then the
        # transport's, past the high mark.
        while "pause" not in rec.calls:
            tr.write(chunk)
            sent += len(chunk)
            await asyncio.sleep(0)
        assert tr.get_write_buffer_size() > 64 * 1024
        got = 0
        while got < sent:
            got += len(await reader.read(1 << 20))
        await asyncio.sleep(0)
        size = tr.get_write_buffer_size()
        tr.close()
        await rec.done
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return rec.calls, got, sent, size

    calls, got, sent, size = loop.run_until_complete(main())
    assert got == sent
    assert size == 0
    assert calls.count("pause") == 1 and calls.count("resume") == 1
    assert calls.index("pause") < calls.index("resume")


def test_pause_reading_stops_data_received(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        rec = Recorder(loop)
        tr, _ = await loop.create_connection(lambda: rec, "127.0.0.1", port)
        tr.pause_reading()
        assert not tr.is_reading()
        tr.write(b"while paused")
        for _ in range(20):  # the echo comes back, and is not read
            await asyncio.sleep(0.005)
        held = bytes(rec.data)
        tr.resume_reading()
        assert tr.is_reading()
        while len(rec.data) < len(b"while paused"):
            await asyncio.sleep(0.001)
        tr.close()
        await rec.done
        server.close()
        await server.wait_closed()
        return held, bytes(rec.data)

    held, after = loop.run_until_complete(main())
    assert held == b""
    assert after == b"while paused"


def test_peer_reset_reaches_connection_lost(loop):
    async def main():
        server = await loop.create_server(lambda: Recorder(loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        rec = Recorder(loop)
        tr, _ = await loop.create_connection(lambda: rec, "127.0.0.1", port)
        await asyncio.sleep(0.01)
        peer = socket.socket()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # a raw client reset against the transport of the accepted side
        accepted = loop.create_future()

        def on_accept(reader, writer):
            accepted.set_result(writer)

        server2 = await asyncio.start_server(on_accept, "127.0.0.1", 0)
        port2 = server2.sockets[0].getsockname()[1]
        peer.setblocking(False)
        await loop.sock_connect(peer, ("127.0.0.1", port2))
        writer = await accepted
        peer.close()  # SO_LINGER 0: an RST
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(100):
                writer.write(b"x" * 1024)
                await writer.drain()
                await asyncio.sleep(0.001)
        writer.close()
        tr.close()
        await rec.done
        for s in (server, server2):
            s.close()
            await s.wait_closed()
        return rec.lost_exc

    assert loop.run_until_complete(main()) is None


def test_close_flushes_and_abort_drops(loop):
    async def main():
        got = {}
        lost = loop.create_future()

        async def handle(reader, writer):
            got[len(got)] = await reader.read()
            writer.close()
            if len(got) == 2:
                lost.set_result(None)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        big = b"y" * (4 << 20)
        rec = Recorder(loop)
        tr, _ = await loop.create_connection(lambda: rec, "127.0.0.1", port)
        tr.write(big)
        tr.close()  # flushes the buffer first, then closes
        assert tr.is_closing()
        tr.close()  # twice is fine
        await rec.done
        closed_exc = rec.lost_exc
        rec2 = Recorder(loop)
        tr2, _ = await loop.create_connection(lambda: rec2, "127.0.0.1", port)
        tr2.write(big)
        tr2.abort()  # drops the buffer
        await rec2.done
        await lost
        server.close()
        await server.wait_closed()
        return got, closed_exc, rec2.lost_exc, tr.get_write_buffer_size()

    got, closed_exc, aborted_exc, size = loop.run_until_complete(main())
    flushed, dropped = max(got.values(), key=len), min(got.values(), key=len)
    assert flushed == b"y" * (4 << 20)  # handlers may end in either order
    assert len(dropped) < 4 << 20
    assert closed_exc is None and aborted_exc is None
    assert size == 0


def test_server_sock_reuse_port_and_connect_accepted_socket(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        server = await loop.create_server(Echo, sock=lsock, start_serving=False)
        assert not server.is_serving()
        await server.start_serving()
        assert server.is_serving()
        port = lsock.getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"a")
        one = await r.readexactly(1)
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        refused = socket.socket()
        with pytest.raises(ConnectionRefusedError):
            refused.connect(("127.0.0.1", port))  # closed means no longer listening
        refused.close()

        s1 = await loop.create_server(Echo, "127.0.0.1", 0, reuse_port=True)
        port = s1.sockets[0].getsockname()[1]
        s2 = await loop.create_server(Echo, "127.0.0.1", port, reuse_port=True)
        a, b = socket.socketpair()
        rec = Recorder(loop)
        tr, _ = await loop.connect_accepted_socket(lambda: rec, a)
        b.sendall(b"over a socketpair")
        b.shutdown(socket.SHUT_WR)
        await rec.done
        b.close()
        for s in (s1, s2):
            s.close()
            await s.wait_closed()
        return one, bytes(rec.data), rec.calls

    one, data, calls = loop.run_until_complete(main())
    assert one == b"a"
    assert data == b"over a socketpair"
    assert calls == ["made", "data", "eof", "lost"]


def test_serve_forever_ends_on_close(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return server.is_serving()

    assert loop.run_until_complete(main()) is False


def test_bad_input(loop):
    async def main():
        errors = []
        for call in (
            lambda: loop.create_connection(Echo),  # neither host nor sock
            lambda: loop.create_connection(Echo, "127.0.0.1", 1, sock=socket.socket()),
            lambda: loop.create_connection(Echo, sock=socket.socket(type=socket.SOCK_DGRAM)),
            lambda: loop.create_server(Echo, "127.0.0.1", 0, sock=socket.socket()),
            lambda: loop.create_server(Echo, sock=socket.socket(type=socket.SOCK_DGRAM)),
            lambda: loop.connect_accepted_socket(Echo, "not a socket"),
        ):
            try:
                await call()
            except (ValueError, AttributeError, TypeError) as exc:
                errors.append(type(exc).__name__)
        with pytest.raises(ConnectionRefusedError):
            dead = socket.socket()
            dead.bind(("127.0.0.1", 0))
            port = dead.getsockname()[1]
            dead.close()
            await loop.create_connection(Echo, "127.0.0.1", port)
        with pytest.raises(OSError):
            await loop.create_connection(Echo, "no-such-host.invalid", 80)
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        tr, _ = await loop.create_connection(
            Echo, "127.0.0.1", server.sockets[0].getsockname()[1])
        with pytest.raises(TypeError):
            tr.write("text, not bytes")
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=1, low=2)
        tr.close()
        server.close()
        await server.wait_closed()
        return errors

    assert len(loop.run_until_complete(main())) == 6
