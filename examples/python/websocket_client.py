"""A WebSocket client with Debian's python3-websockets, a plain asyncio program.

    /usr/bin/python3 examples/python/websocket_client.py PORT MESSAGE...
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        examples/python/websocket_client.py PORT MESSAGE...

It connects to ws://127.0.0.1:PORT (websocket_server.py), sends each
MESSAGE and prints what comes back ("got: MESSAGE"), waiting up to 5 s for
each (then it says "no answer" and exits 1), and closes the connection.
"""
import asyncio
import sys

import websockets


async def main(port, messages):
    async with websockets.connect(f"ws://127.0.0.1:{port}") as conn:
        for m in messages:
            await conn.send(m)
            try:
                answer = await asyncio.wait_for(conn.recv(), 5)
            except asyncio.TimeoutError:
                print(f"no answer to {m!r}", flush=True)
                return 1
            print(f"got: {answer}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]), sys.argv[2:])))
