"""Shared fixtures for treadle's Python binding tests.

Run with Debian's interpreter from the repository root:

    PYTHONPATH=bindings/python /usr/bin/python3 -m pytest tests/python -q

The leak tests carry the ``leak`` marker (deselect with ``-m "not leak"``);
the subprocess tests carry ``subprocess``.
"""

import asyncio
import faulthandler
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BINDINGS = ROOT / "bindings" / "python"
if str(_BINDINGS) not in sys.path:
    sys.path.insert(0, str(_BINDINGS))

import treadle  # noqa: E402

FLAVORS = ("current_thread", "multi_thread")

# Last-resort watchdog: a test that hangs (in C, where no Python timeout can
# reach) dumps every thread's stack and ends the run instead of sitting forever.
WATCHDOG_S = 180


def pytest_configure(config):
    config.addinivalue_line("markers", "leak: memory/object-count loops (a few seconds each)")
    config.addinivalue_line("markers", "subprocess: runs a child Python interpreter")


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(params=FLAVORS)
def flavor(request):
    return request.param


def run_on(flavor, coro, *, limit=30.0, **builder):
    """Run ``coro`` on a fresh runtime of ``flavor`` and return its result.

    The coroutine is wrapped in ``treadle.timeout(limit, ...)`` so that a test
    whose waits never end fails with TimeoutError instead of hanging.
    """
    builder.setdefault("workers", 2)
    return treadle.run(guarded(coro, limit), flavor=flavor, **builder)


async def guarded(awaitable, limit=30.0):
    """``await awaitable`` under ``treadle.timeout(limit)``, as a coroutine."""
    return await treadle.timeout(limit, awaitable)


async def forever():
    await treadle.sleep(float("inf"))


@pytest.fixture
def loop(flavor):
    """A treadle.EventLoop of the parametrized flavor (multi_thread: two
    workers), closed after the test once the callbacks that a last close()
    queued (connection_lost) have run."""
    lp = treadle.new_event_loop(flavor=flavor, workers=2 if flavor == "multi_thread" else None)
    try:
        yield lp
    finally:
        if not lp.is_closed():
            try:
                lp.run_until_complete(asyncio.sleep(0.01))
            finally:
                lp.close()


@pytest.fixture
def run(flavor):
    """``run(coro, limit=30, **builder)``: treadle.run on a fresh runtime of the
    parametrized flavor with workers=2."""

    def _run(coro, *, limit=30.0, **builder):
        return run_on(flavor, coro, limit=limit, **builder)

    return _run


@pytest.fixture
def runtime(flavor):
    """A fresh Runtime of the parametrized flavor (workers=2), shut down after the test."""
    rt = treadle.Runtime(flavor=flavor, workers=2)
    try:
        yield rt
    finally:
        try:
            rt.shutdown(timeout=5)
        except (treadle.ShutdownError, RuntimeError):
            pass


def child_env():
    """Environment for a child interpreter that must import the same treadle."""
    env = dict(os.environ)
    pkg_parent = str(Path(treadle.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONWARNINGS", None)
    return env


def write_script(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def run_script(path, *args, timeout=30):
    """Run a child script to completion; returns CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, str(path), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )
