"""A UDP echo client (loop.create_datagram_endpoint), a plain asyncio program.

    /usr/bin/python3 examples/python/udp_echo_client.py PORT MESSAGE...
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        examples/python/udp_echo_client.py PORT MESSAGE...

It connects a datagram endpoint to 127.0.0.1:PORT, sends each MESSAGE as
one datagram and prints the answer ("echo: MESSAGE"), waiting up to 5 s
for each (a datagram may be lost: then it says "no answer" and exits 1).
"""
import asyncio
import sys


class Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.answers = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.answers.put_nowait(data)

    def error_received(self, exc):
        print(f"error: {exc}", flush=True)


async def main(port, messages):
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        Client, remote_addr=("127.0.0.1", port))
    try:
        for m in messages:
            transport.sendto(m.encode())
            try:
                answer = await asyncio.wait_for(client.answers.get(), 5)
            except asyncio.TimeoutError:
                print(f"no answer to {m!r}", flush=True)
                return 1
            print(f"echo: {answer.decode()}", flush=True)
    finally:
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]), sys.argv[2:])))
