"""The client side of the stream API: connects to an echo server, sends
messages and checks that every byte comes back.

    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/echo_client.py [PORT] [--host H]
        [--conns 10] [--messages 100] [--size 1000] [--flavor multi_thread]

With PORT, it talks to the echo server there (examples/python/echo_server.py,
or any other). Without PORT, it first starts an echo server task of its own
on 127.0.0.1:0 in the same runtime, so that the example runs alone.

Each of --conns tasks connects with `treadle.TcpStream.connect` (a name such
as "localhost" is resolved off the runtime's threads), sets TCP_NODELAY,
then --messages times writes a --size-byte message (`await stream.write`
sends all of it) and reads until the whole echo is back, comparing it with
what it sent. Finally it shuts its write side down (`await
stream.shutdown()`) and reads to end of stream, so the server sees a clean
close. It prints the round trips, bytes and time, and exits 1 if any echo
differed or any connection failed (a refused connection is a
ConnectionRefusedError, an OSError as everywhere in Python).
"""
import argparse
import os
import sys
import time

import treadle


async def echo_once(stream):
    """The self-contained mode's server side: echo until end of stream."""
    try:
        while True:
            data = await stream.read(16384)
            if not data:
                break
            await stream.write(data)
    finally:
        stream.close()


async def serve(listener):
    async for stream, _addr in listener:
        treadle.spawn(echo_once(stream))


async def read_exactly(stream, n):
    parts, got = [], 0
    while got < n:
        chunk = await stream.read(n - got)
        if not chunk:
            raise ConnectionError(f"end of stream after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


async def client(i, host, port, messages, size):
    stream = await treadle.TcpStream.connect(host, port)
    async with stream:
        stream.set_nodelay(True)
        if i == 0:
            print(f"connection 0: {stream.local_addr} -> {stream.peer_addr}")
        pattern = os.urandom(size + messages)
        bad = 0
        for m in range(messages):
            msg = memoryview(pattern)[m:m + size]   # a different window each time
            await stream.write(msg)
            back = await read_exactly(stream, size)
            if back != msg:
                bad += 1
        await stream.shutdown()
        tail = await stream.read()
        if tail:
            raise ConnectionError(f"{len(tail)} unexpected bytes after the last echo")
    return bad


async def main(args):
    server = None
    port = args.port
    if port is None:
        listener = await treadle.TcpListener.bind("127.0.0.1", 0)
        _, port = listener.local_addr
        server = treadle.spawn(serve(listener))
        print(f"started an echo server task on 127.0.0.1:{port}")
    t0 = time.perf_counter()
    handles = [treadle.spawn(client(i, args.host, port, args.messages, args.size))
               for i in range(args.conns)]
    bad = failed = 0
    for h in handles:
        try:
            bad += await h
        except OSError as e:
            failed += 1
            print(f"connection failed: {type(e).__name__}: {e}", file=sys.stderr)
    secs = time.perf_counter() - t0
    if server is not None:
        server.abort()
    trips = (args.conns - failed) * args.messages
    print(f"{args.conns} connections x {args.messages} messages of {args.size} bytes: "
          f"{trips} round trips, {2 * trips * args.size} bytes in {secs * 1000:.0f} ms "
          f"({trips / secs:,.0f} round trips/s); {bad} mismatched, {failed} failed")
    return bad == 0 and failed == 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", type=int, nargs="?", default=None,
                    help="echo server port (default: start one in-process)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--flavor", default="multi_thread",
                    choices=("current_thread", "multi_thread"))
    args = ap.parse_args()
    ok = treadle.run(main(args), flavor=args.flavor)
    sys.exit(0 if ok else 1)
