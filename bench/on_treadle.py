"""Runs an asyncio program unchanged on treadle's asyncio loop: the peers'
servers of ../shared/bench (echo_py.py, http_peers.py) as bench/py_compare.py
and bench/http_compare.py start them:

    /usr/bin/python3 bench/on_treadle.py FLAVOR WORKERS SCRIPT [ARG ...]

treadle.install() makes treadle's loop asyncio's default (FLAVOR
current_thread or multi_thread, WORKERS for multi_thread); SCRIPT then runs
as its own `__main__` with ARGs, choosing the loop kind "asyncio"
(echo_py.py PORT asyncio streams; http_peers.py PORT aiohttp-asyncio).
"""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))

import treadle  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    flavor, workers, script = sys.argv[1:4]
    treadle.install(flavor=flavor, workers=int(workers) if flavor == "multi_thread" else None)
    sys.argv = [script] + sys.argv[4:]
    runpy.run_path(script, run_name="__main__")
