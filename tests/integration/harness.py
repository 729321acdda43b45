"""Integration harness for strangler: scriptable backends, a proxy runner and a
raw HTTP/1.1 client, all on 127.0.0.1 with ephemeral ports and bounded timeouts.

Standard library only. The backend is a plain threaded socket server (not
http.server) so that tests control every byte it sends and see every byte it
receives."""

import hashlib
import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

IO_TIMEOUT = 5.0  # every socket read/write in the harness is bounded by this
HOST = "127.0.0.1"

SRC_DIR = os.environ.get(
    "STRANGLER_SRC",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
# absolute: some tests run it from another directory
BINARY = os.path.abspath(os.environ.get("STRANGLER",
                                        os.path.join(SRC_DIR, "build", "proxy", "strangler")))


def sanitized():
    """Whether BINARY is built with AddressSanitizer (whose redzones and
    quarantine make memory figures meaningless)."""
    with open(BINARY, "rb") as f:
        return b"__asan_init" in f.read()


class Timeout(AssertionError):
    pass


def wait_for(pred, timeout=3.0, interval=0.01, what="condition"):
    """Polls pred() until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Timeout("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def accepts(port):
    """Whether something accepts connections on HOST:port."""
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def free_port():
    """A port that was free a moment ago (the proxy start retries on conflict)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def refused_port():
    """A port nobody listens on (connect is refused)."""
    return free_port()


# --------------------------------------------------------------------------
# Header helpers


def hget(headers, name, default=None):
    """First value of header `name` (case-insensitive) in a [(name, value)] list."""
    n = name.lower()
    for k, v in headers:
        if k.lower() == n:
            return v
    return default


def hall(headers, name):
    n = name.lower()
    return [v for k, v in headers if k.lower() == n]


def parse_head(head):
    """bytes of a head without the final CRLFCRLF → (start line, [(name, value)])."""
    lines = head.split(b"\r\n")
    start = lines[0].decode("latin-1")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return start, headers


# --------------------------------------------------------------------------
# Byte stream reader shared by the backend and the client


class Closed(Exception):
    """The peer closed the connection before the expected bytes arrived."""

    def __init__(self, msg, partial=b""):
        super().__init__(msg)
        self.partial = partial


class Stream:
    def __init__(self, sock, timeout=IO_TIMEOUT):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.eof = False

    def _fill(self, n=262144):
        if self.eof:
            return False
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, delim, limit=1 << 20):
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            start = max(0, len(self.buf) - len(delim) + 1)
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (delim, limit))
            if not self._fill():
                raise Closed("EOF before %r" % delim, bytes(self.buf))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill(max(65536, min(n - len(self.buf), 1 << 20))):
                raise Closed("EOF after %d of %d bytes" % (len(self.buf), n), bytes(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_some(self):
        if self.buf:
            out = bytes(self.buf)
            self.buf.clear()
            return out
        if not self._fill():
            return b""
        return self.read_some()

    def consume(self, n, sink, pause_every=0, pause=0.0):
        """Reads n bytes into sink(bytes) without keeping them."""
        left = n
        since = 0
        while left > 0:
            if not self.buf and not self._fill(min(left, 1 << 20)):
                raise Closed("EOF with %d of %d bytes left" % (left, n))
            take = min(left, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            left -= take
            since += take
            if pause_every and since >= pause_every:
                since = 0
                time.sleep(pause)

    def read_to_eof(self):
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def read_chunked(stream, sink=None):
    """Reads a chunked body; returns (body, chunk sizes, trailers)."""
    body = bytearray()
    sizes = []
    while True:
        line = stream.read_until(b"\r\n")[:-2]
        size = int(line.split(b";")[0].strip(), 16)
        sizes.append(size)
        if size == 0:
            break
        data = stream.read_exact(size)
        if sink:
            sink(data)
        else:
            body += data
        if stream.read_exact(2) != b"\r\n":
            raise AssertionError("chunk not followed by CRLF")
    trailers = []
    while True:
        line = stream.read_until(b"\r\n")
        if line == b"\r\n":
            break
        trailers.append(line[:-2])
    return bytes(body), sizes, trailers


# --------------------------------------------------------------------------
# Scriptable backend


class Recorded:
    """A request as a backend received it."""

    def __init__(self, method, target, version, headers, conn_id, seq):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # [(name, value)] in wire order and case
        self.conn_id = conn_id  # which backend connection carried it
        self.seq = seq          # position on that connection (0, 1, ...)
        self.body = b""
        self.body_len = 0
        self.body_sha256 = hashlib.sha256(b"").hexdigest()
        self.chunked = False
        self.chunk_sizes = []

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def query(self):
        return self.target.split("?", 1)[1] if "?" in self.target else None

    def header(self, name, default=None):
        return hget(self.headers, name, default)

    def header_all(self, name):
        return hall(self.headers, name)

    def __repr__(self):
        return "<Recorded %s %s conn=%d seq=%d>" % (self.method, self.target, self.conn_id, self.seq)


class Response:
    """What a handler asks the backend to send. body may be bytes; chunks (a list
    of bytes) selects chunked framing; length=False sends no Content-Length
    (close-delimited). Extra headers are sent verbatim, in order."""

    def __init__(self, status=200, body=b"", headers=(), reason=None, chunks=None,
                 length=True, close=False, send_body=True):
        self.status = status
        self.reason = reason or {100: "Continue", 101: "Switching Protocols", 200: "OK",
                                 204: "No Content", 304: "Not Modified", 404: "Not Found",
                                 500: "Internal Server Error"}.get(status, "Whatever")
        self.body = body if isinstance(body, bytes) else body.encode()
        self.headers = list(headers)
        self.chunks = chunks
        self.length = length
        self.close = close
        self.send_body = send_body

    def serialize(self):
        out = ["HTTP/1.1 %d %s\r\n" % (self.status, self.reason)]
        for k, v in self.headers:
            out.append("%s: %s\r\n" % (k, v))
        if self.chunks is not None:
            out.append("Transfer-Encoding: chunked\r\n")
        elif self.length and self.status not in (204, 304) and self.status >= 200:
            out.append("Content-Length: %d\r\n" % len(self.body))
        if self.close:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        data = "".join(out).encode("latin-1")
        if not self.send_body:
            return data
        if self.chunks is not None:
            for c in self.chunks:
                if c:
                    data += b"%x\r\n%s\r\n" % (len(c), c)
            data += b"0\r\n\r\n"
        else:
            data += self.body
        return data


class BackendConn:
    """One accepted connection, handed to handlers that write raw bytes."""

    def __init__(self, backend, sock, conn_id):
        self.backend = backend
        self.sock = sock
        self.id = conn_id
        self.stream = Stream(sock, backend.io_timeout)
        self.closed = False

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


KEEP = object()  # handler return value: response already written, keep the connection
CLOSE = object()  # handler return value: close the connection now


class Backend:
    """A threaded HTTP/1.1 backend on 127.0.0.1:<ephemeral>.

    handler(req, conn) is called once the request (head and body) is read. It
    returns a Response, KEEP (it wrote the answer itself) or CLOSE. The default
    answers 200 with a JSON echo and `X-Backend: <name>`."""

    def __init__(self, name, handler=None, io_timeout=10.0, unix_path=None, bind=None):
        """bind: (address, port) to listen on instead (another of 127.0.0.0/8)."""
        self.name = name
        self.handler = handler or echo
        self.io_timeout = io_timeout
        self.requests = []
        self.connections = 0
        self.auto_continue = True  # answer Expect: 100-continue before reading the body
        self.store_body = True     # keep body bytes (else only length and sha256)
        self.pause_every = 0       # slow body reader: sleep `pause` every N bytes
        self.pause = 0.0
        self.read_bodies = True    # False: the handler answers from the head alone
        self.errors = []
        self._cond = threading.Condition()
        self._conns = []
        self._threads = []
        self._stopping = False
        if unix_path:  # a unix socket: http://unix:/path
            self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.lsock.bind(unix_path)
            self.lsock.listen(128)
            self.port = None
            self.url = "http://unix:%s" % unix_path
        else:
            self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.lsock.bind(bind or (HOST, 0))
            self.lsock.listen(128)
            self.port = self.lsock.getsockname()[1]
            self.url = "http://%s:%d" % (bind[0] if bind else HOST, self.port)
        t = threading.Thread(target=self._accept_loop, name="backend-%s" % name, daemon=True)
        t.start()
        self._threads.append(t)

    # -- observation

    def wait_requests(self, n, timeout=5.0):
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.requests) >= n, timeout)
        if not ok:
            raise Timeout("backend %s got %d requests, expected %d" % (self.name, len(self.requests), n))
        return self.requests[:n]

    @property
    def last(self):
        self.wait_requests(1)
        return self.requests[-1]

    def connection_ids(self):
        return sorted({r.conn_id for r in self.requests})

    # -- server

    def _accept_loop(self):
        while not self._stopping:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            with self._cond:
                if self._stopping:
                    sock.close()
                    return
                conn_id = self.connections
                self.connections += 1
                conn = BackendConn(self, sock, conn_id)
                self._conns.append(conn)
                self._cond.notify_all()
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read_body(self, req, conn, sink):
        te = req.header("Transfer-Encoding")
        if te is not None and te.lower().endswith("chunked"):
            req.chunked = True
            _, req.chunk_sizes, _ = read_chunked(conn.stream, sink)
            req.chunk_sizes = req.chunk_sizes[:-1]
            return
        cl = req.header("Content-Length")
        if cl is not None:
            conn.stream.consume(int(cl), sink, self.pause_every, self.pause)

    def _serve(self, conn):
        seq = 0
        try:
            while not self._stopping:
                try:
                    head = conn.stream.read_until(b"\r\n\r\n")
                except Closed:
                    return
                start, headers = parse_head(head[:-4])
                parts = start.split(" ")
                if len(parts) != 3:
                    self.errors.append("bad request line %r" % start)
                    return
                req = Recorded(parts[0], parts[1], parts[2], headers, conn.id, seq)
                seq += 1
                if self.auto_continue and (req.header("Expect") or "").lower() == "100-continue":
                    conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                h = hashlib.sha256()
                body = bytearray()

                def sink(data):
                    h.update(data)
                    req.body_len += len(data)
                    if self.store_body:
                        body.extend(data)

                if self.read_bodies:
                    self._read_body(req, conn, sink)
                req.body = bytes(body)
                req.body_sha256 = h.hexdigest()
                with self._cond:
                    self.requests.append(req)
                    self._cond.notify_all()
                out = self.handler(req, conn)
                if out is CLOSE:
                    return
                if isinstance(out, Response):
                    conn.send(out.serialize())
                    if out.close:
                        return
                if conn.closed or (req.header("Connection") or "").lower() == "close":
                    return
        except (OSError, Closed) as e:
            if not self._stopping:
                self.errors.append("%s: %r" % (type(e).__name__, e))
        finally:
            conn.close()

    def stop(self):
        self._stopping = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        try:
            self.lsock.close()
        except OSError:
            pass
        with self._cond:
            conns = list(self._conns)
        for c in conns:
            c.close()
        for t in self._threads:
            t.join(timeout=2)


# -- handlers


def echo_payload(name, req):
    return {
        "backend": name,
        "method": req.method,
        "target": req.target,
        "path": req.path,
        "query": req.query,
        "headers": req.headers,
        "body_len": req.body_len,
        "conn": req.conn_id,
    }


def echo(req, conn):
    body = json.dumps(echo_payload(conn.backend.name, req)).encode()
    return Response(200, body, headers=[("Content-Type", "application/json"),
                                        ("X-Backend", conn.backend.name)],
                    send_body=req.method != "HEAD")


def raw(data, close=True):
    """Answers with exactly these bytes, then closes (or keeps) the connection."""
    def handler(req, conn):
        conn.send(data)
        return CLOSE if close else KEEP
    return handler


def delayed(seconds, inner=None):
    def handler(req, conn):
        time.sleep(seconds)
        return (inner or echo)(req, conn)
    return handler


def close_without_answer(req, conn):
    return CLOSE


def upgrade_echo(greeting=b""):
    """101 Switching Protocols, then echoes every byte back until EOF."""
    def handler(req, conn):
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n"
                  % (req.header("Upgrade") or "websocket").encode())
        if greeting:
            conn.send(greeting)
        while True:
            data = conn.stream.read_some()
            if not data:
                return CLOSE
            conn.send(data)
    return handler


def stream_body(total, block):
    """200 with Content-Length total, sent as repeated `block`s."""
    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n"
                  % (total, conn.backend.name.encode()))
        left = total
        while left > 0:
            piece = block[:left]
            conn.send(piece)
            left -= len(piece)
        return KEEP
    return handler


def by_path(table, default=None):
    """Dispatches on the request path prefix: {"/slow": handler, ...}."""
    def handler(req, conn):
        for prefix, h in table.items():
            if req.path.startswith(prefix):
                return h(req, conn)
        return (default or echo)(req, conn)
    return handler


# --------------------------------------------------------------------------
# libconfig text


def cfg_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if ("." in r or "e" in r) else r + ".0"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + " ".join("%s = %s;" % (k, cfg_value(x)) for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        if v and any(isinstance(x, dict) for x in v):  # a list: groups, strings between
            return "(\n    " + ",\n    ".join(cfg_value(x) for x in v) + "\n  )"
        return "[ " + ", ".join(cfg_value(x) for x in v) + " ]"
    raise TypeError("no libconfig form for %r" % (v,))


def make_config(port, backends, default_backend=None, routes=(), workers=1, access_log=None,
                **extra):
    """backends: {name: Backend | url string | dict of backend settings};
    listen_settings: more settings of the listen group ({"proxy_protocol": True})."""
    bdefs = {}
    for name, b in backends.items():
        if isinstance(b, Backend):
            bdefs[name] = {"url": b.url}
        elif isinstance(b, str):
            bdefs[name] = {"url": b}
        else:
            bdefs[name] = dict(b)
            if isinstance(bdefs[name].get("url"), Backend):
                bdefs[name]["url"] = bdefs[name]["url"].url
    lines = [
        "# written by tests/integration/harness.py",
        'listen = ( { address = "%s:%d";%s } );' % (
            HOST, port, "".join(" %s = %s;" % (k, cfg_value(v))
                                for k, v in extra.pop("listen_settings", {}).items())),
        "workers = %d;" % workers,
        'log_level = "%s";' % extra.pop("log_level", "info"),
        "drain_timeout_ms = %d;" % extra.pop("drain_timeout_ms", 3000),
    ]
    if access_log:
        lines.append("access_log = %s;" % cfg_value(access_log))
    lines.append("backends = {")
    for name, d in bdefs.items():
        lines.append("  %s = %s;" % (name, cfg_value(d)))
    lines.append("};")
    lines.append("default_backend = %s;" % cfg_value(default_backend or next(iter(bdefs))))
    if routes:
        lines.append("routes = %s;" % cfg_value(list(routes)))
    for k, v in extra.items():
        lines.append("%s = %s;" % (k, cfg_value(v)))
    return "\n".join(lines) + "\n"


class HTTPSBackend(Backend):
    """Backend (the same handlers and records) over TLS with cert, a
    (certificate file, key file) pair."""

    def __init__(self, name, cert, handler=None, **kw):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        super().__init__(name, handler, **kw)
        self.url = "https://%s:%d" % (HOST, self.port)

    def _serve(self, conn):
        try:
            conn.sock.settimeout(self.io_timeout)
            conn.sock = self.ctx.wrap_socket(conn.sock, server_side=True)
            conn.stream = Stream(conn.sock, self.io_timeout)
        except (OSError, ssl.SSLError) as e:
            self.errors.append("handshake: %r" % e)
            conn.sock.close()
            return
        super()._serve(conn)


class TLSBackend:
    """An https backend answering 200 with its name; with client_ca it asks
    for a client certificate signed by that authority (mutual TLS)."""

    def __init__(self, name, cert, client_ca=None):
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = ("%s %s" % (name, self.headers.get("X-Forwarded-Proto"))).encode()
                # answered keep-alive (no Connection: close), then closed; the
                # answer is corked so that it leaves with the FIN
                self.close_connection = self.path.endswith("/close")
                if self.close_connection:
                    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Backend", name)
                self.send_header("X-Peer-Port", str(self.client_address[1]))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.do_GET()

            def log_message(self, *a):
                pass

        self.sni = []  # the server name each handshake asked for (None: no SNI)
        self.server = http.server.ThreadingHTTPServer((HOST, 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        ctx.sni_callback = lambda sock, server_name, c: self.sni.append(server_name)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# Proxy process


class Proxy:
    """A strangler process on a config made by make_config. With admin (a
    dict of admin settings, address defaulting to a free port) it waits for
    the admin listener too, and admin() calls the API."""

    def __init__(self, tmp_path, backends, default_backend=None, routes=(), workers=1, **extra):
        self.dir = tmp_path
        self.conf_path = os.path.join(str(tmp_path), "strangler.conf")
        self.access_log_path = os.path.join(str(tmp_path), "access.log")
        self.stderr_path = os.path.join(str(tmp_path), "strangler.stderr")
        self.proc = None
        self.port = None
        self.admin_port = None
        if extra.get("admin") is not None:
            admin = dict(extra["admin"])
            admin.setdefault("address", "%s:%d" % (HOST, free_port()))
            extra["admin"] = admin
            self.admin_port = int(admin["address"].rsplit(":", 1)[1])
        self._args = (backends, default_backend, routes, workers, extra)
        self._start()
        if self.admin_port:
            wait_for(lambda: "admin API on" in self.stderr_text(), what="admin listener")

    def admin(self, method, path, body=None, token=None):
        """(status, JSON body decoded, or text) of an admin API call; a body
        that is not bytes or str is sent as JSON."""
        import http.client
        c = http.client.HTTPConnection(HOST, self.admin_port, timeout=IO_TIMEOUT)
        headers = {"Authorization": "Bearer " + token} if token else {}
        if body is not None:
            body = json.dumps(body) if not isinstance(body, (bytes, str)) else body
            headers["Content-Type"] = "application/json"
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
        finally:
            c.close()
        if r.getheader("Content-Type", "").startswith("application/json"):
            return r.status, json.loads(data)
        return r.status, data.decode()

    def _start(self):
        backends, default_backend, routes, workers, extra = self._args
        last = ""
        for _attempt in range(5):
            self.port = free_port()
            with open(self.conf_path, "w") as f:
                f.write(make_config(self.port, backends, default_backend, routes, workers,
                                    self.access_log_path, **dict(extra)))
            self._stderr = open(self.stderr_path, "ab")
            self.proc = subprocess.Popen([BINARY, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                         stdout=self._stderr, stderr=self._stderr)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    socket.create_connection((HOST, self.port), timeout=0.5).close()
                    return
                except OSError:
                    time.sleep(0.01)
            if self.proc.poll() is None:
                self._kill()
                raise AssertionError("proxy did not accept on port %d within 5s:\n%s"
                                     % (self.port, self.stderr_text()))
            last = self.stderr_text()
            self._stderr.close()
            if "in use" not in last:  # a real start failure, not a port race
                break
        raise AssertionError("proxy failed to start (exit %s):\n%s" % (self.proc.returncode, last))

    @property
    def pid(self):
        return self.proc.pid

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def access_lines(self):
        try:
            with open(self.access_log_path, "rb") as f:
                data = f.read().decode()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def wait_access(self, n, timeout=3.0):
        """The first n access-log entries (waits until they are written)."""
        return wait_for(lambda: (lambda e: e[:n] if len(e) >= n else None)(self.access_lines()),
                        timeout, what="%d access log lines" % n)

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def client(self, timeout=IO_TIMEOUT, source=None):
        return RawClient(self.port, timeout, source)

    def http(self, timeout=IO_TIMEOUT):
        import http.client
        return http.client.HTTPConnection(HOST, self.port, timeout=timeout)

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self, timeout=5.0):
        """SIGTERM, wait; returns the exit code (kills and fails after timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise AssertionError("proxy did not exit within %.0fs of SIGTERM:\n%s"
                                     % (timeout, self.stderr_text()[-3000:]))
        self._stderr.close()
        return self.proc.returncode


def reload_and_wait(p, n):
    """Sends SIGHUP and waits until the proxy logged its n-th reload outcome."""
    os.kill(p.pid, signal.SIGHUP)
    wait_for(lambda: p.stderr_text().count("reload: ") >= n and
             ("routes" in p.stderr_text().split("reload: ")[-1] or
              "keeping the running configuration" in p.stderr_text()),
             what="reload %d logged" % n)
    time.sleep(0.05)  # the workers apply it from their own loops


def open_fds(pid):
    """The descriptor numbers a process has open."""
    return [int(f) for f in os.listdir("/proc/%d/fd" % pid)]


def limit_fds(pid, n=None):
    """Sets a process's soft open-files limit (None: back to its hard limit)."""
    if n is None:
        hard = subprocess.run(["prlimit", "--pid", str(pid), "--nofile", "-o", "HARD",
                               "--noheadings"], capture_output=True, text=True, check=True)
        n = hard.stdout.split()[0]
    subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%s:" % n], check=True)


def exhaust_fds(proxy):
    """Leaves the proxy without a free descriptor: its soft limit goes just
    above the highest one in use, and client connections take the free
    numbers below it. Returns those connections (closing them, and
    limit_fds(pid), gives the descriptors back)."""
    limit_fds(proxy.pid, max(open_fds(proxy.pid)) + 1)
    fillers = []
    while len(fillers) < 64:
        n = len(open_fds(proxy.pid))
        fillers.append(socket.create_connection((HOST, proxy.port), timeout=5))
        time.sleep(0.05)
        if len(open_fds(proxy.pid)) == n:
            break
    return fillers


# --------------------------------------------------------------------------
# Raw client


class HTTPResponse:
    def __init__(self, version, status, reason, headers, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw_head = raw_head
        self.body = b""
        self.chunk_sizes = None  # list of chunk sizes when chunked (final 0 included)
        self.framing = None      # "length", "chunked", "close" or "none"
        self.raw = raw_head

    def header(self, name, default=None):
        return hget(self.headers, name, default)

    def header_all(self, name):
        return hall(self.headers, name)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<HTTPResponse %d %r %r>" % (self.status, self.headers, self.body[:200])


class RawClient:
    def __init__(self, port, timeout=IO_TIMEOUT, source=None, rcvbuf=None):
        """source: the address to connect from (any of 127.0.0.0/8 on
        loopback), for what the proxy sees as the client's address; rcvbuf:
        a receive buffer this small (a slow reader: what it does not take
        waits in the proxy)."""
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((HOST, port))
        self.stream = Stream(self.sock, timeout)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=(), body=None, host="test.local"):
        """Sends a well-formed HTTP/1.1 request and returns the final response."""
        self.send(build_request(method, target, headers, body, host))
        return self.read_response(method)

    def read_response(self, method="GET", sink=None):
        """Reads one response (1xx included). Raises Closed on EOF/truncation."""
        head = self.stream.read_until(b"\r\n\r\n")
        start, headers = parse_head(head[:-4])
        m = re.match(r"^(HTTP/\d\.\d) (\d{3}) ?(.*)$", start)
        if not m:
            raise AssertionError("bad status line %r" % start)
        r = HTTPResponse(m.group(1), int(m.group(2)), m.group(3), headers, head)
        te = r.header("Transfer-Encoding")
        cl = r.header("Content-Length")
        if method == "HEAD" or r.status // 100 == 1 or r.status in (204, 304):
            r.framing = "none"
        elif te is not None:
            r.framing = "chunked"
            try:
                r.body, r.chunk_sizes, _ = read_chunked(self.stream, sink)
            except Closed as e:
                raise Closed("chunked body truncated", e.partial)
        elif cl is not None:
            r.framing = "length"
            if sink:
                self.stream.consume(int(cl), sink)
            else:
                r.body = self.stream.read_exact(int(cl))
        else:
            r.framing = "close"
            r.body = self.stream.read_to_eof()
        return r

    def read_final(self, method="GET"):
        """Skips 1xx interim responses."""
        while True:
            r = self.read_response(method)
            if r.status // 100 != 1 or r.status == 101:
                return r

    def is_closed(self, timeout=3.0):
        """True when the proxy closes the connection within timeout, without
        sending more bytes; extra bytes fail the test."""
        self.sock.settimeout(timeout)
        try:
            extra = self.stream.read_to_eof()
        except socket.timeout:
            return False
        if extra:
            raise AssertionError("unexpected bytes before close: %r" % extra[:200])
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def build_request(method="GET", target="/", headers=(), body=None, host="test.local",
                  version="HTTP/1.1"):
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: %s" % host)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body is not None and hget(headers, "Content-Length") is None and \
            hget(headers, "Transfer-Encoding") is None:
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        data += body if isinstance(body, bytes) else body.encode()
    return data


# --------------------------------------------------------------------------
# Rollout arithmetic, as documented in proxy/rollout.c


def fnv1a32(data):
    h = 2166136261
    for b in data:
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def rollout_bucket(cohort, key):
    return fnv1a32(("%s:%s" % (cohort, key)).encode()) % 10000


def run_strangler(*args, timeout=10):
    return subprocess.run([BINARY] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def assert_check_reports(conf, expected):
    """`strangler -t` on the file conf refuses it (exit 1) with exactly these
    errors: expected is [(line, message)], each reported as FILE:LINE:
    MESSAGE; warnings may come besides."""
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    for lineno, message in expected:
        assert "%s:%d: %s" % (conf, lineno, message) in lines, \
            "missing %d: %s in:\n%s" % (lineno, message, out.stderr)
    errors = [l for l in lines if re.match(re.escape(str(conf)) + r":\d+: (?!warning: )", l)]
    assert len(errors) == len(expected), out.stderr
    assert "configuration OK" not in out.stdout
    return out


# --------------------------------------------------------------------------
# tracing a worker thread (strace)


def thread_names(pid):
    """{tid: name} of the process's threads (the main thread's is the program's)."""
    names = {}
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
            names[int(t)] = f.read().strip()
    return names


def worker_thread(pid):
    """The one worker thread's id (it names itself as it starts)."""
    def workers():
        return [t for t, name in thread_names(pid).items() if name.startswith("worker ")]
    wait_for(lambda: len(workers()) == 1, what="one worker thread")
    return workers()[0]


def wait_traced(pid, tid, proc):
    deadline = time.monotonic() + 5
    status = "/proc/%d/task/%d/status" % (pid, tid)
    while time.monotonic() < deadline:
        assert proc.poll() is None, "strace exited: %s" % proc.stderr.read().decode()
        with open(status) as f:
            if re.search(r"^TracerPid:\s*[1-9]", f.read(), re.MULTILINE):
                return
        time.sleep(0.01)
    raise AssertionError("strace did not attach within 5 s")
