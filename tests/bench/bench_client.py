#!/usr/bin/python3
"""Clients for bench.py's memory and streaming sections (run pinned to the load CPU).

  bench_client.py idle --port P --count N [--deadline S]
      Opens N connections to 127.0.0.1:P one after the other and sends one
      complete keep-alive `GET /` (with Host) on each, reading its whole
      response, so that every connection ends up a real idle keep-alive
      connection. Then prints one JSON line ({"opened": ..., "errors": ...})
      and waits for commands on stdin, one per line:
        check   print {"still_open": K}: how many of them the proxy has not closed
        close   close them all and exit (EOF on stdin does the same)
  bench_client.py download --port P --path /big
      GET the path and read the body (Content-Length) in 1 MiB recv_into()s.
  bench_client.py upload --port P --path /upload --size BYTES
      POST a body of BYTES zeros (Content-Length) in 1 MiB sendall()s, then
      read the response, which the upload sink fills with the byte count it
      received.

download and upload print one JSON line: bytes moved, seconds from the
request's first byte to the last byte of the response, the longest wait of a
single recv/send ("stall"), the HTTP status, and an error or null. Exit status
0 when it went through, 1 otherwise. All of them exit by themselves when the
process that started them goes away (they poll the parent pid). Standard
library only.
"""

import argparse
import json
import os
import resource
import select
import socket
import sys
import threading
import time

CHUNK = 1 << 20
IO_TIMEOUT = 30.0               # longest silence of one socket operation
MAX_HEAD = 65536


class HttpError(Exception):
    pass


def emit(obj):
    print(json.dumps(obj), flush=True)


def watch_parent(parent):
    def loop():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(2)
    threading.Thread(target=loop, daemon=True).start()


def read_response_head(sock, buf):
    """Reads until the end of the head. Returns (status, headers, extra body
    bytes already read)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise HttpError("response head too large")
        n = sock.recv_into(buf)
        if not n:
            raise HttpError("connection closed before the response head"
                            + (f" (got {data[:60]!r})" if data else ""))
        data += bytes(buf[:n])
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"bad status line {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, rest


def read_body(sock, buf, headers, rest, stall=None):
    """Reads a Content-Length body, returns (bytes read, the body if it is
    small). `stall`: a one-element list that gets the longest recv wait."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError("chunked response (bench expects Content-Length)")
    if "content-length" not in headers:
        raise HttpError("response without Content-Length")
    length = int(headers["content-length"])
    got = len(rest)
    small = bytearray(rest) if length <= MAX_HEAD else None
    if got > length:
        raise HttpError(f"{got - length} bytes after the response body")
    last = time.monotonic()
    while got < length:
        n = sock.recv_into(buf, min(len(buf), length - got))
        now = time.monotonic()
        if stall is not None and now - last > stall[0]:
            stall[0] = now - last
        last = now
        if not n:
            raise HttpError(f"connection closed after {got} of {length} body bytes")
        if small is not None:
            small += buf[:n]
        got += n
    return got, (bytes(small) if small is not None else None)


def request_head(method, path, port, extra=""):
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"User-Agent: strangler-bench\r\n{extra}\r\n").encode()


# --------------------------------------------------------------------------
# idle


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def still_open(socks):
    """Connections the peer has not closed (no EOF, no error waiting)."""
    alive = 0
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        by_fd[sock.fileno()] = sock
    readable = {fd for fd, _ in poller.poll(0)}
    for fd, sock in by_fd.items():
        if fd not in readable:
            alive += 1
            continue
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                alive += 1      # unexpected data, but still open
        except (BlockingIOError, InterruptedError):
            alive += 1
        except OSError:
            pass
    return alive


def run_idle(args):
    limit = raise_nofile(args.count + 64)
    if limit < args.count + 64:
        emit({"opened": 0, "errors": [f"open-files limit {limit} is below "
                                      f"{args.count + 64}"], "seconds": 0})
        return 1
    deadline = time.monotonic() + args.deadline
    started = time.monotonic()
    buf = memoryview(bytearray(65536))
    req = request_head("GET", "/", args.port)
    socks, errors = [], []
    for i in range(args.count):
        if time.monotonic() > deadline:
            errors.append(f"deadline: {len(socks)} of {args.count} opened "
                          f"in {args.deadline:.0f} s")
            break
        sock = None
        try:
            sock = socket.create_connection(("127.0.0.1", args.port), timeout=5)
            sock.sendall(req)
            status, headers, rest = read_response_head(sock, buf)
            read_body(sock, buf, headers, rest)
            if status != 200:
                raise HttpError(f"status {status}")
            if headers.get("connection", "").lower() == "close":
                raise HttpError("proxy answered Connection: close")
            socks.append(sock)
        except (OSError, HttpError, ValueError) as exc:
            if sock is not None:
                sock.close()
            errors.append(f"connection {i + 1}: {exc}")
            if len(errors) >= 10:
                errors.append("gave up after 10 errors")
                break
    emit({"opened": len(socks), "errors": errors,
          "seconds": round(time.monotonic() - started, 3)})
    for line in sys.stdin:
        command = line.strip()
        if command == "check":
            emit({"still_open": still_open(socks)})
        elif command == "close":
            break
    for sock in socks:
        sock.close()
    return 0 if not errors else 1


# --------------------------------------------------------------------------
# download / upload


def run_download(args):
    result = {"bytes": 0, "seconds": None, "stall_s": 0.0, "status": None, "error": None}
    buf = memoryview(bytearray(CHUNK))
    stall = [0.0]
    try:
        with socket.create_connection(("127.0.0.1", args.port), timeout=IO_TIMEOUT) as sock:
            started = time.monotonic()
            sock.sendall(request_head("GET", args.path, args.port))
            status, headers, rest = read_response_head(sock, buf)
            result["status"] = status
            first = time.monotonic()
            stall[0] = first - started
            got, _ = read_body(sock, buf, headers, rest, stall)
            result["seconds"] = time.monotonic() - started
            result["bytes"] = got
            if status != 200:
                raise HttpError(f"status {status}")
            if args.expect is not None and got != args.expect:
                raise HttpError(f"{got} bytes, expected {args.expect}")
    except (OSError, HttpError, ValueError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
    result["stall_s"] = stall[0]
    emit(result)
    return 0 if result["error"] is None else 1


def run_upload(args):
    result = {"bytes": 0, "seconds": None, "stall_s": 0.0, "status": None, "error": None}
    zeros = bytes(CHUNK)
    view = memoryview(zeros)
    buf = memoryview(bytearray(65536))
    sent = 0
    stall = 0.0
    try:
        with socket.create_connection(("127.0.0.1", args.port), timeout=IO_TIMEOUT) as sock:
            started = time.monotonic()
            sock.sendall(request_head("POST", args.path, args.port,
                                      f"Content-Type: application/octet-stream\r\n"
                                      f"Content-Length: {args.size}\r\n"))
            try:
                while sent < args.size:
                    n = min(CHUNK, args.size - sent)
                    before = time.monotonic()
                    sock.sendall(view[:n])
                    stall = max(stall, time.monotonic() - before)
                    sent += n
            except OSError as exc:
                # The proxy may have answered (413, 502...) and closed: say what.
                early = None
                try:
                    sock.settimeout(1)
                    early, _, _ = read_response_head(sock, buf)
                except (OSError, HttpError, ValueError):
                    pass
                if early is not None:
                    result["status"] = early
                    raise HttpError(f"status {early} after {sent} bytes sent") from None
                raise HttpError(f"send failed after {sent} bytes: {exc}") from None
            before = time.monotonic()
            status, headers, rest = read_response_head(sock, buf)
            stall = max(stall, time.monotonic() - before)
            result["status"] = status
            _, body = read_body(sock, buf, headers, rest)
            result["seconds"] = time.monotonic() - started
            result["bytes"] = sent
            if status != 200:
                raise HttpError(f"status {status}")
            received = int((body or b"").strip() or -1)
            if received != args.size:
                raise HttpError(f"the sink read {received} bytes of {args.size}")
    except (OSError, HttpError, ValueError) as exc:
        result["bytes"] = sent
        result["error"] = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
    result["stall_s"] = stall
    emit(result)
    return 0 if result["error"] is None else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    idle = sub.add_parser("idle")
    idle.add_argument("--port", type=int, required=True)
    idle.add_argument("--count", type=int, required=True)
    idle.add_argument("--deadline", type=float, default=30.0,
                      help="stop opening connections after this many seconds")
    down = sub.add_parser("download")
    down.add_argument("--port", type=int, required=True)
    down.add_argument("--path", required=True)
    down.add_argument("--expect", type=int, help="body size to expect")
    up = sub.add_parser("upload")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--path", required=True)
    up.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    watch_parent(os.getppid())
    return {"idle": run_idle, "download": run_download, "upload": run_upload}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
