"""treadle.EventLoop: asyncio's event loop on a treadle runtime.

The C base class (``_core.LoopCore``, bindings/python/loop.c) holds what
runs often: the ready queue, the timers (a heap behind one sleep on the
runtime's timer wheel), the loop task that runs iterations in the
runtime's Python lane, and the fd and signal watchers. The rest is
asyncio's own BaseEventLoop (tasks, futures, exception handler, async
generators, executors, name lookups) and the sock_* methods of asyncio's
selector loop, which wait through ``add_reader``/``add_writer`` here.
docs/ARCHITECTURE.md, "asyncio loop", has the design.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import os
import signal
import socket
import stat
import sys
import threading
import weakref
import warnings
from asyncio import (base_events, constants, coroutines, events, format_helpers, futures,
                     protocols, selector_events, sslproto, tasks, transports, trsock, unix_events)
from typing import Any, Callable, Iterator, Optional

from . import _core

__all__ = ["EventLoop", "EventLoopPolicy", "BlockingPoolExecutor"]


def _run_job(cf: concurrent.futures.Future, fn: Callable[..., Any],
             args: tuple, kwargs: dict) -> None:
    if not cf.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # the future carries it to its awaiter
        cf.set_exception(exc)
    else:
        cf.set_result(result)


class BlockingPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A concurrent.futures executor that runs calls on a treadle runtime's
    blocking pool: the default executor of :class:`EventLoop`, so that
    ``loop.run_in_executor(None, fn)``, ``asyncio.to_thread`` and
    ``getaddrinfo`` use the runtime's threads. The pool belongs to the
    runtime: ``shutdown`` only refuses further calls. (A ThreadPoolExecutor
    by type, which set_default_executor asks for; it starts no threads.)"""

    def __init__(self, runtime: Any) -> None:
        super().__init__(max_workers=1)
        self._core = runtime._core
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        cf: concurrent.futures.Future = concurrent.futures.Future()
        self._core.spawn_blocking(_run_job, cf, fn, args, kwargs)
        return cf

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


def _new_handle(cls: type, *args: Any) -> events.Handle:
    """Makes a Handle from C where no Python frame runs (a worker thread
    in debug mode): Handle records its caller's stack, this frame."""
    return cls(*args)


def _sighandler_noop(signum: int, frame: Any) -> None:
    """Python's handler while the loop handles a signal (as asyncio's)."""


def _fd(fileobj: Any) -> int:
    return selector_events.selectors._fileobj_to_fd(fileobj)


@contextlib.contextmanager
def signal_wakeup(loop: Optional["EventLoop"], in_main: bool) -> Iterator[int]:
    """While a thread waits in the runtime (run_forever, block_on), not in
    Python: on the main thread, a pipe is Python's signal wakeup fd (Python
    writes a byte at each signal it has a handler for, as asyncio's loops
    have it) and `loop`'s way to reach the main thread (_call_in_main).
    Yields the read end for the wait to watch (-1: none); a byte ends the
    wait so that the thread runs the handlers and the calls. A wakeup fd
    the program set itself stays."""
    if not in_main:
        yield -1
        return
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = -1
    try:
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        if old_wakeup != -1:  # the program's own: it stays
            signal.set_wakeup_fd(old_wakeup)
        if loop is not None:
            loop._wakeup_w = wake_w
        yield wake_r
    finally:
        if loop is not None:
            # No callback runs now: none can write to the pipe.
            loop._wakeup_w = -1
        try:
            if old_wakeup == -1:
                signal.set_wakeup_fd(-1)
        finally:
            os.close(wake_r)
            os.close(wake_w)
            if loop is not None:
                loop._run_main_calls()


class _WatcherView:
    """What the selector transports' __repr__ asks of ``loop._selector``
    (``get_key(fd).events``), answered from the loop's fd watchers."""

    def __init__(self, watchers: dict) -> None:
        self._watchers = watchers

    def get_key(self, fd: int) -> Any:
        w = self._watchers.get(fd)
        if w is None:
            raise KeyError(fd)
        reader, writer = w.handles()
        events = ((selector_events.selectors.EVENT_READ if reader is not None else 0)
                  | (selector_events.selectors.EVENT_WRITE if writer is not None else 0))
        return selector_events.selectors.SelectorKey(fd, fd, events, (reader, writer))


def _set_fileobj(self: "_CoreTransport", f: Any) -> None:
    self._fileobj = f


# A C transport's socket or pipe under asyncio's name for it (_sock,
# _pipe), which some code reads and asyncio's tests set.
_fileobj_alias = property(lambda self: self._fileobj, _set_fileobj)


class _CoreTransport:
    """What treadle's C transports share, over ``_core.StreamCore``
    (bindings/python/transport.c): the runtime's threads read and write
    without the GIL, and the protocol's callbacks run in the loop's
    iterations. The C core calls ``_eof_received``, ``_fatal_error``,
    ``_protocol_error`` and (a writer) ``_write_event``. ``_fileobj`` is
    the socket or pipe."""

    _fileobj = None  # read by __del__ even when __init__ failed
    _core = None

    def __del__(self, _warn: Callable[..., Any] = warnings.warn) -> None:
        if self._fileobj is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._core.close()
            self._fileobj.close()

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
        self._protocol_connected = True
        self._core.set_protocol(protocol, isinstance(protocol, protocols.BufferedProtocol))

    def get_protocol(self) -> Any:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def _quiet_error(self, exc: BaseException) -> bool:
        """An error that _fatal_error only logs in debug mode, rather than
        giving it to the loop's exception handler."""
        return isinstance(exc, OSError)

    def _fatal_error(self, exc: BaseException, message: str = 'Fatal error on transport') -> None:
        if self._quiet_error(exc):
            if self._loop.get_debug():
                base_events.logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self,
                'protocol': self._protocol,
            })
        self._force_close(exc)

    def _protocol_error(self, exc: BaseException, message: str) -> None:
        """A protocol callback that the C core made raised exc."""
        self._fatal_error(exc, message)

    def _force_close(self, exc: Optional[BaseException]) -> None:
        if self._conn_lost:
            return
        self._core.drop_buffer()
        if not self._closing:
            self._closing = True
            self._core.reading(False)
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._core.close()  # the fd leaves the I/O driver before it closes
            self._fileobj.close()
            self._fileobj = None
            self._protocol = None
            self._loop = None

    def _counts(self) -> tuple:
        """The C core's counts of its system calls, for tests: (read calls,
        write calls of the task, write calls of write() itself) for a
        stream or pipe; (recvfrom calls and batches of the task, its sends,
        sendto()'s own sends) for a datagram socket."""
        return self._core.counts()


class _CoreReading:
    """The reading half of a C transport: pause_reading, resume_reading."""

    def _start_reading(self) -> None:
        if not self._closing and not self._paused:
            self._core.reading(True)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True
        self._core.reading(False)
        if self._loop.get_debug():
            base_events.logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._core.reading(True)
        if self._loop.get_debug():
            base_events.logger.debug("%r resumes reading", self)


class _CoreWriting:
    """The writing half of a C transport: the buffer the C task sends,
    flow control (with transports._FlowControlMixin), abort."""

    _empty_waiter: Optional[asyncio.Future] = None  # sendfile's (sockets)
    _write_error_message = 'Fatal write error on socket transport'

    def _write_event(self, err: int) -> None:
        """The C writer sent down to the low-water mark or to empty, or a
        write failed (err, an errno): asyncio's _write_ready's ending."""
        if self._conn_lost:
            return
        if err:
            exc = OSError(err, os.strerror(err))
            self._fatal_error(exc, self._write_error_message)
            if self._empty_waiter is not None:
                self._empty_waiter.set_exception(exc)
            return
        self._maybe_resume_protocol()  # may write more
        if not self._core.get_write_buffer_size():
            if self._empty_waiter is not None:
                self._empty_waiter.set_result(None)
            if self._closing:
                self._call_connection_lost(None)
            # a socket's write_eof shutdown: done by the C writer

    def get_write_buffer_size(self) -> int:
        return self._core.get_write_buffer_size()

    def _set_write_buffer_limits(self, high: Optional[int] = None,
                                 low: Optional[int] = None) -> None:
        super()._set_write_buffer_limits(high, low)
        if self._core is not None:
            self._core.set_low(self._low_water)

    def abort(self) -> None:
        self._force_close(None)


class _CoreSocket(_CoreWriting):
    """What the socket transports share (_StreamTransport,
    _DatagramTransport): asyncio's _SelectorTransport's set-up, repr and
    close over the C core."""

    def _init_socket(self, loop: "EventLoop", sock: socket.socket, protocol: Any,
                     server: Any, make_core: Callable[..., Any]) -> None:
        """asyncio's _SelectorTransport.__init__ after the extra dict;
        make_core(loop, fd, self) makes the core before the protocol is set."""
        self._extra['socket'] = trsock.TransportSocket(sock)
        try:
            self._extra['sockname'] = sock.getsockname()
        except OSError:
            self._extra['sockname'] = None
        if 'peername' not in self._extra:
            try:
                self._extra['peername'] = sock.getpeername()
            except OSError:
                self._extra['peername'] = None
        self._sock_fd = sock.fileno()
        self._core = make_core(loop, self._sock_fd, self)
        self._fileobj = sock
        self._core.set_low(self._low_water)
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        self._conn_lost = 0  # set when connection_lost is scheduled
        self._closing = False  # set by close()
        if server is not None:
            server._attach()
        loop._transports[self._sock_fd] = self

    def _read_polling(self) -> bool:
        return not self._closing

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._fileobj is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._sock_fd}')
        if self._loop is not None and not self._loop.is_closed():
            info.append('read=polling' if self._read_polling() else 'read=idle')
            size = self.get_write_buffer_size()
            info.append(f"write=<{'polling' if size else 'idle'}, bufsize={size}>")
        return '<{}>'.format(' '.join(info))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._core.reading(False)
        if not self.get_write_buffer_size():
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)


class _StreamTransport(_CoreTransport, _CoreReading, _CoreSocket,
                       transports._FlowControlMixin, transports.Transport):
    """The transport of TCP and Unix stream sockets: asyncio's
    _SelectorSocketTransport, method for method, on the C core."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop: "EventLoop", sock: socket.socket, protocol: Any,
                 waiter: Optional[asyncio.Future] = None, extra: Optional[dict] = None,
                 server: Any = None) -> None:
        super().__init__(extra, loop)
        self._init_socket(loop, sock, protocol, server, _core.StreamCore)
        self._eof = False
        self._paused = False
        self._empty_waiter = None
        base_events._set_nodelay(sock)
        loop.call_soon(self._protocol.connection_made, self)
        # only start reading when connection_made() has been called
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    _sock = _fileobj_alias

    def _read_polling(self) -> bool:
        return self.is_reading()

    # ----------------------------------------------------------- reading

    def _eof_received(self) -> None:
        """The C reader read end of file (asyncio's _read_ready__on_eof)."""
        if self._loop.get_debug():
            base_events.logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal error: protocol.eof_received() call failed.')
            return
        if keep_open:
            # The protocol may still write, but nothing more is read.
            self._core.reading(False)
        else:
            self.close()

    # ----------------------------------------------------------- writing

    def write(self, data: Any) -> None:
        if ((self._eof or self._conn_lost or self._empty_waiter is not None
             or data.__class__ not in (bytes, bytearray, memoryview))
                and not self._write_allowed(data)):
            return
        try:
            size = self._core.write(data)
        except OSError as exc:
            self._fatal_error(exc, 'Fatal write error on socket transport')
            return
        if size > self._high_water:
            self._maybe_pause_protocol()

    def _write_allowed(self, data: Any) -> bool:
        """asyncio's checks of write(), in asyncio's order: False when the
        data is to be dropped (empty, or the connection is lost)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')
        if self._eof:
            raise RuntimeError('Cannot call write() after write_eof()')
        if self._empty_waiter is not None:
            raise RuntimeError('unable to write; sendfile is in progress')
        if not data:
            return False
        if self._conn_lost:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                base_events.logger.warning('socket.send() raised exception.')
            self._conn_lost += 1
            return False
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        self._core.shutdown_after_drain()

    def can_write_eof(self) -> bool:
        return True

    def _make_empty_waiter(self) -> asyncio.Future:
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if not self.get_write_buffer_size():
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self) -> None:
        self._empty_waiter = None

    # ----------------------------------------------------------- closing

    def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
        try:
            super()._call_connection_lost(exc)
        finally:
            server = self._server
            if server is not None:
                server._detach()
                self._server = None
        if self._empty_waiter is not None:
            self._empty_waiter.set_exception(
                ConnectionError("Connection is closed by peer"))


def _datagram_core(loop: "EventLoop", fd: int, transport: Any) -> Any:
    """The C core of a datagram transport: a connected socket sends
    without an address (asyncio's sendto sends so when there is a peer)."""
    return _core.DatagramCore(loop, fd, transport, bool(transport._extra['peername']))


class _DatagramTransport(_CoreTransport, _CoreSocket, transports._FlowControlMixin,
                         transports.DatagramTransport):
    """The transport of UDP (IPv4, IPv6) and Unix datagram sockets:
    asyncio's _SelectorDatagramTransport, method for method, whose
    recvfrom and sendto calls are C's (``_core.DatagramCore``,
    bindings/python/datagram.c): the runtime's threads read batches of
    datagrams and send the queued ones without the GIL; the protocol's
    callbacks run in the loop's iterations."""

    def __init__(self, loop: "EventLoop", sock: socket.socket, protocol: Any,
                 address: Any = None, waiter: Optional[asyncio.Future] = None,
                 extra: Optional[dict] = None) -> None:
        super().__init__(extra, loop)
        self._address = address
        self._init_socket(loop, sock, protocol, None, _datagram_core)
        loop.call_soon(self._protocol.connection_made, self)
        # only start reading when connection_made() has been called
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    _sock = _fileobj_alias

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
        self._protocol_connected = True
        self._core.set_protocol(protocol)

    def _start_reading(self) -> None:
        if not self._closing:
            self._core.reading(True)

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')
        if not data:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f'Invalid address: must be None or {self._address}')
            addr = self._address
        # asyncio drops what a connected transport sends once its
        # connection is lost; an unconnected one sends on until
        # connection_lost closed the socket (where asyncio's then fails on
        # its None socket, this one drops the datagram too).
        if self._conn_lost and (self._address or self._sock is None):
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                base_events.logger.warning('socket.send() raised exception.')
            self._conn_lost += 1
            return
        try:
            size = self._core.sendto(data, None if self._extra['peername'] else addr)
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal write error on datagram transport')
            return
        if size > self._high_water:
            self._maybe_pause_protocol()

    def _write_event(self, err: int) -> None:
        """The C task's send failed (err, an errno: the datagram is
        dropped), or the queue fell to the low-water mark or emptied:
        asyncio's _sendto_ready's ending."""
        if self._conn_lost:
            return  # aborted: the queue is dropped
        if err:
            self._protocol.error_received(OSError(err, os.strerror(err)))
        self._maybe_resume_protocol()  # may send more
        if self._closing and not self._core.get_write_buffer_size():
            self._call_connection_lost(None)

    def _callback_error(self, exc: BaseException, where: str) -> None:
        """A protocol callback the C core called raised: the loop's
        exception handler hears of it, as of an asyncio callback's."""
        self._loop.call_exception_handler({
            'message': f'Exception in callback {where}',
            'exception': exc,
            'transport': self,
            'protocol': self._protocol,
        })


def _pipe_kind(pipe: Any, what: str) -> int:
    """The st_mode of a pipe transport's fd: ValueError unless it is a
    pipe, a socket or a character device (asyncio's rule)."""
    mode = os.fstat(pipe.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        raise ValueError(what)
    return mode


class _ReadPipeTransport(_CoreTransport, _CoreReading, transports.ReadTransport):
    """connect_read_pipe's transport (and a subprocess's stdout and
    stderr): asyncio's _UnixReadPipeTransport on the C core, which read()s
    the pipe on the runtime's threads."""

    def __init__(self, loop: "EventLoop", pipe: Any, protocol: Any,
                 waiter: Optional[asyncio.Future] = None,
                 extra: Optional[dict] = None) -> None:
        super().__init__(extra)
        self._extra['pipe'] = pipe
        self._loop = loop
        self._fileno = pipe.fileno()
        _pipe_kind(pipe, "Pipe transport is for pipes/sockets only.")
        os.set_blocking(self._fileno, False)
        self._core = _core.StreamCore(loop, self._fileno, self, pipe=_core.StreamCore.PIPE_READ)
        self._fileobj = pipe
        self._closing = False
        self._paused = False
        self._conn_lost = 0
        self.set_protocol(protocol)
        loop._pipe_transports.add(self)
        loop.call_soon(self._protocol.connection_made, self)
        # only start reading when connection_made() has been called
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    _pipe = _fileobj_alias

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._fileobj is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._fileno}')
        if self._fileobj is not None and self._loop is not None and not self._loop.is_closed():
            info.append('polling' if self.is_reading() else 'idle')
        else:
            info.append('open' if self._fileobj is not None else 'closed')
        return '<{}>'.format(' '.join(info))

    def _quiet_error(self, exc: BaseException) -> bool:
        # EIO: the other end of a pty closed.
        return isinstance(exc, OSError) and exc.errno == errno.EIO

    def _protocol_error(self, exc: BaseException, message: str) -> None:
        """data_received raised: the loop's exception handler hears of it
        and the pipe is read on, as asyncio's read pipe, whose _read_ready
        callback raises into the loop."""
        self._loop.call_exception_handler({
            'message': message,
            'exception': exc,
            'transport': self,
            'protocol': self._protocol,
        })

    def _eof_received(self) -> None:
        """The C reader read end of file: eof_received, then
        connection_lost(None), as asyncio's read pipe has it."""
        if self._loop.get_debug():
            base_events.logger.info("%r was closed by peer", self)
        self._closing = True
        self._core.reading(False)
        self._conn_lost += 1
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def close(self) -> None:
        if not self._closing:
            self._force_close(None)


class _WritePipeTransport(_CoreTransport, _CoreWriting, transports._FlowControlMixin,
                          transports.WriteTransport):
    """connect_write_pipe's transport (and a subprocess's stdin): asyncio's
    _UnixWritePipeTransport on the C core, which write()s the pipe on the
    runtime's threads and learns there that the reader closed."""

    _write_error_message = 'Fatal write error on pipe transport'

    def __init__(self, loop: "EventLoop", pipe: Any, protocol: Any,
                 waiter: Optional[asyncio.Future] = None,
                 extra: Optional[dict] = None) -> None:
        super().__init__(extra, loop)
        self._extra['pipe'] = pipe
        self._fileno = pipe.fileno()
        mode = _pipe_kind(pipe, "Pipe transport is only for pipes, sockets and "
                                "character devices")
        os.set_blocking(self._fileno, False)
        self._core = _core.StreamCore(loop, self._fileno, self, pipe=_core.StreamCore.PIPE_WRITE)
        self._fileobj = pipe
        self._core.set_low(self._low_water)
        self._closing = False  # set by close() or write_eof()
        self._conn_lost = 0  # set when connection_lost is scheduled
        self._writes_dropped = 0  # writes after close or loss
        self.set_protocol(protocol)
        loop._pipe_transports.add(self)
        loop.call_soon(self._protocol.connection_made, self)
        # The reader's close shows as readiness to read on a pipe's write
        # end or a socket (not on a character device, a pty).
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            loop.call_soon(self._core.reading, True)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    _pipe = _fileobj_alias

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._fileobj is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._fileno}')
        if self._fileobj is not None and self._loop is not None and not self._loop.is_closed():
            size = self.get_write_buffer_size()
            info.append('polling' if size else 'idle')
            info.append(f'bufsize={size}')
        else:
            info.append('open' if self._fileobj is not None else 'closed')
        return '<{}>'.format(' '.join(info))

    def _eof_received(self) -> None:
        """The C task saw the reader close (asyncio's _read_ready)."""
        if self._loop.get_debug():
            base_events.logger.info("%r was closed by peer", self)
        self._force_close(BrokenPipeError() if self.get_write_buffer_size() else None)

    def write(self, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')
        if not data:
            return
        if self._conn_lost or self._closing:
            # Counted apart from _conn_lost, which says connection_lost is
            # on its way: after close() the buffer still drains.
            if self._writes_dropped >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                base_events.logger.warning('pipe closed by peer or '
                                           'os.write(pipe, data) raised exception.')
            self._writes_dropped += 1
            return
        try:
            size = self._core.write(data)
        except OSError as exc:
            self._fatal_error(exc, self._write_error_message)
            return
        if size > self._high_water:
            self._maybe_pause_protocol()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Closes the pipe once the buffer is written."""
        if self._closing:
            return
        self._closing = True
        if not self.get_write_buffer_size():
            self._core.reading(False)
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def close(self) -> None:
        if self._fileobj is not None and not self._closing:
            self.write_eof()


class EventLoop(_core.LoopCore, base_events.BaseEventLoop):
    """An asyncio event loop whose callbacks, timers and fd waits run on a
    treadle runtime. Make one with :func:`treadle.new_event_loop` (or
    ``asyncio.Runner(loop_factory=treadle.new_event_loop)``); inside
    ``treadle.run`` and every treadle task, ``asyncio.get_running_loop()``
    is the runtime's own, ``Runtime.loop``."""

    def __init__(self, runtime: Any, *, _owned: bool = True) -> None:
        self._closed = True  # until made: BaseEventLoop.__del__ reads it
        core = getattr(runtime, "_core", None)
        if not isinstance(core, _core.RuntimeCore):
            raise TypeError("EventLoop(runtime) takes a treadle.Runtime; "
                            "treadle.new_event_loop() makes both")
        self._runtime = runtime  # first: __repr__ reads it
        _core.LoopCore.__init__(self, core, _owned)
        try:
            base_events.BaseEventLoop.__init__(self)
        except BaseException:
            self._closed = True  # never made (MemoryError): nothing to close
            raise
        self._owned = _owned
        self._watchers: dict = {}
        self._signal_watchers: dict = {}
        self._main_calls: list = []  # (fn, args) for the main thread
        self._wakeup_w = -1  # while run_forever or block_on waits on the main thread
        self._transports: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
        self._pipe_transports: "weakref.WeakSet[_CoreTransport]" = weakref.WeakSet()
        self._selector = _WatcherView(self._watchers)
        self._default_executor = BlockingPoolExecutor(runtime)
        # asyncio's C Task and Future look call_soon up on the loop at each
        # step and callback (loop.call_soon(step, context=...)): bound once
        # here, the lookup finds it rather than making a bound method.
        self.call_soon = self.call_soon

    def __repr__(self) -> str:
        return (f"<{self.__class__.__name__} {self._runtime.flavor} "
                f"running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()}>")

    # ---------------------------------------------------------- running

    def run_forever(self) -> None:
        """Runs iterations until stop() (asyncio's run_forever); the thread
        waits in the runtime without the GIL. Ctrl-C raises
        KeyboardInterrupt here unless a handler was installed."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_hooks = sys.get_asyncgen_hooks()
        in_main = threading.current_thread() is threading.main_thread()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            with signal_wakeup(self, in_main) as wake_r:
                self._run_core(in_main, wake_r)
        finally:
            # Each step runs when one before it ran out of memory, and the
            # running loop is put back last: its MemoryError, if any, is
            # the one raised, and the next run puts it back then.
            self._stopping = False
            self._thread_id = None
            try:
                self._set_coroutine_origin_tracking(False)
                sys.set_asyncgen_hooks(*old_hooks)
            finally:
                _core._leave_running(None)

    def _check_running(self) -> None:
        # A running loop that a failed run or step could not put back (no
        # memory) is put back first: it does not look like another loop.
        _core._restore_due()
        super()._check_running()

    def run_until_complete(self, future: Any) -> Any:
        """asyncio's run_until_complete, whose done callback that stops the
        loop (_stop_when_done) allocates nothing: asyncio's own can fail
        for want of memory, and the loop would then never stop."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # it raises below if the future is not done: no "destroyed
            # pending" message
            future._log_destroy_pending = False
        future.add_done_callback(self._stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()  # the caller cannot see the task: marks it retrieved
            raise
        finally:
            future.remove_done_callback(self._stop_when_done)
        if not future.done():
            raise RuntimeError('Event loop stopped before Future completed.')
        return future.result()

    def close(self) -> None:
        """Closes the loop: drops its callbacks and watchers and, for a loop
        of new_event_loop, shuts its runtime down."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        for tr in [*self._transports.values(), *self._pipe_transports]:
            if isinstance(tr, _CoreTransport):
                tr._core.close()  # its task ends; no callback comes
        for w in list(self._watchers.values()):
            w.close()
        self._watchers.clear()
        for sig in list(self._signal_watchers):
            self.remove_signal_handler(sig)
        super().close()
        self._selector = None  # as the selector loop's: transports' repr says "open"
        self._close_core()
        if self._owned:
            self._runtime.shutdown()

    def set_debug(self, enabled: bool) -> None:
        self._set_debug_core(enabled)
        super().set_debug(enabled)

    # create_task is C (LoopCore); with a task factory, or in debug mode,
    # it is asyncio's own.
    _create_task_py = base_events.BaseEventLoop.create_task

    def _call_soon(self, callback: Callable[..., Any], args: tuple,
                   context: Any) -> events.Handle:
        return self.call_soon(callback, *args, context=context)

    def _write_to_self(self) -> None:
        """Nothing to do: call_soon_threadsafe wakes the loop task itself."""

    def _handle_error(self, handle: events.Handle, exc: BaseException) -> None:
        """A callback raised: what asyncio's Handle._run does with it."""
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
        context = {"message": f"Exception in callback {cb}", "exception": exc,
                   "handle": handle}
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    def _log_slow_callback(self, handle: events.Handle, seconds: float) -> None:
        base_events.logger.warning("Executing %s took %.3f seconds",
                                   base_events._format_handle(handle), seconds)

    # --------------------------------------------------------- fd waits

    def _watcher(self, fd: int) -> Any:
        w = self._watchers.get(fd)
        if w is None:
            w = self._watchers[fd] = self._watch_fd(fd)
        return w

    def _add_fd(self, fd: Any, readable: bool, callback: Callable[..., Any],
                args: tuple) -> events.Handle:
        self._check_closed()
        fd = _fd(fd)
        handle = events.Handle(callback, args, self, None)
        w = self._watcher(fd)
        old = w.handles()[0 if readable else 1]
        w.set(readable, handle)
        if old is not None:
            old.cancel()
        return handle

    def _remove_fd(self, fd: Any, readable: bool) -> bool:
        if self.is_closed():
            return False
        fd = _fd(fd)
        w = self._watchers.get(fd)
        if w is None:
            return False
        reader, writer = w.handles()
        w.set(readable, None)
        old, other = (reader, writer) if readable else (writer, reader)
        if other is None:
            del self._watchers[fd]
            w.close()
        if old is None:
            return False
        old.cancel()
        return True

    def _add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> events.Handle:
        return self._add_fd(fd, True, callback, args)

    def _remove_reader(self, fd: Any) -> bool:
        return self._remove_fd(fd, True)

    def _add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> events.Handle:
        return self._add_fd(fd, False, callback, args)

    def _remove_writer(self, fd: Any) -> bool:
        return self._remove_fd(fd, False)

    def _make_socket_transport(self, sock: socket.socket, protocol: Any,
                               waiter: Optional[asyncio.Future] = None, *,
                               extra: Optional[dict] = None, server: Any = None) -> Any:
        """TCP and Unix stream sockets get the C transport; anything else
        asyncio's selector one."""
        if sock.type == socket.SOCK_STREAM and sock.family in (
                socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            return _StreamTransport(self, sock, protocol, waiter, extra, server)
        return selector_events._SelectorSocketTransport(self, sock, protocol, waiter,
                                                        extra, server)

    def _make_datagram_transport(self, sock: socket.socket, protocol: Any,
                                 address: Any = None, waiter: Optional[asyncio.Future] = None,
                                 extra: Optional[dict] = None) -> Any:
        """UDP and Unix datagram sockets get the C transport; anything
        else asyncio's selector one."""
        if sock.type == socket.SOCK_DGRAM and sock.family in (
                socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            return _DatagramTransport(self, sock, protocol, address, waiter, extra)
        return selector_events._SelectorDatagramTransport(self, sock, protocol, address,
                                                          waiter, extra)

    def _make_read_pipe_transport(self, pipe: Any, protocol: Any,
                                  waiter: Optional[asyncio.Future] = None,
                                  extra: Optional[dict] = None) -> Any:
        """The C read pipe transport; asyncio's for an fd that epoll cannot
        watch (EPERM: /dev/null, say), which fails there as it fails on
        asyncio's loop."""
        try:
            return _ReadPipeTransport(self, pipe, protocol, waiter, extra)
        except PermissionError:
            return unix_events._UnixReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe: Any, protocol: Any,
                                   waiter: Optional[asyncio.Future] = None,
                                   extra: Optional[dict] = None) -> Any:
        """The C write pipe transport; asyncio's for an fd that epoll
        cannot watch (EPERM: /dev/null, whose writes never wait)."""
        try:
            return _WritePipeTransport(self, pipe, protocol, waiter, extra)
        except PermissionError:
            return unix_events._UnixWritePipeTransport(self, pipe, protocol, waiter, extra)

    def _make_ssl_transport(self, rawsock: socket.socket, protocol: Any, sslcontext: Any,
                            waiter: Optional[asyncio.Future] = None, *,
                            server_side: bool = False, server_hostname: Optional[str] = None,
                            extra: Optional[dict] = None, server: Any = None,
                            ssl_handshake_timeout: float = constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout: float = constants.SSL_SHUTDOWN_TIMEOUT) -> Any:
        """asyncio's SSL protocol over the socket's transport (the C one
        for a stream socket), as the selector loop's."""
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    def _stop_serving(self, sock: socket.socket) -> None:
        """Stops a server's listening socket. Its watcher's dup of the fd
        closes only when the watcher task ends, so the socket stops
        listening first (shutdown), and connects are refused at once."""
        self._remove_reader(sock.fileno())
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:  # not connected, or already shut
            pass
        sock.close()

    # ----------------------------------------------------------- signals

    def _call_in_main(self, fn: Callable[..., Any], *args: Any) -> None:
        """Runs fn(*args) on the main thread: now on it, else (a callback
        on a multi_thread worker) as soon as run_forever's or block_on's
        wait there wakes. RuntimeError when neither waits there."""
        if threading.current_thread() is threading.main_thread():
            fn(*args)
            return
        if self._wakeup_w == -1:
            raise RuntimeError("signal handlers can be set only on the main "
                               "thread, or in a loop that runs there")
        self._main_calls.append((fn, args))
        try:
            os.write(self._wakeup_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a wake is on its way

    def _run_main_calls(self) -> None:
        """On the main thread, woken in run_forever or block_on:
        _call_in_main's calls."""
        calls, self._main_calls = self._main_calls, []
        for fn, args in calls:
            try:
                fn(*args)
            except Exception as exc:
                self.call_exception_handler({
                    "message": f"Exception in {fn.__qualname__} on the main thread",
                    "exception": exc})

    def _take_signal(self, sig: int) -> None:
        """Python's handler of sig becomes a no-op (asyncio's rule: the
        loop handles it, not Python's default); main thread only."""
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except ValueError as exc:  # not the main thread
            raise RuntimeError(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def _take_signal_later(self, sig: int, w: Any, handle: events.Handle) -> None:
        """The main thread's part of an add_signal_handler made on a
        worker: Python's handler, then a fresh watcher, which puts
        treadle's handler back in front of Python's."""
        if self._signal_watchers.get(sig) is not w:
            return  # replaced or removed since
        self._take_signal(sig)
        self._signal_watchers[sig] = self._watch_signal(sig, handle)
        w.close()

    def _check_signal(self, sig: Any) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig: int, callback: Callable[..., Any],
                           *args: Any) -> None:
        """Runs callback(*args) in the loop at each delivery of ``sig``.
        As asyncio's, it works on the main thread, and also in callbacks
        on a multi_thread worker of a loop that run_forever runs on the
        main thread (which then sets Python's handler for it)."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        handle = events.Handle(callback, args, self, None)
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            self._take_signal(sig)
        elif self._wakeup_w == -1:
            raise RuntimeError("add_signal_handler works only on the main "
                               "thread, or in a loop that runs there")
        old = self._signal_watchers.pop(sig, None)
        if old is not None:
            old.close()
        try:
            w = self._signal_watchers[sig] = self._watch_signal(sig, handle)
        except BaseException as exc:
            if in_main:
                self._restore_signal(sig)
            elif isinstance(exc, ValueError):  # SIGKILL and the like
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if not in_main:
            # On a multi_thread worker: Python's handler can only be set
            # on the main thread, which run_forever wakes for it.
            self._call_in_main(self._take_signal_later, sig, w, handle)

    def _restore_signal(self, sig: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            if self._wakeup_w != -1:
                self._call_in_main(self._restore_signal, sig)
            return
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):
            pass

    def remove_signal_handler(self, sig: int) -> bool:
        """Removes the handler of ``sig``; False when there was none."""
        self._check_signal(sig)
        w = self._signal_watchers.pop(sig, None)
        if w is None:
            return False
        w.close()
        self._restore_signal(sig)
        return True


# The sock_* methods, add/remove_reader/writer and their helpers are
# asyncio's selector loop's own: they wait through _add_reader and friends.
for _name in ("add_reader", "remove_reader", "add_writer", "remove_writer",
              "_ensure_fd_no_transport", "sock_recv", "_sock_recv",
              "_sock_read_done", "sock_recv_into", "_sock_recv_into",
              "sock_recvfrom", "_sock_recvfrom", "sock_recvfrom_into",
              "_sock_recvfrom_into", "sock_sendall", "_sock_sendall",
              "sock_sendto", "_sock_sendto", "sock_connect", "_sock_connect",
              "_sock_write_done", "_sock_connect_cb", "sock_accept",
              "_sock_accept",
              # The selector loop's servers' accept path, waiting through
              # _add_reader here (stream sockets: _StreamTransport, and
              # datagram ones: _DatagramTransport, in C).
              "_start_serving",
              "_accept_connection", "_accept_connection2",
              "_sendfile_native"):
    setattr(EventLoop, _name, getattr(selector_events.BaseSelectorEventLoop, _name))
# Unix sockets and subprocesses (whose pipes are _ReadPipeTransport and
# _WritePipeTransport): the Unix selector loop's own.
for _name in ("create_unix_connection", "create_unix_server",
              "_make_subprocess_transport", "_child_watcher_callback",
              "_sock_sendfile_native", "_sock_sendfile_native_impl",
              "_sock_sendfile_update_filepos", "_sock_add_cancellation_callback"):
    setattr(EventLoop, _name, getattr(unix_events._UnixSelectorEventLoop, _name))
del _name


class EventLoopPolicy(unix_events.DefaultEventLoopPolicy):
    """An asyncio policy whose loops are treadle's:
    ``asyncio.set_event_loop_policy(treadle.EventLoopPolicy())`` (or
    :func:`treadle.install`). The keywords go to
    :func:`treadle.new_event_loop`. Child watchers (subprocesses) are the
    Unix policy's own."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._options = options

    def new_event_loop(self) -> EventLoop:
        from . import new_event_loop
        return new_event_loop(**self._options)


def _abort_if_cancelled(join: Any, fut: asyncio.Future) -> None:
    if fut.cancelled():
        join.abort()


async def _drive(op: Any, fut: asyncio.Future) -> None:
    try:
        result = await op
    except asyncio.CancelledError:
        if not fut.done():
            fut.cancel()
    except BaseException as exc:
        if not fut.done():
            fut.set_exception(exc)
    else:
        if not fut.done():
            fut.set_result(result)


def _bridge_op(loop: EventLoop, op: Any) -> asyncio.Future:
    """A treadle awaitable awaited by an asyncio task (called from C): a
    treadle task awaits it and completes the future the asyncio task
    awaits; cancelling that future aborts the treadle task."""
    fut = loop.create_future()
    join = loop._runtime._core.spawn(_drive(op, fut))
    fut.add_done_callback(functools.partial(_abort_if_cancelled, join))
    fut._asyncio_future_blocking = True
    return fut
