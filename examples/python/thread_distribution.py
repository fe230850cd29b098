"""The seed's exercise 2: how a multi_thread runtime spreads tasks over workers.

    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/thread_distribution.py [TASKS] [WORKERS]

Spawns 100 tasks on a multi_thread runtime with 4 workers. Each task does a
little work, yields once (so an idle worker can steal it), does a little
more, and records the worker (`treadle.current_worker()`) and the OS thread
it finished on. The program prints how many tasks finished on each worker,
then each worker's metrics (polls, tasks stolen, steal operations).

Python code in one runtime runs one step at a time (the runtime's Python
lane: the GIL would serialize it anyway), so what this shows is the
scheduler handing tasks to different threads, not Python code running in
parallel; work that releases the GIL (I/O, `spawn_blocking`, C extensions)
is what overlaps.
"""
import collections
import sys
import threading

import treadle

TASKS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 4


def busy():
    x = 1
    for _ in range(2000):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
    return x


async def job(i):
    started_on = treadle.current_worker()
    busy()
    await treadle.yield_now()
    busy()
    return i, started_on, treadle.current_worker(), threading.get_native_id()


async def main():
    handles = [treadle.spawn(job(i)) for i in range(TASKS)]
    return [await h for h in handles]


if __name__ == "__main__":
    with treadle.Runtime(flavor="multi_thread", workers=WORKERS) as rt:
        results = rt.block_on(main())
        metrics = rt.metrics()
    per_worker = collections.Counter(w for _, _, w, _ in results)
    thread_of = {w: tid for _, _, w, tid in results}
    moved = sum(1 for _, a, b, _ in results if a != b)
    print(f"{TASKS} tasks on {WORKERS} workers:")
    for w in range(WORKERS):
        tid = thread_of.get(w)
        print(f"  worker {w} (thread {tid if tid is not None else '-'}): "
              f"{per_worker[w]:3d} tasks")
    print(f"  {moved} task(s) finished on another worker than the one they started on")
    for w, m in enumerate(metrics.per_worker):
        print(f"  worker {w}: {m.polls} polls, {m.steals} tasks stolen in "
              f"{m.steal_operations} steals, {m.parks} parks")
    assert sum(per_worker.values()) == TASKS
    assert sorted(i for i, _, _, _ in results) == list(range(TASKS))
