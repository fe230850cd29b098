"""Scenarios and sweeps for test_alloc_sweep.py (issue 17: every allocation
can fail; TESTING.md "Allocation sweep").

Each scenario builds what it uses and frees it (a runtime, a loop, sockets)
and raises on a wrong result. Two sweeps run them:

* ``treadle_sweep``: treadle's own allocations (core/src/alloc.c, driven
  through the internal hook ``_core._test_fail_alloc``). A clean run counts
  the allocation points; then, for each k, the k-th allocation fails.
* ``python_sweep``: the interpreter's allocations (``_testcapi.set_nomemory``,
  from Debian's libpython3.11-testsuite), the k-th one after the scenario
  starts failing, until several runs in a row no longer meet the failure.

A run must end normally (the failure was absorbed) or with MemoryError.
Run as a script (``alloc_scenarios.py python FLAVOR [NAME...]``) it does
the Python sweep of the scenarios named (all by default) in this process,
runs each once more, and prints one JSON line: the
Python sweep runs in a child interpreter, because a failure CPython cannot
report (a thread state for a new thread, PyGILState_Ensure) ends the
process with a fatal error by design.
"""

import asyncio
import contextvars
import gc
import json
import os
import sys
import time
import warnings

import treadle
from treadle import _core

HOST = "127.0.0.1"
LIMIT_S = 10.0   # a scenario that waits longer hangs
TRACE = bool(os.environ.get("TREADLE_SWEEP_TRACE"))  # each k to stderr


def nfds():
    return len(os.listdir("/proc/self/fd"))


async def _guarded(body):
    return await treadle.timeout(LIMIT_S, body)


def _run(flavor, body):
    return treadle.run(_guarded(body), flavor=flavor, workers=1)


# ------------------------------------------------------------ scenarios

def runtime(flavor):
    rt = treadle.Runtime(flavor=flavor, workers=1)
    rt.shutdown()


async def _double(x):
    return 2 * x


def spawn_join(flavor):
    async def main():
        h = treadle.spawn(_double(21))
        return await h

    if _run(flavor, main()) != 42:
        raise AssertionError("the child's result was lost")


def sleep(flavor):
    async def main():
        await treadle.sleep(0.001)
        return "slept"

    if _run(flavor, main()) != "slept":
        raise AssertionError("sleep's task lost its result")


def tcp(flavor):
    async def main():
        lst = await treadle.TcpListener.bind(HOST, 0)
        c = s = None
        try:
            c = await treadle.TcpStream.connect(HOST, lst.local_addr[1])
            s, _ = await lst.accept()
            await c.write(b"ping")
            got = b""
            while len(got) < 4:
                d = await s.read(4 - len(got))
                if not d:
                    break
                got += d
            await s.write(got)
            back = b""
            while len(back) < 4:
                d = await c.read(4 - len(back))
                if not d:
                    break
                back += d
            return back
        finally:
            for x in (c, s, lst):
                if x is not None:
                    x.close()

    if _run(flavor, main()) != b"ping":
        raise AssertionError("bytes were lost")


def event_loop(flavor):
    loop = treadle.new_event_loop(flavor=flavor, workers=1)
    try:
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 7)

        async def main():
            return await fut + 1

        task = loop.create_task(main())
        if loop.run_until_complete(asyncio.wait_for(task, LIMIT_S)) != 8:
            raise AssertionError("call_soon's value was lost")
    finally:
        loop.close()


SCENARIOS = {"runtime": runtime, "spawn_join": spawn_join, "sleep": sleep,
             "tcp": tcp, "event_loop": event_loop}


# --------------------------------------------------------------- sweeps

def _attempt(scenario, flavor):
    """Runs one scenario: "ok", "MemoryError", or the other exception's
    text. Never-awaited coroutines and ops (a failure before the await)
    warn; that is expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            scenario(flavor)
            return "ok"
        except MemoryError:
            return "MemoryError"
        except BaseException as e:  # noqa: B902 - reported, not swallowed
            return f"{type(e).__name__}: {e}"
        finally:
            gc.collect()


def _wait_live_zero():
    """The core's blocks not yet freed, after waiting (bounded) for threads
    that are still letting go (a worker's last free after shutdown)."""
    for _ in range(2000):
        live = _core._test_alloc_count_live()
        if live == 0:
            return 0
        gc.collect()
        time.sleep(0.001)
    return _core._test_alloc_count_live()


def treadle_sweep(name, flavor):
    """Every allocation point of the scenario fails once in turn. Returns
    {"points", "MemoryError", "absorbed", "bad": [(k, outcome, live)]}."""
    scenario = SCENARIOS[name]
    # Garbage of earlier tests (a transport in a cycle) is freed now, not
    # inside the count, where its frees would make the live count negative.
    gc.collect()
    _core._test_alloc_count_start()
    first = _attempt(scenario, flavor)
    _wait_live_zero()
    points, live = _core._test_alloc_count_stop()
    if first != "ok" or live != 0:
        raise AssertionError(f"{name}: a clean run gave {first}, {live} blocks left")
    result = {"points": points, "MemoryError": 0, "absorbed": 0, "bad": []}
    for k in range(points):
        _core._test_alloc_count_start()
        _core._test_fail_alloc(k)
        outcome = _attempt(scenario, flavor)
        fired = _core._test_fail_alloc(-1) < 0
        _wait_live_zero()
        _, live = _core._test_alloc_count_stop()
        if outcome == "MemoryError":
            result["MemoryError"] += 1
        elif outcome == "ok" and fired:
            result["absorbed"] += 1
        if outcome not in ("ok", "MemoryError") or live != 0:
            result["bad"].append((k, outcome, live))
    return result


def _where(e):
    """file:line of the innermost Python frame an exception passed."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def python_sweep(name, flavor, most=4000, quiet_runs=8):
    """The k-th Python allocation after the scenario starts fails, for k =
    0, 1, ... until `quiet_runs` runs in a row succeed (the failure came
    after the scenario's last allocation, or was absorbed), or give the
    same other error (the interpreter is stuck), at most `most`.
    Returns {"runs", "MemoryError", "ok", "bad": [(k, outcome)]}."""
    import _testcapi
    scenario = SCENARIOS[name]
    result = {"runs": 0, "MemoryError": 0, "ok": 0, "bad": []}
    quiet = same = 0
    last = None
    for k in range(most):
        if quiet >= quiet_runs or same >= quiet_runs:
            break  # done, or stuck: the same error every time
        gc.collect()
        if TRACE:
            print(f"python_sweep {name} k={k}", file=sys.stderr, flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            _testcapi.set_nomemory(k, k + 1)
            try:
                scenario(flavor)
                outcome = "ok"
            except MemoryError:
                outcome = "MemoryError"
            except BaseException as e:  # noqa: B902 - reported, not swallowed
                _testcapi.remove_mem_hooks()
                outcome = f"{type(e).__name__}: {e} (at {_where(e)})"
            finally:
                _testcapi.remove_mem_hooks()
        result["runs"] += 1
        same = same + 1 if outcome == last and outcome not in ("ok", "MemoryError") else 0
        last = outcome
        if outcome == "ok":
            result["ok"] += 1
            quiet += 1
        else:
            quiet = 0
            if outcome == "MemoryError":
                result["MemoryError"] += 1
            else:
                result["bad"].append((k, outcome))
    return result


if __name__ == "__main__":
    flavor = sys.argv[2]
    # This thread's first context, made now: CPython 3.11 crashes when the
    # allocation of that one fails (context_new_empty drops a context that
    # is not yet tracked by the collector), whoever asks for it.
    contextvars.copy_context()
    names = sys.argv[3:] or list(SCENARIOS)
    for name in names:  # imports, caches and free lists warm up first
        SCENARIOS[name](flavor)
    gc.collect()
    fds = nfds()
    report = {"sweeps": {name: python_sweep(name, flavor) for name in names}}
    # a second pass: what the first made once (caches, loggers, warning
    # registries) is there already, so what it adds is leaked
    gc.collect()
    before = len(gc.get_objects())
    for name in names:
        python_sweep(name, flavor)
    # the interpreter goes on: each scenario still runs
    for name in names:
        SCENARIOS[name](flavor)
    gc.collect()
    report["objects_before_after"] = [before, len(gc.get_objects())]
    report["fds_before_after"] = [fds, nfds()]
    print(json.dumps(report))
