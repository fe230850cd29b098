"""treadle.EventLoop's C datagram transport (issue 15: datagram.c): UDP
over IPv4 and IPv6 and Unix datagram sockets read and send on the
runtime's threads without the GIL, with asyncio's sendto checks, flow
control, close, abort and error_received semantics. Where asyncio's own
loop can say what is right, the test runs on it too ("asyncio" loop).
Counts, never times: the C task's recvfrom/send calls and batches,
datagrams, bytes and callbacks."""

import asyncio
import os
import selectors
import socket
import tempfile

import pytest

import treadle
from treadle import _core
from treadle._loop import _DatagramTransport
from transport_util import until

LOOPS = ("current_thread", "multi_thread", "asyncio")


def new_loop(kind):
    if kind == "asyncio":
        return asyncio.SelectorEventLoop(selectors.EpollSelector())
    return treadle.new_event_loop(flavor=kind, workers=2 if kind == "multi_thread" else None)


@pytest.fixture(params=LOOPS)
def any_loop(request):
    """treadle's loops and asyncio's own: the same outcome is asserted."""
    lp = new_loop(request.param)
    lp.kind = request.param
    try:
        yield lp
    finally:
        lp.run_until_complete(asyncio.sleep(0.01))
        lp.close()


class Recorder(asyncio.DatagramProtocol):
    """Records every callback; `done` resolves at connection_lost."""

    def __init__(self, loop, echo=False, raise_on=None):
        self.calls = []
        self.got = []  # (data, addr)
        self.errors = []
        self.transport = None
        self.echo = echo
        self.raise_on = raise_on
        self.done = loop.create_future()
        self.lost_exc = "unset"
        self.sizes = []  # the write buffer's size at pause and resume

    def connection_made(self, transport):
        self.calls.append("made")
        self.transport = transport

    def datagram_received(self, data, addr):
        self.got.append((data, addr))
        if data == self.raise_on:
            raise RuntimeError("datagram_received failed")
        if self.echo:
            self.transport.sendto(data, addr)

    def error_received(self, exc):
        self.calls.append("error")
        self.errors.append(exc)

    def pause_writing(self):
        self.calls.append("pause")
        self.sizes.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.calls.append("resume")
        self.sizes.append(self.transport.get_write_buffer_size())

    def connection_lost(self, exc):
        self.calls.append("lost")
        self.lost_exc = exc
        if not self.done.done():
            self.done.set_result(None)


def recv_all(sock, n):
    """n datagrams from a blocking socket."""
    return [sock.recv(1 << 16) for _ in range(n)]


def test_udp_echo_reads_batches_off_the_gil(loop, flavor):
    async def main():
        srv, echo = await loop.create_datagram_endpoint(
            lambda: Recorder(loop, echo=True), local_addr=("127.0.0.1", 0))
        assert isinstance(srv, _DatagramTransport)
        addr = srv.get_extra_info("sockname")
        assert srv.get_extra_info("peername") is None
        assert srv.get_extra_info("socket").getsockname() == addr
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(10)
            c.bind(("127.0.0.1", 0))
            # 64 datagrams wait in the socket before the loop looks: the
            # C task reads them in batches of at most 16.
            for i in range(64):
                c.sendto(b"d%d" % i, addr)
            await until(lambda: len(echo.got) == 64)
            replies = recv_all(c, 64)
            mine = c.getsockname()
        recvs, batches, task_sends, inline = srv._counts()
        srv.close()
        await echo.done
        return echo, replies, mine, (recvs, batches, task_sends, inline), repr(srv)

    echo, replies, mine, (recvs, batches, task_sends, inline), r = loop.run_until_complete(main())
    assert [d for d, _ in echo.got] == [b"d%d" % i for i in range(64)]
    assert all(a == mine for _, a in echo.got)
    assert echo.got[0][1] is echo.got[1][1]  # the sender's address, converted once
    assert sorted(replies) == sorted(b"d%d" % i for i in range(64))
    assert recvs == 64 and batches >= 4  # every recvfrom by the C task
    if flavor == "current_thread":
        assert batches == 4  # the task read while the loop was not looking: 16 a batch
    assert (task_sends, inline) == (0, 64)  # each sendto sent at once
    assert echo.calls == ["made", "lost"] and echo.lost_exc is None
    assert "closed" in r


def test_many_datagrams_and_bytes(loop):
    """2000 datagrams of 1..1400 bytes, 50 in flight at a time, echoed
    between two transports: every byte comes back, in order per round."""
    async def main():
        srv, echo = await loop.create_datagram_endpoint(
            lambda: Recorder(loop, echo=True), local_addr=("127.0.0.1", 0))
        cli, rec = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), remote_addr=srv.get_extra_info("sockname"))
        sent = []
        for r in range(40):
            for i in range(50):
                n = r * 50 + i
                data = bytes([n % 256]) * (1 + n % 1400)
                sent.append(data)
                cli.sendto(data)
            await until(lambda: len(rec.got) == len(sent))
        counts = srv._counts(), cli._counts()
        cli.close()
        srv.close()
        await rec.done
        await echo.done
        return sent, rec, counts

    sent, rec, (srv_counts, cli_counts) = loop.run_until_complete(main())
    assert sorted(d for d, _ in rec.got) == sorted(sent)
    assert sum(len(d) for d, _ in rec.got) == sum(len(d) for d in sent)
    assert srv_counts[0] == 2000 and cli_counts[0] == 2000
    assert srv_counts[1] <= 2000 and cli_counts[3] == 2000


def test_icmp_port_unreachable_goes_to_error_received(any_loop):
    loop = any_loop

    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            closed_addr = s.getsockname()  # nobody listens here once closed
        tr, rec = await loop.create_datagram_endpoint(lambda: Recorder(loop),
                                                      remote_addr=closed_addr)
        tr.sendto(b"ping")
        await until(lambda: rec.errors)
        tr.sendto(b"ping")  # the transport stays open
        await until(lambda: len(rec.errors) == 2)
        closing = tr.is_closing()
        tr.close()
        await rec.done
        return rec, closing

    rec, closing = loop.run_until_complete(main())
    assert all(isinstance(e, ConnectionRefusedError) for e in rec.errors)
    assert not closing and rec.calls == ["made", "error", "error", "lost"]
    assert rec.lost_exc is None


def unix_pair(tmp_path, n=0):
    """Two Unix datagram sockets bound in tmp_path, the first connected to
    the second: (the transport's side, a plain blocking one). A Unix
    datagram socket's peer queue fills at net.unix.max_dgram_qlen
    datagrams, and then sendto waits (EAGAIN). (A socketpair's peer has
    no name, and asyncio's transport sends only to a peer with one.)"""
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind(str(tmp_path / f"a{n}"))
    b.bind(str(tmp_path / f"b{n}"))
    a.connect(str(tmp_path / f"b{n}"))
    b.settimeout(10)
    return a, b


def test_flow_control_and_the_task_sends_the_queue(loop, tmp_path):
    async def main():
        a, peer = unix_pair(tmp_path)
        tr, rec = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=a)
        tr.set_write_buffer_limits(high=4000, low=1000)
        sent = []
        while "pause" not in rec.calls:  # the peer reads nothing
            assert len(sent) < 1000 and not tr.is_closing()
            data = b"%05d" % len(sent) * 100  # 500 bytes
            sent.append(data)
            tr.sendto(data)
        queued = tr.get_write_buffer_size()
        counts_paused = tr._counts()
        got = []
        while len(got) < len(sent):  # the peer reads: the task sends the rest
            got.append(await loop.run_in_executor(None, peer.recv, 4096))
        await until(lambda: "resume" in rec.calls)
        counts = tr._counts()
        tr.close()
        await rec.done
        peer.close()
        return sent, got, queued, rec, counts_paused, counts

    sent, got, queued, rec, counts_paused, counts = loop.run_until_complete(main())
    assert got == sent  # every datagram, in order
    assert queued > 4000 and queued % 500 == 0  # the queue's bytes, counted exactly
    assert rec.calls == ["made", "pause", "resume", "lost"]
    assert rec.sizes[0] == queued and rec.sizes[1] <= 1000
    # the queued datagrams went out in the C task's sends, off the GIL
    assert counts[2] - counts_paused[2] == queued // 500
    assert counts_paused[2] == 0


def test_close_waits_for_the_queue_abort_drops_it(any_loop, tmp_path):
    loop = any_loop

    async def fill(tr, rec):
        n = 0
        while not tr.get_write_buffer_size():
            assert n < 1000 and not tr.is_closing()
            tr.sendto(b"x%d" % n)
            n += 1
        for _ in range(3):
            tr.sendto(b"x%d" % n)
            n += 1
        return n

    async def main():
        a, peer = unix_pair(tmp_path)
        tr, rec = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=a)
        n = await fill(tr, rec)
        tr.close()
        for _ in range(5):
            await asyncio.sleep(0)
        lost_before_drain = "lost" in rec.calls
        got = [await loop.run_in_executor(None, peer.recv, 100) for _ in range(n)]
        await rec.done
        peer.close()

        a, peer = unix_pair(tmp_path, 1)
        tr2, rec2 = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=a)
        n2 = await fill(tr2, rec2)
        size = tr2.get_write_buffer_size()
        tr2.abort()
        await rec2.done
        peer.setblocking(False)
        got2 = []
        try:
            while True:
                got2.append(peer.recv(100))
        except BlockingIOError:
            pass
        peer.close()
        return lost_before_drain, got, n, rec, got2, n2, size, rec2

    lost_before_drain, got, n, rec, got2, n2, size, rec2 = loop.run_until_complete(main())
    assert not lost_before_drain  # close waited for the queue
    assert got == [b"x%d" % i for i in range(n)] and rec.lost_exc is None
    assert size > 0 and len(got2) < n2  # abort dropped the queue
    assert got2 == [b"x%d" % i for i in range(len(got2))]
    assert rec2.calls == ["made", "lost"] and rec2.lost_exc is None


def test_bad_input_as_asyncio(any_loop):
    loop = any_loop
    outcomes = {}
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx.get("exception")))

    async def main():
        srv, srv_rec = await loop.create_datagram_endpoint(lambda: Recorder(loop),
                                                           local_addr=("127.0.0.1", 0))
        addr = srv.get_extra_info("sockname")
        tr, rec = await loop.create_datagram_endpoint(lambda: Recorder(loop),
                                                      remote_addr=addr)
        for name, data, to in [("str", "text", None), ("int", 1, None),
                               ("other addr", b"x", ("127.0.0.1", 1)),
                               ("empty", b"", None)]:
            try:
                tr.sendto(data, to)
                outcomes[name] = "ok"
            except Exception as exc:
                outcomes[name] = type(exc).__name__
        tr.sendto(b"fine", addr)  # its own address is fine
        tr.close()
        for i in range(6):  # after close, on a connected transport: dropped
            tr.sendto(b"late")
        outcomes["conn_lost"] = tr._conn_lost
        await rec.done
        await until(lambda: srv_rec.got)
        outcomes["received"] = [d for d, _ in srv_rec.got]
        srv.close()

        # An unconnected one: a bad address is a fatal error; a name that
        # does not resolve, error_received.
        tr, rec = await loop.create_datagram_endpoint(lambda: Recorder(loop),
                                                      local_addr=("127.0.0.1", 0))
        tr.sendto(b"x", ("no-such-host.invalid", 9))
        outcomes["gai"] = [type(e).__name__ for e in rec.errors]
        tr.sendto(b"x", ("127.0.0.1", 70000))
        await rec.done
        outcomes["bad port"] = (type(rec.lost_exc).__name__, tr.is_closing())
        tr, rec = await loop.create_datagram_endpoint(lambda: Recorder(loop),
                                                      local_addr=("127.0.0.1", 0))
        tr.sendto(b"x", "not a tuple")
        await rec.done
        outcomes["bad addr"] = type(rec.lost_exc).__name__
        tr, rec = await loop.create_datagram_endpoint(lambda: Recorder(loop),
                                                      local_addr=("127.0.0.1", 0))
        tr.sendto(b"x")  # no address on an unconnected socket
        await rec.done
        outcomes["no addr"] = type(rec.lost_exc).__name__

    loop.run_until_complete(main())
    assert outcomes == {"str": "TypeError", "int": "TypeError", "other addr": "ValueError",
                        "empty": "ok", "conn_lost": 7, "gai": ["gaierror"],
                        "bad port": ("OverflowError", True), "bad addr": "TypeError",
                        "no addr": "TypeError", "received": [b"fine"]}
    assert [type(e).__name__ for e in errors] == ["OverflowError", "TypeError", "TypeError"]


def test_datagram_received_raising_goes_to_the_handler(any_loop):
    loop = any_loop
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx.get("exception")))

    async def main():
        srv, rec = await loop.create_datagram_endpoint(
            lambda: Recorder(loop, raise_on=b"boom"), local_addr=("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for d in (b"a", b"boom", b"b"):
                c.sendto(d, srv.get_extra_info("sockname"))
            await until(lambda: len(rec.got) == 3)
        closing = srv.is_closing()
        srv.close()
        await rec.done
        return rec, closing

    rec, closing = loop.run_until_complete(main())
    assert [d for d, _ in rec.got] == [b"a", b"boom", b"b"] and not closing
    assert [str(e) for e in errors] == ["datagram_received failed"]


def test_close_in_datagram_received_stops_the_batch(loop, flavor):
    class CloseAtFirst(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.transport.close()

    async def main():
        srv, rec = await loop.create_datagram_endpoint(
            lambda: CloseAtFirst(loop), local_addr=("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for i in range(10):
                c.sendto(b"%d" % i, srv.get_extra_info("sockname"))
            await rec.done
        return rec

    rec = loop.run_until_complete(main())
    assert [d for d, _ in rec.got] == [b"0"] and rec.calls == ["made", "lost"]


def test_ipv6_echo(loop):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")

    async def main():
        srv, echo = await loop.create_datagram_endpoint(
            lambda: Recorder(loop, echo=True), local_addr=("::1", 0))
        cli, rec = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("::1", 0))
        assert isinstance(srv, _DatagramTransport)
        for i in range(20):
            cli.sendto(b"six%d" % i, srv.get_extra_info("sockname")[:2])
        await until(lambda: len(rec.got) == 20)
        cli.close()
        srv.close()
        await rec.done
        await echo.done
        return echo, rec, cli.get_extra_info("sockname")

    echo, rec, cli_name = loop.run_until_complete(main())
    assert sorted(d for d, _ in rec.got) == sorted(b"six%d" % i for i in range(20))
    addr = echo.got[0][1]
    assert len(addr) == 4 and addr == cli_name  # (host, port, flowinfo, scope_id)


def test_unix_datagram_echo_and_abstract_addresses(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            srv_path, cli_path = os.path.join(d, "srv"), os.path.join(d, "cli")
            srv, echo = await loop.create_datagram_endpoint(
                lambda: Recorder(loop, echo=True), local_addr=srv_path,
                family=socket.AF_UNIX)
            cli, rec = await loop.create_datagram_endpoint(
                lambda: Recorder(loop), local_addr=cli_path, family=socket.AF_UNIX)
            assert isinstance(srv, _DatagramTransport)
            for i in range(30):
                cli.sendto(b"u%d" % i, srv_path)
            big = b"B" * 100_000  # more than UDP carries: asyncio reads up to 256 KiB
            cli.sendto(big, srv_path)
            await until(lambda: len(rec.got) == 31)
            cli.close()
            srv.close()
            await rec.done
            await echo.done
        # The abstract namespace: addresses are bytes.
        name = b"\0treadle-test-%d" % os.getpid()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(name)
        tr, rec2 = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=s)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
            c.bind(name + b"-c")
            c.sendto(b"abs", name)
            await until(lambda: rec2.got)
        tr.sendto(b"back", name + b"-c")  # bytes address sent to
        tr.close()
        await rec2.done
        return echo, rec, cli_path, big, rec2, name

    echo, rec, cli_path, big, rec2, name = loop.run_until_complete(main())
    assert [d for d, _ in rec.got] == [b"u%d" % i for i in range(30)] + [big]
    assert all(a == cli_path for _, a in echo.got)
    assert rec2.got == [(b"abs", name + b"-c")]


def test_other_sockets_keep_asyncios_transport(loop):
    async def main():
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
        except (OSError, AttributeError):
            pytest.skip("no netlink socket")
        tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=s)
        kind = type(tr)
        tr.close()
        return kind

    assert loop.run_until_complete(main()) is asyncio.selector_events._SelectorDatagramTransport


def test_datagram_core_bad_input(loop):
    with pytest.raises(TypeError):
        _core.DatagramCore(object(), 0, None, False)
    with pytest.raises(TypeError):
        _core.DatagramCore(loop, "x", None, False)
    with socket.socket() as tcp:
        with pytest.raises(ValueError):
            _core.DatagramCore(loop, tcp.fileno(), None, False)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        _core.DatagramCore(loop, r, None, False)
    core = _core.DatagramCore.__new__(_core.DatagramCore)
    for call in (lambda: core.sendto(b"x", None), core.close, core.counts,
                 core.get_write_buffer_size, core.drop_buffer):
        with pytest.raises(RuntimeError):
            call()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        core = _core.DatagramCore(loop, u.fileno(), None, False)
        with pytest.raises(TypeError):
            core.sendto(b"x")
        with pytest.raises(TypeError):
            core.sendto(b"x", ("127.0.0.1", "port"))
        with pytest.raises(TypeError):
            core.sendto(b"x", ("127.0.0.1",))
        with pytest.raises(TypeError):
            core.sendto(object(), ("127.0.0.1", 9))
        with pytest.raises(RuntimeError):
            core.__init__(loop, u.fileno(), None, False)
        core.close()
        core.close()
        assert core.sendto(b"x", ("127.0.0.1", 9)) == 0  # closed: nothing sent
        assert core.counts() == (0, 0, 0, 0)


def test_loop_close_with_an_open_datagram_transport(flavor):
    lp = new_loop(flavor)

    async def main():
        tr, rec = await lp.create_datagram_endpoint(lambda: Recorder(lp),
                                                    local_addr=("127.0.0.1", 0))
        return tr, rec

    tr, rec = lp.run_until_complete(main())
    lp.close()
    assert rec.calls == ["made"]
    with pytest.warns(ResourceWarning):
        tr.__del__()
