"""spawn, JoinHandle (await, abort, done), exceptions, contextvars, Handle, current_worker."""

import contextvars
import math
import threading
import warnings

import pytest

import treadle
from conftest import forever, guarded, run_script, write_script


async def square(i):
    await treadle.yield_now()
    return i * i


async def wait_for(pred, step=0.001):
    """Poll pred() between short sleeps (the run() guard bounds the wait)."""
    while not pred():
        await treadle.sleep(step)


class Boom(Exception):
    def __init__(self, tag):
        super().__init__(tag)
        self.tag = tag


# ---------------------------------------------------------------- spawn / join

def test_spawn_and_join(run):
    async def main():
        jh = treadle.spawn(square(9))
        assert isinstance(jh, treadle.JoinHandle)
        return await jh

    assert run(main()) == 81


def test_spawn_many(run):
    async def main():
        jhs = [treadle.spawn(square(i)) for i in range(1000)]
        return [await jh for jh in jhs]

    assert run(main()) == [i * i for i in range(1000)]


def test_spawn_returns_none_and_objects(run):
    async def none():
        pass

    async def obj(o):
        return o

    async def main():
        sentinel = object()
        assert await treadle.spawn(none()) is None
        assert await treadle.spawn(obj(sentinel)) is sentinel
        big = bytes(1 << 20)
        assert await treadle.spawn(obj(big)) is big

    run(main())


def test_nested_spawns(run):
    async def chain(n):
        if n == 0:
            return 0
        return n + await treadle.spawn(chain(n - 1))

    assert run(chain(60)) == 60 * 61 // 2


def test_join_from_another_task(run):
    async def main():
        producer = treadle.spawn(square(5))

        async def consumer():
            return await producer + 1

        return await treadle.spawn(consumer())

    assert run(main()) == 26


def test_spawn_rejects_non_coroutine(run):
    async def main():
        with pytest.raises(TypeError):
            treadle.spawn(42)
        with pytest.raises(TypeError):
            treadle.spawn(square)  # the function, not a coroutine
        return "ok"

    assert run(main()) == "ok"


def test_done(run):
    async def main():
        gate = []

        async def waiter():
            await wait_for(lambda: gate)
            return "w"

        jh = treadle.spawn(waiter())
        await treadle.sleep(0.01)
        assert jh.done() is False
        gate.append(1)
        assert await jh == "w"
        assert jh.done() is True

    run(main())


# ------------------------------------------- result() without awaiting (issue 13)

def test_issue13_result_of_a_done_task_from_a_task(run):
    # done() said True, yet result() raised until some task awaited it
    async def main():
        ok = treadle.spawn(square(7))
        bad = treadle.spawn(fails())
        gone = treadle.spawn(forever())
        await treadle.yield_now()
        gone.abort()
        await wait_for(lambda: ok.done() and bad.done() and gone.done())
        assert ok.result() == 49
        assert ok.result() == 49  # the outcome stays
        with pytest.raises(Boom):
            bad.result()
        with pytest.raises(treadle.CancelledError):
            gone.result()
        return await ok  # awaiting afterwards still gives it

    assert run(main()) == 49


async def fails():
    await treadle.yield_now()
    raise Boom("late")


def test_issue13_result_inside_a_task_does_not_block(run):
    async def main():
        jh = treadle.spawn(forever())
        with pytest.raises(RuntimeError, match="await"):
            jh.result()  # waiting here would stall the runtime's thread
        with pytest.raises(RuntimeError, match="await"):
            jh.result(timeout=1)
        with pytest.raises(TimeoutError):
            jh.result(timeout=0)  # a poll: never waits
        jh.abort()
        with pytest.raises(treadle.CancelledError):
            await jh
        return "ok"

    assert run(main()) == "ok"


def test_issue13_result_from_a_thread_after_handle_spawn(run):
    async def main():
        h = treadle.Handle.current()
        out = {}

        def body():
            jh = h.spawn(square(12))
            out["value"] = jh.result(timeout=10)  # blocks this thread only
            slow = h.spawn(forever())
            try:
                slow.result(timeout=0.05)
            except TimeoutError:
                out["timed_out"] = True
            slow.abort()
            try:
                slow.result()
            except treadle.CancelledError:
                out["cancelled"] = True

        t = threading.Thread(target=body)
        t.start()
        await treadle.spawn_blocking(t.join, 20)
        return out

    assert run(main()) == {"value": 144, "timed_out": True, "cancelled": True}


def test_issue13_result_from_the_main_thread_after_runtime_spawn():
    with treadle.Runtime(flavor="multi_thread", workers=2) as rt:
        jh = rt.spawn(square(5))
        assert jh.result(timeout=10) == 25  # no block_on: the GIL is let go
        assert jh.done()
        blocking = rt.handle().spawn(treadle_blocking_call())
        assert blocking.result(timeout=10) == 6
        slow = rt.spawn(forever())
        with pytest.raises(TimeoutError):
            slow.result(timeout=0.05)
        assert not slow.done()
        slow.abort()
        with pytest.raises(treadle.CancelledError):
            slow.result(timeout=10)


async def treadle_blocking_call():
    return await treadle.spawn_blocking(sum, [1, 2, 3])


def test_issue13_result_of_a_blocking_job_from_a_thread(run):
    async def main():
        job = treadle.spawn_blocking(sum, [4, 5])
        out = []
        t = threading.Thread(target=lambda: out.append(job.result(timeout=10)))
        t.start()
        await treadle.spawn_blocking(t.join, 20)
        return out

    assert run(main()) == [9]


def test_issue13_one_waiter_at_a_time(run):
    async def main():
        jh = treadle.spawn(forever())
        errors = []

        def body():
            try:
                jh.result(timeout=0.5)
            except RuntimeError as exc:
                errors.append(str(exc))
            except TimeoutError:
                errors.append("timed out")

        started = []

        async def awaiter():
            started.append(1)  # in the step that starts awaiting jh
            await jh

        aw = treadle.spawn(awaiter())
        await wait_for(lambda: started)  # the awaiter waits on jh now
        t = threading.Thread(target=body)
        t.start()
        await treadle.spawn_blocking(t.join, 20)
        aw.abort()
        jh.abort()
        return errors

    [msg] = run(main())
    assert "already waiting" in msg, msg


def test_issue17_a_finished_wait_kept_alive_lets_others_await(run):
    # Found by tests/python/test_fuzz_args.py: a wait op that finished but
    # was still referenced kept the JoinHandle's one-waiter claim, so a
    # later `await` of the handle raised "already waiting".
    async def main():
        jh = treadle.spawn(treadle.sleep(0))
        waiting = treadle._core.wait(jh, 5)
        finished = await waiting  # `waiting` stays referenced
        assert not jh.done() or finished
        value = await jh
        again = treadle._core.wait(jh, 5)
        return finished, value, await again

    assert run(main()) == (True, None, True)


def test_issue17_wait_without_a_deadline_answers_true(run):
    # Found by tests/python/test_fuzz_args.py: wait(join, seconds) with
    # seconds too large for a deadline (inf, 1e308) took the JoinHandle's
    # outcome (raising the task's exception) instead of answering True.
    async def fails():
        raise KeyError("inside")

    async def main():
        out = []
        for seconds in (math.inf, 1e308, 2**64):
            jh = treadle.spawn(fails())
            out.append(await treadle._core.wait(jh, seconds))
            with pytest.raises(KeyError):
                await jh  # the outcome stays with the handle
        with pytest.raises(KeyError):
            await treadle.timeout(math.inf, fails())
        return out

    assert run(main()) == [True, True, True]


# ---------------------------------------------------------------- abort

def test_abort_raises_cancelled_error_at_the_await(run):
    log = []

    async def victim():
        log.append("start")
        try:
            await treadle.sleep(float("inf"))
            log.append("woke")
        except treadle.CancelledError:
            log.append("cancelled")
            raise
        finally:
            log.append("finally")

    async def main():
        jh = treadle.spawn(victim())
        await wait_for(lambda: log)
        await treadle.sleep(0.01)
        assert not jh.done()
        jh.abort()
        with pytest.raises(treadle.CancelledError):
            await jh
        assert jh.done()
        return list(log)

    assert run(main()) == ["start", "cancelled", "finally"]


def test_cancelled_error_is_asyncio_one(run):
    import asyncio

    async def main():
        jh = treadle.spawn(forever())
        await treadle.sleep(0.01)
        jh.abort()
        try:
            await jh
        except asyncio.CancelledError as e:
            return type(e)
        return None

    assert issubclass(run(main()), asyncio.CancelledError)


def test_abort_before_first_poll(run):
    log = []

    async def victim():
        log.append("ran")
        await treadle.sleep(float("inf"))
        log.append("woke")

    async def main():
        jh = treadle.spawn(victim())
        jh.abort()
        with pytest.raises(treadle.CancelledError):
            await jh
        assert jh.done()

    run(main())
    assert "woke" not in log


def test_abort_after_completion_keeps_result(run):
    async def main():
        jh = treadle.spawn(square(4))
        await wait_for(jh.done)
        jh.abort()
        return await jh

    assert run(main()) == 16


def test_abort_twice(run):
    async def main():
        jh = treadle.spawn(forever())
        await treadle.sleep(0.01)
        jh.abort()
        jh.abort()
        with pytest.raises(treadle.CancelledError):
            await jh

    run(main())


def test_abort_many(run):
    async def main():
        jhs = [treadle.spawn(forever()) for _ in range(300)]
        await treadle.sleep(0.01)
        for jh in jhs:
            jh.abort()
        n = 0
        for jh in jhs:
            with pytest.raises(treadle.CancelledError):
                await jh
            n += 1
        return n

    assert run(main()) == 300


def test_abort_task_blocked_on_join(run):
    log = []

    async def inner():
        await treadle.sleep(float("inf"))

    async def outer(jh_inner):
        try:
            await jh_inner
        except treadle.CancelledError:
            log.append("outer cancelled")
            raise

    async def main():
        ji = treadle.spawn(inner())
        jo = treadle.spawn(outer(ji))
        await treadle.sleep(0.01)
        jo.abort()
        with pytest.raises(treadle.CancelledError):
            await jo
        ji.abort()
        with pytest.raises(treadle.CancelledError):
            await ji

    run(main())
    assert log == ["outer cancelled"]


# ---------------------------------------------------------------- exceptions

def test_exception_reraised_to_awaiter(run):
    raised = []

    async def bad():
        await treadle.yield_now()
        e = Boom("tag-1")
        raised.append(e)
        raise e

    async def main():
        jh = treadle.spawn(bad())
        with pytest.raises(Boom) as info:
            await jh
        assert info.value is raised[0]
        assert info.value.tag == "tag-1"
        assert jh.done()
        return "ok"

    assert run(main()) == "ok"


def test_exception_before_first_await(run):
    async def bad():
        raise ZeroDivisionError("early")

    async def main():
        with pytest.raises(ZeroDivisionError, match="early"):
            await treadle.spawn(bad())
        return "ok"

    assert run(main()) == "ok"


def test_exception_in_many_tasks(run):
    async def maybe(i):
        await treadle.yield_now()
        if i % 3 == 0:
            raise Boom(i)
        return i

    async def main():
        jhs = [treadle.spawn(maybe(i)) for i in range(300)]
        ok, bad = [], []
        for jh in jhs:
            try:
                ok.append(await jh)
            except Boom as e:
                bad.append(e.tag)
        return ok, bad

    ok, bad = run(main())
    assert ok == [i for i in range(300) if i % 3]
    assert bad == [i for i in range(300) if i % 3 == 0]


UNRETRIEVED = """
import gc, sys
import treadle

flavor, mode = sys.argv[1], sys.argv[2]

async def boom():
    await treadle.yield_now()
    raise ValueError("unretrieved-4711")

async def main():
    if mode == "dropped":
        treadle.spawn(boom())          # the handle is dropped at once
        await treadle.sleep(0.1)
    elif mode == "kept":
        jh = treadle.spawn(boom())     # kept, finished, never awaited
        while not jh.done():
            await treadle.sleep(0.005)
    elif mode == "awaited":
        jh = treadle.spawn(boom())
        try:
            await jh
        except ValueError:
            print("caught")
    elif mode == "aborted":
        jh = treadle.spawn(sleeper())
        await treadle.sleep(0.01)
        jh.abort()
        del jh
        await treadle.sleep(0.05)

async def sleeper():
    await treadle.sleep(float("inf"))

treadle.run(main(), flavor=flavor, workers=2)
gc.collect()
print("end")
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("mode", ["dropped", "kept"])
def test_unretrieved_exception_reported_once(tmp_path, flavor, mode):
    script = write_script(tmp_path, "unretrieved.py", UNRETRIEVED)
    p = run_script(script, flavor, mode)
    print(p.stderr)
    assert p.returncode == 0, p.stderr
    assert "end" in p.stdout
    assert p.stderr.count("Task exception was never retrieved") == 1, p.stderr
    assert p.stderr.count("ValueError: unretrieved-4711") == 1, p.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("mode", ["awaited", "aborted"])
def test_retrieved_exception_not_reported(tmp_path, flavor, mode):
    script = write_script(tmp_path, "unretrieved.py", UNRETRIEVED)
    p = run_script(script, flavor, mode)
    assert p.returncode == 0, p.stderr
    assert "end" in p.stdout
    if mode == "awaited":
        assert "caught" in p.stdout
    assert "never retrieved" not in p.stderr, p.stderr
    assert "Traceback" not in p.stderr, p.stderr


def test_unretrieved_exception_via_capfd(capfd, flavor):
    # the same in-process: the report goes to the real stderr (fd 2) or sys.stderr
    async def boom():
        raise LookupError("capfd-0815")

    async def main():
        jh = treadle.spawn(boom())
        while not jh.done():
            await treadle.sleep(0.005)
        del jh

    treadle.run(main(), flavor=flavor, workers=2)
    import gc
    gc.collect()
    err = capfd.readouterr().err
    assert err.count("Task exception was never retrieved") == 1, err
    assert "LookupError: capfd-0815" in err


# ------------------------------------------- mistakes new users make (issue 13)

def never_awaited(caught):
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


def test_issue13_an_operation_never_awaited_warns(run):
    async def main():
        c_lst = await treadle.TcpListener.bind("127.0.0.1", 0)
        c = await treadle.TcpStream.connect("127.0.0.1", c_lst.local_addr[1])
        s, _ = await c_lst.accept()
        with pytest.warns(RuntimeWarning) as caught:
            treadle.sleep(1)  # forgot the await: dropped at once
            treadle.yield_now()
            s.write(b"x")
            s.read(10)
            c_lst.accept()
        for x in (c, s, c_lst):
            x.close()
        return never_awaited(caught)

    assert run(main()) == [
        f"treadle operation {what} was never awaited"
        for what in ("sleep", "yield_now", "TcpStream.write", "TcpStream.read",
                     "TcpListener.accept")]


def test_issue13_never_awaited_outside_a_task_warns_too():
    with pytest.warns(RuntimeWarning, match="treadle operation sleep was never awaited"):
        treadle.sleep(1)


def test_issue13_awaited_operations_do_not_warn(run):
    async def main():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await treadle.sleep(0)
            await treadle.yield_now()
            jh = treadle.spawn(square(3))
            assert await treadle.timeout(5, jh) == 9
            async with await treadle.TcpListener.bind("127.0.0.1", 0) as lst:
                port = lst.local_addr[1]
                async with await treadle.TcpStream.connect("127.0.0.1", port) as c:
                    s, _ = await lst.accept()
                    await c.write(bytearray(b"hi"))
                    assert await s.read(2) == b"hi"
                    with pytest.raises(TypeError):
                        c.write("text")  # refused at the call: nothing to await
                    s.close()
            with pytest.raises(treadle.ClosedError):
                await c.write(b"late")
        return never_awaited(caught)

    assert run(main()) == []


NOT_AWAITED_AT_EXIT = """
import warnings
import treadle

warnings.simplefilter("always")
treadle.sleep(1)               # dropped now: warns
kept = treadle.sleep(1)        # dropped while the interpreter exits: does not
rt = treadle.Runtime("multi_thread", workers=1)
also_kept = [treadle.yield_now()]
print("done", flush=True)
"""


def test_issue13_no_never_awaited_warning_at_exit(tmp_path):
    p = run_script(write_script(tmp_path, "exit_ops.py", NOT_AWAITED_AT_EXIT))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "done\n"
    assert p.stderr.count("was never awaited") == 1, p.stderr


def test_issue15_asyncio_awaitables_work_and_foreign_ones_explain(run):
    import asyncio

    async def main():
        await asyncio.sleep(0)  # asyncio's bare yield: one turn
        await asyncio.sleep(0.001)
        loop = asyncio.new_event_loop()  # another loop's future
        try:
            with pytest.raises(RuntimeError, match="attached to a different loop"):
                await loop.create_future()
        finally:
            loop.close()
        with pytest.raises(RuntimeError, match="neither a treadle awaitable"):
            await Yields(42)
        return "ok"

    assert run(main()) == "ok"


class Yields:
    def __init__(self, value):
        self.value = value

    def __await__(self):
        yield self.value


def test_issue13_asyncio_sleep_without_a_loop_gets_a_hint(run):
    import asyncio

    async def uses_asyncio():
        await asyncio.sleep(0.01)  # asyncio.sleep needs a running loop

    async def main():
        with pytest.raises(RuntimeError, match="no running event loop") as info:
            await treadle.spawn(uses_asyncio())
        return getattr(info.value, "__notes__", [])

    # without I/O the runtime has no asyncio loop
    [note] = run(main(), enable_io=False)
    assert "enable_io and enable_time" in note, note


# ---------------------------------------------------------------- contextvars

VAR = contextvars.ContextVar("treadle_test_var", default="unset")


def test_contextvars_copied_at_spawn(run):
    async def child():
        seen = VAR.get()
        VAR.set("child")
        await treadle.yield_now()
        return seen, VAR.get()

    async def main():
        VAR.set("parent")
        jh = treadle.spawn(child())
        VAR.set("parent-after-spawn")  # not seen by the child: its context was copied at spawn
        got = await jh
        return got, VAR.get()

    assert run(main()) == (("parent", "child"), "parent-after-spawn")


def test_contextvars_main_task_sees_caller_context(flavor):
    async def main():
        seen = VAR.get()
        VAR.set("inside")
        return seen

    token = VAR.set("outer")
    try:
        assert treadle.run(main(), flavor=flavor, workers=2) == "outer"
        assert VAR.get() == "outer"  # as asyncio.run: the main task runs in a copy
    finally:
        VAR.reset(token)


def test_contextvars_many_children_isolated(run):
    async def child(i):
        VAR.set(i)
        await treadle.yield_now()
        await treadle.sleep(0)
        return VAR.get()

    async def main():
        jhs = [treadle.spawn(child(i)) for i in range(200)]
        return [await jh for jh in jhs], VAR.get()

    assert run(main()) == (list(range(200)), "unset")


# ---------------------------------------------------------------- Handle

def test_handle_current(run):
    async def main():
        h = treadle.Handle.current()
        assert isinstance(h, treadle.Handle)
        return await h.spawn(square(6))

    assert run(main()) == 36


def test_handle_current_in_spawned_task(run):
    async def inner():
        return await treadle.Handle.current().spawn(square(3))

    async def main():
        return await treadle.spawn(inner())

    assert run(main()) == 9


def test_handle_spawn_from_plain_thread(run):
    async def where():
        await treadle.yield_now()
        return threading.get_ident()

    async def main():
        h = treadle.Handle.current()
        out = {}

        def body():
            out["tid"] = threading.get_ident()
            out["jh"] = h.spawn(where())

        t = threading.Thread(target=body)
        t.start()
        await treadle.spawn_blocking(t.join, 10)
        assert not t.is_alive()
        ran_on = await out["jh"]
        assert ran_on != out["tid"]  # the plain thread only enqueued it
        return "ok"

    assert run(main()) == "ok"


def test_handle_spawn_from_many_threads(run):
    async def main():
        h = treadle.Handle.current()
        jhs, lock = [], threading.Lock()

        def body(k):
            mine = [h.spawn(square(k * 100 + i)) for i in range(50)]
            with lock:
                jhs.extend(mine)

        threads = [threading.Thread(target=body, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            await treadle.spawn_blocking(t.join, 10)
        return sorted([await jh for jh in jhs])

    assert run(main()) == sorted((k * 100 + i) ** 2 for k in range(4) for i in range(50))


def test_runtime_handle_from_thread_while_blocked_on(flavor):
    # the main thread sits in block_on; a plain thread spawns with rt.handle()
    done = threading.Event()

    async def mark():
        done.set()
        return "marked"

    async def main(box):
        while "jh" not in box:
            await treadle.sleep(0.001)
        return await box["jh"]

    with treadle.Runtime(flavor=flavor, workers=2) as rt:
        h = rt.handle()
        box = {}
        t = threading.Thread(target=lambda: box.__setitem__("jh", h.spawn(mark())))
        t.start()
        assert rt.block_on(guarded(main(box))) == "marked"
        t.join(10)
    assert done.is_set()


# ---------------------------------------------------------------- current_worker

def test_current_worker(run, flavor):
    async def where():
        await treadle.yield_now()
        return treadle.current_worker()

    async def main():
        mine = treadle.current_worker()
        others = [await treadle.spawn(where()) for _ in range(50)]
        return mine, others

    mine, others = run(main())
    assert isinstance(mine, int)
    assert all(isinstance(w, int) for w in others)
    if flavor == "current_thread":
        assert mine == 0
        assert set(others) == {0}
    else:
        assert set(others) <= {0, 1}, others
