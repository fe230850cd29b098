"""An aiohttp web server, a plain asyncio program (Debian's python3-aiohttp).

    /usr/bin/python3 examples/python/aiohttp_server.py [PORT]       # asyncio's loop
    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/asyncio_on_treadle.py \\
        [--flavor multi_thread --workers 2] examples/python/aiohttp_server.py [PORT]

It listens on 127.0.0.1:PORT (default 8080; 0 picks a free port) and says
"listening on HOST:PORT". Routes:

  GET  /              "Hello, World!" (text/plain)
  GET  /hello/{name}  "Hello, {name}!"
  POST /echo          the request's body back (application/octet-stream)
  GET  /count         "requests N": how many requests it has answered

SIGTERM or SIGINT (loop.add_signal_handler) stops it: it closes the
listener and the open connections, prints "stopped after N requests" and
exits 0. aiohttp_client.py fetches from it.
"""
import asyncio
import signal
import sys

from aiohttp import web

requests = 0


@web.middleware
async def count_requests(request, handler):
    global requests
    requests += 1
    return await handler(request)


async def hello(request):
    return web.Response(text="Hello, World!")


async def hello_name(request):
    return web.Response(text=f"Hello, {request.match_info['name']}!")


async def echo(request):
    return web.Response(body=await request.read(),
                        content_type="application/octet-stream")


async def count(request):
    return web.Response(text=f"requests {requests}")


async def main(port):
    app = web.Application(middlewares=[count_requests])
    app.add_routes([web.get("/", hello), web.get("/hello/{name}", hello_name),
                    web.post("/echo", echo), web.get("/count", count)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    print(f"stopped after {requests} requests", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8080))
