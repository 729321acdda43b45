#!/usr/bin/python3
"""Misbehaving shadow backends for bench.py's shadow section.

  shadow_mirror.py slow   --port P [--delay-ms 500] --stats FILE
      HTTP/1.1 keep-alive server that answers every request with
      `200 ok\\n` after sleeping --delay-ms (asyncio, so the waits overlap).
  shadow_mirror.py silent --port P --stats FILE
      accepts connections and never reads from or writes to them; they are
      held open until the process exits.

On SIGUSR1 the current counters are written to FILE as one JSON object
(atomically, with a `seq` that goes up by one per dump), so bench.py can read
them before and after its measured run. SIGTERM/SIGINT: dump once more and
exit. The server also exits by itself when the process that started it goes
away (it polls its parent pid), so a killed bench.py leaves nothing behind.
Standard library only.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import sys

MAX_HEAD = 65536
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 3\r\n\r\nok\n")


class Stats:
    def __init__(self, path):
        self.path = path
        self.seq = 0
        self.connections = 0        # accepted, in total
        self.open = 0               # open right now
        self.max_open = 0
        self.requests = 0           # request heads received
        self.responses = 0          # responses written

    def opened(self):
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)

    def dump(self):
        self.seq += 1
        data = {k: v for k, v in vars(self).items() if k != "path"}
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.write("\n")
        os.replace(tmp, self.path)


async def read_request(reader):
    """Reads one request (head and Content-Length body). False on EOF/garbage."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return False
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return False
        elif name.strip().lower() == b"transfer-encoding":
            return False            # never sent by the benchmark: give up on it
    if length:
        try:
            await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
    return True


def slow_handler(stats, delay):
    async def handle(reader, writer):
        stats.opened()
        try:
            while await read_request(reader):
                stats.requests += 1
                await asyncio.sleep(delay)
                writer.write(RESPONSE)
                await writer.drain()
                stats.responses += 1
        except ConnectionError:
            pass
        finally:
            stats.open -= 1
            writer.close()
    return handle


def silent_handler(stats, held):
    async def handle(reader, writer):
        stats.opened()
        writer.transport.pause_reading()    # never look at what arrives
        held.append(writer)                 # keeps the connection open until exit
    return handle


async def watch_parent(parent, stop):
    while os.getppid() == parent:
        await asyncio.sleep(1)
    stop.set()


async def serve(args):
    stats = Stats(args.stats)
    held = []
    if args.mode == "slow":
        handler = slow_handler(stats, args.delay_ms / 1000)
    else:
        handler = silent_handler(stats, held)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    server = await asyncio.start_server(handler, sock=sock, backlog=4096,
                                        limit=MAX_HEAD)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, stats.dump)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(watch_parent(args.parent, stop))
    stats.dump()
    await stop.wait()
    watcher.cancel()
    stats.dump()
    server.close()
    for writer in held:
        writer.transport.abort()
    # asyncio.run() cancels the slow handlers still sleeping


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("slow", "silent"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=int, default=500)
    parser.add_argument("--stats", required=True, help="counters file (JSON)")
    parser.add_argument("--parent", type=int, default=os.getppid(),
                        help="exit when this pid is no longer our parent "
                             "(default: the current parent)")
    args = parser.parse_args()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
