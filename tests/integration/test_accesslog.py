"""The access log: one JSON object per line, with the values the exchange
really had."""
import datetime
import json
import re

import pytest

from harness import Response, build_request, by_path, delayed, refused_port, rollout_bucket

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
    import time
    with logged.client() as c:
        c.request("GET", "/one")
        time.sleep(0.5)
        c.request("GET", "/two")
    first, second = logged.wait_access(2)
    assert second["total_ms"] < 300, second


def test_large_bodies_count_every_byte(logged):
    """Bodies of a few MiB are relayed kernel to kernel (splice): the log still
    counts every byte that went each way."""
    req = build_request("POST", "/api/users", body=bytes(range(256)) * 12288)  # 3 MiB
    r, received = exchange(logged, req)
    assert r.status == 200 and r.json()["body_len"] == 3 * 1024 * 1024
    e = logged.wait_access(1)[0]
    assert (e["bytes_in"], e["bytes_out"]) == (len(req), received)
