#!/usr/bin/env python3
"""CPython's own asyncio tests (Debian's libpython3.11-testsuite) against
treadle's event loop, compared with asyncio's own epoll loop on this
machine.

    /usr/bin/python3 tests/python/asyncio_conformance/run.py [MODULE...]

Each module runs twice, in a subprocess each: with asyncio's default loop,
and with treadle's (treadle.EventLoopPolicy installed, and kept installed
when a test module resets the policy). The loop-level tests (the loop
mixins of test_events, test_sock_lowlevel and test_sendfile) run as a
class whose create_event_loop gives the mode's loop. A test that passes on asyncio's
loop must pass on treadle's unless differences.txt lists it (a glob of test
ids, with the reason). Prints a table of passed/failed/skipped per module
and exits 1 on an unexpected difference.

CONFORMANCE_FLAVOR=multi_thread runs treadle's loops on a multi_thread
runtime of 2 workers instead of current_thread.

Inside: run.py --mode asyncio|treadle --json OUT MODULE runs one module
and writes {test id: outcome}.
"""
import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))

# The library tests run whole; "loop:" entries are the loop-level mixins.
MODULES = ["test_futures", "test_futures2", "test_tasks", "test_taskgroups",
           "test_timeouts", "test_waitfor", "test_queues", "test_locks",
           "test_pep492", "test_context", "test_streams", "test_server",
           "test_subprocess", "loop:test_events", "loop:test_sock_lowlevel",
           "loop:test_sendfile"]
LIMIT_S = 300  # per module and mode
FLAVOR = os.environ.get("CONFORMANCE_FLAVOR", "current_thread")
OPTIONS = {"flavor": FLAVOR, "workers": 2 if FLAVOR == "multi_thread" else None}


def install(mode):
    """Makes `mode`'s loop asyncio's default for the whole run."""
    if mode != "treadle":
        return
    import asyncio
    from asyncio import events
    import treadle
    set_policy = events.set_event_loop_policy

    def keep_treadle(policy):  # test modules reset the policy to None
        set_policy(treadle.EventLoopPolicy(**OPTIONS) if policy is None else policy)

    events.set_event_loop_policy = asyncio.set_event_loop_policy = keep_treadle
    treadle.install(**OPTIONS)


def new_loop(mode):
    import asyncio
    import selectors
    if mode == "treadle":
        import treadle
        return treadle.new_event_loop(**OPTIONS)
    return asyncio.SelectorEventLoop(selectors.EpollSelector())


def load(module, mode):
    """The suite of a module; for "loop:" ones, the loop mixins only."""
    import importlib
    loader = unittest.TestLoader()
    if not module.startswith("loop:"):
        return loader.loadTestsFromModule(
            importlib.import_module(f"test.test_asyncio.{module}"))
    name = module[len("loop:"):]
    mod = importlib.import_module(f"test.test_asyncio.{name}")
    from test.test_asyncio import utils as test_utils
    mixin = {"test_events": "EventLoopTestsMixin",
             "test_sock_lowlevel": "BaseSockTestsMixin",
             "test_sendfile": "SendfileTestsBase"}[name]
    cls = type("LoopTests", (getattr(mod, mixin), test_utils.TestCase),
               {"create_event_loop": lambda self: new_loop(mode),
                "__module__": mod.__name__})
    return loader.loadTestsFromTestCase(cls)


LOOPS_MADE = [0]  # treadle loops built so far (treadle mode)


def count_loops(mode):
    if mode != "treadle":
        return
    from treadle import _loop
    init = _loop.EventLoop.__init__

    def counting_init(self, *args, **kwargs):
        LOOPS_MADE[0] += 1
        init(self, *args, **kwargs)

    _loop.EventLoop.__init__ = counting_init


class Recorder(unittest.TestResult):
    """Outcome per test id: pass, fail or skip; a pass of a test that
    built a treadle loop (rather than a test_utils.TestLoop of virtual
    time, or none) is "pass+"."""

    def __init__(self):
        super().__init__()
        self.outcomes = {}
        self.loops_before = 0

    def startTest(self, test):
        self.loops_before = LOOPS_MADE[0]
        super().startTest(test)

    def addSuccess(self, test):
        self.outcomes[test.id()] = "pass+" if LOOPS_MADE[0] > self.loops_before else "pass"

    def addFailure(self, test, err):
        self.outcomes[test.id()] = "fail"
        super().addFailure(test, err)

    def addError(self, test, err):
        self.outcomes[test.id()] = "fail"
        super().addError(test, err)

    def addSkip(self, test, reason):
        self.outcomes[test.id()] = "skip"

    def addExpectedFailure(self, test, err):
        self.outcomes[test.id()] = "pass"  # expected by CPython's own list

    def addUnexpectedSuccess(self, test):
        self.outcomes[test.id()] = "fail"

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self.outcomes[test.id()] = "fail"
            super().addSubTest(test, subtest, err)


def run_one(mode, module, out):
    install(mode)
    count_loops(mode)
    import logging
    logging.disable(logging.CRITICAL)  # tests that log errors on purpose
    suite = load(module, mode)
    result = Recorder()
    suite.run(result)
    for test, tb in result.failures + result.errors:
        if os.environ.get("CONFORMANCE_VERBOSE"):
            print(f"--- {mode} {test}\n{tb}", file=sys.stderr)
    with open(out, "w") as f:
        json.dump(result.outcomes, f)


def differences():
    """(glob, reason) pairs of differences.txt."""
    pairs = []
    with open(os.path.join(HERE, "differences.txt")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                pattern, _, reason = line.partition(" ")
                pairs.append((pattern, reason.strip().lstrip("# ")))
    return pairs


def run_mode(mode, module):
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "bindings", "python"))
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--mode", mode, "--json", tmp.name, module],
                env=env, timeout=LIMIT_S, stdout=subprocess.DEVNULL,
                stderr=None if os.environ.get("CONFORMANCE_VERBOSE") else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None, "timed out"
        if proc.returncode != 0:
            return None, f"exit {proc.returncode}"
        with open(tmp.name) as f:
            return json.load(f), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["asyncio", "treadle"])
    ap.add_argument("--json")
    ap.add_argument("modules", nargs="*")
    args = ap.parse_args()
    if args.mode:
        run_one(args.mode, args.modules[0], args.json)
        return 0
    known = differences()
    bad = []
    used = set()
    print(f"{'module':28} {'asyncio pass':>12} {'treadle pass':>12} {'on loop':>7} "
          f"{'fail':>5} {'skip':>5} {'listed':>6} {'s':>5}")
    total = 0.0
    for module in args.modules or MODULES:
        t0 = time.monotonic()
        base, err1 = run_mode("asyncio", module)
        ours, err2 = run_mode("treadle", module)
        secs = time.monotonic() - t0
        if base is None or ours is None:
            bad.append(f"{module}: asyncio {err1 or 'ok'}, treadle {err2 or 'ok'}")
            print(f"{module:28} {'-':>12} {'-':>12} {err1 or err2}")
            continue
        listed = 0
        total += secs
        passed = {t for t, v in ours.items() if v.startswith("pass")}
        for test, outcome in sorted(base.items()):
            if not outcome.startswith("pass") or test in passed:
                continue
            reason = next((p for p, _ in known if fnmatch.fnmatchcase(test, p)), None)
            if reason is None:
                bad.append(f"{test}: passes on asyncio's loop, {ours.get(test, 'missing')} on treadle's")
            else:
                listed += 1
                used.add(reason)
        on_loop = sum(v == "pass+" for v in ours.values())
        counts = {k: sum(1 for v in ours.values() if v == k) for k in ("fail", "skip")}
        print(f"{module:28} {sum(v.startswith('pass') for v in base.values()):>12} "
              f"{len(passed):>12} {on_loop:>7} {counts['fail']:>5} {counts['skip']:>5} "
              f"{listed:>6} {secs:>5.0f}")
    for pattern, _ in known:
        if pattern not in used and not args.modules:
            print(f"note: difference {pattern} no longer happens")
    print(f"total {total:.0f} s ('on loop': passes that built a treadle loop; the "
          f"others ran on test_utils.TestLoop, virtual time, or on no loop)")
    for line in bad:
        print("UNEXPECTED", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
