"""A WebSocket server with Debian's python3-websockets, a plain asyncio program.

    /usr/bin/python3 examples/python/websocket_server.py [PORT]     # asyncio's loop
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        [--flavor multi_thread --workers 2] examples/python/websocket_server.py [PORT]

It listens on ws://127.0.0.1:PORT (default 8765; 0 picks a free port),
says "listening on HOST:PORT", and sends every message of every client
back to all the clients connected (a broadcast: each client sees the
others' messages). SIGTERM or SIGINT stops it: it closes the connections
(code 1001, "going away"), prints "stopped after N messages" and exits 0.
websocket_client.py talks to it.
"""
import asyncio
import signal
import sys

import websockets


async def main(port):
    clients = set()
    count = 0

    async def session(conn):
        nonlocal count
        clients.add(conn)
        try:
            async for message in conn:
                count += 1
                websockets.broadcast(clients, message)
        finally:
            clients.discard(conn)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with websockets.serve(session, "127.0.0.1", port) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        await stop.wait()
    print(f"stopped after {count} messages", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
