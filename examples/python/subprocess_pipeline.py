"""A shell pipeline from asyncio subprocesses, a plain asyncio program:

    /usr/bin/python3 examples/python/subprocess_pipeline.py          # asyncio's loop
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        [--flavor multi_thread --workers 2] examples/python/subprocess_pipeline.py

does what `printf '%s\\n' WORDS | sort | uniq -c | sort -k1,1nr -k2` does:
asyncio.create_subprocess_exec starts `sort`, `uniq -c` and `sort -k1,1nr
-k2`; each one's stdout is an OS pipe into the next one's stdin, so the
data flows between them without this process; the words go into the first
with communicate() and the last one's output comes back from its own
communicate(). It prints the counts, each command's return code, and then
runs `false` to show a failing one's code.
"""
import asyncio
import os

WORDS = "pear apple fig apple pear apple kiwi".split()
COMMANDS = [["sort"], ["uniq", "-c"], ["sort", "-k1,1nr", "-k2"]]


async def pipeline(commands, data):
    """Runs commands as a pipeline fed with data; returns the last one's
    stdout and every return code."""
    env = dict(os.environ, LC_ALL="C")
    procs = []
    stdin = asyncio.subprocess.PIPE
    for i, cmd in enumerate(commands):
        last = i == len(commands) - 1
        read_end, write_end = (None, asyncio.subprocess.PIPE) if last else os.pipe()
        procs.append(await asyncio.create_subprocess_exec(
            *cmd, stdin=stdin, stdout=write_end, env=env))
        if i > 0:
            os.close(stdin)       # the child has its own copy
        if not last:
            os.close(write_end)
        stdin = read_end
    await procs[0].communicate(data)
    out, _ = await procs[-1].communicate()
    codes = [await p.wait() for p in procs]
    return out, codes


async def main():
    out, codes = await pipeline(COMMANDS, "".join(w + "\n" for w in WORDS).encode())
    print(out.decode(), end="")
    for cmd, code in zip(COMMANDS, codes):
        print(f"{' '.join(cmd)}: exit {code}")
    failing = await asyncio.create_subprocess_exec("false")
    print(f"false: exit {await failing.wait()}")


if __name__ == "__main__":
    asyncio.run(main())
