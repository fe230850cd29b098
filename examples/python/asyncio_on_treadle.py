"""Runs an unchanged asyncio program on treadle's event loop.

    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        [--flavor current_thread|multi_thread] [--workers N] SCRIPT [ARGS...]

It makes treadle's loop asyncio's default (``treadle.install``), so the
script's ``asyncio.run(main())`` (or ``asyncio.new_event_loop()``) runs on
a treadle runtime of that flavor, and then runs SCRIPT as ``__main__``
with ARGS as its ``sys.argv[1:]``, as ``python3 SCRIPT ARGS`` would. The
asyncio examples beside it (aiohttp_server.py, chat_server.py,
udp_echo_server.py, subprocess_pipeline.py, ...) are plain asyncio
programs, run on asyncio's own loop without this launcher.
"""
import argparse
import os
import runpy
import sys

import treadle

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--flavor", default="current_thread",
                choices=("current_thread", "multi_thread"))
ap.add_argument("--workers", type=int, default=None,
                help="multi_thread's worker threads (default one per CPU)")
ap.add_argument("script")
ap.add_argument("args", nargs=argparse.REMAINDER)
a = ap.parse_args()

treadle.install(flavor=a.flavor, workers=a.workers)
sys.argv = [a.script, *a.args]
sys.path[0] = os.path.dirname(os.path.abspath(a.script))
runpy.run_path(a.script, run_name="__main__")
