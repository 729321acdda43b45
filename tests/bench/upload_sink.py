#!/usr/bin/python3
"""Upload backend for bench.py's streaming section: reads and discards bodies.

  upload_sink.py --port P

HTTP/1.1 keep-alive server (a thread per connection). For every request it
reads the whole body (Content-Length or chunked) in 1 MiB readinto() calls,
throws it away and answers `200` with the number of body bytes it read as the
response body (`1073741824\\n`), so the client can check that everything
arrived. A request without a body (bench.py's smoke check) gets `0\\n`.

SIGTERM/SIGINT stop it. It also exits by itself when the process that started
it goes away (it polls its parent pid), so a killed bench.py leaves nothing
behind. Standard library only.
"""

import argparse
import os
import signal
import socketserver
import sys
import threading
import time

CHUNK = 1 << 20
MAX_HEAD_LINE = 65536
MAX_HEAD_LINES = 200


class BadRequest(Exception):
    pass


def read_head(rfile):
    """(request line, {lowercase name: value}) or None on a clean EOF."""
    line = rfile.readline(MAX_HEAD_LINE)
    if not line:
        return None
    if not line.endswith(b"\r\n"):
        raise BadRequest("request line too long or truncated")
    request_line = line.decode("latin-1").strip()
    headers = {}
    for _ in range(MAX_HEAD_LINES):
        line = rfile.readline(MAX_HEAD_LINE)
        if not line.endswith(b"\n"):
            raise BadRequest("truncated head")
        if line in (b"\r\n", b"\n"):
            return request_line, headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(f"bad header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    raise BadRequest("too many header lines")


def discard(rfile, view, length):
    """Reads and drops exactly `length` bytes."""
    left = length
    while left:
        n = rfile.readinto(view[:min(left, len(view))])
        if not n:
            raise BadRequest(f"body truncated: {length - left} of {length} bytes")
        left -= n


def discard_chunked(rfile, view):
    """Reads and drops a chunked body; returns its decoded size."""
    total = 0
    while True:
        line = rfile.readline(MAX_HEAD_LINE)
        if not line.endswith(b"\n"):
            raise BadRequest("truncated chunk size")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(f"bad chunk size {line[:40]!r}") from None
        if size == 0:
            while rfile.readline(MAX_HEAD_LINE) not in (b"\r\n", b"\n", b""):
                pass                # trailers
            return total
        discard(rfile, view, size)
        total += size
        if rfile.readline(MAX_HEAD_LINE) not in (b"\r\n", b"\n"):
            raise BadRequest("missing CRLF after chunk")


class Handler(socketserver.StreamRequestHandler):
    # Heads are read through this buffer; a body readinto() larger than it
    # goes straight to recv_into() on the caller's 1 MiB buffer.
    rbufsize = 65536

    def handle(self):
        view = memoryview(bytearray(CHUNK))
        try:
            while True:
                head = read_head(self.rfile)
                if head is None:
                    return
                request_line, headers = head
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    got = discard_chunked(self.rfile, view)
                else:
                    got = int(headers.get("content-length", "0") or "0")
                    discard(self.rfile, view, got)
                body = f"{got}\n".encode()
                close = (headers.get("connection", "").lower() == "close"
                         or request_line.endswith("HTTP/1.0"))
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + (b"Connection: close\r\n" if close else b"")
                    + b"\r\n" + body)
                self.wfile.flush()
                if close:
                    return
        except (BadRequest, ValueError) as exc:
            print(f"upload_sink: {exc}", file=sys.stderr, flush=True)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def watch_parent(parent):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, default=os.getppid(),
                        help="exit when this pid is no longer our parent "
                             "(default: the current parent)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    threading.Thread(target=watch_parent, args=(args.parent,), daemon=True).start()
    with Server(("127.0.0.1", args.port), Handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
