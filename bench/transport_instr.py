"""A fixed amount of stream-transport work on one event loop, for
instruction counts (callgrind) and system call counts (strace -c), which
the noisy host does not blur as it blurs requests per second:

    /usr/bin/python3 bench/transport_instr.py LOOP [CONNS] [ROUNDS] [SIZE]

LOOP: treadle (the C stream transport), treadle-selector (treadle's loop
with asyncio's _SelectorSocketTransport, as before issue 15 item 2),
uvloop, asyncio. CONNS connections (default 100) each make ROUNDS
(default 200) round trips of SIZE bytes (default 64) between an echo
Protocol server and a Protocol client on the same loop, so both ends'
transports are counted. Prints the round trips made. Example:

    ../shared/bench/tools/instructions.sh /usr/bin/python3 bench/transport_instr.py treadle
"""
import asyncio
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Pinger(asyncio.Protocol):
    def __init__(self, rounds, size, done):
        self.left, self.size, self.done = rounds, size, done
        self.got = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"x" * self.size)

    def data_received(self, data):
        self.got += len(data)
        if self.got < self.size:
            return
        self.got = 0
        self.left -= 1
        if self.left:
            self.transport.write(b"x" * self.size)
        else:
            self.transport.close()
            self.done.set_result(None)


async def main(conns, rounds, size):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=conns)
    port = server.sockets[0].getsockname()[1]
    dones = []
    for _ in range(conns):
        done = loop.create_future()
        await loop.create_connection(lambda d=done: Pinger(rounds, size, d), "127.0.0.1", port)
        dones.append(done)
    await asyncio.gather(*dones)
    server.close()
    await server.wait_closed()
    return conns * rounds


def new_loop(kind):
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if kind == "asyncio":
        return asyncio.new_event_loop()
    import treadle
    if kind == "treadle-selector":
        from asyncio import selector_events
        from treadle import _loop
        _loop.EventLoop._make_socket_transport = (
            selector_events.BaseSelectorEventLoop._make_socket_transport)
    elif kind != "treadle":
        raise SystemExit(__doc__)
    return treadle.new_event_loop()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    args = [int(a) for a in sys.argv[2:5]]
    conns, rounds, size = args + [100, 200, 64][len(args):]
    with asyncio.Runner(loop_factory=lambda: new_loop(sys.argv[1])) as runner:
        print(runner.run(main(conns, rounds, size)))
