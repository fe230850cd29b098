"""block_on's wake fd (issue 15): RuntimeCore.watch_wake registers the read
end of a pipe (Python's signal wakeup fd, in treadle.run) once for all the
block_on_step calls of one block_on; a byte on it ends a step early so that
the main thread may run Python's signal handlers. No signals here (they
are test_loop_signals.py's), so this runs under TSan too."""

import errno
import os
import threading

import pytest

import treadle
from treadle import _core


@pytest.fixture
def pipe():
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield r, w
    os.close(r)
    os.close(w)


def runtime(flavor):
    return treadle.Runtime(flavor=flavor, workers=1, _with_loop=False)


async def wait_for(event):
    return await treadle.spawn_blocking(event.wait, 30)


def test_a_byte_ends_a_step_and_is_drained(flavor, pipe):
    r, w = pipe
    done = threading.Event()
    with runtime(flavor) as rt, rt._core.watch_wake(r) as wake:
        main = rt._core.spawn(wait_for(done))
        steps = 0
        for _ in range(3):  # one registration serves every step
            os.write(w, b"xyz")
            assert rt._core.block_on_step(main, False, wake) is False
            steps += 1
            with pytest.raises(BlockingIOError):
                os.read(r, 1)  # the step drained the pipe
        done.set()
        while not rt._core.block_on_step(main, False, wake):
            steps += 1
        assert main.result() is True
        assert steps >= 3


def test_watch_wake_takes_bad_input(flavor, pipe):
    r, w = pipe
    blocking_r, blocking_w = os.pipe()
    try:
        with runtime(flavor) as rt, runtime(flavor) as other:
            core = rt._core
            with pytest.raises(TypeError):
                core.watch_wake("3")
            with pytest.raises(OverflowError):
                core.watch_wake(2**40)
            with pytest.raises(ValueError):
                core.watch_wake(-2)
            with pytest.raises(OSError) as e:
                core.watch_wake(blocking_w + 100)  # not open
            assert e.value.errno == errno.EBADF
            with pytest.raises(OSError) as e:
                core.watch_wake(blocking_r)  # a read would block a worker
            assert e.value.errno == errno.EINVAL
            with pytest.raises(TypeError):
                _core.WakeWatch()
            done = threading.Event()
            main = core.spawn(wait_for(done))
            with pytest.raises(TypeError):
                core.block_on_step(main, False, r)  # an fd, not a WakeWatch
            with other._core.watch_wake(r) as foreign:
                with pytest.raises(ValueError):
                    core.block_on_step(main, False, foreign)
            with pytest.raises(ValueError):
                core.block_on_step(main, False, foreign)  # closed
            foreign.close()  # again: nothing happens
            with core.watch_wake(-1) as none:  # watches nothing
                os.write(w, b"x")
                done.set()
                while not core.block_on_step(main, False, none):
                    pass
            assert main.result() is True
            assert os.read(r, 1) == b"x"  # nobody drained it
        with pytest.raises(treadle.ShutdownError):
            core.watch_wake(r)
    finally:
        os.close(blocking_r)
        os.close(blocking_w)


def test_a_watch_in_use_cannot_be_closed_or_shared(pipe):
    # current_thread: the main task runs only inside block_on_step, so its
    # first poll says that the other thread is inside the step.
    r, _ = pipe
    started, done = threading.Event(), threading.Event()
    outcome = []

    async def main():
        started.set()
        return await treadle.spawn_blocking(done.wait, 30)

    with runtime("current_thread") as rt, rt._core.watch_wake(r) as wake:
        join = rt._core.spawn(main())

        def step_until_done():
            while not rt._core.block_on_step(join, False, wake):
                pass
            outcome.append(join.result())

        t = threading.Thread(target=step_until_done)
        t.start()
        try:
            assert started.wait(30)
            with pytest.raises(RuntimeError):
                wake.close()
            other = rt._core.spawn(wait_for(done))
            with pytest.raises(RuntimeError):
                rt._core.block_on_step(other, False, wake)
        finally:
            done.set()
            t.join(30)
        assert outcome == [True]
        while not rt._core.block_on_step(other, False, wake):  # free again
            pass
        assert other.result() is True
