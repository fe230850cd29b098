"""The asyncio examples (examples/python: aiohttp, streams chat, UDP echo,
WebSocket broadcast, subprocess pipeline), plain asyncio programs run unchanged on treadle's
loop through examples/python/asyncio_on_treadle.py, on both flavors. Each
server listens on 127.0.0.1 on a free port, is exercised, and is stopped
with SIGTERM (its add_signal_handler, called in its main() on a worker
under multi_thread); every output is checked exactly. Every wait is bounded;
only the processes started here are stopped."""

import os
import select
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, child_env

pytestmark = pytest.mark.subprocess

EXAMPLES = ROOT / "examples" / "python"
LIMIT_S = 30  # the most any one step may take


def launch(flavor, script, *args, **popen):
    """Starts examples/python/SCRIPT ARGS on treadle's loop of `flavor`."""
    cmd = [sys.executable, str(EXAMPLES / "asyncio_on_treadle.py"), "--flavor", flavor]
    if flavor == "multi_thread":
        cmd += ["--workers", "2"]
    cmd += [str(EXAMPLES / script), *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env(), cwd=ROOT, **popen)


def read_line(proc):
    """proc's next stdout line (each example flushes whole lines), waiting
    at most LIMIT_S."""
    ready, _, _ = select.select([proc.stdout], [], [], LIMIT_S)
    assert ready, f"no output from {proc.args} in {LIMIT_S} s"
    return proc.stdout.readline()


def finish(proc, term=False):
    """Stops proc (SIGTERM when asked), waits for its end; returns its
    exit status and the rest of its stdout and stderr."""
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None  # closed by the test: communicate would flush it
    try:
        if term:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=LIMIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def skip_multi_thread_under_tsan(flavor):
    """The servers stop at SIGTERM; under TSan a signal to a process whose
    threads are parked in futex() (multi_thread's workers) is held until
    one wakes (as in test_signals.py), so there they would not stop."""
    if flavor == "multi_thread" and os.environ.get("TREADLE_SANITIZER") == "tsan":
        pytest.skip("TSan delays signals to threads parked in futex()")


class Server:
    """An example server: started, its "listening on" line read, and
    stopped with SIGTERM at the end of the with block."""

    def __init__(self, flavor, script):
        self.proc = launch(flavor, script, 0)
        self.out = self.err = None
        self.rc = None

    def __enter__(self):
        try:
            line = read_line(self.proc)
            assert line.startswith("listening on 127.0.0.1:"), (line, self.proc.stderr.read())
            self.port = int(line.rsplit(":", 1)[1])
        except BaseException:
            finish(self.proc)
            raise
        return self

    def __exit__(self, *exc):
        self.rc, self.out, self.err = finish(self.proc, term=True)


def test_aiohttp_server_and_client(flavor):
    skip_multi_thread_under_tsan(flavor)
    pytest.importorskip("aiohttp")
    with Server(flavor, "aiohttp_server.py") as srv:
        client = launch(flavor, "aiohttp_client.py", f"http://127.0.0.1:{srv.port}")
        rc, out, err = finish(client)
        assert rc == 0, err
        assert out.splitlines() == [
            "GET /: 200 Hello, World!",
            "GET /hello/treadle: 200 Hello, treadle!",
            "POST /echo: 200 100000 bytes, same",
            "10 concurrent GET /: 10 ok",
        ]
    assert srv.rc == 0, srv.err
    assert srv.out == "stopped after 13 requests\n"


class LineSocket:
    """A chat client of the test's own: lines over a socket, bounded waits."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=LIMIT_S)
        self.file = self.sock.makefile("r", encoding="utf-8", newline="\n")

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def read(self):
        return self.file.readline()

    def close(self):
        self.file.close()
        self.sock.close()


def test_chat_server_and_client(flavor):
    skip_multi_thread_under_tsan(flavor)
    with Server(flavor, "chat_server.py") as srv:
        alice = LineSocket(srv.port)
        try:
            alice.send("alice")
            assert alice.read() == "* welcome alice, 1 online\n"
            bob = launch(flavor, "chat_client.py", srv.port, "bob", stdin=subprocess.PIPE)
            try:
                assert read_line(bob) == "* welcome bob, 2 online\n"
                assert alice.read() == "* bob joined\n"
                bob.stdin.write("hello\n")   # bob's stdin: a pipe transport
                bob.stdin.flush()
                assert alice.read() == "bob: hello\n"
                alice.send("hi bob")
                assert read_line(bob) == "alice: hi bob\n"
                bob.stdin.close()            # bob half-closes, the server closes
            finally:
                rc, out, err = finish(bob)
            assert rc == 0, err
            assert out == ""
            assert alice.read() == "* bob left\n"
        finally:
            alice.close()
    assert srv.rc == 0, srv.err
    assert srv.out == "stopped after 2 messages\n"


def test_udp_echo(flavor):
    skip_multi_thread_under_tsan(flavor)
    with Server(flavor, "udp_echo_server.py") as srv:
        client = launch(flavor, "udp_echo_client.py", srv.port, "hello", "two words", "ünï")
        rc, out, err = finish(client)
        assert rc == 0, err
        assert out == "echo: hello\necho: two words\necho: ünï\n"
    assert srv.rc == 0, srv.err
    assert srv.out == "stopped after 3 datagrams\n"


def test_websocket_server_and_client(flavor):
    skip_multi_thread_under_tsan(flavor)
    pytest.importorskip("websockets")
    with Server(flavor, "websocket_server.py") as srv:
        client = launch(flavor, "websocket_client.py", srv.port, "hello", "two words", "ünï")
        rc, out, err = finish(client)
        assert rc == 0, err
        assert out == "got: hello\ngot: two words\ngot: ünï\n"
    assert srv.rc == 0, srv.err
    assert srv.out == "stopped after 3 messages\n"


def test_subprocess_pipeline(flavor):
    rc, out, err = finish(launch(flavor, "subprocess_pipeline.py"))
    assert rc == 0, err
    assert out == ("      3 apple\n"
                   "      2 pear\n"
                   "      1 fig\n"
                   "      1 kiwi\n"
                   "sort: exit 0\n"
                   "uniq -c: exit 0\n"
                   "sort -k1,1nr -k2: exit 0\n"
                   "false: exit 1\n")


def test_launcher_runs_a_script_as_main(tmp_path, flavor):
    # The launcher's contract: the script is __main__, with its arguments
    # and its own directory on sys.path, and asyncio.run is treadle's.
    (tmp_path / "helper_mod.py").write_text("VALUE = 'from its directory'\n")
    script = tmp_path / "prog.py"
    script.write_text(
        "import asyncio, sys, helper_mod\n"
        "async def main():\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
        "print(__name__, sys.argv[1:], helper_mod.VALUE, asyncio.run(main()))\n")
    cmd = [sys.executable, str(EXAMPLES / "asyncio_on_treadle.py"), "--flavor", flavor,
           str(script), "a", "--b"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=LIMIT_S)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "__main__ ['a', '--b'] from its directory treadle._loop\n"
