"""sleep, timeout, yield_now, spawn_blocking."""

import math
import sys
import threading
import time

import pytest

import treadle
from conftest import forever, guarded

INF = float("inf")


async def value_after(delay, value):
    await treadle.sleep(delay)
    return value


# ---------------------------------------------------------------- sleep

def test_sleep_waits_at_least_the_duration(run):
    async def main():
        t0 = time.monotonic()
        r = await treadle.sleep(0.1)
        return r, time.monotonic() - t0

    r, took = run(main())
    print(f"sleep(0.1) took {took * 1000:.2f} ms")
    assert r is None
    assert took >= 0.099  # never early (1 ms slack for clock granularity)
    assert took < 5


@pytest.mark.parametrize("arg", [0, 0.0, 1, 0.001])
def test_sleep_accepts_numbers(run, arg):
    async def main():
        return await treadle.sleep(arg)

    assert run(main()) is None


def test_sleep_accepts_int_and_float_subclasses(run):
    import enum
    from decimal import Decimal
    from fractions import Fraction

    class Secs(float):
        pass

    class Small(enum.IntEnum):
        ZERO = 0

    async def main():
        await treadle.sleep(Secs(0.001))
        await treadle.sleep(Small.ZERO)
        await treadle.sleep(Fraction(1, 1000))  # any real number, as asyncio.sleep
        await treadle.sleep(Decimal("0.001"))
        return "ok"

    assert run(main()) == "ok"


def test_sleep_nan_raises_value_error(run):
    async def main():
        with pytest.raises(ValueError):
            await treadle.sleep(math.nan)
        with pytest.raises(ValueError):
            await treadle.sleep(-math.nan)
        return "ok"

    assert run(main()) == "ok"


@pytest.mark.parametrize("arg", ["1", b"1", None, [], object(), 1j])
def test_sleep_wrong_type_raises_type_error(run, arg):
    async def main():
        with pytest.raises(TypeError):
            await treadle.sleep(arg)
        return "ok"

    assert run(main()) == "ok"


@pytest.mark.parametrize("arg", [-1, -0.5, -1e300, -INF, -sys.maxsize])
def test_sleep_negative_acts_as_zero(run, arg):
    async def main():
        t0 = time.monotonic()
        await treadle.sleep(arg)
        return time.monotonic() - t0

    took = run(main())
    assert took < 2


@pytest.mark.parametrize("arg", [INF, 1e300, 1e18, 2**64, sys.maxsize])
def test_sleep_huge_waits_until_timeout(run, arg):
    log = []

    async def sleeper():
        try:
            await treadle.sleep(arg)
            log.append("woke")
        except treadle.CancelledError:
            log.append("cancelled")
            raise

    async def main():
        with pytest.raises(TimeoutError):
            await treadle.timeout(0.05, sleeper())
        return "ok"

    assert run(main()) == "ok"
    assert "woke" not in log


def test_issue13_ints_past_a_double_range(run):
    # an int too big for a double is judged by its sign (public C API only)
    async def main():
        t0 = time.monotonic()
        await treadle.sleep(-10**400)
        took = time.monotonic() - t0
        with pytest.raises(TimeoutError):
            await treadle.timeout(0.05, treadle.sleep(10**400))
        return took

    assert run(main()) < 2


def test_sleep_inf_waits_until_aborted(run):
    log = []

    async def sleeper():
        try:
            await treadle.sleep(INF)
            log.append("woke")
        except treadle.CancelledError:
            log.append("cancelled")
            raise

    async def main():
        jh = treadle.spawn(sleeper())
        await treadle.sleep(0.05)
        assert not jh.done()
        jh.abort()
        with pytest.raises(treadle.CancelledError):
            await jh

    run(main())
    assert log == ["cancelled"]


def test_many_sleeps_never_early(run):
    async def one(d):
        t0 = time.monotonic()
        await treadle.sleep(d)
        return d, time.monotonic() - t0

    async def main():
        jhs = [treadle.spawn(one((i % 20) * 0.005)) for i in range(200)]
        return [await jh for jh in jhs]

    results = run(main())
    early = [(d, t) for d, t in results if t < d - 0.001]
    assert not early, early
    worst = max(t - d for d, t in results)
    print(f"worst overshoot of 200 sleeps: {worst * 1000:.2f} ms")


def test_sleep_in_sequence(run):
    async def main():
        t0 = time.monotonic()
        for _ in range(10):
            await treadle.sleep(0.01)
        return time.monotonic() - t0

    assert run(main()) >= 0.099


@pytest.mark.parametrize("delay", [0.07, 1.1, 4.2])
def test_issue18_a_sleep_costs_a_few_driver_parks(runtime, delay):
    # A runtime that only waits must not wake up: a sleep on any level of
    # the wheel costs at most two parks per level its timer passes through
    # (levels 0, 1 and 2 here) plus a few, never one per millisecond (the
    # driver spun from each slot's start to the deadline before).
    async def main():
        await treadle.sleep(delay)

    before = runtime.metrics().driver_parks
    runtime.block_on(main())
    parks = runtime.metrics().driver_parks - before
    print(f"sleep({delay}): {parks} driver parks")
    assert parks <= 2 * 3 + 3


# ---------------------------------------------------------------- timeout

def test_timeout_returns_result(run):
    async def main():
        assert await treadle.timeout(5, value_after(0.001, "v")) == "v"
        assert await treadle.timeout(5.0, value_after(0, "w")) == "w"
        assert await treadle.timeout(INF, value_after(0.001, "x")) == "x"
        return "ok"

    assert run(main()) == "ok"


def test_timeout_of_join_handle(run):
    async def main():
        jh = treadle.spawn(value_after(0.001, 5))
        return await treadle.timeout(5, jh)

    assert run(main()) == 5


def test_timeout_expires_with_builtin_timeout_error(run):
    async def main():
        t0 = time.monotonic()
        try:
            await treadle.timeout(0.05, value_after(10, "late"))
        except TimeoutError as e:
            return type(e), time.monotonic() - t0
        return None, None

    kind, took = run(main())
    print(f"timeout(0.05) fired after {took * 1000:.2f} ms")
    assert kind is not None and issubclass(kind, TimeoutError)
    assert 0.049 <= took < 5


def test_timeout_cancels_inner(run):
    log = []

    async def inner():
        try:
            await treadle.sleep(10)
            log.append("woke")
        except treadle.CancelledError:
            log.append("cancelled")
            raise
        finally:
            log.append("finally")

    async def main():
        with pytest.raises(TimeoutError):
            await treadle.timeout(0.02, inner())
        # the inner coroutine has been cancelled (give it a moment if that is asynchronous)
        for _ in range(200):
            if "finally" in log:
                break
            await treadle.sleep(0.005)
        return list(log)

    assert run(main()) == ["cancelled", "finally"]


def test_timeout_propagates_inner_exception(run):
    async def bad():
        await treadle.sleep(0.001)
        raise KeyError("inner")

    async def main():
        with pytest.raises(KeyError):
            await treadle.timeout(5, bad())
        return "ok"

    assert run(main()) == "ok"


def test_timeout_negative_or_zero_expires(run):
    async def main():
        for t in (0, -1, -INF):
            with pytest.raises(TimeoutError):
                await treadle.timeout(t, value_after(5, "late"))
        return "ok"

    assert run(main()) == "ok"


def test_timeout_bad_arguments(run):
    async def main():
        c = value_after(0, 1)
        with pytest.raises(ValueError):
            await treadle.timeout(math.nan, c)
        c.close()
        c = value_after(0, 1)
        with pytest.raises(TypeError):
            await treadle.timeout("1", c)
        c.close()
        with pytest.raises(TypeError):
            await treadle.timeout(1, 42)
        return "ok"

    assert run(main()) == "ok"


def test_timeout_nested(run):
    async def main():
        with pytest.raises(TimeoutError):
            await treadle.timeout(5, treadle.timeout(0.02, value_after(10, "x")))
        assert await treadle.timeout(0.5, treadle.timeout(5, value_after(0, "y"))) == "y"
        return "ok"

    assert run(main()) == "ok"


def test_timeout_cancelled_from_outside(run):
    async def waiter():
        return await treadle.timeout(10, forever())

    async def main():
        jh = treadle.spawn(waiter())
        await treadle.sleep(0.02)
        jh.abort()
        with pytest.raises(treadle.CancelledError):
            await jh
        return "ok"

    assert run(main()) == "ok"


def test_many_timeouts(run):
    async def one(i):
        if i % 2:
            return await treadle.timeout(5, value_after(0, i))
        try:
            await treadle.timeout(0.001 * (i % 7), value_after(10, i))
        except TimeoutError:
            return -i

    async def main():
        jhs = [treadle.spawn(one(i)) for i in range(300)]
        return [await jh for jh in jhs]

    assert run(main()) == [i if i % 2 else -i for i in range(300)]


# ---------------------------------------------------------------- yield_now

def test_yield_now_returns_none(run):
    async def main():
        return await treadle.yield_now()

    assert run(main()) is None


def test_yield_now_lets_other_tasks_run(run):
    flag = []

    async def child():
        flag.append(1)

    async def main():
        jh = treadle.spawn(child())
        n = 0
        while not flag and n < 100_000:
            await treadle.yield_now()
            n += 1
        await jh
        return n

    n = run(main())
    assert flag == [1]
    assert n < 100_000


def test_yield_now_interleaves_on_current_thread():
    log = []

    async def worker(name):
        for i in range(3):
            log.append(name)
            await treadle.yield_now()

    async def main():
        a = treadle.spawn(worker("a"))
        b = treadle.spawn(worker("b"))
        await a
        await b

    treadle.run(main(), flavor="current_thread")
    assert sorted(log) == ["a"] * 3 + ["b"] * 3
    assert log != ["a", "a", "a", "b", "b", "b"], log  # a yielded, b ran in between


# ---------------------------------------------------------------- spawn_blocking

def test_spawn_blocking_result(run):
    async def main():
        assert await treadle.spawn_blocking(sum, [1, 2, 3]) == 6
        assert await treadle.spawn_blocking(pow, 2, 10) == 1024
        assert await treadle.spawn_blocking(lambda: None) is None
        return "ok"

    assert run(main()) == "ok"


def test_issue13_spawn_blocking_passes_keyword_arguments(run):
    def echo(*args, **kwargs):
        return args, kwargs

    async def main():
        assert await treadle.spawn_blocking(int, "ff", base=16) == 255
        # fn is positional-only: "fn" and "args" are the function's keywords
        return await treadle.spawn_blocking(echo, 1, fn=2, args=3)

    assert run(main()) == ((1,), {"fn": 2, "args": 3})


def test_issue13_handle_current_in_a_blocking_job(run):
    async def child(x):
        await treadle.yield_now()
        return x + 1

    def job():
        h = treadle.Handle.current()  # as treadle_handle_current() in C
        return h.spawn(child(41)).result(timeout=10)

    async def main():
        return await treadle.spawn_blocking(job)

    assert run(main()) == 42


def test_spawn_blocking_runs_on_another_thread(run):
    async def main():
        here = threading.get_ident()
        there = await treadle.spawn_blocking(threading.get_ident)
        return here, there

    here, there = run(main())
    assert here != there


def test_spawn_blocking_exception(run):
    err = OSError(5, "blocking failure")

    def bad():
        raise err

    async def main():
        with pytest.raises(OSError) as info:
            await treadle.spawn_blocking(bad)
        assert info.value is err
        return "ok"

    assert run(main()) == "ok"


def test_spawn_blocking_does_not_block_the_runtime(run):
    ev = threading.Event()

    async def setter():
        await treadle.sleep(0.02)
        ev.set()

    async def main():
        jh = treadle.spawn(setter())
        got = await treadle.spawn_blocking(ev.wait, 10)
        await jh
        return got

    assert run(main()) is True


def test_spawn_blocking_many_concurrent(run):
    barrier = threading.Barrier(4, timeout=10)

    async def main():
        # four calls that can only finish if they run at the same time
        jhs = [treadle.spawn(treadle_blocking_wait()) for _ in range(4)]
        return [await jh for jh in jhs]

    async def treadle_blocking_wait():
        return await treadle.spawn_blocking(barrier.wait)

    assert sorted(run(main())) == [0, 1, 2, 3]


def test_spawn_blocking_bad_arguments(run):
    async def main():
        with pytest.raises(TypeError):
            await treadle.spawn_blocking(42)
        with pytest.raises(TypeError):
            await treadle.spawn_blocking(len)  # len() needs an argument: raised in the pool
        return "ok"

    assert run(main()) == "ok"


def test_spawn_blocking_with_max_blocking_threads_1(flavor):
    async def main():
        jhs = [treadle.spawn(treadle_sq(i)) for i in range(20)]
        return [await jh for jh in jhs]

    async def treadle_sq(i):
        return await treadle.spawn_blocking(lambda: i * i)

    with treadle.Runtime(flavor=flavor, workers=2, max_blocking_threads=1) as rt:

        assert rt.block_on(guarded(main())) == [i * i for i in range(20)]
        assert rt.metrics().blocking_threads <= 1
