"""Python's own signal handlers (signal.signal) while treadle's loop waits
in run_forever or treadle.run waits in block_on, and add_signal_handler
from a multi_thread worker. The thread waits in the runtime, not in Python:
Python's signal wakeup fd wakes it (_loop.signal_wakeup, the wake fd of
bindings/common/root.c) and it runs the handlers. Each handler test runs in
a child interpreter, so that no handler outlives it."""

import os
import signal
import subprocess
import sys

import pytest

import treadle
from conftest import child_env, write_script

# As tests/python/test_signals.py: under TSan a signal to a process whose
# threads are parked in futex() is held until some thread wakes.
pytestmark = pytest.mark.skipif(os.environ.get("TREADLE_SANITIZER") == "tsan",
                                reason="TSan delays signals to threads parked in futex()")

# run_forever with a Python SIGTERM handler that stops the loop. "parent":
# the test sends SIGTERM once the loop runs; "worker": a loop callback sends
# it to its own thread (a worker on multi_thread), so the main thread only
# learns of it through the wake.
HANDLER_SCRIPT = """
import signal, sys, threading
import treadle

flavor, sender = sys.argv[1], sys.argv[2]
loop = treadle.new_event_loop(flavor=flavor, workers=2 if flavor == "multi_thread" else None)
ran = []

def on_term(signum, frame):
    ran.append((signum, threading.current_thread() is threading.main_thread()))
    loop.stop()

signal.signal(signal.SIGTERM, on_term)
if sender == "parent":
    loop.call_soon(lambda: print("running", flush=True))
else:
    loop.call_soon(signal.pthread_kill, threading.get_ident(), signal.SIGTERM)
loop.run_forever()
loop.close()
print("handler ran", ran, flush=True)
"""


def run_child(script, *args, send_term=False):
    p = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        if send_term:
            assert p.stdout.readline() == "running\n"
            p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out, err


@pytest.mark.parametrize("sender", ["parent", "worker"])
def test_python_handler_runs_during_run_forever(tmp_path, flavor, sender):
    script = write_script(tmp_path, "term.py", HANDLER_SCRIPT)
    rc, out, err = run_child(script, flavor, sender, send_term=sender == "parent")
    assert rc == 0, err
    # It ran once, on the main thread, and its stop() ended run_forever.
    assert out.splitlines()[-1] == f"handler ran [({int(signal.SIGTERM)}, True)]"


# treadle.run's main task waits for something only the SIGTERM handler
# gives (a blocking-pool job waits for a threading.Event), so the main
# thread, in block_on, must wake to run the handler; or the handler raises.
BLOCK_ON_SCRIPT = """
import signal, sys, threading
import treadle

flavor, action = sys.argv[1], sys.argv[2]
done, ran = threading.Event(), []

def on_term(signum, frame):
    ran.append(threading.current_thread() is threading.main_thread())
    done.set()  # (the runtime's shutdown waits for the blocking job)
    if action == "raise":
        raise SystemExit(7)

async def main():
    print("running", flush=True)
    return await treadle.spawn_blocking(done.wait, 60)

signal.signal(signal.SIGTERM, on_term)
try:
    print("waited:", treadle.run(main(), flavor=flavor, workers=2), flush=True)
finally:
    print("handler ran", ran, flush=True)
"""


@pytest.mark.parametrize("action", ["return", "raise"])
def test_python_handler_runs_during_treadle_run(tmp_path, flavor, action):
    script = write_script(tmp_path, "block_on.py", BLOCK_ON_SCRIPT)
    rc, out, err = run_child(script, flavor, action, send_term=True)
    if action == "return":
        assert rc == 0, err
        assert out.splitlines()[-2:] == ["waited: True", "handler ran [True]"]
    else:  # the handler's SystemExit ends treadle.run, the runtime shut down
        assert rc == 7, err
        assert out.splitlines()[-1] == "handler ran [True]"
        assert "Traceback" not in err, err


RAISING_SCRIPT = """
import signal, sys
import treadle

def on_term(signum, frame):
    raise SystemExit(7)

signal.signal(signal.SIGTERM, on_term)
loop = treadle.new_event_loop(flavor=sys.argv[1], workers=2)
loop.call_soon(lambda: print("running", flush=True))
try:
    loop.run_forever()
finally:
    print("running after:", loop.is_running(), flush=True)
    loop.close()
"""


def test_python_handler_exception_leaves_run_forever(tmp_path, flavor):
    script = write_script(tmp_path, "raise.py", RAISING_SCRIPT)
    rc, out, err = run_child(script, flavor, send_term=True)
    assert rc == 7, err
    assert out.splitlines()[-1] == "running after: False"


WORKER_ADD_SCRIPT = """
import asyncio, os, signal, sys, threading
import treadle

async def main():
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    where = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: (where.append(
        threading.current_thread() is threading.main_thread()), got.set()))
    # Python's handler is set on the main thread at its next wake: a
    # delivery before it is treadle's alone, after it both run.
    for _ in range(200):
        os.kill(os.getpid(), signal.SIGUSR1)
        try:
            await asyncio.wait_for(got.wait(), 0.05)
            break
        except asyncio.TimeoutError:
            pass
    while signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL:
        await asyncio.sleep(0.01)
    print("python handler:", signal.getsignal(signal.SIGUSR1).__name__, flush=True)
    got.clear()
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.wait_for(got.wait(), 10)
    assert loop.remove_signal_handler(signal.SIGUSR1)
    return len(where)

if sys.argv[1] == "asyncio.Runner":
    with asyncio.Runner(loop_factory=lambda: treadle.new_event_loop(
            flavor="multi_thread", workers=2)) as runner:
        seen = runner.run(main())
else:
    seen = treadle.run(main(), flavor="multi_thread", workers=2)
print("deliveries seen:", seen >= 2, flush=True)
print("after run:", signal.getsignal(signal.SIGUSR1), flush=True)
"""


@pytest.mark.parametrize("runner", ["asyncio.Runner", "treadle.run"])
def test_add_signal_handler_on_a_worker(tmp_path, runner):
    # main() runs on a multi_thread worker, as aiohttp's web.run_app's
    # add_signal_handler calls do; Python's part is done on the main thread,
    # which waits in run_forever (asyncio.Runner) or block_on (treadle.run).
    script = write_script(tmp_path, "worker_add.py", WORKER_ADD_SCRIPT)
    rc, out, err = run_child(script, runner)
    assert rc == 0, err
    assert out.splitlines() == ["python handler: _sighandler_noop",
                                "deliveries seen: True",
                                f"after run: {signal.SIG_DFL!s}"]


def test_add_signal_handler_off_main_without_a_running_loop():
    loop = treadle.new_event_loop(flavor="multi_thread", workers=2)
    errors = []

    async def add():
        try:
            loop.add_signal_handler(signal.SIGUSR2, print)
        except RuntimeError as exc:
            errors.append(str(exc))

    try:
        # run_until_complete on another thread: no main thread to ask.
        import threading
        t = threading.Thread(target=loop.run_until_complete, args=(add(),))
        t.start()
        t.join(30)
        assert not t.is_alive()
    finally:
        loop.close()
    assert errors == ["add_signal_handler works only on the main thread, "
                      "or in a loop that runs there"]
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
