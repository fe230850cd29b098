"""treadle.run, treadle.Runtime and its options, block_on/spawn/handle/metrics/shutdown."""

import gc
import asyncio
import inspect
import re
import sys
import threading
import time
import types

import pytest

import treadle
from conftest import FLAVORS, ROOT, forever, guarded


async def answer(x=42):
    await treadle.yield_now()
    return x


async def fail(exc):
    await treadle.yield_now()
    raise exc


# ---------------------------------------------------------------- run

def test_run_returns_result(run):
    assert run(answer(7)) == 7


@pytest.mark.parametrize("flavor", FLAVORS)
def test_run_plain(flavor):
    # no guard, no extra options: the documented call as users write it
    assert treadle.run(answer("x"), flavor=flavor) == "x"


def test_run_default_flavor():
    assert treadle.run(answer(3)) == 3


def test_run_propagates_exception(run):
    err = KeyError("k")
    with pytest.raises(KeyError) as info:
        run(fail(err))
    assert info.value is err


def test_run_rejects_non_coroutine(flavor):
    with pytest.raises((TypeError, ValueError)):
        treadle.run(42, flavor=flavor)
    with pytest.raises((TypeError, ValueError)):
        treadle.run(answer, flavor=flavor)  # the function, not a coroutine


def test_run_unknown_option(flavor):
    coro = answer()
    with pytest.raises(TypeError):
        treadle.run(coro, flavor=flavor, no_such_option=True)
    coro.close()


def test_run_twice_in_a_row(run):
    assert run(answer(1)) == 1
    assert run(answer(2)) == 2


def test_nested_run_raises(run):
    async def main():
        inner = answer()
        try:
            with pytest.raises((RuntimeError, treadle.Error)):
                treadle.run(inner)
        finally:
            inner.close()
        return "survived"

    assert run(main()) == "survived"


# ---------------------------------------------------------------- Runtime options

@pytest.mark.parametrize("bad", ["bogus", "", 3])
def test_bad_flavor(bad):
    with pytest.raises((ValueError, TypeError)):
        treadle.Runtime(flavor=bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_worker_count(bad):
    with pytest.raises((ValueError, OverflowError, treadle.Error)):
        treadle.Runtime(flavor="multi_thread", workers=bad)


def test_bad_worker_type():
    with pytest.raises(TypeError):
        treadle.Runtime(flavor="multi_thread", workers="2")


def test_unknown_runtime_option():
    with pytest.raises(TypeError):
        treadle.Runtime(no_such_option=1)


@pytest.mark.parametrize("workers", [1, 3])
def test_workers_option(workers):
    with treadle.Runtime(flavor="multi_thread", workers=workers) as rt:
        m = rt.metrics()
        assert m.workers == workers
        assert len(m.per_worker) == workers


def test_current_thread_has_one_worker():
    with treadle.Runtime(flavor="current_thread") as rt:
        assert rt.metrics().workers == 1


def test_all_options_accepted(flavor):
    rt = treadle.Runtime(
        flavor=flavor,
        workers=2,
        max_blocking_threads=4,
        enable_io=True,
        enable_time=True,
        thread_name="treadle-opt",
        on_thread_start=None,
        on_thread_stop=None,
    )
    with rt:
        assert rt.block_on(answer(5)) == 5


def _thread_comm(tid):
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().strip()


def test_thread_name_multi_thread():
    async def where():
        await treadle.yield_now()
        return _thread_comm(threading.get_native_id())

    async def main():
        names = set()
        for _ in range(20):
            names.add(await treadle.spawn(where()))
        return names

    with treadle.Runtime(flavor="multi_thread", workers=2, thread_name="tw-named") as rt:
        names = rt.block_on(guarded(main()))
    # spawned tasks run on worker threads, which carry the name (comm is cut at 15 bytes)
    assert names, names
    assert all(n.startswith("tw-named") for n in names), names


def test_thread_callbacks(flavor):
    lock = threading.Lock()
    started, stopped = [], []

    def on_start():
        with lock:
            started.append(threading.get_native_id())

    def on_stop():
        with lock:
            stopped.append(threading.get_native_id())

    async def main():
        # make sure the blocking pool has a thread too
        return await treadle.spawn_blocking(threading.get_native_id)

    rt = treadle.Runtime(flavor=flavor, workers=2, on_thread_start=on_start, on_thread_stop=on_stop)
    blocking_tid = rt.block_on(guarded(main()))
    rt.shutdown(timeout=10)
    with lock:
        started_s, stopped_s = sorted(started), sorted(stopped)
    if flavor == "multi_thread":
        assert len(started_s) >= 2, started_s  # at least the two workers
    assert blocking_tid in started_s, (blocking_tid, started_s)
    # every thread that started has stopped once the runtime is shut down
    assert started_s == stopped_s
    assert threading.get_native_id() not in started_s


def test_thread_callback_must_be_callable():
    with pytest.raises(TypeError):
        treadle.Runtime(on_thread_start=42)


# ---------------------------------------------------------------- block_on / spawn / handle

def test_block_on(runtime):
    assert runtime.block_on(answer(1)) == 1
    assert runtime.block_on(answer(2)) == 2  # again on the same runtime


def test_block_on_exception(runtime):
    err = ValueError("in block_on")
    with pytest.raises(ValueError) as info:
        runtime.block_on(fail(err))
    assert info.value is err
    assert runtime.block_on(answer(3)) == 3  # the runtime is still usable


def test_block_on_rejects_non_awaitable(runtime):
    with pytest.raises(TypeError):
        runtime.block_on(42)


def test_block_on_from_inside_a_task_raises(runtime):
    other = treadle.Runtime(flavor="current_thread")

    async def main():
        for rt in (runtime, other):
            inner = answer()
            try:
                with pytest.raises((RuntimeError, treadle.Error)):
                    rt.block_on(inner)
            finally:
                inner.close()
        return "ok"

    try:
        assert runtime.block_on(guarded(main())) == "ok"
    finally:
        other.shutdown()


def test_refused_block_on_does_not_run_the_coroutine(runtime):
    ran = []

    async def inner():
        ran.append(1)

    async def main():
        coro = inner()
        with pytest.raises((RuntimeError, treadle.Error)):
            runtime.block_on(coro)
        await treadle.sleep(0.05)
        # refused means not run: the coroutine was never started (closing it
        # now would raise if a task had taken it)
        coro.close()
        return list(ran)

    assert runtime.block_on(guarded(main())) == []


def test_shutdown_from_inside_a_task_is_refused_or_works(runtime):
    other = treadle.Runtime(flavor="current_thread")

    async def main():
        try:
            other.shutdown()
        except (RuntimeError, treadle.Error):
            return "refused"
        return "done"

    try:
        r = runtime.block_on(guarded(main()))
        assert r in ("refused", "done")
        if r == "done":
            assert other.is_shutdown
    finally:
        other.shutdown()
    coro = answer()
    with pytest.raises(AFTER_SHUTDOWN):
        other.block_on(coro)
    coro.close()


def test_runtime_spawn_then_join(runtime):
    jh = runtime.spawn(answer(11))

    async def join():
        return await jh

    assert runtime.block_on(guarded(join())) == 11
    assert jh.done()


def test_runtime_spawn_rejects_non_coroutine(runtime):
    with pytest.raises(TypeError):
        runtime.spawn(42)


def test_multi_thread_spawn_runs_in_background():
    ev = threading.Event()

    async def setter():
        ev.set()
        return "set"

    with treadle.Runtime(flavor="multi_thread", workers=2) as rt:
        jh = rt.spawn(setter())
        # no block_on: a worker runs it
        assert ev.wait(10)
        deadline = time.monotonic() + 10
        while not jh.done() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert jh.done()


def test_current_thread_spawn_runs_only_inside_block_on():
    ran = []

    async def task():
        ran.append(1)
        return "ran"

    async def join(jh):
        return await jh

    with treadle.Runtime(flavor="current_thread") as rt:
        jh = rt.spawn(task())
        time.sleep(0.05)
        assert ran == []  # nobody drives a current_thread runtime outside block_on
        assert not jh.done()
        assert rt.block_on(guarded(join(jh))) == "ran"
        assert ran == [1]


def test_handle_spawn(runtime):
    h = runtime.handle()
    assert isinstance(h, treadle.Handle)
    jh = h.spawn(answer(12))

    async def join():
        return await jh

    assert runtime.block_on(guarded(join())) == 12


def test_handle_current_is_this_runtime(runtime):
    async def main():
        h = treadle.Handle.current()
        assert isinstance(h, treadle.Handle)
        return await h.spawn(answer(13))

    assert runtime.block_on(guarded(main())) == 13


# ---------------------------------------------------------------- metrics

def _header_fields(tag):
    """The field names of `struct tag` in core/include/treadle.h, in order:
    the one list that SWIG and treadle.Metrics take theirs from."""
    text = (ROOT / "core" / "include" / "treadle.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    body = re.search(r"struct %s \{(.*?)\}" % tag, text, re.S).group(1)
    return tuple(re.findall(r"(\w+)\s*;", body))


RUNTIME_FIELDS = _header_fields("treadle_runtime_metrics_s")
WORKER_FIELDS = _header_fields("treadle_worker_metrics_s")


def test_metrics_fields_are_the_headers():
    assert "driver_parks" in RUNTIME_FIELDS and "polls" in WORKER_FIELDS
    assert treadle.Metrics.__slots__ == RUNTIME_FIELDS + ("per_worker",)
    assert treadle.WorkerMetrics.__slots__ == WORKER_FIELDS


def test_issue17_metrics_accessors_refuse_none():
    # Found by tests/python/test_fuzz_args.py: SWIG turned None into NULL
    # and the accessors read through it (a segfault).
    from treadle import _core
    for tag, fields in (("runtime", RUNTIME_FIELDS), ("worker", WORKER_FIELDS)):
        for name in fields:
            get = getattr(_core, f"treadle_{tag}_metrics_t_{name}_get")
            put = getattr(_core, f"treadle_{tag}_metrics_t_{name}_set")
            with pytest.raises(TypeError, match="is None"):
                get(None)
            with pytest.raises(TypeError, match="is None"):
                put(None, 1)


def _check_metrics(m):
    for name in RUNTIME_FIELDS:
        v = getattr(m, name)
        assert isinstance(v, int) and v >= 0, (name, v)
    assert isinstance(m.per_worker, list)
    assert len(m.per_worker) == m.workers
    for w in m.per_worker:
        for name in WORKER_FIELDS:
            v = getattr(w, name)
            assert isinstance(v, int) and v >= 0, (name, v)
    assert repr(m).startswith("Metrics(workers=")
    for name in RUNTIME_FIELDS:
        assert f"{name}=" in repr(m)


def test_metrics_shape(runtime):
    _check_metrics(runtime.metrics())


def test_metrics_count_work(runtime, flavor):
    async def main():
        jhs = [treadle.spawn(answer(i)) for i in range(200)]
        for j in jhs:
            await j
        await treadle.spawn_blocking(int, "1")

    runtime.block_on(guarded(main()))
    m = runtime.metrics()
    _check_metrics(m)
    assert m.workers == (2 if flavor == "multi_thread" else 1)
    assert sum(w.polls for w in m.per_worker) >= 200
    assert m.blocking_threads >= 1
    assert m.blocking_idle <= m.blocking_threads


def test_metrics_live_tasks(runtime):
    async def main():
        jh = treadle.spawn(forever())
        await treadle.sleep(0.01)
        live = runtime.metrics().live_tasks
        jh.abort()
        with pytest.raises(treadle.CancelledError):
            await jh
        return live

    live = runtime.block_on(guarded(main()))
    assert live >= 1
    # the aborted task is released (maybe a moment after the join on multi_thread)
    deadline = time.monotonic() + 5
    while runtime.metrics().live_tasks >= live and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.metrics().live_tasks < live


# ---------------------------------------------------------------- shutdown / context manager

AFTER_SHUTDOWN = (treadle.ShutdownError, RuntimeError)


def test_calls_after_shutdown_raise(flavor):
    rt = treadle.Runtime(flavor=flavor, workers=2)
    h = rt.handle()
    assert rt.block_on(answer(1)) == 1
    rt.shutdown()

    coro = answer()
    with pytest.raises(AFTER_SHUTDOWN):
        rt.block_on(coro)
    coro.close()

    coro = answer()
    with pytest.raises(AFTER_SHUTDOWN):
        rt.spawn(coro)
    coro.close()

    coro = answer()
    with pytest.raises(AFTER_SHUTDOWN):
        h.spawn(coro)
    coro.close()

    # a second shutdown is harmless or a clear error
    try:
        rt.shutdown()
    except AFTER_SHUTDOWN:
        pass


def test_shutdown_error_attributes(flavor):
    rt = treadle.Runtime(flavor=flavor, workers=2)
    rt.shutdown()
    coro = answer()
    try:
        rt.block_on(coro)
    except treadle.ShutdownError as e:
        assert isinstance(e, treadle.Error)
        assert isinstance(e.code, int) and e.code < 0
        assert isinstance(e.name, str) and e.name
    except RuntimeError:
        pass
    else:
        pytest.fail("block_on after shutdown did not raise")
    finally:
        coro.close()


def test_shutdown_with_pending_tasks_returns(flavor):
    rt = treadle.Runtime(flavor=flavor, workers=2)

    async def start():
        jhs = [treadle.spawn(forever()) for _ in range(10)]
        await treadle.sleep(0.01)
        return jhs

    jhs = rt.block_on(guarded(start()))
    jhs.append(rt.spawn(forever()))
    t0 = time.monotonic()
    rt.shutdown(timeout=2)
    took = time.monotonic() - t0
    print(f"shutdown with 11 pending tasks took {took * 1000:.1f} ms")
    assert took < 10


def test_shutdown_timeout_none_with_pending_tasks(flavor):
    rt = treadle.Runtime(flavor=flavor, workers=2)
    rt.spawn(forever())
    rt.block_on(answer())
    t0 = time.monotonic()
    rt.shutdown()  # pending tasks are cancelled, not waited for
    assert time.monotonic() - t0 < 10


def test_shutdown_bad_timeout(runtime):
    with pytest.raises((TypeError, ValueError)):
        runtime.shutdown(timeout="soon")


def test_context_manager(flavor):
    with treadle.Runtime(flavor=flavor, workers=2) as rt:
        assert isinstance(rt, treadle.Runtime)
        assert rt.block_on(answer(4)) == 4
    coro = answer()
    with pytest.raises(AFTER_SHUTDOWN):
        rt.block_on(coro)
    coro.close()


def test_context_manager_exception_passes_through(flavor):
    with pytest.raises(ZeroDivisionError):
        with treadle.Runtime(flavor=flavor, workers=2) as rt:
            rt.block_on(answer())
            1 / 0
    coro = answer()
    with pytest.raises(AFTER_SHUTDOWN):
        rt.block_on(coro)
    coro.close()


def test_many_runtimes_in_sequence(flavor):
    for i in range(20):
        with treadle.Runtime(flavor=flavor, workers=2) as rt:
            assert rt.block_on(answer(i)) == i


def test_two_runtimes_at_once():
    with treadle.Runtime(flavor="multi_thread", workers=2) as a, \
            treadle.Runtime(flavor="current_thread") as b:
        ja = a.spawn(answer("a"))
        jb = b.spawn(answer("b"))

        async def join(jh):
            return await jh

        assert b.block_on(guarded(join(jb))) == "b"
        assert a.block_on(guarded(join(ja))) == "a"


# ---------------------------------------------------------------- errors and names

def test_error_hierarchy():
    assert issubclass(treadle.Error, Exception)
    assert issubclass(treadle.ShutdownError, treadle.Error)
    assert issubclass(treadle.ClosedError, treadle.Error)
    assert treadle.CancelledError is asyncio.CancelledError


def test_outside_a_task_raises_runtime_error():
    with pytest.raises(RuntimeError):
        treadle.Handle.current()
    with pytest.raises(RuntimeError):
        treadle.current_worker()
    coro = answer()
    with pytest.raises(RuntimeError):
        treadle.spawn(coro)
    coro.close()


def test_public_names_have_docstrings():
    names = ["run", "Runtime", "Handle", "JoinHandle", "spawn", "sleep", "yield_now", "timeout",
             "spawn_blocking", "current_worker", "TcpListener", "TcpStream", "ctrl_c", "signal",
             "Error", "ShutdownError", "ClosedError", "CancelledError"]
    missing = [n for n in names if not hasattr(treadle, n)]
    assert not missing, missing
    undocumented = [n for n in names if n != "CancelledError" and not (getattr(treadle, n).__doc__ or "").strip()]
    assert not undocumented, undocumented


def test_issue13_binding_uses_only_public_c_api():
    # CPython's private API (_Py*) changes between versions: the binding
    # builds on 3.11 through 3.13 because it calls none of it
    sources = [*(ROOT / "bindings" / "python").glob("*.[ch]"), *(ROOT / "swig").glob("*.i")]
    assert sources
    private = [f"{p.name}: {m.group(0)}" for p in sources
               for m in re.finditer(r"\b_Py\w*\s*\(", p.read_text())]
    assert not private, private


@pytest.mark.parametrize("thread_name", [None, "tr-pool-with-a-long-name"])
def test_issue13_runtime_threads_carry_their_name_in_threading(flavor, thread_name):
    # they were "Dummy-N" to threading (and to logging's %(threadName)s)
    expected = thread_name or "treadle-worker"
    seen = []

    def on_start():
        seen.append(threading.current_thread().name)

    def name():
        return threading.current_thread().name

    async def where():
        await treadle.yield_now()
        return name()

    async def main():
        tasks = {await treadle.spawn(where()) for _ in range(8)}
        return tasks, await treadle.spawn_blocking(name)

    options = {} if thread_name is None else {"thread_name": thread_name}
    with treadle.Runtime(flavor=flavor, workers=2, on_thread_start=on_start,
                         **options) as rt:
        tasks, blocking = rt.block_on(guarded(main()))
    assert blocking == expected
    assert tasks == ({expected} if flavor == "multi_thread" else {"MainThread"})
    assert seen and set(seen) == {expected}, seen  # the hook sees it too
    # the threads are gone, and threading does not list them any more
    assert expected not in {t.name for t in threading.enumerate()}


def c_callables():
    """Every function of the extension module and every method of its
    types, as (name, callable)."""
    from treadle import _core
    for name, obj in sorted(vars(_core).items()):
        if isinstance(obj, types.BuiltinFunctionType):
            yield name, obj
        elif isinstance(obj, type) and obj.__module__.startswith("treadle"):
            for attr, desc in sorted(vars(obj).items()):
                if isinstance(desc, (types.MethodDescriptorType, types.ClassMethodDescriptorType,
                                     types.WrapperDescriptorType, staticmethod)):
                    yield f"{name}.{attr}", getattr(obj, attr)


def test_issue13_every_c_function_has_a_signature():
    found = dict(c_callables())
    assert {"sleep", "spawn_blocking", "treadle_builder_new", "JoinHandle.result",
            "TcpStream.read", "TcpListener.bind", "Handle.current"} <= set(found)
    missing = []
    for name, fn in found.items():
        try:
            inspect.signature(fn)
        except (ValueError, TypeError):
            missing.append(name)
    assert not missing, missing


def test_issue13_signatures_say_how_to_call():
    sig = lambda fn: str(inspect.signature(fn))  # noqa: E731
    assert sig(treadle.TcpStream.read) == "(self, n=65536, /)"
    assert sig(treadle.TcpListener.bind) == "(host, port, *, backlog=1024, reuse_port=False)"
    assert sig(treadle.JoinHandle.result) == "(self, /, timeout=None)"
    assert sig(treadle._core.spawn_blocking) == "(fn, /, *args, **kwargs)"
    assert sig(treadle._core.sleep) == "(seconds, /)"
    assert sig(treadle._core.treadle_builder_worker_threads) == "(b, n, /)"
    assert sig(treadle._core.treadle_now) == "()"
    # the text after the signature is still the docstring
    assert "(host, port)" in treadle.TcpStream.connect.__doc__
    assert "--" not in treadle.JoinHandle.result.__doc__


def test_issue13_join_handle_is_generic():
    alias = treadle.JoinHandle[int]
    assert isinstance(alias, types.GenericAlias)
    assert alias.__origin__ is treadle.JoinHandle and alias.__args__ == (int,)
    assert treadle._core.Op[bytes].__origin__ is treadle._core.Op


TYPED_SNIPPET = """
import treadle

async def answer() -> int:
    return 42

async def main() -> None:
    h = treadle.spawn(answer())
    reveal_type(h)
    reveal_type(h.result(timeout=1))
    reveal_type(treadle.spawn_blocking(len, "abc"))
    reveal_type(treadle.Handle.current().spawn(answer()))
    wrong: str = await h

later: "treadle.JoinHandle[int]"
"""


def test_issue13_stubs_make_join_handles_generic(tmp_path, monkeypatch):
    api = pytest.importorskip("mypy.api")
    monkeypatch.setenv("MYPYPATH", str(ROOT / "bindings" / "python"))
    snippet = tmp_path / "snippet.py"
    snippet.write_text(TYPED_SNIPPET)
    out, err, status = api.run(["--cache-dir", str(tmp_path / "cache"), "--follow-imports=silent",
                                "--python-executable", sys.executable, str(snippet)])
    assert status == 1, (out, err)
    revealed = re.findall(r'Revealed type is "([^"]+)"', out)
    assert revealed == ["treadle._core.JoinHandle[builtins.int]", "builtins.int",
                        "treadle._core.JoinHandle[builtins.int]",
                        "treadle._core.JoinHandle[builtins.int]"], out
    assert re.search(r'snippet.py:13: error: Incompatible types in assignment \(expression has type '
                     r'"int", variable has type "str"\)', out), out
    assert "Found 1 error" in out, out


def test_issue17_a_main_that_raises_leaves_no_uncollectable_cycle(flavor):
    # block_on's frame holds the JoinHandle, which holds the exception,
    # whose traceback holds the frame: the collector must see the handle's
    # part, or the runtime (its memory) stays until exit
    import weakref

    async def bad():
        raise ValueError("boom")

    rt = treadle.Runtime(flavor=flavor, workers=1)
    ref = weakref.ref(rt)
    with pytest.raises(ValueError):
        rt.block_on(bad())
    rt.shutdown()
    del rt
    gc.collect()
    assert ref() is None, "the runtime was kept by a cycle through a JoinHandle"
