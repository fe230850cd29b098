"""Every allocation can fail (issue 17; TESTING.md "Allocation sweep"): the
binding turns a failed allocation, treadle's or the interpreter's, into
MemoryError, leaves nothing behind, and the interpreter goes on.

The scenarios and both sweeps are in alloc_scenarios.py. Treadle's sweep
runs here, on both flavors; the interpreter's (``_testcapi.set_nomemory``)
runs in a child interpreter on current_thread only: a worker thread whose
Python thread state cannot be allocated (PyGILState_Ensure) is a fatal
error in CPython by design, whatever the extension does.
"""

import gc
import json
import subprocess
import sys

import pytest

import alloc_scenarios
from conftest import child_env

OBJ_SLACK = 300

# What a failure inside CPython's own code may raise instead of MemoryError
# (its own bugs, not the binding's): "error return without exception set"
# and "can't allocate lock".
CPYTHON_OWN = ("SystemError: ", "RuntimeError: can't allocate lock")


@pytest.mark.parametrize("name", sorted(alloc_scenarios.SCENARIOS))
def test_treadle_allocation_failures_raise_memoryerror(flavor, name):
    alloc_scenarios.SCENARIOS[name](flavor)  # warm-up: imports, free lists
    gc.collect()
    objects, fds = len(gc.get_objects()), alloc_scenarios.nfds()
    r = alloc_scenarios.treadle_sweep(name, flavor)
    gc.collect()
    print(f"alloc-sweep: python {name} ({flavor}): {r['points']} treadle allocation "
          f"points, {r['MemoryError']} MemoryError, {r['absorbed']} absorbed")
    assert r["bad"] == [], f"(k, outcome, blocks left): {r['bad']}"
    assert r["points"] > 3
    assert alloc_scenarios.nfds() == fds
    assert len(gc.get_objects()) - objects < OBJ_SLACK
    alloc_scenarios.SCENARIOS[name]("current_thread")  # and it all still works


def python_sweep(names, timeout=60):
    if hasattr(sys, "gettotalrefcount"):
        # its asserts stop the child at CPython's own slips first: under a
        # failing allocation asyncio's os.environ.get returns NULL without
        # an exception (the release build says SystemError)
        pytest.skip("the interpreter's sweep needs a release interpreter")
    p = subprocess.run([sys.executable, alloc_scenarios.__file__, "python",
                        "current_thread", *names],
                       capture_output=True, text=True, timeout=timeout, env=child_env())
    assert p.returncode == 0, f"the child ended with {p.returncode}:\n{p.stderr[-4000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_python_allocation_failures_raise_memoryerror():
    pytest.importorskip("_testcapi")
    names = ["runtime", "spawn_join", "sleep", "tcp"]
    report = python_sweep(names)
    for name in names:
        r = report["sweeps"][name]
        print(f"alloc-sweep: python-side {name} (current_thread): {r['runs']} runs, "
              f"{r['MemoryError']} MemoryError, {r['ok']} ok, {len(r['bad'])} CPython's own")
        assert r["MemoryError"] > 10
        odd = [b for b in r["bad"] if not b[1].startswith(CPYTHON_OWN)]
        assert odd == [], f"(k, outcome) other than MemoryError: {odd}"
    objects = report["objects_before_after"]
    assert objects[1] - objects[0] < OBJ_SLACK, objects
    fds = report["fds_before_after"]
    assert fds[1] == fds[0], fds


@pytest.mark.subprocess
def test_python_allocation_failures_in_the_event_loop():
    pytest.importorskip("_testcapi")
    report = python_sweep(["event_loop"], timeout=15)
    r = report["sweeps"]["event_loop"]
    odd = [b for b in r["bad"] if not b[1].startswith(CPYTHON_OWN)]
    assert odd == [], f"(k, outcome) other than MemoryError: {odd}"
