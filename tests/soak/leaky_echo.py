"""The soak's own check (scripts/soak.sh --servers leaky must FAIL): an
asyncio echo server with three planted bugs. It never closes a connection
the peer reset (an fd leak), keeps 64 KiB per connection forever (a memory
leak) and flips a bit of the first byte it echoes on every 500th
connection. Otherwise it behaves: echoes, exits 0 on SIGTERM.

    /usr/bin/python3 tests/soak/leaky_echo.py PORT
"""
import asyncio
import os
import signal
import sys

kept = []   # the planted memory leak: a buffer per connection


async def echo(reader, writer):
    kept.append(bytearray(65536))
    flip = len(kept) % 500 == 0
    # A second fd for the socket, closed only when the peer closes cleanly
    # (asyncio closes its own on a reset, so the leak needs one of ours).
    fd = os.dup(writer.get_extra_info("socket").fileno())
    try:
        while data := await reader.read(16384):
            if flip:             # bug: a wrong byte
                data, flip = bytes([data[0] ^ 1]) + data[1:], False
            writer.write(data)
            await writer.drain()
        writer.close()
        os.close(fd)
    except ConnectionError:
        pass                     # bug: fd stays open


async def main(port):
    server = await asyncio.start_server(echo, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("listening on %s:%d" % server.sockets[0].getsockname()[:2], flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
