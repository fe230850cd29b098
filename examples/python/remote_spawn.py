"""The seed's exercise 4: a Handle from anywhere.

    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/remote_spawn.py

A plain `threading.Thread` (not one of the runtime's threads) spawns tasks
onto a multi_thread runtime through `rt.handle()`. Each task finds its
runtime again with `treadle.Handle.current()` and spawns a follow-up task
from inside. The main thread, outside any task, waits on a
`threading.Event` that the last task sets, then awaits the JoinHandles
the plain thread got (with `rt.block_on`) to collect the results. At the
end it shows the two edges: `Handle.current()` outside a task raises
RuntimeError, and a handle whose runtime has shut down raises
`treadle.ShutdownError` instead of crashing.
"""
import sys
import threading

import treadle

TASKS = 10

left = 2 * TASKS
left_lock = threading.Lock()
all_done = threading.Event()


def finish_one():
    global left
    with left_lock:
        left -= 1
        if left == 0:
            all_done.set()


async def follow_up(n):
    print(f"  follow-up of task {n} on worker {treadle.current_worker()}")
    finish_one()
    return -n


async def from_thread(n):
    handle = treadle.Handle.current()          # this task's runtime
    print(f"task {n} from the plain thread, on worker {treadle.current_worker()}")
    follow = handle.spawn(follow_up(n))
    finish_one()
    return n, await follow


def plain_thread(handle, joins):
    for i in range(TASKS):
        joins.append(handle.spawn(from_thread(i)))


async def collect(joins):
    return [await j for j in joins]


async def nothing():
    pass


def main():
    rt = treadle.Runtime(flavor="multi_thread", workers=2)
    joins = []
    th = threading.Thread(target=plain_thread, args=(rt.handle(), joins),
                          name="plain-thread")
    th.start()
    # A multi_thread runtime runs its tasks in the background: this thread
    # waits like any other thread would.
    ok = all_done.wait(timeout=10)
    th.join()
    print(f"main: {'all tasks ran' if ok else 'timed out waiting for the tasks'}")
    results = rt.block_on(collect(joins))
    print(f"main: joined {len(results)} tasks: {results}")
    ok &= results == [(i, -i) for i in range(TASKS)]

    try:
        treadle.Handle.current()
        print("Handle.current() outside a task: no error  <-- expected RuntimeError")
        ok = False
    except RuntimeError as e:
        print(f"Handle.current() outside a task: RuntimeError: {e}")

    handle = rt.handle()
    rt.shutdown()
    coro = nothing()
    try:
        handle.spawn(coro)
        print("spawn after shutdown: no error  <-- expected treadle.ShutdownError")
        ok = False
    except treadle.ShutdownError as e:
        coro.close()
        print(f"spawn after shutdown: treadle.ShutdownError: {e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
