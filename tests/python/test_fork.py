"""os.fork() after a runtime was used: in the child, calls on the parent's
runtime raise treadle.Error EFORKED at once (its threads do not exist
there), a new runtime works, and exit does not hang; the parent goes on."""

import os

import pytest

from conftest import run_script, write_script

pytestmark = pytest.mark.subprocess

SCRIPT = """
import os, sys
import treadle

async def one():
    await treadle.sleep(0.001)
    return 1

async def bind():
    return await treadle.TcpListener.bind("127.0.0.1", 0)

rt = treadle.Runtime(FLAVOR)
listener = rt.block_on(bind())
print("parent", rt.block_on(one()), flush=True)
pid = os.fork()
if pid == 0:
    for name, call in [("block_on", lambda: rt.block_on(one())),
                       ("spawn", lambda: rt.spawn(one())),
                       ("shutdown", lambda: rt.shutdown())]:
        try:
            call()
            print("child", name, "did not raise", flush=True)
        except treadle.Error as e:
            print("child", name, e.name, flush=True)
    listener.close()  # the child's copy of the fd only
    if NEW_RUNTIME:
        print("child new", treadle.run(one(), flavor="current_thread"), flush=True)
    sys.exit(0)  # atexit meets the parent's runtime: it must not hang
_, status = os.waitpid(pid, 0)
print("child status", status, flush=True)

async def accept_one():
    port = listener.local_addr[1]
    client = await treadle.TcpStream.connect("127.0.0.1", port)
    conn, _ = await listener.accept()
    conn.close()
    client.close()
    return "accepted"

print("parent", rt.block_on(accept_one()), flush=True)
rt.shutdown()
"""


@pytest.mark.parametrize("flavor", ["current_thread", "multi_thread"])
def test_forked_child_gets_eforked(tmp_path, flavor):
    # TSan does not support starting threads in a child of a threaded process
    new_runtime = os.environ.get("TREADLE_SANITIZER") != "tsan"
    path = write_script(tmp_path, "fork.py", SCRIPT.replace("FLAVOR", repr(flavor))
                        .replace("NEW_RUNTIME", repr(new_runtime)))
    r = run_script(path, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    expected = ["parent 1", "child block_on EFORKED", "child spawn EFORKED",
                "child shutdown EFORKED"]
    expected += ["child new 1"] if new_runtime else []
    expected += ["child status 0", "parent accepted"]
    assert lines == expected, r.stdout + r.stderr
