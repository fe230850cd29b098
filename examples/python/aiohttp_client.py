"""An aiohttp client, a plain asyncio program: fetches from aiohttp_server.py.

    /usr/bin/python3 examples/python/aiohttp_client.py http://127.0.0.1:PORT
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        examples/python/aiohttp_client.py http://127.0.0.1:PORT

Over one ClientSession (a keep-alive connection pool) it sends GET /,
GET /hello/treadle, POST /echo with 100,000 bytes, then ten GET / at once
(asyncio.gather), and prints one line per step: the status and the body
(or, for /echo, whether every byte came back).
"""
import asyncio
import sys

import aiohttp


async def main(base):
    async with aiohttp.ClientSession(base) as session:
        for path in ("/", "/hello/treadle"):
            async with session.get(path) as r:
                print(f"GET {path}: {r.status} {await r.text()}")
        body = bytes(range(256)) * 390 + bytes(160)  # 100,000 bytes
        async with session.post("/echo", data=body) as r:
            back = await r.read()
            print(f"POST /echo: {r.status} {len(back)} bytes, "
                  f"{'same' if back == body else 'DIFFERENT'}")

        async def get_hello():
            async with session.get("/") as r:
                return r.status, await r.text()
        answers = await asyncio.gather(*(get_hello() for _ in range(10)))
        print(f"10 concurrent GET /: {sum(a == (200, 'Hello, World!') for a in answers)} ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
