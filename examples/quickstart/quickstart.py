"""Quick start: a task that sleeps, spawned and awaited for its result, and
with --echo PORT a TCP echo server on 127.0.0.1 until Ctrl-C (port 0 picks
one). Coroutines are treadle tasks; awaits suspend the task, not the thread."""
import argparse

import treadle


async def answer():
    await treadle.sleep(0.01)
    return 42


async def echo(stream):                 # one task per connection
    async with stream:                  # closes it at the end
        while data := await stream.read(4096):
            await stream.write(data)


async def serve(listener):
    print("echo server on %s:%d, Ctrl-C stops it" % listener.local_addr, flush=True)
    async for stream, _peer in listener:
        treadle.spawn(echo(stream))


async def main(port):
    result = await treadle.spawn(answer())
    print(f"the spawned task slept 10 ms and returned {result}")
    if port is not None:
        listener = await treadle.TcpListener.bind("127.0.0.1", port)
        treadle.spawn(serve(listener))  # starts once main waits below
        await treadle.ctrl_c()
        print("bye")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--echo", type=int, metavar="PORT", help="serve echo on this port")
    treadle.run(main(parser.parse_args().echo), flavor="current_thread")
