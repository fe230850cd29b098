"""A client of chat_server.py, a plain asyncio program: lines typed on stdin
go to the chat, lines from the chat go to stdout.

    /usr/bin/python3 examples/python/chat_client.py PORT NAME
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        examples/python/chat_client.py PORT NAME

It connects to 127.0.0.1:PORT (asyncio.open_connection), sends NAME, and
reads stdin through the loop (connect_read_pipe: a pipe transport). At the
end of stdin it half-closes the connection and prints what the server still
sends until the server closes; then it exits 0.
"""
import asyncio
import sys


async def forward_stdin(writer):
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        writer.write(line)
        await writer.drain()
    writer.write_eof()


async def main(port, name):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(name.encode() + b"\n")
    sending = asyncio.create_task(forward_stdin(writer))
    while line := await reader.readline():
        print(line.decode(errors="replace").rstrip(), flush=True)
    await sending
    writer.close()
    await writer.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
