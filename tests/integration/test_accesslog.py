"""The access log: one JSON object per line, with the values the exchange
really had."""
import datetime
import json
import os
import re
import subprocess
import threading
import time

import pytest

import harness
from harness import (Proxy, RawClient, Response, build_request, by_path, delayed, refused_port,
                     rollout_bucket, wait_for)

FIELDS = {"time", "client", "method", "path", "status", "route", "backend", "bucket",
          "upstream_ms", "total_ms", "bytes_in", "bytes_out", "request_id"}

ROUTES = [
    {"name": "users", "match": {"path_prefix": "/api/users"}, "backend": "modern"},
    {"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy",
     "rollout": {"backend": "modern", "percent": 25.0, "sticky": "header:X-User-Id"}},
    {"name": "broken", "match": {"path_prefix": "/broken"}, "backend": "down"},
]


@pytest.fixture
def logged(two_backends, start_proxy):
    legacy, modern = two_backends
    modern.handler = by_path({"/api/users/slow": delayed(0.2)})
    proxy = start_proxy({"legacy": legacy, "modern": modern,
                         "down": "http://127.0.0.1:%d" % refused_port()},
                        default_backend="legacy", routes=ROUTES)
    return proxy


def exchange(proxy, data, method="GET"):
    """Sends raw request bytes; returns (response, bytes received)."""
    with proxy.client() as c:
        c.send(data)
        r = c.read_response(method)
    return r, len(r.raw_head) + len(r.body)


def check_common(e):
    assert FIELDS <= set(e), sorted(FIELDS - set(e))
    t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    now = datetime.datetime.utcnow()
    assert abs((now - t).total_seconds()) < 60
    assert e["client"] == "127.0.0.1"
    assert isinstance(e["status"], int)
    assert isinstance(e["total_ms"], (int, float)) and e["total_ms"] >= 0
    assert isinstance(e["bytes_in"], int) and isinstance(e["bytes_out"], int)


def test_every_line_is_one_json_object(logged):
    with logged.client() as c:
        for i in range(5):
            c.request("GET", "/x/%d" % i)
    logged.wait_access(5)
    with open(logged.access_log_path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n")
    lines = data.decode().split("\n")[:-1]
    assert len(lines) == 5
    for line in lines:
        assert isinstance(json.loads(line), dict)


def test_routed_request(logged):
    req = build_request("GET", "/api/users/7?x=1", [("User-Agent", "t")])
    r, received = exchange(logged, req)
    assert r.status == 200
    e = logged.wait_access(1)[0]
    check_common(e)
    assert e["method"] == "GET"
    assert e["path"] == "/api/users/7"
    assert e["status"] == 200
    assert (e["route"], e["backend"], e["bucket"]) == ("users", "modern", None)
    assert isinstance(e["upstream_ms"], (int, float)) and 0 <= e["upstream_ms"] <= e["total_ms"]
    assert e["bytes_in"] == len(req)
    assert e["bytes_out"] == received
    assert re.fullmatch(r"[0-9a-f]{32}", e["request_id"])
    assert "error" not in e


def test_request_with_body_counts_bytes_in(logged):
    req = build_request("POST", "/api/users", body=b"z" * 5000)
    r, received = exchange(logged, req)
    e = logged.wait_access(1)[0]
    assert (e["method"], e["bytes_in"], e["bytes_out"]) == ("POST", len(req), received)


def test_default_backend_request(logged):
    exchange(logged, build_request("GET", "/elsewhere"))
    e = logged.wait_access(1)[0]
    check_common(e)
    assert (e["route"], e["backend"], e["bucket"]) == (None, "legacy", None)


def test_upstream_time_measured(logged):
    exchange(logged, build_request("GET", "/api/users/slow"))
    e = logged.wait_access(1)[0]
    assert e["upstream_ms"] >= 190
    assert e["total_ms"] >= e["upstream_ms"]
    assert e["total_ms"] < 5000


@pytest.mark.parametrize("key", ["user-1", "user-2", "user-3", "user-40", "abc"])
def test_rollout_request(logged, key):
    r, _ = exchange(logged, build_request("GET", "/api/orders/9", [("X-User-Id", key)]))
    e = logged.wait_access(1)[0]
    check_common(e)
    bucket = rollout_bucket("orders", key)
    assert e["route"] == "orders"
    assert e["bucket"] == bucket and isinstance(e["bucket"], int)
    assert e["backend"] == ("modern" if bucket < 2500 else "legacy")
    assert e["backend"] == r.header("X-Backend")


def test_502_request(logged):
    req = build_request("GET", "/broken/1")
    r, received = exchange(logged, req)
    assert r.status == 502
    e = logged.wait_access(1)[0]
    check_common(e)
    assert e["status"] == 502
    assert (e["route"], e["backend"], e["bucket"]) == ("broken", "down", None)
    assert e["error"] == "connect refused"
    assert e["upstream_ms"] is None or e["upstream_ms"] >= 0
    assert e["bytes_in"] == len(req)
    assert e["bytes_out"] == received
    assert r.header("X-Request-Id") == e["request_id"]


def test_client_error_line(logged):
    with logged.client() as c:
        c.send(b"GET /a b HTTP/1.1\r\n\r\n")
        r = c.read_response()
    e = logged.wait_access(1)[0]
    check_common(e)
    assert e["status"] == r.status == 400
    assert e["backend"] is None and e["route"] is None and e["bucket"] is None
    assert e["upstream_ms"] is None
    assert e["error"]


@pytest.mark.parametrize("req, status", [
    (b"POST /api/users/up?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n", 413),
    (b"GET /api/users/long HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n", 431),
    (b"GET /api/users/bad HTTP/1.1\r\nHost: t\r\nX-Bad : y\r\n\r\n", 400),
    (b"GET /api/users/two HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
     b"Content-Length: 2\r\n\r\n", 400),
], ids=["413", "431", "400-header-name", "400-two-lengths"])
def test_a_refused_request_is_logged_as_far_as_it_was_read(backend_factory, start_proxy,
                                                            req, status):
    """A request refused for its size or its headers is logged with its
    method, path and the bytes read (they were "-" or null, null and 0):
    the line an operator looks for when a client reports a 4xx."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, limits={"max_body_bytes": 10, "max_header_bytes": 1024})
    with proxy.client() as c:
        c.send(req)
        assert c.read_response().status == status
    e = proxy.wait_access(1)[0]
    check_common(e)
    method, target = req.split(b" ")[:2]
    assert (e["status"], e["method"], e["path"]) == (
        status, method.decode(), target.split(b"?")[0].decode())
    assert e["bytes_in"] == len(req)
    assert b.requests == []


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_gone_in_the_middle_of_its_head_is_logged(backend_factory, start_proxy, how):
    """A client that left with half a request head had no line at all (one
    silent instead got its 408): it is logged as 499 with as much of the
    request line as was read. A connection that sent nothing, or that closes
    after a whole exchange, adds no line."""
    import socket
    import struct
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        assert c.request("GET", "/whole").status == 200
    socket.create_connection((harness.HOST, proxy.port)).close()
    c = proxy.client()
    c.send(b"GET /partial HTTP/1.1\r\nHost: t\r\nX-A: b")
    time.sleep(0.2)
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    lines = proxy.wait_access(2)
    time.sleep(0.3)
    assert len(proxy.access_lines()) == 2, proxy.access_lines()
    e = lines[1]
    check_common(e)
    assert (e["status"], e["method"], e["path"], e["error"]) == (
        499, "GET", "/partial", "client closed connection"), e
    assert e["bytes_in"] == len(b"GET /partial HTTP/1.1\r\nHost: t\r\nX-A: b")
    assert [r.path for r in b.requests] == ["/whole"]


def test_a_target_refused_at_its_first_byte_still_logs_its_method(backend_factory, start_proxy):
    """GET /\xff: llhttp keeps no part of a target it refuses, and the line
    said method "-": the method is known, and logged (the path is not)."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b})
    for req in (b"GET /\xff HTTP/1.1\r\nHost: t\r\n\r\n",
                b"DELETE /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n"):
        with proxy.client() as c:
            c.send(req)
            assert c.read_response().status == 400
    lines = proxy.wait_access(2)
    assert [(e["status"], e["method"]) for e in lines] == [(400, "GET"), (400, "DELETE")], lines
    assert lines[0]["path"] is None


def test_values_are_json_escaped(logged):
    rid = 'quote"back\\slash'
    exchange(logged, build_request("GET", "/api/users/%22%5C", [("X-Request-Id", rid)]))
    e = logged.wait_access(1)[0]
    assert e["request_id"] == rid
    assert e["path"] == "/api/users/%22%5C"


def test_lines_in_request_order_on_keepalive(logged):
    with logged.client() as c:
        c.send(build_request("GET", "/p/1") + build_request("GET", "/api/users/2") +
               build_request("GET", "/broken"))
        for _ in range(3):
            c.read_response()
    entries = logged.wait_access(3)
    assert [(e["path"], e["status"]) for e in entries] == [
        ("/p/1", 200), ("/api/users/2", 200), ("/broken", 502)]


def test_chunked_response_bytes_out_counts_framing(backend_factory, start_proxy):
    b = backend_factory("legacy", lambda req, conn: Response(200, chunks=[b"abc", b"x" * 5000]))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/chunks"))
        head = c.stream.read_until(b"\r\n\r\n")
        body = c.stream.read_until(b"\r\n0\r\n\r\n")
    e = proxy.wait_access(1)[0]
    assert e["bytes_out"] == len(head) + len(body)


def test_total_ms_excludes_keepalive_idle_time(logged):
    """Time before a request's first byte is not its own: neither the idle
    time between two requests, nor that of a connection opened early (the
    first request counted from the accept)."""
    import time
    with logged.client() as c:
        time.sleep(0.5)
        c.request("GET", "/one")
        time.sleep(0.5)
        c.request("GET", "/two")
    first, second = logged.wait_access(2)
    assert first["total_ms"] < 300, first
    assert second["total_ms"] < 300, second


def test_large_bodies_count_every_byte(logged):
    """Bodies of a few MiB are relayed kernel to kernel (splice): the log still
    counts every byte that went each way."""
    req = build_request("POST", "/api/users", body=bytes(range(256)) * 12288)  # 3 MiB
    r, received = exchange(logged, req)
    assert r.status == 200 and r.json()["body_len"] == 3 * 1024 * 1024
    e = logged.wait_access(1)[0]
    assert (e["bytes_in"], e["bytes_out"]) == (len(req), received)


def test_long_lines_to_a_stderr_pipe_never_interleave(two_backends, tmp_path):
    """access_log and diff_log "-" with stderr a pipe (docker, kubectl, `| tee`):
    a line over PIPE_BUF (4096 bytes) is not written in one piece, so the
    workers' long lines, and the diagnostics, must take turns (they were torn
    and glued into each other: invalid JSON)."""
    legacy, modern = two_backends
    modern.handler = lambda req, conn: Response(200, b"other")
    port = harness.free_port()
    routes = [{"name": "s", "match": {"path_prefix": "/s"}, "backend": "legacy",
               "shadow": {"backend": "modern"}}]
    conf = harness.make_config(port, {"legacy": legacy, "modern": modern}, routes=routes,
                               workers=4, access_log="-", log_level="debug",
                               shadow_defaults={"diff_log": "-", "timeout_ms": 2000})
    (tmp_path / "s.conf").write_text(conf)
    proc = subprocess.Popen([harness.BINARY, "-c", str(tmp_path / "s.conf")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    out = bytearray()

    def reader():  # a consumer slower than the proxy, like a log shipper under load
        while True:
            b = os.read(proc.stderr.fileno(), 4096)
            if not b:
                break
            out.extend(b)
            time.sleep(0.0005)

    rt = threading.Thread(target=reader)
    rt.start()
    clients, n = 6, 40
    try:
        wait_for(lambda: b"started" in out, 5, what="proxy start")

        def client(k):
            c = RawClient(port)
            for i in range(n):
                assert c.request("GET", "/s/%d-%d/" % (k, i) + chr(97 + k) * 5000).status == 200
            c.close()

        ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:  # a graceful stop ends the shadows in flight and writes the summary
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        rt.join(timeout=10)
    access = diffs = 0
    summary = None
    for line in bytes(out).decode("utf-8", "replace").split("\n")[:-1]:
        if re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z \[(debug|info|warn|error)\] ", line):
            continue  # a diagnostic, whole
        e = json.loads(line)  # raises on a torn or glued line
        if e.get("type") == "diff":
            diffs += 1
        elif e.get("type") == "summary":
            summary = e
        else:
            access += 1
    assert access == clients * n
    assert diffs > 0 and diffs == summary["different"], (diffs, summary)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (root only; the test is skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.strip())
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs, leave_pages=1):
    """Fills fs but for leave_pages pages; returns the filler's path."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"f" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(0, os.path.getsize(filler) - 4096 * leave_pages))
    return filler


def test_a_full_disk_drops_whole_lines_and_says_so(backend_factory, tiny_fs, tmp_path):
    """Lines that do not fit are dropped whole, counted in the metrics and
    reported (once per 10 s); a line cut short stays a fragment of its own, so
    the first line written once there is room again is whole (it was glued onto
    the fragment, and nothing said lines were lost)."""
    b = backend_factory("legacy")
    d = tmp_path / "proxy"
    d.mkdir()
    os.symlink(tiny_fs / "access.log", d / "access.log")  # the harness's log path, on the tmpfs
    p = Proxy(d, {"legacy": b}, admin={})
    try:
        filler = fill(tiny_fs)  # room for about 15 lines
        with p.client() as c:
            assert all(c.request("GET", "/path/%03d" % i).status == 200 for i in range(40))
            os.unlink(filler)
            assert all(c.request("GET", "/after/%d" % i).status == 200 for i in range(3))
        lines = wait_for(lambda: (lambda t: t if t.count(b'"/after/') == 3 else None)(
            open(d / "access.log", "rb").read()), what="the lines after the space came back")
        lines = lines.split(b"\n")
        assert lines[-1] == b""
        valid, torn = [], []
        for line in lines[:-1]:
            try:
                valid.append(json.loads(line))
            except ValueError:
                torn.append(line)
        assert [e["path"] for e in valid[-3:]] == ["/after/0", "/after/1", "/after/2"]
        assert len(torn) <= 1 and all(t.startswith(b'{"time":') for t in torn), torn
        dropped = 43 - len(valid)
        assert dropped >= 20
        st, metrics = p.admin("GET", "/metrics")
        assert st == 200
        assert 'strangler_log_lines_dropped_total{log="access"} %d\n' % dropped in metrics
        errors = [l for l in p.stderr_text().splitlines() if "access log: cannot write" in l]
        assert len(errors) == 1, errors  # rate-limited
        assert "No space left on device" in errors[0] and "line(s) dropped" in errors[0]
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("how, error", [("truncated", "upstream response truncated"),
                                        ("timeout", "upstream timeout")])
def test_upstream_ms_is_the_time_to_the_head_when_the_body_then_fails(backend_factory,
                                                                      start_proxy, how, error):
    """upstream_ms: from sending the request until the answer's head (or the
    failure, when no head came). A head at once and a body cut or stalled
    later gave the failure's time (0.4-0.6 s), in the log and the backend's
    wait histogram."""
    def head_then_stall(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        time.sleep(0.6)
        return harness.CLOSE
    b = backend_factory("legacy", head_then_stall)
    p = start_proxy({"legacy": {"url": b.url,
                                "response_timeout_ms": 400 if how == "timeout" else 5000}})
    with p.client() as c:
        c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        c.stream.read_until(b"\r\n\r\n")
        with pytest.raises((harness.Closed, OSError)):
            c.stream.read_exact(100000)
    e = p.wait_access(1)[0]
    assert (e["status"], e["error"]) == (200, error), e
    assert e["upstream_ms"] < 150, e


@pytest.mark.parametrize("first", ["has space", "x" * 72, ""])
def test_the_first_valid_of_several_request_ids_is_kept(backend_factory, start_proxy, first):
    """security.md: of several X-Request-Id fields, the first valid one is
    kept. An unusable first one made strangler make up an id, the valid
    second one dropped."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b})
    with p.client() as c:
        assert c.request("GET", "/rid", [("X-Request-Id", first),
                                         ("X-Request-Id", "valid-id-2")]).status == 200
    logged = p.wait_access(1)[0]["request_id"]
    assert logged == "valid-id-2"
    assert b.wait_requests(1)[0].header_all("X-Request-Id") == [logged]


def test_a_target_refused_at_its_first_byte_logs_a_null_path_on_keep_alive_too(
        backend_factory, start_proxy):
    """configuration.md: path is null when the target was refused at its
    first bytes (GET /\\xff). After a request on the same connection it was
    "" (the last path's buffer, emptied)."""
    p = start_proxy({"legacy": backend_factory("legacy")})
    with p.client() as c:
        assert c.request("GET", "/first").status == 200
        c.send(b"GET /\xff HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 400
    lines = p.wait_access(2)
    assert lines[1]["path"] is None, lines[1]
