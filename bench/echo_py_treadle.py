"""Runs ../shared/bench/servers/python/echo_py.py unchanged on treadle's
asyncio loop (bench/py_compare.py's treadle-loop-* servers):

    /usr/bin/python3 bench/echo_py_treadle.py FLAVOR WORKERS PORT streams|protocol

treadle.install() makes treadle's loop asyncio's default; echo_py.py runs
as its own `__main__` with the loop kind "asyncio".
"""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))
ECHO_PY = os.path.join(HERE, "..", "..", "shared", "bench", "servers", "python", "echo_py.py")

import treadle  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    flavor, workers, port, mode = sys.argv[1:]
    treadle.install(flavor=flavor, workers=int(workers) if flavor == "multi_thread" else None)
    sys.argv = [ECHO_PY, port, "asyncio", mode]
    runpy.run_path(ECHO_PY, run_name="__main__")
