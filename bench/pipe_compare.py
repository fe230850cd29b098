#!/usr/bin/env python3
"""Bytes through a pipe: connect_write_pipe into connect_read_pipe in one
asyncio loop, on treadle's loop (its C pipe transports), on treadle's loop
with asyncio's pipe transports (what treadle had before: over its fd
watchers), on asyncio's own loop and on uvloop. Interleaved repetitions
(A B C D, then D C B A, ...), medians and ratios as Markdown.

    bench/pipe_compare.py [--reps 5] [--mb 256] [--chunks 65536,1024]
                          [--loops treadle-current,treadle-multi,...]
                          [--syscalls] [--json FILE]

Loops: treadle-current, treadle-multi (2 workers), treadle-aiopipes
(current_thread, asyncio's _UnixRead/WritePipeTransport), asyncio
(SelectorEventLoop on epoll), uvloop. Each run is a fresh interpreter
(Debian's /usr/bin/python3) that writes --mb MiB in writes of --chunks
bytes, as fast as flow control lets it (pause_writing stops the writer
until resume_writing), while the reader's protocol counts what arrives;
the run ends at the reader's connection_lost. Headline: MiB/s over that
time; beside it the process's CPU seconds per GiB over that time (user +
system, every thread). --syscalls runs each loop once more under
`strace -f -c`, and once moving nothing, and gives the difference's
system calls per MiB.
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"
LOOPS = ["treadle-current", "treadle-multi", "treadle-aiopipes", "asyncio", "uvloop"]


def new_loop(name):
    import asyncio
    if name.startswith("treadle"):
        import treadle
        if name == "treadle-aiopipes":
            from asyncio import unix_events
            from treadle import _loop
            for attr in ("_make_read_pipe_transport", "_make_write_pipe_transport"):
                setattr(_loop.EventLoop, attr, getattr(unix_events._UnixSelectorEventLoop, attr))
        if name == "treadle-multi":
            return treadle.new_event_loop(flavor="multi_thread", workers=2)
        return treadle.new_event_loop(flavor="current_thread")
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    import selectors
    return asyncio.SelectorEventLoop(selectors.EpollSelector())


def cpu_now():
    ru = resource.getrusage(resource.RUSAGE_SELF)  # every thread
    return ru.ru_utime + ru.ru_stime


def one(name, total, chunk):
    """One run in this process: (seconds, CPU seconds, bytes read)."""
    import asyncio
    loop = new_loop(name)

    class Reader(asyncio.Protocol):
        def __init__(self):
            self.n = 0
            self.done = loop.create_future()

        def data_received(self, data):
            self.n += len(data)

        def connection_lost(self, exc):
            self.done.set_result(exc)

    class Writer(asyncio.Protocol):
        def __init__(self):
            self.can_write = loop.create_future()
            self.can_write.set_result(None)

        def pause_writing(self):
            self.can_write = loop.create_future()

        def resume_writing(self):
            self.can_write.set_result(None)

    async def main():
        r, w = os.pipe()
        reader = Reader()
        writer = Writer()
        await loop.connect_read_pipe(lambda: reader, os.fdopen(r, "rb", 0))
        wt, _ = await loop.connect_write_pipe(lambda: writer, os.fdopen(w, "wb", 0))
        data = b"x" * chunk
        cpu0 = cpu_now()
        t0 = time.perf_counter()
        left = total
        while left > 0:
            await writer.can_write
            wt.write(data)
            left -= chunk
        wt.close()
        exc = await reader.done
        if exc is not None:
            raise exc
        return time.perf_counter() - t0, cpu_now() - cpu0, reader.n

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def child_run(name, mb, chunk, strace=None):
    cmd = [PY, os.path.abspath(__file__), "--one", name, "--mb", str(mb), "--chunks", str(chunk)]
    if strace:
        cmd = ["strace", "-f", "-c", "-o", strace] + cmd
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "bindings", "python"))
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, env=env,
                         timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def syscalls(path):
    """The total of `strace -c`'s table."""
    with open(path) as f:
        for line in f:
            m = re.match(r"^100\.00\s+\S+\s+\S+\s+(\d+)", line.strip())
            if m:
                return int(m.group(1))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--chunks", default="65536,1024")
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--syscalls", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    total = args.mb << 20
    if args.one:
        secs, cpu, n = one(args.one, total, int(args.chunks))
        print(json.dumps({"secs": secs, "bytes": n, "cpu": cpu}))
        return
    loops = args.loops.split(",")
    chunks = [int(c) for c in args.chunks.split(",")]
    runs = {}
    for rep in range(args.reps):
        for chunk in chunks:
            order = loops if rep % 2 == 0 else loops[::-1]
            for name in order:
                rec = child_run(name, args.mb, chunk)
                if rec["bytes"] != (total + chunk - 1) // chunk * chunk:
                    sys.exit(f"{name}: {rec['bytes']} bytes arrived")
                runs.setdefault((name, chunk), []).append(rec)
                print(f"rep {rep} {name} chunk {chunk}: {args.mb / rec['secs']:.0f} MiB/s",
                      file=sys.stderr, flush=True)
    calls = {}
    if args.syscalls:
        with tempfile.TemporaryDirectory() as d:
            for chunk in chunks:
                for name in loops:
                    path = os.path.join(d, "trace")
                    child_run(name, args.mb, chunk, strace=path)
                    n = syscalls(path)
                    child_run(name, 0, chunk, strace=path)  # start-up and loop, no bytes
                    calls[(name, chunk)] = (n - syscalls(path)) / args.mb
    print(f"{args.mb} MiB through a pipe, median of {args.reps} interleaved runs "
          f"(ratio: MiB/s over {loops[-1]}'s)\n")
    print("| loop | write size | MiB/s | ratio | CPU s/GiB |" + (" syscalls/MiB |" if calls else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|" if calls else ""))
    summary = {}
    for chunk in chunks:
        base = statistics.median(args.mb / r["secs"] for r in runs[(loops[-1], chunk)])
        for name in loops:
            rs = runs[(name, chunk)]
            mbs = statistics.median(args.mb / r["secs"] for r in rs)
            cpu = statistics.median(r["cpu"] for r in rs) * 1024 / args.mb
            row = f"| {name} | {chunk} | {mbs:.0f} | {mbs / base:.2f} | {cpu:.2f} |"
            if calls:
                row += f" {calls[(name, chunk)]:.1f} |"
            print(row)
            summary[f"{name}/{chunk}"] = {"mib_s": mbs, "cpu_s_per_gib": cpu,
                                          "syscalls_per_mib": calls.get((name, chunk))}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
