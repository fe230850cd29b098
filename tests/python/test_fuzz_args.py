"""Bad arguments for the C entry points of treadle._core: a seeded, bounded
random sweep (issue 17 item 4, "the Python argument parsing of the C
types"; docs/TESTING.md "Fuzzing").

The ordinary suites' form of tests/fuzz/fuzz_python (the libFuzzer target
that embeds libpython, run by scripts/fuzz.sh, draws the same choices from
its input): it runs in every Python mode, scripts/test_python.sh's asan
mode included, where the extension has ASan+UBSan. Each round calls
every entry point (the module's functions, inside a task and outside one;
the SWIG wrappers and metrics accessors; the types' constructors, static
methods and methods on live objects) with a tuple of 0-4 arguments drawn
from edge values: ints at the C type limits and beyond, floats NaN, the
infinities and -0.0, None, bytes, bytearray, memoryview, str with NUL and
non-ASCII, containers, a callable, and number subclasses whose conversion
raises. Each call must return or raise one of ALLOWED: never crash, never
SystemError (a C function that returned NULL without an exception or a
value with one set). The ops it makes are awaited with a short deadline or
dropped, the runtimes it makes are shut down.

TREADLE_FUZZ_SEED=N and TREADLE_FUZZ_ROUNDS=N pick another seed and length.
"""

import math
import os
import random
import warnings

import pytest

import treadle
from treadle import _core

SEED = int(os.environ.get("TREADLE_FUZZ_SEED", "17"))
ROUNDS = int(os.environ.get("TREADLE_FUZZ_ROUNDS", "300"))

# A conversion hook that raises: the C code must pass its exception on.
class BadIndex(int):
    def __index__(self):
        raise ZeroDivisionError("__index__ raised")

    def __int__(self):
        raise ZeroDivisionError("__int__ raised")


class BadFloat(float):
    def __float__(self):
        raise ZeroDivisionError("__float__ raised")


VALUES = [
    0, 1, -1, 7, 2**31 - 1, 2**31, -2**31 - 1, 2**32, 2**63 - 1, 2**63, -2**63 - 1,
    2**64, 10**30, -10**30,
    0.0, -0.0, 0.001, 0.5, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf,
    None, True, False,
    b"", b"127.0.0.1", bytearray(b"abc"), memoryview(b"ab"),
    "", "127.0.0.1", "::1", "localhost", "x" * 300, "a\0b", "\u00e9\U0001f600",
    object(), [], [1, 2], (), (1,), {}, {"a": 1}, len,
    BadIndex(3), BadFloat(1.5),
]

# CancelledError: JoinHandle.result() of an aborted task.
ALLOWED = (TypeError, ValueError, OverflowError, OSError, RuntimeError,
           ZeroDivisionError, _core.Error, TimeoutError, _core.CancelledError)

# Functions that take ownership of a live pointer (treadle_builder_free) or
# build a runtime (treadle_py_build) get their own cases below.
OWNING = {"treadle_builder_free", "treadle_py_build"}


class Sweep:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.calls = 0
        self.outcomes = {}

    def args(self):
        return tuple(self.rng.choice(VALUES) for _ in range(self.rng.randrange(5)))

    def call(self, name, fn, *first):
        """fn(*first, *random args): the value, or None when it raised one of
        ALLOWED; anything else fails the test with the call."""
        args = first + self.args()
        self.calls += 1
        try:
            value = fn(*args)
        except ALLOWED as e:
            self.outcomes[name, type(e).__name__] = True
            return None
        except BaseException as e:
            pytest.fail(f"{name}{args!r} raised {type(e).__name__}: {e}")
        self.outcomes[name, "ok"] = True
        return value


def module_functions():
    """The module's plain functions (no types, no SWIG helpers)."""
    out = []
    for name in sorted(dir(_core)):
        fn = getattr(_core, name)
        if name.startswith("_") or isinstance(fn, type) or not callable(fn):
            continue
        if "swig" in name or name in OWNING:
            continue
        out.append((name, fn))
    return out


def drop(value):
    """Closes what a call made: ops are dropped, runtimes shut down, loop
    cores closed, builders freed."""
    if isinstance(value, _core.RuntimeCore):
        value.shutdown(None)
    elif isinstance(value, _core.LoopCore):
        value._close_core()
    elif isinstance(value, _core.WakeWatch):
        value.close()
    elif type(value).__name__ == "SwigPyObject" and "treadle_builder_s *" in repr(value):
        # treadle_builder_new's: its caller frees it (it leaked, which the
        # fuzz target's LeakSanitizer found)
        _core.treadle_builder_free(value)


@pytest.fixture(autouse=True)
def _quiet():
    # Ops dropped unawaited warn (RuntimeWarning); that is the point here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def test_swig_wrappers_take_bad_arguments():
    sweep = Sweep(SEED)
    functions = module_functions()
    for _ in range(ROUNDS):
        builder = _core.treadle_builder_new(_core.TREADLE_CURRENT_THREAD)
        for name, fn in functions:
            if name.startswith("treadle_builder_") and sweep.rng.randrange(2):
                drop(sweep.call(name + "(b)", fn, builder))
            else:
                drop(sweep.call(name, fn))
        # treadle_py_build with a live builder and random hooks and names,
        # or a random builder; a runtime it makes is shut down.
        b = builder if sweep.rng.randrange(2) else sweep.rng.choice(VALUES)
        drop(sweep.call("treadle_py_build", _core.treadle_py_build, b))
        _core.treadle_builder_free(builder)
        sweep.call("treadle_builder_free", _core.treadle_builder_free)
    assert sweep.calls > ROUNDS * len(functions)
    # the metrics accessors were reached with None and with junk
    assert any(name.endswith("_get") for name, _ in sweep.outcomes)


def test_types_take_bad_arguments():
    sweep = Sweep(SEED + 1)
    rt = treadle.Runtime("current_thread", _with_loop=False)
    core = rt._core
    handle = core.handle()
    try:
        for _ in range(ROUNDS):
            for name, fn in (
                ("RuntimeCore()", _core.RuntimeCore), ("Handle()", _core.Handle),
                ("JoinHandle()", _core.JoinHandle), ("Op()", _core.Op),
                ("TcpStream()", _core.TcpStream), ("TcpListener()", _core.TcpListener),
                ("LoopCore()", _core.LoopCore),
                ("TcpStream.connect", _core.TcpStream.connect),
                ("TcpListener.bind", _core.TcpListener.bind),
                ("Handle.current", _core.Handle.current),
                ("core.spawn", core.spawn), ("core.spawn_blocking", core.spawn_blocking),
                ("core.block_on_step", core.block_on_step), ("core.handle", core.handle),
                ("core.watch_wake", core.watch_wake), ("WakeWatch()", _core.WakeWatch),
                ("handle.spawn", handle.spawn),
            ):
                drop(sweep.call(name, fn))
            # LoopCore on a live runtime, with random options
            drop(sweep.call("LoopCore(core)", _core.LoopCore, core))
            for name, fn in module_functions():
                if not name.startswith("treadle_"):
                    drop(sweep.call(name, fn))
    finally:
        rt.shutdown()
    # shutdown's timeout, on runtimes of their own
    for _ in range(8):
        with treadle.Runtime("current_thread", _with_loop=False) as other:
            sweep.call("core.shutdown", other._core.shutdown)
    assert sweep.outcomes.get(("core.spawn", "TypeError"))


async def _noop():
    return 1


async def _in_task(sweep):
    """The module's functions and a JoinHandle's methods inside a task; the
    ops that come back are awaited with a short deadline."""
    loop_fns = [(n, f) for n, f in module_functions() if not n.startswith("treadle_")]
    for _ in range(ROUNDS):
        for name, fn in loop_fns:
            value = sweep.call(name, fn)
            if name == "spawn_blocking" and value is not None:
                try:  # a random fn on the pool: its own error is its result
                    await treadle.timeout(5, value)
                except Exception:
                    pass
            elif name in ("sleep", "yield_now") and value is not None:
                try:
                    await treadle.timeout(0.002, value)
                except TimeoutError:
                    pass
        join = _core.spawn(_noop())
        for name in ("result", "abort", "done"):
            sweep.call("JoinHandle." + name, getattr(join, name))
        waiting = sweep.call("wait(join)", _core.wait, join)
        if waiting is not None:
            try:
                await treadle.timeout(0.002, waiting)
            except TimeoutError:
                pass
        try:
            await join
        except _core.CancelledError:  # the sweep's abort() came first
            pass
    return sweep.calls


@pytest.mark.parametrize("flavor", ["current_thread", "multi_thread"])
def test_module_functions_in_a_task_take_bad_arguments(flavor):
    sweep = Sweep(SEED + 2)
    calls = treadle.run(_in_task(sweep), flavor=flavor, workers=2)
    assert calls > ROUNDS * 10
    assert sweep.outcomes.get(("sleep", "TypeError"))
