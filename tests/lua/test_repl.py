"""The Lua console (treadle.repl, started by the treadle-lua launcher) driven
as a person would, through a pseudo-terminal (pexpect); and with stdin a
pipe, a regular file and /dev/null. Run by ctest (lua.repl), which sets
TREADLE_LUA to the launcher in the build tree."""

import os
import re
import socket
import subprocess
import time

import pytest

pexpect = pytest.importorskip("pexpect")

LAUNCHER = os.environ.get("TREADLE_LUA", "build/bindings/lua/treadle-lua")
LUA_CPATH = os.path.dirname(os.path.abspath(LAUNCHER)) + "/?.so;;"
TIMEOUT = 30
PROMPT = "\r\n> "  # the console's prompt, at the start of a line
MORE = "\r\n>> "


class Console:
    def __init__(self):
        env = dict(os.environ, TERM="dumb")
        self.child = pexpect.spawn(LAUNCHER, env=env, encoding="utf-8",
                                   timeout=TIMEOUT, dimensions=(40, 200))
        self.child.expect_exact("Ctrl-D exits.")
        self.child.expect_exact("\r\n> ")

    def line(self, text, more=False):
        """Types a line; returns what it printed before the next prompt
        (its echo left out)."""
        self.child.sendline(text)
        self.child.expect_exact(text)  # the terminal's echo
        self.child.expect_exact(MORE if more else PROMPT)
        return self.child.before.replace("\r\n", "\n").strip("\n")

    def counter(self):
        out = self.line("print('n=' .. n)")
        m = re.search(r"n=(\d+)", out)
        assert m, out
        return int(m.group(1))

    def eof(self):
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus

    def close(self):
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def console():
    c = Console()
    yield c
    c.close()


def start_ticker(c):
    c.line("n = 0")
    c.line("ticker = treadle.spawn(function() while true do n = n + 1; "
           "treadle.sleep(0.005) end end)")


def progresses(c):
    """True when the ticker advanced while the console waited at its prompt."""
    first = c.counter()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if c.counter() > first:
            return True
    return False


def test_expressions_statements_and_blocks(console):
    assert console.line("1 + 1") == "2"
    assert console.line("x = 20") == ""
    assert console.line("x * 2, 'two'") == "40\ttwo"
    assert console.line("function twice(a)", more=True) == ""
    assert console.line("  return a * 2", more=True) == ""
    assert console.line("end") == ""
    assert console.line("twice(21)") == "42"
    assert console.line("nil") == "nil"


def test_waiting_calls_run_in_the_line(console):
    assert console.line("treadle.sleep(0.02); return 'slept'") == "slept"
    assert console.line(
        "local t = treadle.spawn(function() treadle.sleep(0.01) return 7 end) "
        "return t:join()") == "7"
    assert console.line("treadle.timeout(0.01, treadle.sleep, 10)") == "nil\ttimeout"


def test_errors_print_and_return_to_the_prompt(console):
    out = console.line("error('boom')")  # with the traceback, as lua5.4 -i
    assert out.startswith("stdin:1: boom\nstack traceback:\n"), out
    assert "unexpected symbol" in console.line("1 +* 2")
    assert console.line("error({})").startswith("table: ")
    assert "bad argument" in console.line("treadle.sleep('x')")
    assert console.line("'still here'") == "still here"


def test_spawned_task_runs_between_prompts(console):
    start_ticker(console)
    assert progresses(console)
    assert console.line("ticker:done()") == "false"


def test_spawned_server_serves_between_prompts(console):
    console.line("listener = treadle.tcp.bind('127.0.0.1', 0)")
    console.line(
        "server = treadle.spawn(function() while true do "
        "local conn = listener:accept(); conn:write(conn:read(100):upper()); "
        "conn:close() end end)")
    port = int(console.line("select(2, listener:addr())").strip())
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(b"hello")  # answered while the console waits for a line
        assert s.recv(100) == b"HELLO"
    assert console.line("server:done()") == "false"


def test_ctrl_c_at_the_prompt_clears_the_line(console):
    console.child.send("1 +")
    time.sleep(0.2)
    console.child.sendintr()
    console.child.expect_exact(PROMPT)
    assert console.line("2 + 2") == "4"
    # and the continuation of an unfinished block is dropped too
    console.line("for i = 1, 3 do", more=True)
    console.child.sendintr()
    console.child.expect_exact(PROMPT)
    assert console.line("'fresh'") == "fresh"


def test_ctrl_c_interrupts_the_running_line(console):
    start_ticker(console)
    console.child.sendline("print('waiting'); treadle.sleep(1000)")
    console.child.expect_exact("waiting\r\n")
    console.child.sendintr()
    console.child.expect_exact("interrupted")
    console.child.expect_exact(PROMPT)
    assert progresses(console)  # the task the line spawned earlier goes on


@pytest.mark.skipif(os.environ.get("TREADLE_LUA_READLINE") == "0",
                    reason="built without GNU readline (plain lines)")
def test_up_recalls_the_previous_line(console):
    """issue 13: line editing and history through readline, as lua5.4 -i
    has them (the Up key used to print ^[[A)."""
    assert console.line("6 * 7") == "42"
    console.child.send("\x1b[A")  # Up
    console.child.expect_exact("6 * 7", timeout=5)  # recalled
    console.child.send("\x1b[D1\r")  # Left, 1: "6 * 17"
    console.child.expect_exact(PROMPT)
    assert console.child.before.replace("\r\n", "\n").strip("\n").split("\n")[-1] == "102"


def test_ctrl_c_stops_a_busy_loop(console):
    """issue 13: Ctrl-C interrupts Lua code that never waits (a hook raises
    "interrupted" in it, as lua5.4 does); the console and the tasks spawned
    before go on."""
    start_ticker(console)
    console.child.sendline("while true do end")
    console.child.expect_exact("while true do end")
    time.sleep(0.3)
    console.child.sendintr()
    console.child.expect_exact("interrupted", timeout=10)
    console.child.expect_exact(PROMPT)
    assert console.line("'still here'") == "still here"
    assert progresses(console)


def test_ctrl_d_exits(console):
    start_ticker(console)
    assert console.eof() == 0


def run_with_stdin(stdin, script=None):
    args = [LAUNCHER] if script is None else ["lua5.4", "-e", script]
    return subprocess.run(args, stdin=stdin, capture_output=True, text=True,
                          timeout=TIMEOUT, env=dict(os.environ, LUA_CPATH=LUA_CPATH))


def test_console_reads_a_pipe_and_a_file(tmp_path):
    src = tmp_path / "lines.lua"
    src.write_text("x = 6\nfor i = 1, 2 do\nx = x + i\nend\nreturn x * 2\nerror('e')\n")
    with open(src) as f:
        r = run_with_stdin(f)  # a regular file: plain reads
    assert r.returncode == 0, r.stderr
    assert "18\n" in r.stdout and "stdin:1: e\n" in r.stdout
    p = subprocess.run(["/bin/sh", "-c", f"cat {src} | {LAUNCHER}"],
                       capture_output=True, text=True, timeout=TIMEOUT,
                       env=dict(os.environ, LUA_CPATH=LUA_CPATH))
    assert p.returncode == 0, p.stderr
    assert "18\n" in p.stdout
    r = run_with_stdin(subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


STDIN_SCRIPT = r"""
local treadle = require "treadle"
print(pcall(treadle.stdin) == false)  -- outside a task: raises
treadle.run(function()
  local input <close> = treadle.stdin()
  print(tostring(input):match("^treadle.stdin %((.-)%)"))
  print(pcall(input.read, input, 0))
  local got = {}
  while true do
    local data = input:read(3)
    if not data then break end
    got[#got + 1] = data
  end
  print(table.concat(got, "|"))
  input:close()
  print(input:read())
end)
"""


def test_stdin_reads_a_pipe_in_pieces():
    p = subprocess.Popen(["lua5.4", "-e", STDIN_SCRIPT], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, LUA_CPATH=LUA_CPATH))
    out, err = p.communicate("abcdefg", timeout=TIMEOUT)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "true"
    assert lines[1] == "async"  # a pipe goes through the I/O driver
    assert lines[2].startswith("false") and "at least 1" in lines[2]
    assert lines[3] == "abc|def|g"
    assert lines[4].startswith("nil\t")  # closed: nil, message, errno name


def test_repl_rejects_bad_options():
    for opts in ("5", "{flavor = 'multi_thread'}"):
        r = subprocess.run(["lua5.4", "-e", f"require('treadle').repl({opts})"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=TIMEOUT, env=dict(os.environ, LUA_CPATH=LUA_CPATH))
        assert r.returncode != 0
        assert "repl" in r.stderr
