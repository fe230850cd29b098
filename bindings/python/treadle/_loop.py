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
import errno
import functools
import signal
import socket
import sys
import threading
import weakref
from asyncio import base_events, coroutines, events, format_helpers, selector_events, unix_events
from typing import Any, Callable, Optional

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
        _core.LoopCore.__init__(self, core, _owned)
        base_events.BaseEventLoop.__init__(self)
        self._runtime = runtime
        self._owned = _owned
        self._watchers: dict = {}
        self._signal_watchers: dict = {}
        self._transports: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
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
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            self._run_core(threading.current_thread() is threading.main_thread())
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_hooks)

    def close(self) -> None:
        """Closes the loop: drops its callbacks and watchers and, for a loop
        of new_event_loop, shuts its runtime down."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
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

    def _check_signal(self, sig: Any) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig: int, callback: Callable[..., Any],
                           *args: Any) -> None:
        """Runs callback(*args) in the loop at each delivery of ``sig``
        (main thread only, as asyncio's)."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        handle = events.Handle(callback, args, self, None)
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except ValueError as exc:  # not the main thread
            raise RuntimeError(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        old = self._signal_watchers.pop(sig, None)
        if old is not None:
            old.close()
        try:
            self._signal_watchers[sig] = self._watch_signal(sig, handle)
        except BaseException:
            self._restore_signal(sig)
            raise

    def _restore_signal(self, sig: int) -> None:
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
              # Transports (issue 15 phase 2, first step): the selector
              # loop's socket and datagram transports, its servers' accept
              # path, waiting through _add_reader/_add_writer here.
              "_make_socket_transport", "_make_ssl_transport",
              "_make_datagram_transport", "_start_serving",
              "_accept_connection", "_accept_connection2",
              "_sendfile_native"):
    setattr(EventLoop, _name, getattr(selector_events.BaseSelectorEventLoop, _name))
# Unix sockets, pipes and subprocesses: the Unix selector loop's own.
for _name in ("create_unix_connection", "create_unix_server",
              "_make_read_pipe_transport", "_make_write_pipe_transport",
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
