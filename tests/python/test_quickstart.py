"""The README's Python quick start (examples/quickstart/quickstart.py), run
as a newcomer runs it: plain, it prints the spawned task's result; with
--echo 0 it serves echo on 127.0.0.1 until SIGINT, then says "bye". And the
README quotes the three quick starts as they are."""
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, child_env, run_script

QUICKSTART = ROOT / "examples" / "quickstart" / "quickstart.py"
RESULT = "the spawned task slept 10 ms and returned 42"

pytestmark = pytest.mark.subprocess


def test_readme_quotes_the_quick_starts():
    readme = (ROOT / "README.md").read_text()
    for name in ("quickstart.c", "quickstart.py", "quickstart.lua"):
        source = (QUICKSTART.parent / name).read_text()
        assert f"\n{source}```\n" in readme, f"README.md does not quote examples/quickstart/{name} as it is"


def test_quickstart_sleep_and_spawn():
    done = run_script(QUICKSTART)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [RESULT]


def read_until(proc, pattern, seconds):
    """Reads the child's stdout until `pattern` matches; fails after `seconds`."""
    out = b""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (match := pattern.search(out)) is None:
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"no {pattern.pattern!r} in {out!r}"
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"the quick start ended early: {out!r}"
            out += chunk
    return match, out


# ThreadSanitizer holds a signal back until the thread that got it calls an
# intercepted function (test_sigint.py).
@pytest.mark.skipif(os.environ.get("TREADLE_SANITIZER") == "tsan",
                    reason="TSan delays signals to parked threads")
def test_quickstart_echo_server_until_ctrl_c():
    proc = subprocess.Popen([sys.executable, str(QUICKSTART), "--echo", "0"], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        match, out = read_until(proc, re.compile(rb"echo server on 127\.0\.0\.1:(\d+), Ctrl-C stops it\n"), 30)
        message = b"hello, treadle\n" * 100
        with socket.create_connection(("127.0.0.1", int(match[1])), timeout=10) as conn:
            conn.sendall(message)
            echoed = b""
            while len(echoed) < len(message) and (chunk := conn.recv(65536)):
                echoed += chunk
        assert echoed == message
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert (out + rest).decode().splitlines() == [
            RESULT, f"echo server on 127.0.0.1:{match[1].decode()}, Ctrl-C stops it", "bye"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
