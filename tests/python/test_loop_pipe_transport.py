"""treadle.EventLoop's C pipe transports (issue 15: transport.c with
pipe=PIPE_READ/PIPE_WRITE, _loop._ReadPipeTransport/_WritePipeTransport):
connect_read_pipe, connect_write_pipe and subprocess pipes read and write
on the runtime's threads without the GIL, with asyncio's pipe semantics
(eof_received then connection_lost, flow control, write_eof closing, the
reader's close seen by a write pipe). Counts, never times."""

import asyncio
import gc
import os
import pty
import socket
import sys
import tempfile
import warnings

import pytest

import treadle
from treadle import _core
from treadle._loop import _ReadPipeTransport, _WritePipeTransport
from transport_util import Recorder, until


def fd_is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_read_pipe_reads_in_c_then_eof_then_lost(loop):
    async def main():
        r, w = os.pipe()
        pipe = os.fdopen(r, "rb", 0)
        rec = Recorder(loop)
        tr, proto = await loop.connect_read_pipe(lambda: rec, pipe)
        assert isinstance(tr, _ReadPipeTransport) and proto is rec
        assert tr.get_extra_info("pipe") is pipe and tr.get_protocol() is rec
        assert tr.is_reading() and not tr.is_closing()
        assert "polling" in repr(tr)
        assert not os.get_blocking(r)  # asyncio's rule: the fd is made non-blocking
        for i in range(10):
            os.write(w, b"%d;" % i)
            await until(lambda: rec.data.endswith(b"%d;" % i))
        os.close(w)
        await rec.done
        return rec, tr._counts(), r, repr(tr), tr.is_closing()

    rec, (reads, writes, inline), r, rep, closing = loop.run_until_complete(main())
    assert bytes(rec.data) == b"".join(b"%d;" % i for i in range(10))
    assert rec.calls == ["made", "data", "eof", "lost"]
    assert rec.lost_exc is None
    assert reads >= 11 and (writes, inline) == (0, 0)  # 10 chunks and end of file, in C
    assert "closed" in rep and closing
    assert not fd_is_open(r)  # connection_lost closed the pipe


def test_read_pipe_pause_holds_what_was_read_and_close(loop):
    async def main():
        r, w = os.pipe()
        rec = Recorder(loop)
        tr, _ = await loop.connect_read_pipe(lambda: rec, os.fdopen(r, "rb", 0))
        os.write(w, b"first")
        await until(lambda: rec.data == b"first")
        tr.pause_reading()
        tr.pause_reading()  # twice is fine
        assert not tr.is_reading() and "idle" in repr(tr)
        os.write(w, b"second")
        reads_before = tr._counts()[0]
        for _ in range(50):
            await asyncio.sleep(0.001)
        held = bytes(rec.data)
        reads_paused = tr._counts()[0] - reads_before
        tr.resume_reading()
        tr.resume_reading()
        await until(lambda: rec.data == b"firstsecond")
        tr.close()
        tr.close()  # twice is fine
        assert tr.is_closing() and not tr.is_reading()
        tr.resume_reading()  # nothing once closing
        await rec.done
        os.close(w)
        return held, reads_paused, rec

    held, reads_paused, rec = loop.run_until_complete(main())
    assert held == b"first"
    assert reads_paused <= 1
    assert rec.calls == ["made", "data", "lost"] and rec.lost_exc is None


def test_read_pipe_buffered_protocol(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(7)
            self.got = bytearray()
            self.done = loop.create_future()

        def get_buffer(self, hint):
            return self.buf

        def buffer_updated(self, n):
            self.got += self.buf[:n]

        def eof_received(self):
            pass

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        r, w = os.pipe()
        proto = Buffered()
        await loop.connect_read_pipe(lambda: proto, os.fdopen(r, "rb", 0))
        os.write(w, b"0123456789" * 10)
        os.close(w)
        return await proto.done, bytes(proto.got)

    exc, got = loop.run_until_complete(main())
    assert exc is None and got == b"0123456789" * 10


def test_write_pipe_flow_control_byte_exact_then_close_drains(loop):
    """Nobody reads: pause_writing comes once, past the high mark; once the
    reader reads, resume_writing at the low mark, every byte arrives, and
    close() closes the pipe after the buffer drained."""
    async def main():
        r, w = os.pipe()
        rec = Recorder(loop)
        tr, _ = await loop.connect_write_pipe(lambda: rec, os.fdopen(w, "wb", 0))
        assert isinstance(tr, _WritePipeTransport)
        assert not os.get_blocking(w)
        tr.set_write_buffer_limits(high=100_000, low=10_000)
        assert tr.get_write_buffer_limits() == (10_000, 100_000)
        chunk = bytes(range(256)) * 64  # 16 KiB
        sent = 0
        while "pause" not in rec.calls:
            tr.write(chunk)
            sent += len(chunk)
            await asyncio.sleep(0)
        assert rec.calls.count("pause") == 1 and "polling" in repr(tr)
        tr.write(bytearray(chunk))  # more while paused: no second pause
        sent += len(chunk)
        tr.close()
        assert tr.is_closing()
        tr.write(b"dropped after close")  # dropped, as asyncio's pipe does
        got = bytearray()
        os.set_blocking(r, True)
        while True:
            data = await loop.run_in_executor(None, os.read, r, 65536)
            if not data:
                break
            got += data
        await rec.done
        os.close(r)
        return rec, sent, bytes(got), tr._counts(), chunk, w

    rec, sent, got, (reads, task_writes, inline), chunk, w = loop.run_until_complete(main())
    assert got == chunk * (sent // len(chunk))  # end of file came after the last byte
    assert rec.calls == ["made", "pause", "resume", "lost"] and rec.lost_exc is None
    pause_size, resume_size = rec.sizes
    assert pause_size > 100_000 and resume_size <= 10_000
    assert task_writes > 0 and reads == 0  # the C task drained the buffer
    assert not fd_is_open(w)


def test_write_pipe_sees_the_reader_close(loop):
    """asyncio watches a write pipe for readability to learn the reader
    closed: connection_lost(None) with nothing pending, BrokenPipeError
    with bytes pending."""
    async def main():
        out = []
        for pending in (False, True):
            r, w = os.pipe()
            rec = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: rec, os.fdopen(w, "wb", 0))
            if pending:
                tr.write(b"x" * (1 << 20))  # more than the pipe holds
                assert tr.get_write_buffer_size() > 0
            await asyncio.sleep(0)
            os.close(r)
            await rec.done
            tr.write(b"after")  # dropped, counted
            out.append((rec.calls, rec.lost_exc, tr.get_extra_info("pipe").closed))
        return out

    (calls0, exc0, closed0), (calls1, exc1, closed1) = loop.run_until_complete(main())
    assert calls0 == ["made", "lost"] and exc0 is None and closed0
    assert calls1 == ["made", "pause", "lost"] and isinstance(exc1, BrokenPipeError) and closed1


def test_write_pipe_over_a_socketpair_sees_the_peer_close(loop):
    async def main():
        a, b = socket.socketpair()
        rec = Recorder(loop)
        tr, _ = await loop.connect_write_pipe(lambda: rec, a)
        tr.write(b"ping")
        b.setblocking(False)
        assert await loop.sock_recv(b, 4) == b"ping"
        b.close()
        await rec.done
        return rec, a.fileno()

    rec, fd = loop.run_until_complete(main())
    assert rec.calls == ["made", "lost"] and rec.lost_exc is None and fd == -1


def test_write_pipe_abort_drops_the_buffer_and_write_eof_closes(loop):
    async def main():
        r, w = os.pipe()
        rec = Recorder(loop)
        tr, _ = await loop.connect_write_pipe(lambda: rec, os.fdopen(w, "wb", 0))
        tr.write(b"y" * (1 << 20))
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        tr.abort()  # twice is fine
        assert tr.get_write_buffer_size() == 0 and tr.is_closing()
        await rec.done
        os.set_blocking(r, True)
        got = b"".join(iter(lambda: os.read(r, 1 << 20), b""))
        os.close(r)

        r, w = os.pipe()
        rec2 = Recorder(loop)
        tr2, _ = await loop.connect_write_pipe(lambda: rec2, os.fdopen(w, "wb", 0))
        assert tr2.can_write_eof()
        tr2.write(b"last words")
        tr2.write_eof()
        tr2.write_eof()
        await rec2.done
        got2 = os.read(r, 100), os.read(r, 100)
        os.close(r)
        return rec, len(got), rec2, got2

    rec, n, rec2, got2 = loop.run_until_complete(main())
    assert rec.calls == ["made", "pause", "lost"] and rec.lost_exc is None
    assert n < 1 << 20  # the pending bytes were dropped
    assert rec2.calls == ["made", "lost"] and got2 == (b"last words", b"")


def test_bad_input(loop):
    async def main():
        with tempfile.TemporaryFile() as f:
            with pytest.raises(ValueError, match="pipes"):
                await loop.connect_read_pipe(asyncio.Protocol, f)
            with pytest.raises(ValueError, match="pipes"):
                await loop.connect_write_pipe(asyncio.Protocol, f)
        r, w = os.pipe()
        os.close(r)
        with pytest.raises(OSError):  # a closed fd
            _core.StreamCore(loop, r, None, pipe=_core.StreamCore.PIPE_READ)
        with pytest.raises(ValueError, match="pipe must be"):
            _core.StreamCore(loop, w, None, pipe=7)
        with pytest.raises(TypeError):
            _core.StreamCore(loop, w, None, 1)  # pipe is keyword-only
        r, w2 = os.pipe()
        rec = Recorder(loop)
        tr, _ = await loop.connect_write_pipe(lambda: rec, os.fdopen(w2, "wb", 0))
        with pytest.raises(TypeError, match="bytes-like"):
            tr.write("text")
        with pytest.raises(ValueError, match="for sockets"):
            tr._core.shutdown_after_drain()
        tr.write(b"")  # nothing
        assert tr._counts() == (0, 0, 0)
        tr.close()
        await rec.done
        os.close(r)
        os.close(w)
        return rec

    rec = loop.run_until_complete(main())
    assert rec.calls == ["made", "lost"]


def test_data_received_error_goes_to_the_exception_handler(loop):
    # asyncio's read pipe lets it reach the loop's handler and reads on.
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Bad(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if data.startswith(b"boom"):
                raise ZeroDivisionError

    async def main():
        r, w = os.pipe()
        rec = Bad(loop)
        tr, _ = await loop.connect_read_pipe(lambda: rec, os.fdopen(r, "rb", 0))
        os.write(w, b"boom")
        await until(lambda: errors)
        os.write(w, b"more")
        await until(lambda: rec.data.endswith(b"more"))
        os.close(w)
        await rec.done
        return rec, tr

    rec, tr = loop.run_until_complete(main())
    assert rec.calls == ["made", "data", "eof", "lost"] and rec.lost_exc is None
    assert len(errors) == 1 and isinstance(errors[0]["exception"], ZeroDivisionError)
    assert errors[0]["transport"] is tr


def test_pty_eio_is_quiet(loop):
    # The read end of a pty answers EIO once the other side closed:
    # connection_lost gets it, the exception handler does not.
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        master, slave = pty.openpty()
        rec = Recorder(loop)
        tr, _ = await loop.connect_read_pipe(lambda: rec, os.fdopen(master, "rb", 0))
        assert isinstance(tr, _ReadPipeTransport)
        os.write(slave, b"tty line\n")
        await until(lambda: b"tty line" in rec.data)
        os.close(slave)
        await rec.done
        return rec

    rec = loop.run_until_complete(main())
    assert isinstance(rec.lost_exc, OSError) and errors == []


def test_dev_null_keeps_asyncios_transport(loop):
    # epoll cannot watch /dev/null (EPERM): asyncio's own transport.
    async def main():
        with open(os.devnull, "wb", 0) as f:
            rec = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: rec, f)
            tr.write(b"into the void")
            tr.close()
            await rec.done
            return type(tr), rec

    kind, rec = loop.run_until_complete(main())
    assert kind is asyncio.unix_events._UnixWritePipeTransport
    assert rec.calls == ["made", "lost"]


def test_subprocess_pipes_are_the_c_transports(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        kinds = (type(proc._transport.get_pipe_transport(0)),
                 type(proc._transport.get_pipe_transport(1)))
        data = bytes(range(256)) * 4096  # 1 MiB, more than a pipe holds
        out, _ = await proc.communicate(data)
        return kinds, out, data, proc.returncode

    kinds, out, data, rc = loop.run_until_complete(main())
    assert kinds == (_WritePipeTransport, _ReadPipeTransport)
    assert out == data[::-1] and rc == 0


def test_unclosed_pipe_transport_warns_when_the_loop_closes(flavor):
    lp = treadle.new_event_loop(flavor=flavor, workers=2 if flavor == "multi_thread" else None)
    r, w = os.pipe()

    async def main():
        await lp.connect_read_pipe(asyncio.Protocol, os.fdopen(r, "rb", 0))

    lp.run_until_complete(main())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lp.close()  # ends the C task, which held the transport
        gc.collect()
    os.close(w)
    assert any(issubclass(c.category, ResourceWarning) and "unclosed transport" in str(c.message)
               for c in caught)
    assert not fd_is_open(r)


def test_write_pipe_small_write_is_in_the_pipe_when_write_returns(loop):
    # As asyncio's: code that writes to a child, then reads its answer
    # without the loop, finds the bytes there (no write waits for the end
    # of the iteration, as a socket's small writes do).
    async def main():
        r, w = os.pipe()
        rec = Recorder(loop)
        tr, _ = await loop.connect_write_pipe(lambda: rec, os.fdopen(w, "wb", 0))
        tr.write(b"now")
        got = os.read(r, 10)
        counts = tr._counts()
        tr.close()
        await rec.done
        os.close(r)
        return got, counts

    got, (reads, task_writes, inline) = loop.run_until_complete(main())
    assert got == b"now" and (reads, task_writes, inline) == (0, 0, 1)


def test_read_pipe_on_a_terminal_reads_every_line(loop):
    # A terminal in canonical mode hands out one line a read(): a short
    # read does not mean it is drained, so the lines already waiting are
    # read without a new event.
    async def main():
        master, slave = pty.openpty()
        rec = Recorder(loop)
        tr, _ = await loop.connect_read_pipe(lambda: rec, os.fdopen(slave, "rb", 0))
        os.write(master, b"one\ntwo\nthree\n")
        await until(lambda: rec.data.count(b"\n") == 3)
        reads = tr._counts()[0]
        tr.close()
        await rec.done
        os.close(master)
        return bytes(rec.data), reads

    data, reads = loop.run_until_complete(main())
    assert data == b"one\ntwo\nthree\n"
    assert reads >= 3  # a read a line
