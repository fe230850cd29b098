"""Ctrl-C during treadle.run, and interpreter exit with a live runtime, in child processes."""

import queue
import signal
import subprocess
import sys
import os
import threading
import time

import pytest

from conftest import child_env, run_script, write_script

# ThreadSanitizer holds an asynchronous signal back until the thread that got
# it next calls an intercepted function; a thread parked in treadle's raw
# futex system call never does, so SIGINT would wait forever there.
pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(os.environ.get("TREADLE_SANITIZER") == "tsan",
                       reason="TSan delays signals to threads parked in futex()"),
]

SIGINT_SCRIPT = """
import signal, sys, time
import treadle

# A process started in the background by a non-interactive shell inherits
# SIGINT ignored, and Python then leaves it so; a terminal's Ctrl-C finds
# Python's default handler, which is the case under test.
signal.signal(signal.SIGINT, signal.default_int_handler)

flavor, mode = sys.argv[1], sys.argv[2]

async def main():
    try:
        print("ready", flush=True)
        await treadle.sleep(float("inf"))
        print("woke", flush=True)
    except treadle.CancelledError:
        print("main-cancelled", flush=True)
        if mode == "stubborn":
            print("sleeping-again", flush=True)
            await treadle.sleep(float("inf"))
            print("woke-again", flush=True)
        raise
    finally:
        print("main-finally", flush=True)

try:
    treadle.run(main(), flavor=flavor, workers=2)
except KeyboardInterrupt:
    print(f"KeyboardInterrupt {time.monotonic():.6f}", flush=True)
    raise
print("run-returned", flush=True)
"""


class Child:
    """A child interpreter whose stdout lines arrive on a queue."""

    def __init__(self, script, *args):
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        self.lines = []
        self.q = queue.Queue()
        self.err = []
        self.t_out = threading.Thread(target=self._pump, daemon=True)
        self.t_err = threading.Thread(target=lambda: self.err.append(self.proc.stderr.read()), daemon=True)
        self.t_out.start()
        self.t_err.start()

    def _pump(self):
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def wait_line(self, want, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            self.lines.append(line)
            if line == want:
                return True

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.t_out.join(5)
        self.t_err.join(5)
        while True:
            try:
                line = self.q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.proc.returncode

    def stderr(self):
        return "".join(self.err)

    def kill(self):
        """Ends the child if it still runs, and closes the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.t_out.join(5)
        self.t_err.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _ki_time(lines):
    for line in lines:
        if line.startswith("KeyboardInterrupt "):
            return float(line.split()[1])
    return None


KI_EXIT = (-signal.SIGINT, 128 + signal.SIGINT)


def test_sigint_cancels_main_task(tmp_path, flavor):
    script = write_script(tmp_path, "sigint.py", SIGINT_SCRIPT)
    child = Child(script, flavor, "plain")
    try:
        assert child.wait_line("ready"), (child.lines, child.wait_exit(5), child.stderr())
        time.sleep(0.05)  # let main reach its await
        t0 = time.monotonic()
        child.proc.send_signal(signal.SIGINT)
        rc = child.wait_exit(timeout=5)
        took = time.monotonic() - t0
    finally:
        child.kill()
    lines, err = child.lines, child.stderr()
    ki = _ki_time(lines)
    if ki is not None:
        print(f"[{flavor}] SIGINT -> KeyboardInterrupt in run(): {(ki - t0) * 1000:.1f} ms; "
              f"process exit after {took * 1000:.1f} ms")
    assert rc is not None, "child still running 5 s after SIGINT"
    assert rc in KI_EXIT, (rc, lines, err)
    assert "main-cancelled" in lines, (lines, err)
    assert "main-finally" in lines, (lines, err)
    assert "woke" not in lines and "run-returned" not in lines
    assert ki is not None, (lines, err)
    assert lines.index("main-finally") < lines.index(next(x for x in lines if x.startswith("KeyboardInterrupt")))
    assert "KeyboardInterrupt" in err
    assert "Fatal Python error" not in err


def test_second_sigint_raises_at_once(tmp_path, flavor):
    script = write_script(tmp_path, "sigint.py", SIGINT_SCRIPT)
    child = Child(script, flavor, "stubborn")
    try:
        assert child.wait_line("ready"), (child.lines, child.wait_exit(5), child.stderr())
        time.sleep(0.05)
        child.proc.send_signal(signal.SIGINT)
        assert child.wait_line("sleeping-again", timeout=5), (child.lines, child.wait_exit(5), child.stderr())
        time.sleep(0.05)
        assert child.proc.poll() is None  # the main task ignored the first cancel: still running
        t0 = time.monotonic()
        child.proc.send_signal(signal.SIGINT)
        rc = child.wait_exit(timeout=5)
        took = time.monotonic() - t0
    finally:
        child.kill()
    lines, err = child.lines, child.stderr()
    ki = _ki_time(lines)
    if ki is not None:
        print(f"[{flavor}] second SIGINT -> KeyboardInterrupt: {(ki - t0) * 1000:.1f} ms; "
              f"exit after {took * 1000:.1f} ms")
    assert rc is not None, "child still running 5 s after the second SIGINT"
    assert rc in KI_EXIT, (rc, lines, err)
    assert ki is not None, (lines, err)
    assert "woke-again" not in lines and "run-returned" not in lines
    assert "Fatal Python error" not in err


ATEXIT_SCRIPT = """
import sys, time
import treadle

flavor, variant = sys.argv[1], sys.argv[2]
rt = treadle.Runtime(flavor=flavor, workers=2)

async def bg():
    while True:
        await treadle.sleep(0.01)

async def short():
    await treadle.sleep(0.05)
    return 1

async def acceptor():
    lst = await treadle.TcpListener.bind("127.0.0.1", 0)
    await lst.accept()

async def blocker():
    await treadle.spawn_blocking(time.sleep, 0.3)

if variant == "sleeping":
    jh = rt.spawn(bg())
    rt.block_on(short())
elif variant == "listening":
    jh = rt.spawn(acceptor())
    rt.block_on(short())
elif variant == "blocking":
    jh = rt.spawn(blocker())
    rt.block_on(short())
elif variant == "never_driven":
    jh = rt.spawn(bg())
elif variant == "handle_only":
    h = rt.handle()
    jh = h.spawn(bg())
    rt.block_on(short())
    del rt                       # only the handle and the JoinHandle keep it
elif variant == "exit_code":
    jh = rt.spawn(bg())
    rt.block_on(short())
    print("done", flush=True)
    sys.exit(3)
print("done", flush=True)
"""


@pytest.mark.parametrize("variant", ["sleeping", "listening", "blocking", "never_driven", "handle_only"])
def test_exit_with_live_runtime_is_clean(tmp_path, flavor, variant):
    script = write_script(tmp_path, "atexit_rt.py", ATEXIT_SCRIPT)
    t0 = time.monotonic()
    p = run_script(script, flavor, variant, timeout=20)
    print(f"[{flavor}/{variant}] exit took {(time.monotonic() - t0) * 1000:.0f} ms")
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert p.stdout.strip() == "done"
    assert "Traceback" not in p.stderr, p.stderr
    assert "Fatal Python error" not in p.stderr, p.stderr
    assert "Exception ignored" not in p.stderr, p.stderr


def test_exit_code_kept_with_live_runtime(tmp_path, flavor):
    script = write_script(tmp_path, "atexit_rt.py", ATEXIT_SCRIPT)
    p = run_script(script, flavor, "exit_code", timeout=20)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert p.stdout.strip() == "done"
    assert "Traceback" not in p.stderr, p.stderr
    assert "Fatal Python error" not in p.stderr, p.stderr


RESULT_SCRIPT = """
import os, signal, threading, time
import treadle

signal.signal(signal.SIGINT, signal.default_int_handler)

async def forever():
    await treadle.sleep(float("inf"))

with treadle.Runtime(flavor="multi_thread", workers=2) as rt:
    jh = rt.spawn(forever())
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    try:
        jh.result()
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - t0:.2f} s", flush=True)
    jh.abort()
    try:
        jh.result(timeout=10)
    except treadle.CancelledError:
        print("cancelled", flush=True)
"""


def test_issue13_ctrl_c_reaches_a_main_thread_in_result(tmp_path):
    script = write_script(tmp_path, "result_sigint.py", RESULT_SCRIPT)
    p = run_script(script, timeout=20)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("interrupted after"), p.stdout
    assert lines[1:] == ["cancelled"], p.stdout
