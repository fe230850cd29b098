"""The seed's exercises 1 and 5: a TCP echo server, one task per connection,
on either runtime flavor. It is also the server of bench/py_compare.py.

    PYTHONPATH=bindings/python /usr/bin/python3 examples/python/echo_server.py PORT [FLAVOR] [WORKERS]

FLAVOR is current_thread (the default) or multi_thread; WORKERS (default 2)
is the multi_thread runtime's worker count. The server listens on
127.0.0.1:PORT (0 picks a free port; the line "listening on HOST:PORT" says
which) with the stream API: the accept loop spawns one task per connection,
which sets TCP_NODELAY and then reads up to 16 KiB and writes it all back
until the peer closes.

SIGINT (`treadle.ctrl_c()`) or SIGTERM (`treadle.signal(SIGTERM)`) stops it
cleanly: a watcher task aborts the accept loop, the main task returns and
the runtime shuts down, dropping the open connections. It then prints how
many connections it served, how many threads the process had, and which
worker (`treadle.current_worker()`) first ran each connection: multi_thread
spreads them, current_thread runs everything on its one thread.
"""
import signal
import sys

import treadle

BUF = 16384

served = []          # per worker: connections whose task first ran there
accepted = 0
threads = -1         # threads in the process when the server stopped


async def echo(stream):
    served[treadle.current_worker()] += 1
    try:
        stream.set_nodelay(True)
        while True:
            data = await stream.read(BUF)
            if not data:
                break
            await stream.write(data)
    except OSError:
        pass                    # reset by the peer, and the like
    finally:
        stream.close()


async def accept_loop(listener):
    global accepted
    while True:
        try:
            stream, _addr = await listener.accept()
        except (treadle.ClosedError, treadle.ShutdownError):
            return
        except OSError as e:    # EMFILE and the like: say so, then go on
            print(f"accept: {e}", file=sys.stderr)
            await treadle.sleep(0.01)
            continue
        accepted += 1
        treadle.spawn(echo(stream))


async def stop_on(wait, ready, what, server):
    waiter = wait()
    ready.append(what)
    await waiter
    print(f"{what}: stopping", file=sys.stderr)
    server.abort()


async def main(port, flavor, workers):
    global threads
    listener = await treadle.TcpListener.bind("127.0.0.1", port)
    server = treadle.spawn(accept_loop(listener))
    ready = []
    watchers = [
        treadle.spawn(stop_on(treadle.ctrl_c, ready, "SIGINT", server)),
        treadle.spawn(stop_on(lambda: treadle.signal(signal.SIGTERM), ready,
                              "SIGTERM", server)),
    ]
    # Say "listening" only once both watchers are waiting, so that a signal
    # sent as soon as the line appears finds its handler in place.
    for _ in range(1000):
        if len(ready) == len(watchers):
            break
        await treadle.yield_now()
    await treadle.yield_now()
    host, port = listener.local_addr
    how = f"multi_thread, {workers} workers" if flavor == "multi_thread" else flavor
    print(f"listening on {host}:{port} ({how})", flush=True)
    try:
        await server
    except treadle.CancelledError:
        pass
    threads = threads_now()     # before the runtime's threads go away
    for w in watchers:
        w.abort()
    listener.close()


def threads_now():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    port = int(sys.argv[1])
    flavor = sys.argv[2] if len(sys.argv) > 2 else "current_thread"
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    if flavor not in ("current_thread", "multi_thread"):
        raise SystemExit("FLAVOR must be current_thread or multi_thread")
    n = workers if flavor == "multi_thread" else 1
    served = [0] * n
    interrupted = False
    try:
        treadle.run(main(port, flavor, workers), flavor=flavor,
                    workers=workers if flavor == "multi_thread" else None)
    except KeyboardInterrupt:   # a SIGINT that treadle.run took itself
        interrupted = True
    print(f"served {accepted} connections; {threads} thread{'s' if threads != 1 else ''} "
          f"in the process; first run by worker: "
          + " ".join(f"{w}:{c}" for w, c in enumerate(served)), flush=True)
    sys.exit(130 if interrupted else 0)
