"""treadle.EventLoop and treadle's tasks when one of the interpreter's
allocations fails (issue 17): each failure gives MemoryError or is
absorbed, nothing hangs, and the thread's running loop is put back.

Each test fails the k-th allocation of a small window (``_testcapi.
set_nomemory(k, k + 1)``, armed at the window's start), for k = 0, 1, ...
until several runs in a row meet no failure: every point of the window
fails once, whatever the interpreter's exact count. The failures they
guard against (the sweep of test_alloc_sweep.py found them):

* a Task step that fails after its coroutine yielded a future, before it
  added its wakeup to it (CPython's task_step_impl): the task waited on
  nothing, for ever;
* the loop's call_soon failing inside a Future's set_result: CPython's
  Future then drops its callbacks, and the task awaiting it never woke;
* asyncio's run_until_complete callback failing (its fut.get_loop): the
  loop never stopped;
* run_forever's cleanup or a step's failing to put the running loop back
  (asyncio's _set_running_loop allocates): the thread kept a running loop
  and the next run_until_complete raised "another loop is running".

current_thread only, in this process: a failure in a new thread's thread
state is a fatal error in CPython, whatever the extension does.
"""

import asyncio
import warnings

import pytest

import treadle

_testcapi = pytest.importorskip("_testcapi")

LIMIT_S = 5.0  # a run that waits longer hangs: the watchdog stops it
QUIET_RUNS = 40


def each_failure(attempt, most=600):
    """attempt(k) for k = 0, 1, ... until QUIET_RUNS in a row return "ok"
    (the window ended), at most `most`: every outcome, as [(k, outcome)]."""
    outcomes, quiet = [], 0
    for k in range(most):
        if quiet >= QUIET_RUNS:
            break
        with warnings.catch_warnings():
            # a coroutine that a failure left unawaited
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                outcome = attempt(k)
            except MemoryError:
                outcome = "MemoryError"
            finally:
                _testcapi.remove_mem_hooks()
        outcomes.append((k, outcome))
        quiet = quiet + 1 if outcome == "ok" else 0
    return outcomes


def check(outcomes, memory_errors):
    """Each outcome was MemoryError or the right result, the window ended,
    and it met more than `memory_errors` failures."""
    odd = [(k, o) for k, o in outcomes if o not in ("ok", "MemoryError")]
    assert odd[:5] == [], f"{len(odd)} runs ended otherwise"
    assert [o for _, o in outcomes[-QUIET_RUNS:]] == ["ok"] * QUIET_RUNS
    assert sum(o == "MemoryError" for _, o in outcomes) > memory_errors


def run_guarded(loop, coro, arm=None):
    """loop.run_until_complete(coro), stopped by a timer of the loop after
    LIMIT_S: a run that would hang raises RuntimeError instead. arm(), if
    given, runs once the timer is set."""
    watchdog = loop.call_later(LIMIT_S, loop.stop)
    try:
        if arm is not None:
            arm()
        return loop.run_until_complete(coro)
    finally:
        watchdog.cancel()


def test_a_task_wakes_after_any_failed_allocation_in_its_steps():
    def attempt(k):
        loop = treadle.new_event_loop(flavor="current_thread")
        try:
            fut = loop.create_future()

            async def main():
                await asyncio.sleep(0)  # a step the task schedules itself
                return await fut + 1    # the task waits on fut: its wakeup

            loop.call_soon(_testcapi.set_nomemory, k, k + 1)  # before the first step
            task = loop.create_task(main())
            # set_result comes in the iteration after the one that awaits fut
            loop.call_soon(loop.call_soon, fut.set_result, 7)
            try:
                got = run_guarded(loop, task)
            except RuntimeError as e:
                return f"RuntimeError: {e}"
            finally:
                _testcapi.remove_mem_hooks()
            return "ok" if got == 8 else f"got {got!r}"
        finally:
            loop.close()

    check(each_failure(attempt), 0)


def test_run_until_complete_puts_the_running_loop_back_after_any_failed_allocation():
    async def one():
        return 1

    def attempt(k):
        loop = treadle.new_event_loop(flavor="current_thread")
        try:
            coro = one()
            try:
                got = run_guarded(loop, coro, lambda: _testcapi.set_nomemory(k, k + 1))
            except RuntimeError as e:
                return f"RuntimeError: {e}"
            finally:
                _testcapi.remove_mem_hooks()
                coro.close()
            return "ok" if got == 1 else f"got {got!r}"
        finally:
            loop.close()
            # the next loop runs: no "another loop is running"
            other = treadle.new_event_loop(flavor="current_thread")
            try:
                assert other.run_until_complete(one()) == 1
            finally:
                other.close()
            assert asyncio._get_running_loop() is None

    check(each_failure(attempt), 5)


def test_treadle_steps_put_the_running_loop_back_after_any_failed_allocation():
    async def main(k):
        # each step makes the runtime's loop the running one, and puts back
        # the one before (none here) when it ends
        _testcapi.set_nomemory(k, k + 1)
        await treadle.sleep(0)
        await treadle.sleep(0)
        return asyncio.get_running_loop() is not None

    def attempt(k):
        try:
            got = treadle.run(treadle.timeout(LIMIT_S, main(k)), flavor="current_thread")
        finally:
            _testcapi.remove_mem_hooks()
        running = asyncio._get_running_loop()
        if running is not None:
            return f"{running!r} is still this thread's running loop"
        return "ok" if got is True else f"got {got!r}"

    check(each_failure(attempt), 0)
