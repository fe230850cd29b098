"""A UDP echo server (loop.create_datagram_endpoint), a plain asyncio program.

    /usr/bin/python3 examples/python/udp_echo_server.py [PORT]      # asyncio's loop
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        [--flavor multi_thread --workers 2] examples/python/udp_echo_server.py [PORT]

It binds 127.0.0.1:PORT (default 9000; 0 picks a free port), says
"listening on HOST:PORT" and sends every datagram back to its sender.
SIGTERM or SIGINT stops it: it prints "stopped after N datagrams" and
exits 0. udp_echo_client.py talks to it.
"""
import asyncio
import signal
import sys


class Echo(asyncio.DatagramProtocol):
    def __init__(self):
        self.count = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.count += 1
        self.transport.sendto(data, addr)


async def main(port):
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(
        Echo, local_addr=("127.0.0.1", port))
    host, port = transport.get_extra_info("sockname")[:2]
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    transport.close()
    print(f"stopped after {echo.count} datagrams", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9000))
