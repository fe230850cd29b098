"""The REPLs driven as a person would, through a pseudo-terminal (pexpect):
``python3 -m treadle`` and a plain ``python3`` REPL with a Runtime."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import child_env

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.subprocess

PROMPT = ">>> "
# Sanitized interpreters start and run far slower than the plain one.
TIMEOUT = 120 if os.environ.get("TREADLE_SANITIZER") else 30
tsan = pytest.mark.skipif(
    os.environ.get("TREADLE_SANITIZER") == "tsan",
    reason="TSan holds a signal back while the main thread is parked in futex")

TICKER = [
    "n = [0]",
    "async def tick():",
    "    while True:",
    "        n[0] += 1",
    "        await treadle.sleep(0.005)",
    "",
]


class Repl:
    """One REPL process on a pseudo-terminal."""

    def __init__(self, *args, preexec_fn=None):
        env = child_env()
        env["TERM"] = "dumb"  # no escape sequences from readline
        env.pop("PYTHONSTARTUP", None)
        self.child = pexpect.spawn(sys.executable, list(args), env=env,
                                   encoding="utf-8", timeout=TIMEOUT,
                                   dimensions=(40, 200), preexec_fn=preexec_fn)
        self.child.expect_exact(PROMPT)

    def line(self, text):
        """Types one line and returns what it printed before the next prompt
        (the line's own echo left out); a continuation line (a block)
        returns ''."""
        self.child.sendline(text)
        i = self.child.expect_exact([PROMPT, "... "])
        out = self.child.before
        return out.split("\r\n", 1)[1] if i == 0 and "\r\n" in out else ""

    def lines(self, texts):
        for t in texts:
            self.line(t)

    def counter(self):
        out = self.line('print(f"n={n[0]}")')
        m = re.search(r"n=(\d+)", out)
        assert m, out
        return int(m.group(1))

    def interrupt(self):
        self.child.sendintr()
        self.child.expect_exact(PROMPT)
        return self.child.before

    def eof(self):
        """Ctrl-D; returns (exit status, what it printed on the way out)."""
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        out = self.child.before
        self.child.close()
        return self.child.exitstatus, out

    def close(self):
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def repl():
    r = Repl("-m", "treadle")
    yield r
    r.close()


def progresses(repl):
    """True when the ticker task advanced while the REPL waited at its
    prompt, with no line running."""
    first = repl.counter()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.2)  # the REPL sits at its prompt meanwhile
        if repl.counter() > first:
            return True
    return False


def test_banner_and_top_level_await(repl):
    assert repl.line("await treadle.sleep(0.01) or 42") == "42\r\n"
    assert repl.line("x = await treadle.spawn(treadle.sleep(0.01))") == ""
    assert repl.line("print(x, treadle.current_worker() in range(64))") == "None True\r\n"


def test_spawned_task_runs_between_prompts(repl):
    repl.lines(TICKER)
    repl.line("t = treadle.spawn(tick())")
    assert progresses(repl)
    assert repl.line("t.done()") == "False\r\n"


def test_spawned_server_serves_between_prompts(repl):
    repl.lines([
        "async def serve(listener):",
        "    while True:",
        "        conn, _ = await listener.accept()",
        "        data = await conn.read(100)",
        "        await conn.write(data.upper())",
        "        conn.close()",
        "",
        "listener = await treadle.TcpListener.bind('127.0.0.1', 0)",
        "server = treadle.spawn(serve(listener))",
    ])
    port = int(repl.line("print(listener.local_addr[1])"))
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(b"hello")  # answered while the REPL waits for a line
        assert s.recv(100) == b"HELLO"


def test_error_prints_and_returns_to_prompt(repl):
    out = repl.line("1 / 0")
    assert "ZeroDivisionError: division by zero" in out
    assert 'File "<console>", line 1' in out
    assert "treadle" not in out  # the runtime's own frames are left out
    out = repl.line("await treadle.sleep(float('nan'))")
    assert "ValueError" in out
    assert repl.line("print('still here')") == "still here\r\n"


def test_ctrl_c_at_the_prompt_clears_the_line(repl):
    repl.child.send("1 + ")
    time.sleep(0.2)
    assert "KeyboardInterrupt" in repl.interrupt()
    assert repl.line("2 + 2") == "4\r\n"


def test_ctrl_c_works_when_started_with_sigint_ignored():
    # as a script's `cmd &` starts it: the console takes Ctrl-C back
    r = Repl("-m", "treadle",
             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        r.child.send("1 + ")
        time.sleep(0.2)
        assert "KeyboardInterrupt" in r.interrupt()
        assert r.line("2 + 2") == "4\r\n"
    finally:
        r.close()


@tsan
def test_ctrl_c_cancels_the_running_await(repl):
    repl.lines(TICKER + ["t = treadle.spawn(tick())", "log = []"] + [
        "async def wait_long():",
        "    try:",
        "        await treadle.sleep(1000)",
        "    finally:",
        "        log.append('cancelled')",
        "",
    ])
    repl.child.sendline("print('waiting'); await wait_long()")
    repl.child.expect_exact("waiting\r\n")
    assert "KeyboardInterrupt" in repl.interrupt()
    assert repl.line("log") == "['cancelled']\r\n"
    assert progresses(repl)  # the task the line did not own goes on


def test_ctrl_d_shuts_down(repl):
    repl.lines(TICKER + ["t = treadle.spawn(tick())", "rt = runtime"])
    status, out = repl.eof()
    assert status == 0
    assert "Traceback" not in out


def test_plain_repl_runtime_runs_in_background():
    r = Repl("-q", "-i")
    try:
        r.line("import treadle")
        r.lines(TICKER)
        r.line("rt = treadle.Runtime()")
        r.line("t = rt.spawn(tick())")
        assert progresses(r)
        status, out = r.eof()
        assert status == 0
        assert "Traceback" not in out
    finally:
        r.close()


def test_bad_option_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "treadle", "--workers", "0"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=child_env(), timeout=TIMEOUT)
    assert r.returncode == 2
    assert "workers must be in 1..1024" in r.stderr
    assert "Traceback" not in r.stderr


def test_lines_from_a_pipe():
    r = subprocess.run([sys.executable, "-m", "treadle"],
                       input="print('piped')\nawait treadle.sleep(0.01) or 5\n",
                       capture_output=True, text=True, env=child_env(), timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    lines = [line.removeprefix(">>> ") for line in r.stdout.splitlines()]
    assert lines[:2] == ["piped", "5"], r.stdout
