"""What the transport tests share: a protocol that records its callbacks,
and a bounded wait for a condition inside a loop."""

import asyncio


class Recorder(asyncio.Protocol):
    """Records every callback, in order; `done` resolves at connection_lost.
    eof_received answers keep_open."""

    def __init__(self, loop, keep_open=False):
        self.calls = []
        self.data = bytearray()
        self.transport = None
        self.keep_open = keep_open
        self.done = loop.create_future()
        self.lost_exc = "unset"
        self.sizes = []  # the write buffer's size at pause and resume

    def connection_made(self, transport):
        self.calls.append("made")
        self.transport = transport

    def data_received(self, data):
        if not self.calls or self.calls[-1] != "data":
            self.calls.append("data")
        self.data += data

    def eof_received(self):
        self.calls.append("eof")
        return self.keep_open

    def pause_writing(self):
        self.calls.append("pause")
        self.sizes.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.calls.append("resume")
        self.sizes.append(self.transport.get_write_buffer_size())

    def connection_lost(self, exc):
        self.calls.append("lost")
        self.lost_exc = exc
        if not self.done.done():
            self.done.set_result(None)


async def until(cond, limit=20000):
    """Waits (1 ms a look, `limit` looks at most) until cond() holds."""
    for _ in range(limit):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")
