"""The seed's exercise 3: using a driver the runtime was built without.

    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/missing_drivers.py

A runtime built with `enable_time=False` has no timer driver, and one built
with `enable_io=False` has no I/O driver (nor signals). Asking such a runtime
to sleep, or to bind a socket, is not a crash and not a hang: the await
raises `treadle.Error` carrying the C core's message and error code
("timers are disabled: build the runtime with enable_time", "I/O is
disabled: build the runtime with enable_io"). Both flavors are checked; the
exit status is 0 when every case raised as expected.
"""
import sys

import treadle


async def nap():
    await treadle.sleep(0.001)
    return "slept"


async def listen():
    listener = await treadle.TcpListener.bind("127.0.0.1", 0)
    listener.close()
    return "bound"


CASES = [
    # (what, builder option turned off, coroutine function, expected message start)
    ("sleep 1 ms", "enable_time", nap, "timers are disabled"),
    ("bind 127.0.0.1:0", "enable_io", listen, "I/O is disabled"),
]


def main():
    ok = True
    for flavor in ("current_thread", "multi_thread"):
        for what, option, fn, expected in CASES:
            with treadle.Runtime(flavor=flavor, **{option: False}) as rt:
                try:
                    result = rt.block_on(fn())
                except treadle.Error as e:
                    good = str(e).startswith(expected)
                    ok &= good
                    print(f"{flavor:>14}, {option}=False: {what}: "
                          f"treadle.Error {e.name} ({e.code}): {e}"
                          + ("" if good else f"  <-- expected {expected!r}"))
                else:
                    ok = False
                    print(f"{flavor:>14}, {option}=False: {what}: no error, "
                          f"returned {result!r}  <-- expected treadle.Error")
    # The same calls on a runtime with both drivers work.
    results = treadle.run(_both(), flavor="current_thread")
    print(f"{'current_thread':>14}, all drivers: {', '.join(results)}")
    return 0 if ok else 1


async def _both():
    return [await nap(), await listen()]


if __name__ == "__main__":
    sys.exit(main())
