"""The Python half of the fuzz_python target (fuzz_python.c embeds
libpython and calls run_one with each input): the entry points and edge
values of tests/python/test_fuzz_args.py, with every choice (which entry
point, how many arguments, which values, in a task or not) read from the
input's bytes instead of a seeded generator. A call that raises anything
but test_fuzz_args.ALLOWED fails (pytest.fail), and fuzz_python.c aborts."""
import warnings

import treadle
from treadle import _core

import test_fuzz_args as T

warnings.simplefilter("ignore", RuntimeWarning)  # dropped ops warn


class ByteRng:
    """random.Random's choice and randrange, from the input's bytes (0 once
    they are used up)."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    def byte(self):
        if self.at >= len(self.data):
            return 0
        self.at += 1
        return self.data[self.at - 1]

    def more(self):
        return self.at < len(self.data)

    def randrange(self, n):
        return self.byte() % n

    def choice(self, seq):
        return seq[self.byte() % len(seq)]


_rt = None


def runtime():
    """One runtime for every input: making one per input would be most of
    the time."""
    global _rt
    if _rt is None:
        _rt = treadle.Runtime("current_thread", _with_loop=False)
    return _rt


def entry_points(core, builder):
    handle = core.handle()
    out = [(n, f, ()) for n, f in T.module_functions()]
    out += [(n + "(b)", f, (builder,)) for n, f, _ in out if n.startswith("treadle_builder_")]
    out += [
        ("treadle_py_build(b)", _core.treadle_py_build, (builder,)),
        ("treadle_builder_free", _core.treadle_builder_free, ()),
        ("RuntimeCore()", _core.RuntimeCore, ()), ("Handle()", _core.Handle, ()),
        ("JoinHandle()", _core.JoinHandle, ()), ("Op()", _core.Op, ()),
        ("TcpStream()", _core.TcpStream, ()), ("TcpListener()", _core.TcpListener, ()),
        ("LoopCore()", _core.LoopCore, ()), ("LoopCore(core)", _core.LoopCore, (core,)),
        ("TcpStream.connect", _core.TcpStream.connect, ()),
        ("TcpListener.bind", _core.TcpListener.bind, ()),
        ("Handle.current", _core.Handle.current, ()),
        ("core.spawn", core.spawn, ()), ("core.spawn_blocking", core.spawn_blocking, ()),
        ("core.block_on_step", core.block_on_step, ()), ("handle.spawn", handle.spawn, ()),
        ("core.watch_wake", core.watch_wake, ()), ("WakeWatch()", _core.WakeWatch, ()),
    ]
    return out


async def in_task(sweep, rng):
    """Calls from inside a task: the module's functions and a JoinHandle's
    methods; ops are awaited with a short deadline."""
    fns = [(n, f) for n, f in T.module_functions() if not n.startswith("treadle_")]
    join = _core.spawn(T._noop())
    while rng.more():
        k = rng.randrange(len(fns) + 4)
        if k < len(fns):
            name, fn = fns[k]
            value = sweep.call(name, fn)
            if name in ("sleep", "yield_now", "spawn_blocking") and value is not None:
                try:
                    await treadle.timeout(0.001, value)
                except Exception:  # TimeoutError, or the pool job's own error
                    pass
        elif k == len(fns):
            value = sweep.call("wait(join)", _core.wait, join)
            if value is not None:
                try:
                    await treadle.timeout(0.001, value)
                except TimeoutError:
                    pass
        else:
            name = ("result", "abort", "done")[k - len(fns) - 1]
            sweep.call("JoinHandle." + name, getattr(join, name))
    try:
        await join
    except _core.CancelledError:
        pass


def run_one(data):
    rng = ByteRng(data)
    sweep = T.Sweep(0)
    sweep.rng = rng
    rt = runtime()
    if rng.byte() % 4 == 0:
        rt.block_on(in_task(sweep, rng))
        return
    builder = _core.treadle_builder_new(_core.TREADLE_CURRENT_THREAD)
    try:
        points = entry_points(rt._core, builder)
        while rng.more():
            name, fn, first = points[rng.randrange(len(points))]
            T.drop(sweep.call(name, fn, *first))
    finally:
        _core.treadle_builder_free(builder)
