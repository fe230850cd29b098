"""treadle: an asynchronous runtime in C, built the way Tokio is, for Python.

Write ``async def`` code as with asyncio and run it with :func:`run`::

    import treadle

    async def main():
        task = treadle.spawn(treadle.sleep(0.01))
        await task
        return "done"

    print(treadle.run(main()))

Worker threads do the I/O and run the scheduler without the GIL; Python
steps of one runtime run one at a time (docs/ARCHITECTURE.md, "GIL discipline").
"""
from __future__ import annotations

import atexit
import asyncio as _asyncio
import signal as _signal
import threading as _threading
import weakref as _weakref
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, List,
                    Optional, Tuple, TypeVar)

from . import _core
from . import core as _swig
from ._loop import BlockingPoolExecutor, EventLoop, EventLoopPolicy
from ._loop import signal_wakeup as _signal_wakeup

__all__ = [
    "run", "Runtime", "Handle", "JoinHandle", "Metrics", "WorkerMetrics",
    "spawn", "sleep", "yield_now", "timeout", "spawn_blocking",
    "current_worker", "TcpListener", "TcpStream", "ctrl_c", "signal",
    "Error", "ShutdownError", "ClosedError", "CancelledError",
    "EventLoop", "EventLoopPolicy", "BlockingPoolExecutor", "new_event_loop",
    "install",
]

T = TypeVar("T")

Error = _core.Error
ShutdownError = _core.ShutdownError
ClosedError = _core.ClosedError
CancelledError = _asyncio.CancelledError
Handle = _core.Handle
JoinHandle = _core.JoinHandle
TcpListener = _core.TcpListener
TcpStream = _core.TcpStream

#: (name, code, message) for every treadle error code, from the C map.
ERRORS = tuple(_swig.treadle_py_error_map())

_FLAVORS = {"current_thread": _swig.TREADLE_CURRENT_THREAD,
            "multi_thread": _swig.TREADLE_MULTI_THREAD}


def spawn(coro: Awaitable[T]) -> JoinHandle[T]:
    """Spawns ``coro`` as a new task of the running task's runtime and
    returns its :class:`JoinHandle` (RuntimeError outside a task): a
    ``JoinHandle[int]`` for a coroutine that returns an int. contextvars
    are copied, as asyncio.create_task copies them."""
    return _core.spawn(coro)


def sleep(seconds: float) -> Awaitable[None]:
    """``await sleep(seconds)``: suspends the task. Negative is zero,
    ``math.inf`` waits until cancelled; NaN raises ValueError."""
    return _core.sleep(seconds)


def yield_now() -> Awaitable[None]:
    """``await yield_now()``: lets the other ready tasks run first."""
    return _core.yield_now()


def current_worker() -> int:
    """The index of the worker thread running this task (0 on
    current_thread). RuntimeError outside a task."""
    return _core.current_worker()


def spawn_blocking(fn: Callable[..., T], /, *args: Any,
                   **kwargs: Any) -> JoinHandle[T]:
    """Runs ``fn(*args, **kwargs)`` on the blocking pool (as
    asyncio.to_thread does); await the result (or exception). For code
    that blocks its thread: file I/O, sleeps, C libraries. contextvars are
    copied. Inside the job, :meth:`Handle.current` is the runtime::

        data = await treadle.spawn_blocking(open_and_read, path, mode="rb")
    """
    return _core.spawn_blocking(fn, *args, **kwargs)


async def _await(aw: Awaitable[T]) -> T:
    return await aw


async def timeout(seconds: float, aw: Awaitable[T]) -> T:
    """Awaits ``aw`` for at most ``seconds``: its result, or TimeoutError
    after cancelling it (asyncio.wait_for). ``aw`` runs as its own task."""
    task = aw if isinstance(aw, JoinHandle) else spawn(
        aw if _asyncio.iscoroutine(aw) else _await(aw))
    try:
        finished = await _core.wait(task, seconds)
    except BaseException:
        task.abort()
        raise
    if not finished:
        task.abort()
        try:
            return await task  # it may finish anyway, as in asyncio
        except CancelledError:
            raise TimeoutError(f"timed out after {seconds} s") from None
    return await task


def signal(signum: int) -> Awaitable[None]:
    """``await signal(signal.SIGUSR1)``: waits for the next delivery of a
    Unix signal (needs enable_io). Every waiter sees every delivery."""
    return _core.signal(signum)


def ctrl_c() -> Awaitable[None]:
    """``await ctrl_c()``: waits for SIGINT. As with Tokio's ctrl_c, the
    program then handles Ctrl-C itself: from the first call on,
    block_on no longer cancels its main task on SIGINT."""
    return _core.signal(_signal.SIGINT)


def _struct_fields(proxy: type) -> Tuple[str, ...]:
    """The fields of a C struct, in treadle.h's order: the properties of
    its SWIG proxy class (SWIG's own ``thisown`` aside)."""
    return tuple(name for name, attr in vars(proxy).items()
                 if isinstance(attr, property) and name != "thisown")


class WorkerMetrics:
    """One worker's counters: the fields of treadle_worker_metrics_t in
    treadle.h, each an int."""

    _fields = _struct_fields(_swig.treadle_worker_metrics_t)
    __slots__ = _fields

    def __init__(self, m: Any) -> None:
        for name in self._fields:
            setattr(self, name, int(getattr(m, name)))

    def __repr__(self) -> str:
        return "WorkerMetrics(%s)" % ", ".join(
            f"{k}={getattr(self, k)}" for k in self.__slots__)

    if TYPE_CHECKING:
        # The field names are written once, in treadle.h: every field is
        # an int to a type checker.
        def __getattr__(self, name: str) -> int: ...


class Metrics:
    """A runtime's counters, read without stopping it: the fields of
    treadle_runtime_metrics_t in treadle.h, each an int, and
    ``per_worker``, a :class:`WorkerMetrics` for each worker."""

    _fields = _struct_fields(_swig.treadle_runtime_metrics_t)
    __slots__ = _fields + ("per_worker",)
    per_worker: List[WorkerMetrics]

    def __init__(self, core: Any) -> None:
        m = _swig.treadle_handle_metrics(core)
        for name in self._fields:
            setattr(self, name, int(getattr(m, name)))
        self.per_worker = [
            WorkerMetrics(_swig.treadle_handle_worker_metrics(core, i))
            for i in range(self.workers)]

    def __repr__(self) -> str:
        return "Metrics(%s)" % ", ".join(
            f"{k}={getattr(self, k)!r}" for k in self.__slots__)

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> int: ...


_live: "_weakref.WeakSet[Runtime]" = _weakref.WeakSet()


class Runtime:
    """A treadle runtime: worker threads, the drivers and the blocking pool.

    ``flavor`` is "multi_thread" (``workers`` threads, default one per CPU)
    or "current_thread" (tasks run on the thread in :meth:`block_on`).
    Use it as a context manager, or call :meth:`shutdown`; a runtime still
    alive at interpreter exit is shut down then.

    The threads it starts (workers and the blocking pool) are named
    ``thread_name``, for the OS (its first 15 bytes) and for ``threading``
    (``threading.current_thread().name``, logging's ``%(threadName)s``);
    ``on_thread_start`` and ``on_thread_stop`` run first and last on each.
    """

    def __init__(self, flavor: str = "multi_thread", workers: Optional[int] = None,
                 max_blocking_threads: int = 512, enable_io: bool = True,
                 enable_time: bool = True, thread_name: str = "treadle-worker",
                 on_thread_start: Optional[Callable[[], None]] = None,
                 on_thread_stop: Optional[Callable[[], None]] = None,
                 _with_loop: bool = True) -> None:
        if flavor not in _FLAVORS:
            raise ValueError(f"flavor must be 'current_thread' or 'multi_thread', not {flavor!r}")
        for name, fn in (("on_thread_start", on_thread_start), ("on_thread_stop", on_thread_stop)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None")
        b = _swig.treadle_builder_new(_FLAVORS[flavor])
        try:
            if workers is not None:
                _check_count("workers", workers, _swig.TREADLE_MAX_WORKERS)
                _swig.treadle_builder_worker_threads(b, workers)
            _check_count("max_blocking_threads", max_blocking_threads, 65536)
            _swig.treadle_builder_max_blocking_threads(b, max_blocking_threads)
            if not isinstance(thread_name, str):
                raise TypeError("thread_name must be a str")
            _swig.treadle_builder_thread_name(b, thread_name)
            if enable_io:
                _swig.treadle_builder_enable_io(b)
            if enable_time:
                _swig.treadle_builder_enable_time(b)
            self._core = _swig.treadle_py_build(b, _FLAVORS[flavor], on_thread_start,
                                               on_thread_stop, thread_name)
        finally:
            _swig.treadle_builder_free(b)
        self.flavor = flavor
        self._loop: Optional[EventLoop] = None
        try:
            if _with_loop and enable_io and enable_time:
                self._loop = EventLoop(self, _owned=False)
            _live.add(self)
        except BaseException:
            # (MemoryError) no Runtime to shut down later: do it now, or
            # the runtime's threads and fds outlive the failure
            self.shutdown()
            raise

    @property
    def loop(self) -> EventLoop:
        """The runtime's asyncio event loop: ``asyncio.get_running_loop()``
        inside its tasks. It runs while the runtime runs (needs enable_io
        and enable_time)."""
        if self._loop is None:
            raise RuntimeError("this runtime has no asyncio loop (it needs "
                               "enable_io and enable_time)")
        return self._loop

    def block_on(self, coro: Awaitable[T]) -> T:
        """Runs ``coro`` as the main task until it finishes and returns its
        result (or raises its exception). The GIL is released while it
        waits. Ctrl-C (in the main thread) cancels the main task and then
        raises KeyboardInterrupt; a second Ctrl-C raises at once. On the
        main thread, Python's signal handlers (``signal.signal``) run while
        it waits, as they do in asyncio's run."""
        core = self._core
        _core.check_not_in_task()  # before the spawn: a refusal runs nothing
        in_main = _threading.current_thread() is _threading.main_thread()
        # The wake pipe is registered once, before the spawn (a failure
        # runs nothing); Python runs the signal handlers when block_on_step
        # returns.
        with _signal_wakeup(self._loop, in_main) as wake_r, \
                core.watch_wake(wake_r) as wake:
            main = core.spawn(coro)
            state = _Interrupt(main) if in_main else None
            old = _install_sigint(state) if state is not None else None
            try:
                while not core.block_on_step(main, old is not None, wake):
                    if self._loop is not None:
                        self._loop._run_main_calls()
                    if state is not None and state.count > 1:
                        raise KeyboardInterrupt
            finally:
                if old is not None:
                    _signal.signal(_signal.SIGINT, old)
        if state is not None and state.count:
            try:
                main.result()
            except CancelledError:
                raise KeyboardInterrupt from None
        return main.result()

    def spawn(self, coro: Awaitable[T]) -> JoinHandle[T]:
        """Spawns ``coro`` from any thread. On multi_thread it starts at
        once; on current_thread it runs while some block_on runs (so a
        ``result()`` that waits for it there needs another thread in
        block_on). ``handle.result(timeout)`` waits for it outside tasks."""
        return self._core.spawn(coro)

    def handle(self) -> Handle:
        """A thread-safe :class:`Handle` to this runtime."""
        return self._core.handle()

    def metrics(self) -> Metrics:
        """A snapshot of the runtime's and each worker's counters."""
        if self._core.is_shutdown:
            raise ShutdownError("the runtime has shut down")
        return Metrics(self._core)

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Cancels every task, waits for blocking jobs that are running (at
        most ``timeout`` seconds) and joins the runtime's threads. False
        when a blocking job was still running at the timeout."""
        done = self._core.shutdown(timeout)
        loop = self._loop
        if loop is not None and self._core.is_shutdown and not loop._closed:
            loop._closed = True
            loop._close_core()
        return done

    @property
    def is_shutdown(self) -> bool:
        """True once :meth:`shutdown` ran."""
        return self._core.is_shutdown

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "shut down" if self.is_shutdown else "running"
        return f"<treadle.Runtime {self.flavor} {state}>"


def _check_count(name: str, value: Any, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int")
    if not 1 <= value <= most:
        raise ValueError(f"{name} must be in 1..{most}")


class _Interrupt:
    """asyncio.Runner's SIGINT policy: the first cancels the main task, a
    second raises KeyboardInterrupt."""

    def __init__(self, main: JoinHandle[Any]) -> None:
        self.main = main
        self.count = 0

    def __call__(self, signum: int, frame: Any) -> None:
        if _core.sigint_taken():
            return  # a task waits for Ctrl-C itself: it was woken
        self.count += 1
        if self.count == 1 and not self.main.done():
            self.main.abort()
            return
        raise KeyboardInterrupt


def _install_sigint(state: _Interrupt) -> Any:
    """Puts ``state`` in as the SIGINT handler when Python's default one is
    there; returns the old handler, or None when it left it alone."""
    old = _signal.getsignal(_signal.SIGINT)
    if old is not _signal.default_int_handler:
        return None
    _signal.signal(_signal.SIGINT, state)
    return old


def run(coro: Awaitable[T], *, flavor: str = "multi_thread",
        workers: Optional[int] = None, **builder: Any) -> T:
    """Builds a runtime, runs ``coro`` on it until it finishes, shuts the
    runtime down and returns the result (asyncio.run). ``builder`` takes
    :class:`Runtime`'s other options."""
    rt = Runtime(flavor=flavor, workers=workers, **builder)
    try:
        return rt.block_on(coro)
    finally:
        rt.shutdown()


def new_event_loop(*, flavor: str = "current_thread", workers: Optional[int] = None,
                   **builder: Any) -> EventLoop:
    """A new asyncio event loop on a runtime of its own (``flavor``,
    ``workers`` and :class:`Runtime`'s other options), for
    ``asyncio.Runner(loop_factory=treadle.new_event_loop)``; closing the
    loop shuts its runtime down::

        with asyncio.Runner(loop_factory=treadle.new_event_loop) as runner:
            runner.run(main())
    """
    if not builder.get("enable_io", True) or not builder.get("enable_time", True):
        raise ValueError("an event loop needs enable_io and enable_time")
    rt = Runtime(flavor=flavor, workers=workers, _with_loop=False, **builder)
    return EventLoop(rt)


def install(**options: Any) -> None:
    """Makes treadle's loop asyncio's default: ``asyncio.run(main())`` and
    ``asyncio.new_event_loop()`` run on treadle from now on (the keywords
    go to :func:`new_event_loop`)."""
    _asyncio.set_event_loop_policy(EventLoopPolicy(**options))


@atexit.register
def _shutdown_all() -> None:
    for rt in list(_live):
        try:
            rt.shutdown()
        except Exception:
            pass
