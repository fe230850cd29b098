"""A chat server on asyncio streams (asyncio.start_server), a plain asyncio
program; chat_client.py talks to it.

    /usr/bin/python3 examples/python/chat_server.py [PORT]      # asyncio's loop
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        [--flavor multi_thread --workers 2] examples/python/chat_server.py [PORT]

It listens on 127.0.0.1:PORT (default 7000; 0 picks a free port) and says
"listening on HOST:PORT". A client's first line is its name; the server
answers "* welcome NAME, N online" and tells the others "* NAME joined".
Each further line goes to every other client as "NAME: line"; when the
client closes (or half-closes) its side, the others get "* NAME left" and
the server closes the connection. SIGTERM or SIGINT stops it: it prints
"stopped after N messages" and exits 0.
"""
import asyncio
import signal
import sys

clients = {}   # writer -> name
messages = 0


def broadcast(line, sender=None):
    for w in clients:
        if w is not sender:
            w.write(line.encode() + b"\n")


async def chat(reader, writer):
    global messages
    try:
        name = (await reader.readline()).decode(errors="replace").strip()
        if not name:
            return
        clients[writer] = name
        writer.write(f"* welcome {name}, {len(clients)} online\n".encode())
        broadcast(f"* {name} joined", writer)
        while line := await reader.readline():
            messages += 1
            broadcast(f"{name}: {line.decode(errors='replace').rstrip()}", writer)
        del clients[writer]
        broadcast(f"* {name} left")
    except ConnectionError:
        clients.pop(writer, None)
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(chat, "127.0.0.1", port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    for w in list(clients):
        w.close()
    print(f"stopped after {messages} messages", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7000))
