"""The integration scenarios, against the real Go and Rust demo services."""
import http.client
import json
import socket

import pytest

from conftest import fnv_bucket, read_response

SIDES = ["legacy", "modern"]
SERVED_BY = {"legacy": "legacy-go", "modern": "modern-rust"}


def request(demo, method, path, headers=None, body=None):
    c = http.client.HTTPConnection("127.0.0.1", demo["port"], timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_routes_reach_the_right_service(demo):
    status, h, body = request(demo, "GET", "/api/users/7")
    assert status == 200 and h["x-served-by"] == "modern-rust"
    assert json.loads(body) == {"id": 7, "name": "user-7", "email": "user7@example.com"}
    status, h, _ = request(demo, "GET", "/health")
    assert status == 200 and h["x-served-by"] == "legacy-go"
    # POST is not in the users route's methods: it falls through to the default.
    status, h, _ = request(demo, "POST", "/api/users/7", body=b"{}")
    assert h["x-served-by"] == "legacy-go"


def test_sticky_rollout_matches_documented_hash(demo):
    for i in range(100):
        key = f"user-{i}"
        expected = "modern-rust" if fnv_bucket("orders", key) < 5000 else "legacy-go"
        for _ in range(2):
            status, h, body = request(demo, "GET", "/api/orders/3", {"X-User-Id": key})
            assert status == 200
            assert h["x-served-by"] == expected, key
            assert json.loads(body)["id"] == 3


@pytest.mark.parametrize("side", SIDES)
def test_keepalive_and_pipelining(demo, side):
    with socket.create_connection(("127.0.0.1", demo["port"]), timeout=10) as s:
        f = s.makefile("rb")
        reqs = b"".join(
            f"GET /api/orders/{i} HTTP/1.1\r\nHost: x\r\nX-Side: {side}\r\n\r\n".encode()
            for i in (1, 2, 3))
        reqs = reqs.replace(b"/api/orders/", b"/echo/")
        s.sendall(reqs)
        for i in (1, 2, 3):
            status, h, body = read_response(f)
            assert status == 200 and h["x-served-by"] == SERVED_BY[side]
            assert json.loads(body)["path"] == f"/echo/{i}"
        # the same connection keeps working
        s.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\nX-Side: {side}\r\n\r\n".encode())
        status, h, _ = read_response(f)
        assert status == 200 and h["x-served-by"] == SERVED_BY[side]


@pytest.mark.parametrize("side", SIDES)
def test_chunked_upload_is_forwarded_whole(demo, side):
    chunks = [b"a" * 1000, b"b" * 70000, b"c" * 5]

    def gen():
        yield from chunks
    status, h, body = request(demo, "POST", "/echo", {"X-Side": side}, body=gen())
    assert status == 200 and h["x-served-by"] == SERVED_BY[side]
    echo = json.loads(body)
    assert echo["body_bytes"] == sum(map(len, chunks))
    assert echo["headers"]["transfer-encoding"] == "chunked"


@pytest.mark.parametrize("side", SIDES)
def test_large_download_and_upload(demo, side):
    n = 32 * 1024 * 1024
    status, h, body = request(demo, "GET", f"/bytes?n={n}", {"X-Side": side})
    assert status == 200 and len(body) == n and body[:1] == b"b" and body[-1:] == b"b"
    payload = b"z" * n
    status, h, body = request(demo, "PUT", "/echo", {"X-Side": side}, body=payload)
    assert status == 200 and json.loads(body)["body_bytes"] == n


@pytest.mark.parametrize("side", SIDES)
def test_chunked_stream(demo, side):
    status, h, body = request(demo, "GET", "/stream?chunks=50&size=1000", {"X-Side": side})
    assert status == 200 and body == b"x" * 50000
    assert h.get("transfer-encoding") == "chunked"


@pytest.mark.parametrize("side", SIDES)
def test_head_204_304(demo, side):
    with socket.create_connection(("127.0.0.1", demo["port"]), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(f"HEAD /bytes?n=1234 HTTP/1.1\r\nHost: x\r\nX-Side: {side}\r\n\r\n".encode())
        status, h, body = read_response(
            _NoBody(f))
        assert status == 200 and h["content-length"] == "1234"
        for code in (204, 304):
            s.sendall(f"GET /status/{code} HTTP/1.1\r\nHost: x\r\nX-Side: {side}\r\n\r\n".encode())
            status, h, body = read_response(f)
            assert status == code and body == b""
        # the connection is still in sync
        s.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\nX-Side: {side}\r\n\r\n".encode())
        status, h, body = read_response(f)
        assert status == 200 and json.loads(body)["status"] == "ok"


class _NoBody:
    """Reads a response head only (for HEAD, whose Content-Length has no body)."""

    def __init__(self, f):
        self.f = f
        self.done = False

    def readline(self):
        line = self.f.readline()
        if line == b"\r\n":
            self.done = True
        return line

    def read(self, n):
        return b""


@pytest.mark.parametrize("side", SIDES)
def test_expect_100_continue(demo, side):
    body = b'{"user_id": 3}'
    with socket.create_connection(("127.0.0.1", demo["port"]), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall((f"POST /echo HTTP/1.1\r\nHost: x\r\nX-Side: {side}\r\n"
                   f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode())
        interim = f.readline()
        assert interim.startswith(b"HTTP/1.1 100"), interim
        assert f.readline() == b"\r\n"
        s.sendall(body)
        status, h, resp = read_response(f)
        assert status == 200 and json.loads(resp)["body"] == body.decode()


@pytest.mark.parametrize("side", SIDES)
def test_forwarded_headers_and_request_id(demo, side):
    status, h, body = request(demo, "GET", "/echo", {"X-Side": side,
                                                      "X-Forwarded-For": "203.0.113.9",
                                                      "Connection": "X-Secret",
                                                      "X-Secret": "hop"})
    seen = json.loads(body)["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert "x-secret" not in seen
    assert len(seen["x-request-id"]) == 32
    with open(demo["access_log"]) as f:
        ids = [json.loads(line)["request_id"] for line in f]
    assert seen["x-request-id"] in ids


@pytest.mark.parametrize("side", SIDES)
def test_slow_backend_gets_504(demo, side):
    # only modern has response_timeout_ms = 1000
    if side == "legacy":
        status, _, _ = request(demo, "GET", "/health?delay_ms=1200", {"X-Side": side})
        assert status == 200
    else:
        status, _, body = request(demo, "GET", "/health?delay_ms=1500", {"X-Side": side})
        assert status == 504 and b"upstream timeout" in body


def test_search_bug_is_visible_through_the_proxy(demo):
    _, _, legacy = request(demo, "GET", "/api/search?q=red", {"X-Side": "legacy"})
    _, _, modern = request(demo, "GET", "/api/search?q=red", {"X-Side": "modern"})
    assert len(json.loads(legacy)["results"]) == 3
    assert json.loads(modern)["results"] == []
