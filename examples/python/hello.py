"""Quick start: sleep and spawn with treadle, the way one would with asyncio.

    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/hello.py

`treadle.run(main())` builds a runtime, runs `main()` to completion on it and
shuts it down, like `asyncio.run`. Inside a task, `await treadle.sleep(s)`
suspends it without blocking its thread, and `treadle.spawn(coro)` starts
another task and returns a JoinHandle: awaiting it gives the task's result
(or raises its exception). The same program runs on both flavors: a
current_thread runtime (everything on the calling thread) and a
multi_thread one (a pool of worker threads, the default).
"""
import time

import treadle


async def greet(name, seconds):
    await treadle.sleep(seconds)
    return f"hello, {name} (after {seconds * 1000:.0f} ms, on worker {treadle.current_worker()})"


async def main(flavor):
    t0 = time.monotonic()
    print(f"[{flavor}] hello")
    await treadle.sleep(0.010)
    print(f"[{flavor}] ... world, {(time.monotonic() - t0) * 1000:.0f} ms later")

    # Three tasks sleep at the same time: together they take ~30 ms, not 60.
    t0 = time.monotonic()
    handles = [treadle.spawn(greet(name, ms / 1000))
               for name, ms in (("ada", 30), ("grace", 10), ("linus", 20))]
    for h in handles:                       # join in spawn order
        print(f"[{flavor}]   {await h}")
    took = (time.monotonic() - t0) * 1000
    print(f"[{flavor}] three sleeps of 30, 10 and 20 ms took {took:.0f} ms together")
    return took


if __name__ == "__main__":
    for flavor in ("current_thread", "multi_thread"):
        took = treadle.run(main(flavor), flavor=flavor)
        assert took < 55, f"the sleeps did not overlap ({took:.0f} ms)"
