"""A runtime built without the timer or the I/O driver says so."""

import pytest

import treadle
from conftest import run_on

TIME_MSG = "timers are disabled: build the runtime with enable_time"
IO_MSG = "I/O is disabled: build the runtime with enable_io"


def _check(e, msg):
    assert isinstance(e, treadle.Error), e
    assert str(e) == msg
    assert isinstance(e.code, int) and e.code < 0
    assert isinstance(e.name, str) and e.name


async def caught(awaitable_factory):
    try:
        await awaitable_factory()
    except treadle.Error as e:
        return e
    return None


# run_on guards with treadle.timeout, which itself needs timers: these runs use
# treadle.run directly with no timer-dependent waits.

def test_sleep_without_timers(flavor):
    async def main():
        return await caught(lambda: treadle.sleep(0.01))

    e = treadle.run(main(), flavor=flavor, workers=2, enable_time=False)
    assert e is not None, "sleep succeeded on a runtime without timers"
    _check(e, TIME_MSG)


def test_sleep_zero_and_timeout_without_timers(flavor):
    async def value():
        return 1

    async def main():
        e1 = await caught(lambda: treadle.sleep(0))
        e2 = await caught(lambda: treadle.timeout(1, value()))
        return e1, e2

    e1, e2 = treadle.run(main(), flavor=flavor, workers=2, enable_time=False)
    # sleep(0) may finish at once; if it raises, it raises the same error
    if e1 is not None:
        _check(e1, TIME_MSG)
    assert e2 is not None, "timeout succeeded on a runtime without timers"
    _check(e2, TIME_MSG)


def test_runtime_option_without_timers(flavor):
    async def main():
        return await caught(lambda: treadle.sleep(1))

    with treadle.Runtime(flavor=flavor, workers=2, enable_time=False) as rt:
        e = rt.block_on(main())
    assert e is not None
    _check(e, TIME_MSG)


def test_other_things_work_without_timers(flavor):
    async def sq(x):
        await treadle.yield_now()
        return x * x

    async def main():
        a = await treadle.spawn(sq(3))
        b = await treadle.spawn_blocking(sum, [1, 2])
        lst = await treadle.TcpListener.bind("127.0.0.1", 0)
        c = await treadle.TcpStream.connect("127.0.0.1", lst.local_addr[1])
        s, _ = await lst.accept()
        await c.write(b"io-ok")
        got = await s.read()
        for x in (c, s, lst):
            x.close()
        return a, b, got

    assert treadle.run(main(), flavor=flavor, workers=2, enable_time=False) == (9, 3, b"io-ok")


def test_bind_without_io(flavor):
    async def main():
        return await caught(lambda: treadle.TcpListener.bind("127.0.0.1", 0))

    e = run_on(flavor, main(), enable_io=False)
    assert e is not None, "bind succeeded on a runtime without I/O"
    _check(e, IO_MSG)


def test_connect_without_io(flavor):
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    async def main():
        return await caught(lambda: treadle.TcpStream.connect("127.0.0.1", port))

    try:
        e = run_on(flavor, main(), enable_io=False)
    finally:
        srv.close()
    assert e is not None, "connect succeeded on a runtime without I/O"
    _check(e, IO_MSG)


def test_runtime_option_without_io(flavor):
    async def main():
        return await caught(lambda: treadle.TcpListener.bind("127.0.0.1", 0))

    with treadle.Runtime(flavor=flavor, workers=2, enable_io=False) as rt:
        e = rt.block_on(main())
    assert e is not None
    _check(e, IO_MSG)


def test_timers_work_without_io(flavor):
    async def main():
        await treadle.sleep(0.01)
        return await treadle.timeout(5, treadle.spawn_blocking(int, "7"))

    assert run_on(flavor, main(), enable_io=False) == 7


def test_without_both(flavor):
    async def main():
        e1 = await caught(lambda: treadle.sleep(0.01))
        e2 = await caught(lambda: treadle.TcpListener.bind("127.0.0.1", 0))
        return e1, e2

    e1, e2 = treadle.run(main(), flavor=flavor, workers=2, enable_io=False, enable_time=False)
    _check(e1, TIME_MSG)
    _check(e2, IO_MSG)
