"""treadle.signal and treadle.ctrl_c, each in a child interpreter so that the
handlers installed do not outlive the test in the pytest process."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import child_env, run_script, write_script

# ThreadSanitizer holds an asynchronous signal back until the thread that got
# it next calls an intercepted function; a thread parked in treadle's raw futex
# system call never does (same reason as in test_sigint.py).
pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(os.environ.get("TREADLE_SANITIZER") == "tsan",
                       reason="TSan delays signals to threads parked in futex()"),
]

SIGNAL_SCRIPT = """
import os, signal, sys
import treadle

flavor, signame, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
signum = getattr(signal, signame)

async def waiter(n):
    for i in range(n):
        await treadle.signal(signum)
        print(f"got {signame} {i}", flush=True)
    return "done"

async def main():
    got = []
    jh = treadle.spawn(waiter(count))
    # keep sending until the waiter has seen `count` signals; a signal that
    # arrives before the first await registers is either queued or resent
    for _ in range(400):
        if jh.done():
            break
        await treadle.sleep(0.025)
        os.kill(os.getpid(), signum)
    return await treadle.timeout(5, jh)

print(treadle.run(main(), flavor=flavor, workers=2), flush=True)
"""


@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGUSR2"])
def test_signal_wakes_waiter(tmp_path, flavor, signame):
    script = write_script(tmp_path, "sig.py", SIGNAL_SCRIPT)
    p = run_script(script, flavor, signame, 1)
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert f"got {signame} 0" in p.stdout
    assert p.stdout.strip().endswith("done")


def test_signal_repeated(tmp_path, flavor):
    script = write_script(tmp_path, "sig.py", SIGNAL_SCRIPT)
    p = run_script(script, flavor, "SIGUSR1", 3)
    assert p.returncode == 0, (p.returncode, p.stderr)
    for i in range(3):
        assert f"got SIGUSR1 {i}" in p.stdout
    assert p.stdout.strip().endswith("done")


SIGNAL_FIRST_SCRIPT = """
import os, signal, sys
import treadle

flavor = sys.argv[1]

async def main():
    # register first (create the awaitable and start waiting), then signal
    async def waiter():
        await treadle.signal(signal.SIGUSR1)
        return "woken"
    jh = treadle.spawn(waiter())
    await treadle.sleep(0.2)
    os.kill(os.getpid(), signal.SIGUSR1)
    return await treadle.timeout(5, jh)

print(treadle.run(main(), flavor=flavor, workers=2), flush=True)
"""


def test_signal_single_kill(tmp_path, flavor):
    script = write_script(tmp_path, "sig1.py", SIGNAL_FIRST_SCRIPT)
    p = run_script(script, flavor)
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert p.stdout.strip() == "woken"


BAD_SIGNAL_SCRIPT = """
import signal, sys
import treadle

flavor = sys.argv[1]

async def main():
    out = []
    for signum in (signal.SIGKILL, signal.SIGSTOP, 0, 100000, -1):
        try:
            await treadle.timeout(1, treadle.signal(signum))
            out.append(f"{signum}:returned")
        except (ValueError, OSError, treadle.Error) as e:
            out.append(f"{signum}:{type(e).__name__}")
        except TimeoutError:
            out.append(f"{signum}:timeout")
    try:
        await treadle.signal("SIGUSR1")
    except TypeError:
        out.append("str:TypeError")
    return " ".join(out)

print(treadle.run(main(), flavor=flavor, workers=2), flush=True)
"""


def test_bad_signal_numbers(tmp_path, flavor):
    script = write_script(tmp_path, "badsig.py", BAD_SIGNAL_SCRIPT)
    p = run_script(script, flavor)
    assert p.returncode == 0, (p.returncode, p.stderr)
    out = p.stdout.split()
    assert len(out) == 6, p.stdout
    # each forbidden or nonsense signal number is a clear exception
    assert all(not x.endswith((":returned", ":timeout")) for x in out), out
    assert out[-1] == "str:TypeError"


CTRL_C_SCRIPT = """
import signal, sys
import treadle

flavor, mode = sys.argv[1], sys.argv[2]
if mode == "ignored":
    # Python's own SIGINT handler out of the way: ctrl_c() is the only listener
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    # as under a terminal, even when started from a background job (which
    # inherits SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)

async def main():
    async def waiter():
        await treadle.ctrl_c()
        print("woken", flush=True)
        return "ctrl_c"
    jh = treadle.spawn(waiter())
    await treadle.sleep(0.1)
    print("ready", flush=True)
    return await treadle.timeout(20, jh)

print(treadle.run(main(), flavor=flavor, workers=2), flush=True)
"""


def _ctrl_c(tmp_path, flavor, mode):
    script = write_script(tmp_path, "ctrlc.py", CTRL_C_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), flavor, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        line = proc.stdout.readline()  # the child prints "ready" within its own 20 s bound
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
        # resend in case the first one raced the registration
        for _ in range(40):
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out.split(), err


def test_ctrl_c(tmp_path, flavor):
    rc, out, err = _ctrl_c(tmp_path, flavor, "ignored")
    assert rc == 0, (rc, err)
    assert out == ["woken", "ctrl_c"], (out, err)


def test_ctrl_c_wakes_with_python_handler_in_place(tmp_path, flavor):
    rc, out, err = _ctrl_c(tmp_path, flavor, "default")
    assert out[:1] == ["woken"], (out, err)


def test_ctrl_c_takes_sigint_over(tmp_path, flavor):
    # the natural use: Python's handler in place, ctrl_c() awaited inside
    # treadle.run; listening for Ctrl-C takes SIGINT over (asyncio's
    # add_signal_handler does the same), so run() returns normally
    rc, out, err = _ctrl_c(tmp_path, flavor, "default")
    assert rc == 0, (rc, err)
    assert out == ["woken", "ctrl_c"], (out, err)
    assert "KeyboardInterrupt" not in err
