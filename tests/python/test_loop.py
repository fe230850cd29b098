"""treadle.EventLoop, the asyncio event loop on a treadle runtime (issue 15):
every method of phase 1, bad input, wake counts, leaks, and asyncio objects
inside treadle tasks (one runtime, one loop)."""

import asyncio
import contextvars
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref

import pytest

import treadle
from conftest import run_on

VAR = contextvars.ContextVar("loop_test_var", default="unset")


# ------------------------------------------------------------- factories


def test_new_event_loop_runs_a_coroutine(loop, flavor):
    async def main():
        assert asyncio.get_running_loop() is loop
        assert loop.is_running()
        await asyncio.sleep(0.001)
        return flavor

    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert not loop.is_running()
    assert loop.run_until_complete(main()) == flavor
    assert not loop.is_running() and not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()  # twice is fine


def test_runner_loop_factory_and_policy():
    with asyncio.Runner(loop_factory=treadle.new_event_loop) as runner:
        assert runner.run(asyncio.sleep(0, "r")) == "r"
        assert isinstance(runner.get_loop(), treadle.EventLoop)
    old = asyncio.get_event_loop_policy()
    try:
        treadle.install(flavor="multi_thread", workers=2)
        assert isinstance(asyncio.get_event_loop_policy(), treadle.EventLoopPolicy)

        async def main():
            return type(asyncio.get_running_loop()), asyncio.get_running_loop()._runtime.flavor

        assert asyncio.run(main()) == (treadle.EventLoop, "multi_thread")
    finally:
        asyncio.set_event_loop_policy(old)


def test_new_event_loop_bad_options():
    with pytest.raises(ValueError, match="enable_io and enable_time"):
        treadle.new_event_loop(enable_io=False)
    with pytest.raises(ValueError, match="flavor"):
        treadle.new_event_loop(flavor="fast")
    with pytest.raises(TypeError):
        treadle.new_event_loop(workers="2")
    with pytest.raises(TypeError):
        treadle.EventLoop(None)


def test_closed_loop_refuses(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_later(1, print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_forever()
    with pytest.raises(RuntimeError, match="closed"):
        loop.add_reader(0, print)
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_until_complete(coro)
    coro.close()


def test_run_inside_running_loop_is_refused(loop):
    async def main():
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_until_complete(coro)
        coro.close()
        with pytest.raises(RuntimeError, match="running event loop"):
            loop.close()
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


# ------------------------------------------------------------- callbacks


def test_call_soon_order_args_and_context(loop):
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")
    loop.call_soon(seen.append, 1)
    loop.call_soon(lambda a, b: seen.append(a + b), 2, 3)
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    h = loop.call_soon(seen.append, "cancelled")
    h.cancel()
    loop.call_soon(loop.stop)
    assert isinstance(h, asyncio.Handle)
    loop.run_forever()
    assert seen == [1, 5, "in ctx"]


def test_handles_are_asyncios_and_freed(loop):
    """call_soon and call_later return treadle's subclasses of asyncio's
    Handle and TimerHandle (made and freed in C): asyncio's methods work on
    them, one kept keeps its callback after it ran, one dropped is freed
    once it ran, and a cycle through one is collected."""
    seen = []
    kept = loop.call_soon(seen.append, 1)
    assert type(kept) is not asyncio.Handle and isinstance(kept, asyncio.Handle)
    assert "append" in repr(kept)
    t = loop.call_later(10, seen.append, "never")
    assert type(t) is not asyncio.TimerHandle and isinstance(t, asyncio.TimerHandle)
    assert t.when() > loop.time() and "when=" in repr(t)
    t.cancel()
    assert t.cancelled() and t._callback is None
    fired = loop.call_later(0, seen.append, 0)
    dropped = weakref.ref(loop.call_soon(seen.append, 2))

    class Holder:
        pass

    holder = Holder()
    holder.handle = loop.call_soon(holder.__init__)  # holder -> handle -> method -> holder
    cycle = weakref.ref(holder)
    del holder
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [1, 2, 0]
    assert fired._scheduled is False  # out of the heap, as asyncio marks it
    assert kept._callback == seen.append and kept._args == (1,) and not kept.cancelled()
    assert dropped() is None
    gc.collect()
    assert cycle() is None


def test_call_soon_bad_input(loop):
    with pytest.raises(TypeError):
        loop.call_soon()
    with pytest.raises(TypeError, match="unexpected keyword"):
        loop.call_soon(print, foo=1)
    with pytest.raises(TypeError):
        loop.call_later("soon", print)
    with pytest.raises(ValueError, match="NaN"):
        loop.call_later(float("nan"), print)
    with pytest.raises(TypeError):
        loop.call_at(None, print)
    loop.set_debug(True)
    with pytest.raises(TypeError, match="callable"):
        loop.call_soon(42)
    with pytest.raises(TypeError, match="coroutine"):
        coro = asyncio.sleep(0)
        try:
            loop.call_soon(coro)
        finally:
            coro.close()


def test_callback_errors_go_to_the_exception_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    assert loop.get_exception_handler() is not None

    def boom():
        raise ValueError("boom")

    loop.call_soon(boom)
    loop.call_later(0.001, boom)
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    assert [type(c["exception"]) for c in contexts] == [ValueError, ValueError]
    assert all("Exception in callback" in c["message"] for c in contexts)
    assert isinstance(contexts[0]["handle"], asyncio.Handle)
    with pytest.raises(TypeError):
        loop.set_exception_handler(42)
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_default_exception_handler_logs(loop, caplog):
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_forever()
    assert "ZeroDivisionError" in caplog.text


def test_keyboard_interrupt_from_a_callback_leaves_run_forever(loop):
    seen = []

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    loop.call_soon(seen.append, "after")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    # what was left runs at the next run, first
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["after"]


def test_stop_before_run_forever_runs_one_iteration(loop):
    seen = []
    loop.stop()
    loop.call_soon(seen.append, 1)
    loop.run_forever()
    assert seen == [1]


def test_stop_ends_after_the_current_iteration(loop):
    seen = []

    def first():
        loop.stop()
        loop.call_soon(seen.append, "next iteration")

    loop.call_soon(first)
    loop.call_soon(seen.append, "same iteration")
    loop.run_forever()
    assert seen == ["same iteration"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["same iteration", "next iteration"]


# ----------------------------------------------------------------- timers


def test_timers_fire_in_order_and_cancel(loop):
    seen = []
    now = loop.time()
    loop.call_at(now + 0.02, seen.append, "c")
    loop.call_later(0.01, seen.append, "b")
    for i in range(5):  # equal deadlines: in the order made
        loop.call_at(now + 0.005, seen.append, i)
    t = loop.call_later(0.001, seen.append, "cancelled")
    assert isinstance(t, asyncio.TimerHandle)
    t.cancel()
    loop.call_later(0, seen.append, "a")
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert seen == ["a", 0, 1, 2, 3, 4, "b", "c"]
    assert loop.time() >= now + 0.03  # never early
    assert loop._counts() == (0, 0)


def test_cancelled_timers_are_dropped(loop):
    handles = [loop.call_later(3600, print) for _ in range(1000)]
    for h in handles:
        h.cancel()
    assert loop._counts()[1] < 1000


def test_waiting_loop_does_not_wake(loop):
    # a loop with one far timer and nothing else parks a few times per
    # level of the wheel that the timer passes through, not per ms
    before = loop._runtime.metrics().driver_parks
    loop.run_until_complete(asyncio.sleep(0.3))
    parks = loop._runtime.metrics().driver_parks - before
    assert parks <= 12, parks


def test_call_soon_threadsafe_wakes_a_waiting_loop(loop):
    seen = []

    def other():
        time.sleep(0.05)
        loop.call_soon_threadsafe(seen.append, threading.current_thread().name)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other, name="other")
    t.start()
    before = loop._runtime.metrics().driver_parks
    loop.run_forever()
    t.join()
    assert seen == ["other"]
    assert loop._runtime.metrics().driver_parks - before <= 4


def test_call_soon_from_another_thread_in_debug_mode(loop):
    loop.set_debug(True)
    errors = []

    def other():
        try:
            loop.call_soon(print)
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other).start())
    loop.run_forever()
    assert errors and "thread" in errors[0]


def test_debug_mode_warns_of_slow_callbacks(loop, caplog):
    loop.set_debug(True)
    assert loop.get_debug()
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.05)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    assert "took" in caplog.text and "sleep" in caplog.text


# ------------------------------------------------------------------- tasks


def test_create_task_name_context_and_factory(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "task ctx")

    async def get():
        return VAR.get()

    async def main():
        t = loop.create_task(get(), name="named", context=ctx)
        assert t.get_name() == "named"
        return await t

    assert loop.run_until_complete(main()) == "task ctx"
    made = []

    def factory(lp, coro, **kw):
        made.append(coro)
        return asyncio.Task(coro, loop=lp, **kw)

    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    assert loop.run_until_complete(get()) == "unset"
    assert len(made) == 1
    with pytest.raises(TypeError):
        loop.set_task_factory(42)
    loop.set_task_factory(None)


def test_gather_many_tasks(loop):
    async def one(i):
        await asyncio.sleep(0)
        return i

    async def main():
        return await asyncio.gather(*(one(i) for i in range(2000)))

    assert loop.run_until_complete(main()) == list(range(2000))


def test_shutdown_asyncgens(loop):
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        g = agen()
        await g.__anext__()
        return g

    g = loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert closed == [True]
    del g


def test_run_in_executor_uses_the_blocking_pool(loop):
    async def main():
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        to_thread = await asyncio.to_thread(lambda: 7)
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, lambda: 1 / 0)
        return name, to_thread

    assert loop.run_until_complete(main()) == ("treadle-worker", 7)
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine") as ex:
        loop.set_default_executor(ex)
        name = loop.run_until_complete(
            loop.run_in_executor(None, lambda: threading.current_thread().name))
        assert name.startswith("mine")
    loop.set_default_executor(treadle.BlockingPoolExecutor(loop._runtime))
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="shutdown"):
        loop.run_until_complete(loop.run_in_executor(None, print))


def test_getaddrinfo_getnameinfo(loop):
    infos = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
    assert infos[0][4] == ("127.0.0.1", 80)
    host, port = loop.run_until_complete(
        loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
    assert (host, port) == ("127.0.0.1", "80")
    with pytest.raises(socket.gaierror):
        loop.run_until_complete(loop.getaddrinfo("no-such-host.invalid", 80))


# ---------------------------------------------------------------- fd waits


def test_add_reader_writer(loop):
    r, w = socket.socketpair()
    r.setblocking(False)
    w.setblocking(False)
    got = []

    def readable():
        got.append(r.recv(100))
        if b"".join(got) == b"abcdef":
            loop.stop()

    try:
        loop.add_reader(r.fileno(), readable)
        loop.add_writer(w, lambda: (w.send(b"abc"), loop.remove_writer(w)))
        loop.call_later(0.01, w.send, b"def")
        loop.run_forever()
        assert b"".join(got) == b"abcdef"
        assert loop.remove_reader(r.fileno()) is True
        assert loop.remove_reader(r.fileno()) is False
        assert loop.remove_writer(w.fileno()) is False
    finally:
        r.close()
        w.close()


def test_reader_is_level_triggered(loop):
    # a reader that reads less than is there is called again, as with epoll
    # in level mode (asyncio's selector loop)
    r, w = socket.socketpair()
    r.setblocking(False)
    w.send(b"xyz")
    got = []

    def one_byte():
        got.append(r.recv(1))
        if len(got) == 3:
            loop.stop()

    loop.add_reader(r, one_byte)
    loop.run_forever()
    loop.remove_reader(r)
    r.close()
    w.close()
    assert got == [b"x", b"y", b"z"]


def test_add_reader_bad_input(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, print)
    with pytest.raises(ValueError):  # as asyncio's selector loop says
        loop.add_reader("0", print)
    with open(__file__) as f:  # epoll refuses regular files, as asyncio's loop
        with pytest.raises(PermissionError):
            loop.add_reader(f.fileno(), print)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        loop.add_reader(r, print)


# ----------------------------------------------------------------- signals


# As tests/python/test_signals.py: under TSan a signal to a process whose
# threads are parked in futex() is held until some thread wakes.
tsan_delays_signals = pytest.mark.skipif(
    os.environ.get("TREADLE_SANITIZER") == "tsan",
    reason="TSan delays signals to threads parked in futex()")


@tsan_delays_signals
def test_signal_handlers(loop):
    seen = []
    loop.add_signal_handler(signal.SIGUSR1, lambda x: (seen.append(x), loop.stop()), "usr1")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    assert seen == ["usr1"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_handlers_bad_input(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler("USR1", print)
    with pytest.raises(ValueError):
        loop.add_signal_handler(100000, print)
    with pytest.raises(RuntimeError, match="cannot be caught"):
        loop.add_signal_handler(signal.SIGKILL, print)

    async def coro():
        pass

    with pytest.raises(TypeError, match="coroutines"):
        loop.add_signal_handler(signal.SIGUSR2, coro)
    errors = []

    def off_main():
        try:
            loop.add_signal_handler(signal.SIGUSR2, print)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=off_main)
    t.start()
    t.join()
    assert errors


# ------------------------------------------------------------------- socks


def test_sock_methods_tcp(loop):
    async def main():
        srv = socket.socket()
        srv.setblocking(False)
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        cli = socket.socket()
        cli.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        await loop.sock_connect(cli, srv.getsockname())
        conn, _ = await accept
        payload = b"x" * 300_000  # more than the buffers hold
        send = asyncio.ensure_future(loop.sock_sendall(cli, payload))
        got = bytearray()
        buf = bytearray(65536)
        while len(got) < len(payload):
            n = await loop.sock_recv_into(conn, buf)
            got += buf[:n]
        await send
        await loop.sock_sendall(conn, b"back")
        assert await loop.sock_recv(cli, 10) == b"back"
        for s in (conn, cli, srv):
            s.close()
        return len(got)

    assert loop.run_until_complete(main()) == 300_000


def test_sock_methods_udp_and_errors(loop):
    async def main():
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (a, b):
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
        recv = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0.001)
        await loop.sock_sendto(a, b"dgram", b.getsockname())
        data, addr = await recv
        # a connect that is refused
        c = socket.socket()
        c.setblocking(False)
        port = a.getsockname()[1]  # a UDP port: nobody listens on TCP
        with pytest.raises(ConnectionRefusedError):
            await loop.sock_connect(c, ("127.0.0.1", port))
        # a cancelled recv leaves no reader behind
        t = asyncio.ensure_future(loop.sock_recv(b, 10))
        await asyncio.sleep(0.001)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        same = addr == a.getsockname()
        for s in (a, b, c):
            s.close()
        return data, same, len(loop._watchers)

    assert loop.run_until_complete(main()) == (b"dgram", True, 0)


def test_sock_methods_refuse_blocking_sockets_in_debug(loop):
    loop.set_debug(True)
    s = socket.socket()
    try:
        with pytest.raises(ValueError, match="non-blocking"):
            loop.run_until_complete(loop.sock_recv(s, 1))
    finally:
        s.close()


# ---------------------------------------------------- one runtime, one loop


def test_asyncio_objects_in_treadle_tasks(flavor):
    async def main():
        lp = asyncio.get_running_loop()
        assert isinstance(lp, treadle.EventLoop)
        q = asyncio.Queue()
        lock = asyncio.Lock()
        ev = asyncio.Event()

        async def producer():
            async with lock:
                for i in range(3):
                    await q.put(i)
            ev.set()

        h = treadle.spawn(producer())
        await ev.wait()
        await h
        got = [q.get_nowait() for _ in range(3)]
        async with asyncio.TaskGroup() as tg:
            t = tg.create_task(asyncio.sleep(0.001, "tg"))
        done, _ = await asyncio.wait([asyncio.ensure_future(asyncio.sleep(0, "w"))])
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await treadle.sleep(10)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        cur = asyncio.current_task()
        return got, t.result(), done.pop().result(), cur.done(), cur.cancelling()

    assert run_on(flavor, main()) == ([0, 1, 2], "tg", "w", False, 0)


def test_runtime_loop_is_the_running_loop(runtime):
    async def main():
        return asyncio.get_running_loop()

    lp = runtime.block_on(main())
    assert lp is runtime.loop
    assert lp.is_running()
    with pytest.raises(RuntimeError, match="running"):
        lp.close()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        lp.run_until_complete(coro)
    coro.close()
    runtime.shutdown()
    assert lp.is_closed() and not lp.is_running()


def test_treadle_awaitables_in_asyncio_tasks(loop):
    async def uses_treadle():
        await treadle.sleep(0.001)
        h = treadle.spawn(treadle.sleep(0.001))
        await h
        listener = await treadle.TcpListener.bind("127.0.0.1", 0)
        port = listener.local_addr[1]
        accept = treadle.spawn(listener.accept())
        client = await treadle.TcpStream.connect("127.0.0.1", port)
        server, _ = await accept
        await client.write(b"ping")
        data = await server.read(10)
        for s in (client, server, listener):
            s.close()
        return data

    assert loop.run_until_complete(uses_treadle()) == b"ping"


def test_cancellation_crosses_both_ways(flavor):
    async def main():
        lp = asyncio.get_running_loop()
        # an asyncio task waiting on a treadle op, cancelled
        started = asyncio.Event()

        async def waits_on_treadle():
            started.set()
            await treadle.sleep(10)

        t = asyncio.create_task(waits_on_treadle())
        await started.wait()
        await asyncio.sleep(0.001)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        # a treadle task waiting on an asyncio future, aborted: the future
        # is cancelled, as asyncio's Task.cancel cancels what it awaits
        fut = lp.create_future()

        async def waits_on_future():
            await fut

        h = treadle.spawn(waits_on_future())
        await treadle.sleep(0.001)
        h.abort()
        with pytest.raises(asyncio.CancelledError):
            await h
        # asyncio.timeout cancelling a treadle task's treadle wait
        async def timed():
            async with asyncio.timeout(0.001):
                await treadle.sleep(10)

        with pytest.raises(TimeoutError):
            await treadle.spawn(timed())
        return fut.cancelled()

    assert run_on(flavor, main()) is True


def test_multi_thread_steps_run_one_at_a_time():
    # On multi_thread the loop's callbacks and tasks may run on any worker,
    # but never two at once (the runtime's Python lane); a threading.local
    # set in one step is not seen by a step on another worker.
    inside = [0]
    most = [0]
    threads = set()

    async def work(i):
        for _ in range(20):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            threads.add(threading.get_ident())
            x = sum(range(200))  # some bytecode while "inside"
            inside[0] -= 1
            await asyncio.sleep(0)
        return x

    async def main():
        return await asyncio.gather(*(work(i) for i in range(200)))

    lp = treadle.new_event_loop(flavor="multi_thread", workers=2)
    try:
        assert len(lp.run_until_complete(main())) == 200
    finally:
        lp.close()
    assert most[0] == 1


# ------------------------------------------------------------------ leaks


def _snapshot():
    gc.collect()
    gc.collect()
    return len(gc.get_objects()), len(os.listdir("/proc/self/fd"))


@pytest.mark.leak
def test_no_leaks_across_call_soon_and_create_task(loop):
    n = 100_000

    async def nothing():
        pass

    async def cycles(count):
        done = loop.create_future()
        left = [count]

        def cb():
            left[0] -= 1
            if left[0] == 0:
                done.set_result(None)

        for _ in range(count):
            loop.call_soon(cb)
        await done
        for i in range(0, count, 1000):
            await asyncio.gather(*(loop.create_task(nothing()) for _ in range(1000)))
        r, w = socket.socketpair()  # fd watchers come and go too
        for _ in range(100):
            loop.add_reader(r, print)
            loop.remove_reader(r)
        r.close()
        w.close()

    loop.run_until_complete(cycles(10_000))
    before = _snapshot()
    loop.run_until_complete(cycles(n))
    # A removed reader's watcher closes its dup of the fd when its task
    # ends, on a worker: let those tasks end (a bounded wait, slow under
    # TSan) before counting fds.
    for _ in range(300):
        after = _snapshot()
        if after[1] <= before[1]:
            break
        loop.run_until_complete(asyncio.sleep(0.01))
    assert after[0] - before[0] < 300, (before, after)
    assert after[1] <= before[1], (before, after)
    assert loop._counts() == (0, 0)


def test_create_task_and_future_bad_input(loop):
    with pytest.raises(TypeError, match="coroutine was expected"):
        loop.create_task(42)
    coro = asyncio.sleep(0)
    with pytest.raises(TypeError):
        loop.create_task(coro, bogus=1)
    coro.close()
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future) and fut.get_loop() is loop
    loop.close()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        loop.create_task(coro)
    coro.close()


@tsan_delays_signals
@pytest.mark.subprocess
@pytest.mark.parametrize("flavor_name", ["current_thread", "multi_thread"])
def test_ctrl_c_in_asyncio_runner(flavor_name):
    # asyncio.Runner's SIGINT policy on treadle's loop: the first Ctrl-C
    # cancels the main task, and run() raises KeyboardInterrupt
    import subprocess
    code = f"""
import asyncio, functools, os, signal, sys, treadle
async def main():
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        print("main cancelled", flush=True)
        raise
factory = functools.partial(treadle.new_event_loop, flavor="{flavor_name}", workers=2)
with asyncio.Runner(loop_factory=factory) as runner:
    try:
        runner.run(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
"""
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "..",
                                                   "bindings", "python"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.stdout.split("\n")[:2] == ["main cancelled", "KeyboardInterrupt"], out
