"""What goes wrong, and what the client sees: unreachable, slow and broken
backends; malformed, oversized, unsupported and slow client requests."""
import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
from harness import (CLOSE, KEEP, Closed, Response, build_request, by_path, delayed, raw,
                     refused_port, upgrade_echo)


@pytest.fixture
def one(backend_factory, start_proxy):
    b = backend_factory("legacy")
    return start_proxy({"legacy": b}), b


# -- backend failures


def test_backend_refused_is_502(start_proxy):
    proxy = start_proxy({"legacy": "http://127.0.0.1:%d" % refused_port()})
    with proxy.client() as c:
        r = c.request("GET", "/down")
        assert r.status == 502
        assert r.header("Content-Type").startswith("text/plain")
        assert r.body == b"connect refused\n"
        assert len(r.body) < 200
        # the client connection survives a backend failure
        assert c.request("GET", "/down/again").status == 502
    e = proxy.wait_access(1)[0]
    assert e["status"] == 502
    assert e["error"] == "connect refused"
    assert e["backend"] == "legacy"
    assert e["upstream_ms"] is None or e["upstream_ms"] >= 0


def test_backend_timeout_is_504(backend_factory, start_proxy):
    b = backend_factory("legacy", delayed(1.0))
    proxy = start_proxy({"legacy": {"url": b.url, "response_timeout_ms": 300}})
    with proxy.client() as c:
        t0 = time.monotonic()
        r = c.request("GET", "/slow")
        took = time.monotonic() - t0
    assert r.status == 504
    assert r.body == b"upstream timeout\n"
    assert 0.25 <= took < 0.95, took
    e = proxy.wait_access(1)[0]
    assert (e["status"], e["error"]) == (504, "upstream timeout")


def test_a_routes_response_timeout_replaces_the_backends(backend_factory, start_proxy):
    """An export endpoint that takes 0.8 s gets its own longer timeout; the
    rest of the backend keeps 300 ms; and a route may be stricter too,
    whichever side of a rollout serves it."""
    slow = backend_factory("legacy", delayed(0.8))
    modern = backend_factory("modern", delayed(0.8))
    routes = [{"name": "export", "match": {"path_prefix": "/export"}, "backend": "legacy",
               "response_timeout_ms": 2000},
              {"name": "strict", "match": {"path_prefix": "/strict"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 100.0},
               "response_timeout_ms": 200}]
    proxy = start_proxy({"legacy": {"url": slow.url, "response_timeout_ms": 300},
                         "modern": {"url": modern.url, "response_timeout_ms": 5000}},
                        routes=routes)
    got = []
    for path in ("/export/all", "/other", "/strict/x"):
        with proxy.client() as c:
            t0 = time.monotonic()
            r = c.request("GET", path)
            got.append((r.status, round(time.monotonic() - t0, 1)))
    assert got[0][0] == 200 and got[0][1] >= 0.7, got
    assert got[1][0] == 504 and got[1][1] < 0.75, got
    assert got[2][0] == 504 and got[2][1] < 0.75, got
    e = proxy.wait_access(3)
    assert [(x["route"], x["backend"], x.get("error")) for x in e] == [
        ("export", "legacy", None), (None, "legacy", "upstream timeout"),
        ("strict", "modern", "upstream timeout")]


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_backend_timeout_counts_once_the_request_is_sent(backend_factory, start_proxy, framing):
    """An upload that takes longer than response_timeout_ms is not a backend
    timeout: the backend cannot answer before it has the body (it was 504
    after response_timeout_ms, however fast the client kept sending). A
    backend that then stays silent still times out."""
    b = backend_factory("legacy", lambda req, conn: (
        time.sleep(0.6) if req.path == "/silent" else None) or Response(200, b"got-body"))
    proxy = start_proxy({"legacy": {"url": b.url, "response_timeout_ms": 400}})
    parts = [b"p" * 1000] * 6
    for path, status in (("/up", 200), ("/silent", 504)):
        with socket.create_connection((harness.HOST, proxy.port), timeout=5) as c:
            if framing == "length":
                c.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                          % (path.encode(), sum(map(len, parts))))
            else:
                c.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          % path.encode())
            for part in parts:  # 6 parts, 100 ms apart: 0.6 s of upload
                time.sleep(0.1)
                c.sendall(part if framing == "length" else b"3e8\r\n" + part + b"\r\n")
            if framing == "chunked":
                c.sendall(b"0\r\n\r\n")
            head = harness.Stream(c).read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), (path, head)


def test_backend_timeout_counts_from_last_byte_not_whole_response(backend_factory, start_proxy):
    """A response that keeps trickling within response_timeout_ms is not cut."""
    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        for ch in b"abcde":
            time.sleep(0.1)
            conn.send(bytes([ch]))
        return KEEP

    b = backend_factory("legacy", handler)
    proxy = start_proxy({"legacy": {"url": b.url, "response_timeout_ms": 500}})
    with proxy.client() as c:
        r = c.request("GET", "/trickle")
    assert (r.status, r.body) == (200, b"abcde")


BAD_RESPONSES = {
    "garbage": b"garbage\r\n\r\n",
    "no-status-code": b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
    "four-digit-status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "http2-version": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "duplicate-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    "conflicting-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "negative-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "nul-in-header": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "space-in-header-name": b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 0\r\n\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "te-in-http10-response": b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "content-length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "header-block-over-64k": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
    "unsolicited-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    "nul-in-reason": b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
    "control-in-reason": b"HTTP/1.1 200 O\x1bK\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_RESPONSES))
def test_bad_backend_response_is_502_and_proxy_recovers(backend_factory, start_proxy, name):
    b = backend_factory("legacy", by_path({"/bad": raw(BAD_RESPONSES[name], close=False)}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        r = c.request("GET", "/bad")
        assert r.status == 502, r
        assert r.body == b"bad upstream response\n"
        # same client connection, next request: a fresh backend connection answers
        r2 = c.request("GET", "/good")
        assert r2.status == 200
        assert r2.json()["target"] == "/good"
    reqs = b.wait_requests(2)
    assert reqs[1].conn_id != reqs[0].conn_id, "a broken backend connection was reused"
    e = proxy.wait_access(1)[0]
    assert (e["status"], e["error"]) == (502, "bad upstream response")


@pytest.mark.parametrize("body", [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n",
                                  b"5 \r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\n"],
                         ids=["bad-size", "missing-crlf", "space-after-size", "bare-lf-ends-trailers"])
def test_bad_chunking_never_reaches_client_as_success(backend_factory, start_proxy, body):
    """The framing error is seen right after the head, in the same read: the
    head has not left the proxy yet, so the client gets a clean 502, never a
    complete response (nor an aborted one)."""
    b = backend_factory("legacy", by_path({"/bad": raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, close=False)}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/bad"))
        r = c.read_response()
        assert r.status == 502, "bad chunking delivered as a %d: %r" % (r.status, r)
        assert b"bad upstream response" in r.body
    with proxy.client() as c:
        assert c.request("GET", "/good").status == 200
    e = proxy.wait_access(1)[0]
    assert e["error"] == "bad upstream response"


def test_bad_chunk_mid_stream_aborts_client(backend_factory, start_proxy):
    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.2)
        conn.send(b"zz\r\n")
        return KEEP

    b = backend_factory("legacy", by_path({"/bad": handler}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/bad"))
        with pytest.raises(Closed):
            c.read_response()
    with proxy.client() as c:
        assert c.request("GET", "/good").status == 200


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_backend_closes_mid_body_aborts_client(backend_factory, start_proxy, framing):
    def handler(req, conn):
        if framing == "length":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        else:
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100 +
                      b"\r\n")
        time.sleep(0.1)
        return CLOSE

    b = backend_factory("legacy", by_path({"/cut": handler}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/cut"))
        with pytest.raises(Closed):
            c.read_response()  # must not end like a complete response
    with proxy.client() as c:
        assert c.request("GET", "/good").status == 200
    e = proxy.wait_access(1)[0]
    assert e["error"] == "upstream response truncated"


def test_backend_closes_without_answer_is_502(backend_factory, start_proxy):
    b = backend_factory("legacy", by_path({"/close": lambda req, conn: CLOSE}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        r = c.request("GET", "/close")
        assert r.status == 502
        assert r.body == b"upstream closed connection\n"
        assert c.request("GET", "/good").status == 200


def stale_second_request(req, conn):
    """Answers the first request of each connection; closes instead of answering
    any later one, as a backend whose keep-alive timer fired would."""
    if req.seq >= 1:
        return CLOSE
    return Response(200, b"conn %d" % req.conn_id, headers=[("X-Backend", "legacy")])


def test_stale_pooled_connection_is_retried_for_get(backend_factory, start_proxy):
    b = backend_factory("legacy", stale_second_request)
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        assert c.request("GET", "/a").body == b"conn 0"
        r = c.request("GET", "/b")
        assert (r.status, r.body) == (200, b"conn 1")


def test_stale_pooled_connection_not_retried_for_post(backend_factory, start_proxy):
    """RFC 9112 9.3.1: a proxy MUST NOT automatically retry non-idempotent
    requests. The backend may have acted on the POST before closing."""
    b = backend_factory("legacy", stale_second_request)
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        assert c.request("GET", "/a").body == b"conn 0"
        c.send(b"POST /charge HTTP/1.1\r\nHost: t\r\n\r\n")  # no body, no Content-Length
        r = c.read_response()
    posts = [r for r in b.requests if r.method == "POST"]
    assert len(posts) == 1, "the POST reached the backend %d times" % len(posts)
    assert r.status == 502


def answer_then_close(req, conn):
    """Answers keep-alive (no Connection: close), then closes at once: the
    answer is corked, so that it leaves with the FIN in one segment and the
    close is there by the time strangler has read the answer."""
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    conn.send(Response(200, b"conn %d" % req.conn_id).serialize())
    return CLOSE


@pytest.mark.parametrize("second", [
    b"POST /charge HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /doc HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
])
def test_a_pooled_connection_already_closed_is_not_used_for_a_request_that_cannot_be_retried(
        backend_factory, start_proxy, second):
    """The backend closed its connection right after a keep-alive answer, and
    the client's next request (pipelined, so handled before the close is
    seen) cannot be sent twice. It was written to the dead connection and
    answered 502 upstream reset; a check of the pooled connection before use
    now finds the close and takes a new one."""
    b = backend_factory("legacy", answer_then_close)
    proxy = start_proxy({"legacy": b})
    for _ in range(5):
        with proxy.client() as c:
            c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n" + second)
            first, then = c.read_response(), c.read_response()
            assert first.status == 200
            assert then.status == 200, then
    assert [r.body_len for r in b.requests if r.method != "GET"] == [5] * 5


# -- bad client requests


def reached(backend):
    """What reached the backend, but for bad_request's follow-up request."""
    return [r for r in backend.requests if r.path != "/next"]


def bad_request(proxy, data):
    """Sends data, reads one response; closed says whether the proxy then
    closed the connection (only waited for when the answer is an error).
    Then checks that the proxy still serves the next connection."""
    with proxy.client() as c:
        c.send(data)
        r = c.read_response()
        closed = c.is_closed() if r.status >= 400 else False
    with proxy.client() as c:
        assert c.request("GET", "/next").status == 200, "the next connection is not served"
    return r, closed


@pytest.mark.parametrize("data,status", [
    (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET example.com HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"\r\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\r\nHost: x\r\n\r\n", 400),
], ids=["space-in-target", "bad-protocol", "control-char", "no-slash", "bare-cr-first",
        "bare-cr-line-first", "bare-cr-in-version"])
def test_malformed_request_line_is_400_and_close(one, data, status):
    proxy, backend = one
    r, closed = bad_request(proxy, data)
    assert r.status == status
    assert r.header("Connection") == "close"
    assert closed
    assert reached(backend) == []


@pytest.mark.parametrize("data,status,reason", [
    (b"GET / HTTP/1.1\r\n\r\n", 400, b"missing Host"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, b"more than one Host"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, None),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400, None),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx", 400, None),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400, None),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, None),
    (b"GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n", 400, None),
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400, None),
    (b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400, None),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400, None),
], ids=["no-host", "two-hosts", "cl-and-te", "duplicate-cl", "plus-cl", "te-empty-element",
        "te-on-http10", "empty-header-name", "space-in-header-name", "bare-lf", "bare-cr"])
def test_bad_headers_are_400_and_close(one, data, status, reason):
    proxy, backend = one
    r, closed = bad_request(proxy, data)
    assert r.status == status, r
    if reason:
        assert reason in r.body
    assert closed
    assert reached(backend) == []


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Content-Length: 5\r\n\r\nhello",
], ids=["space-fold", "tab-fold", "fold-hiding-content-length"])
def test_obs_fold_header_is_400(one, data):
    """Obsolete line folding can hide a header from one parser and not another
    (CVE-2024-27982); shared/NOTES.md says the proxy refuses it."""
    proxy, backend = one
    r, closed = bad_request(proxy, data)
    assert r.status == 400, r
    assert closed
    assert reached(backend) == []


def test_uri_limit_is_414(one):
    proxy, backend = one
    ok_target = "/" + "a" * 8191  # 8192 bytes: at the limit
    with proxy.client() as c:
        assert c.request("GET", ok_target).status == 200
    r, closed = bad_request(proxy, build_request("GET", ok_target + "a"))
    assert r.status == 414
    assert closed
    assert len(reached(backend)) == 1


def test_header_block_over_32k_is_431(one):
    proxy, backend = one
    with proxy.client() as c:
        assert c.request("GET", "/", [("X-Big", "a" * 30000)]).status == 200
    r, closed = bad_request(proxy, build_request("GET", "/", [("X-Big", "a" * 33000)]))
    assert r.status == 431
    assert closed
    r, closed = bad_request(proxy, build_request(
        "GET", "/", [("X-H%d" % i, "v" * 1000) for i in range(40)]))
    assert r.status == 431
    assert len(reached(backend)) == 1


def test_more_than_100_headers_is_431(one):
    proxy, backend = one
    hundred = [("X-%d" % i, "v") for i in range(99)]  # + Host = 100
    with proxy.client() as c:
        assert c.request("GET", "/", hundred).status == 200
    r, closed = bad_request(proxy, build_request("GET", "/", hundred + [("X-100", "v")]))
    assert r.status == 431
    assert closed
    assert len(reached(backend)) == 1


@pytest.mark.parametrize("method", ["FOO", "BREW", "GARBAGE"])
def test_unknown_method_is_501(one, method):
    proxy, backend = one
    r, closed = bad_request(proxy, build_request(method, "/"))
    assert r.status == 501
    assert closed
    assert reached(backend) == []


def test_connect_is_405(one):
    proxy, backend = one
    r, closed = bad_request(proxy, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert r.status == 405
    assert closed
    assert reached(backend) == []


@pytest.mark.parametrize("line", [b"GET / HTTP/2.0", b"GET / HTTP/1.2", b"GET / HTTP/3.0",
                                  b"GET /"])
def test_unsupported_version_is_505_or_400(one, line):
    proxy, backend = one
    r, closed = bad_request(proxy, line + b"\r\nHost: x\r\n\r\n")
    assert r.status in (505, 400)
    assert closed
    assert reached(backend) == []


def test_request_errors_are_logged(one):
    proxy, backend = one
    bad_request(proxy, b"GET / HTTP/1.1\r\n\r\n")
    e = proxy.wait_access(1)[0]
    assert e["status"] == 400
    assert e["error"] == "missing Host header"
    assert e["backend"] is None


def test_the_proxys_own_answer_to_head_has_no_body(backend_factory, start_proxy):
    """A 502 to a HEAD carried its text: a pipelining client read it as the
    start of the next answer."""
    b = backend_factory("legacy", by_path({"/bad": raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("HEAD", "/bad") + build_request("GET", "/fine"))
        r = c.read_response("HEAD")
        assert r.status == 502 and r.body == b""
        assert c.read_response().status == 200


# -- client timeouts and limits


def send_all_then_read_head(port, data):
    """As most HTTP client libraries do: the whole request, then the answer."""
    with socket.create_connection((harness.HOST, port), timeout=5) as c:
        c.sendall(data)
        return harness.Stream(c).read_until(b"\r\n\r\n").split(b"\r\n")[0]


BIG = 16 << 20


@pytest.mark.parametrize("case", ["413", "431", "backend-413"])
def test_an_early_answer_reaches_a_client_still_sending(backend_factory, start_proxy, case):
    """An answer sent before the request was read whole (strangler's 413 or
    431, a backend's early 413) reaches a client that sends everything before
    reading: the connection is half-closed and what still comes is read and
    dropped (lingering close). The plain close made the kernel reset the
    connection, and the client lost the answer."""
    def early(req, conn):  # answers on the head alone, then lingers itself
        conn.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n"
                  b"Connection: close\r\n\r\nnope")
        conn.sock.shutdown(socket.SHUT_WR)
        conn.sock.settimeout(2)
        try:
            while conn.sock.recv(1 << 16):
                pass
        except OSError:
            pass
        return CLOSE
    b = backend_factory("legacy", early if case == "backend-413" else None)
    b.read_bodies = case != "backend-413"  # it answers on the head alone
    proxy = start_proxy({"legacy": b}, limits={"max_body_bytes": 1000 if case == "413" else 0})
    if case == "431":
        data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * (4 << 20) + b"\r\n\r\n"
    else:
        data = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BIG + b"a" * BIG
    status = {"413": b" 413 ", "431": b" 431 ", "backend-413": b" 413 "}[case]
    assert status in send_all_then_read_head(proxy.port, data)


def test_an_early_answer_then_a_reset_is_still_the_answer(backend_factory, start_proxy):
    """A backend that answers an upload at once and closes without reading
    the rest: its kernel resets the connection for the unread bytes, and
    strangler's next send fails, but the answer came first and the kernel
    still holds it. The client gets the 413 (it got 502 "upstream reset" in
    most tries with bodies of megabytes), and the backend is not marked down
    for it."""
    def early(req, conn):
        conn.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n"
                  b"Connection: close\r\n\r\nnope")
        return CLOSE
    b = backend_factory("legacy", early)
    b.read_bodies = False
    proxy = start_proxy({"legacy": b})
    size = 4 << 20
    data = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"a" * size
    got = [send_all_then_read_head(proxy.port, data) for _ in range(8)]
    assert got == [b"HTTP/1.1 413 Payload Too Large"] * 8
    assert "upstream reset" not in proxy.stderr_text()
    assert "is down" not in proxy.stderr_text()


def test_a_lingering_client_does_not_hold_up_a_shutdown(backend_factory, start_proxy):
    """A connection whose answer is written and which only reads what the
    client still sends is not a request in flight: SIGTERM does not wait
    for it (it waited up to the 30 s of lingering)."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, limits={"max_body_bytes": 1000}, drain_timeout_ms=20000)
    with socket.create_connection((harness.HOST, proxy.port), timeout=5) as c:
        c.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\nabc")
        assert b" 413 " in harness.Stream(c).read_until(b"\r\n\r\n")
        c.sendall(b"more")  # still sending
        time.sleep(0.2)
        t0 = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 2


def test_client_header_timeout_is_408(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, timeouts={"client_header_ms": 300})
    with proxy.client() as c:
        t0 = time.monotonic()
        c.send(b"GET /slow?q=1 HTTP/1.1\r\nHost: x\r\n")
        r = c.read_response()
        took = time.monotonic() - t0
        assert r.status == 408
        assert 0.25 <= took < 2.0, took
        assert c.is_closed()
    assert b.requests == []
    e = proxy.wait_access(1)[0]
    assert (e["status"], e["error"]) == (408, "client header timeout")
    # what of the request was read is logged (it was "-", null and 0)
    assert (e["method"], e["path"], e["bytes_in"]) == ("GET", "/slow", 33)


def test_client_header_timeout_is_a_total_deadline(backend_factory, start_proxy):
    """Trickling one header byte at a time does not extend it (slowloris)."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, timeouts={"client_header_ms": 300})
    with proxy.client() as c:
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(30):
                time.sleep(0.05)
                c.send(b"X")
        except OSError:
            pass  # closed under us, as it should be
        r = c.read_response()
        assert r.status == 408
        assert time.monotonic() - t0 < 2.0


def test_idle_keepalive_connection_closed_silently(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, timeouts={"client_keepalive_ms": 300})
    with proxy.client() as c:
        assert c.request("GET", "/").status == 200
        t0 = time.monotonic()
        assert c.is_closed(timeout=3)
        assert time.monotonic() - t0 >= 0.2


def test_client_body_timeout_is_408(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, timeouts={"client_body_ms": 300})
    with proxy.client() as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        r = c.read_response()
        assert r.status == 408
        assert c.is_closed()


def test_keepalive_and_header_timeouts_of_different_lengths_each_hold(backend_factory,
                                                                      start_proxy):
    """The session's timer is armed lazily (at most one header timeout ahead,
    then waits again): an idle connection still lives for its whole
    keep-alive time, and a request begun late still gets only the header
    timeout, counted from its first byte."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b},
                        timeouts={"client_header_ms": 200, "client_keepalive_ms": 1000})
    with proxy.client() as c:
        assert c.request("GET", "/a").status == 200
        time.sleep(0.6)  # three header timeouts idle: still open
        c.send(b"GET /b HTTP/1.1\r\n")
        time.sleep(0.1)
        c.send(b"Host: x\r\n\r\n")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.is_closed(timeout=3)
        assert 0.9 <= time.monotonic() - t0 < 2.0
    with proxy.client() as c:
        assert c.request("GET", "/c").status == 200
        time.sleep(0.6)
        t0 = time.monotonic()
        c.send(b"GET /d HTTP/1.1\r\n")  # and nothing more
        r = c.read_response()
        assert r.status == 408
        assert 0.15 <= time.monotonic() - t0 < 0.6


# A timeout applies only to the phase it was set for. libevent's event_add(ev,
# NULL) keeps the timeout an event had, so before the connection layer kept
# its own timer, each of these connections was cut by the previous phase's.


def test_idle_keepalive_client_outlives_the_body_timeout_of_its_last_request(
        backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, timeouts={"client_body_ms": 300})
    with proxy.client() as c:
        assert c.request("POST", "/a", body=b"x" * 10).status == 200
        time.sleep(0.8)  # idle, within client_keepalive_ms
        assert c.request("GET", "/b").status == 200


def test_pooled_backend_connection_outlives_the_response_timeout(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": {"url": b, "response_timeout_ms": 300}})
    with proxy.client() as c:
        assert c.request("GET", "/a").status == 200
    time.sleep(0.8)  # idle in the pool
    with proxy.client() as c:
        assert c.request("GET", "/b").status == 200
    assert [r.conn_id for r in b.wait_requests(2)] == [0, 0], "the pooled connection was dropped"


def test_pooled_backend_connection_closed_after_idle_timeout(backend_factory, start_proxy):
    """backends.NAME.idle_timeout_ms: strangler closes a pooled connection
    left unused that long, and the next request opens a new one."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": {"url": b, "idle_timeout_ms": 300}})
    with proxy.client() as c:
        assert c.request("GET", "/a").status == 200
        time.sleep(0.1)  # well within it: reused
        assert c.request("GET", "/b").status == 200
        time.sleep(0.8)
        assert c.request("GET", "/c").status == 200
    assert [r.conn_id for r in b.wait_requests(3)] == [0, 0, 1]
    assert b.connections == 2


def test_idle_tunnel_outlives_the_response_timeout(backend_factory, start_proxy):
    """An upgraded connection (a WebSocket) may stay silent for long: no
    timeout of the HTTP exchange applies to it."""
    b = backend_factory("legacy", upgrade_echo(greeting=b"welcome"))
    proxy = start_proxy({"legacy": {"url": b, "response_timeout_ms": 300}},
                        timeouts={"client_body_ms": 300})
    with proxy.client() as c:
        c.send(build_request("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket")]))
        assert c.read_response().status == 101
        assert c.stream.read_exact(7) == b"welcome"
        time.sleep(0.8)
        c.send(b"ping")
        assert c.stream.read_exact(4) == b"ping"


def test_body_over_max_body_bytes_is_413(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, limits={"max_body_bytes": 1000})
    with proxy.client() as c:
        assert c.request("POST", "/", body=b"x" * 1000).status == 200
    r, closed = bad_request(proxy, build_request("POST", "/", body=b"x" * 1001))
    assert r.status == 413
    assert len(reached(b)) == 1


def test_chunked_body_over_max_body_bytes_is_refused(backend_factory, start_proxy):
    """The limit holds whatever the framing: a chunked body may not carry more
    than max_body_bytes to the backend."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, limits={"max_body_bytes": 1000})
    body = b"".join(b"100\r\n" + b"y" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    with proxy.client() as c:
        c.send(build_request("POST", "/", [("Transfer-Encoding", "chunked")]) + body)
        try:
            r = c.read_response()
            status = r.status
        except Closed:
            status = None  # aborted: acceptable
    assert status in (413, None), "a 2048-byte chunked body passed max_body_bytes = 1000"
    assert all(r.body_len <= 1000 for r in b.requests)


def test_a_routed_request_refused_for_its_body_counts_as_the_proxys_answer(
        backend_factory, start_proxy):
    """A body the proxy refuses once the request is routed (past the limit,
    bad chunked framing, stalled) is the client's doing: the metrics, which
    the guard reads, count it under backend="(proxy)", not against the
    backend it was going to; the access log still names that backend."""
    b = backend_factory("legacy")
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy"}]
    proxy = start_proxy({"legacy": b}, routes=routes, admin={},
                        limits={"max_body_bytes": 1000}, timeouts={"client_body_ms": 300})
    chunked = build_request("POST", "/up", [("Transfer-Encoding", "chunked")])
    over = b"".join(b"100\r\n" + b"y" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    for raw, want in ((chunked + over, 413), (chunked + b"5\r\nab", 408),
                      (chunked + b"zz\r\nab\r\n0\r\n\r\n", 400)):
        with proxy.client() as c:
            c.send(raw)
            assert c.read_response().status == want
    with proxy.client() as c:
        assert c.request("POST", "/up", body=b"ok").status == 200
    st, text = proxy.admin("GET", "/metrics")
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] not in ("#", ""))
    count = lambda backend, cls: int(samples.get(
        'strangler_requests_total{route="r",backend="%s",class="%s"}' % (backend, cls), 0))
    assert (count("(proxy)", "4xx"), count("legacy", "4xx"), count("legacy", "2xx")) == (3, 0, 1)
    logged = proxy.wait_access(4)
    assert [(e["status"], e["backend"]) for e in logged] == [
        (413, "legacy"), (408, "legacy"), (400, "legacy"), (200, "legacy")]


def test_custom_limits_apply(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, limits={"max_request_line": 100, "max_headers": 10,
                                               "max_header_bytes": 2048})
    with proxy.client() as c:
        assert c.request("GET", "/" + "a" * 99).status == 200
    assert bad_request(proxy, build_request("GET", "/" + "a" * 100))[0].status == 414
    nine = [("X-%d" % i, "v") for i in range(9)]  # + Host = 10
    with proxy.client() as c:
        assert c.request("GET", "/", nine).status == 200
    assert bad_request(proxy, build_request("GET", "/", nine + [("X-9", "v")]))[0].status == 431
    assert bad_request(proxy, build_request("GET", "/", [("X-Big", "a" * 2100)]))[0].status == 431


def test_header_timeout_on_second_request_of_connection(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, timeouts={"client_header_ms": 300})
    with proxy.client() as c:
        assert c.request("GET", "/first").status == 200
        c.send(b"GET /second HTTP/1.1\r\n")
        r = c.read_response()
        assert r.status == 408
        assert c.is_closed()


def test_slow_but_steady_body_is_not_timed_out(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, timeouts={"client_body_ms": 500})
    with proxy.client() as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        for ch in b"abcde":
            time.sleep(0.1)
            c.send(bytes([ch]))
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_len"] == 5


@contextlib.contextmanager
def blackhole():
    """A port whose accept queue is full: the kernel drops SYNs to it, so a
    connect hangs. Yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # fill the accept queue (never accepted)
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        time.sleep(0.05)
        yield port
    finally:
        for f in fillers:
            f.close()
        sock.close()


def test_connect_timeout_is_504(start_proxy):
    """A backend whose accept queue is full drops SYNs: the connect hangs."""
    with blackhole() as port:
        proxy = start_proxy({"legacy": {"url": "http://127.0.0.1:%d" % port,
                                        "connect_timeout_ms": 300}})
        with proxy.client() as c:
            t0 = time.monotonic()
            r = c.request("GET", "/")
            took = time.monotonic() - t0
        assert r.status == 504
        assert r.body == b"connect timeout\n"
        assert 0.25 <= took < 2.0, took
        e = proxy.wait_access(1)[0]
        assert (e["status"], e["error"]) == (504, "connect timeout")


def test_a_connect_timeout_tries_the_next_server(start_proxy, backend_factory):
    """Of two servers, one that never completes a connect: a request goes on
    to the other after connect_timeout_ms (nginx's proxy_next_upstream
    timeout). A connection never made carried nothing, so a POST goes too,
    its body whole, though strangler had queued a part of it for the first
    server while the connect hung."""
    import hashlib
    live = backend_factory("live")
    with blackhole() as port:
        proxy = start_proxy({"legacy": {"servers": ["http://127.0.0.1:%d" % port, live.url],
                                        "connect_timeout_ms": 300}})
        with proxy.client() as c:
            r = c.request("GET", "/a")  # round-robin starts with the first server
            assert r.status == 200 and r.header("X-Backend") == "live"
        e = proxy.wait_access(1)[0]
        assert e["server"] == "127.0.0.1:%d" % live.port and "error" not in e
        assert e["total_ms"] >= 250, e  # the wait for the first server
        # the next request goes to the live server by turn, the one after
        # that to the black hole again
        body = bytes(range(256)) * 4096 + b"end"
        with proxy.client() as c:
            assert c.request("GET", "/b").status == 200
            r = c.request("POST", "/c", body=body)
            assert (r.status, r.header("X-Backend")) == (200, "live"), r
        e = proxy.wait_access(3)[2]
        assert (e["status"], e["server"]) == (200, "127.0.0.1:%d" % live.port), e
        assert e["retried_from"] == [{"server": "127.0.0.1:%d" % port,
                                      "error": "connect timeout"}], e
        assert [q.path for q in live.requests] == ["/a", "/b", "/c"]
        assert (live.requests[2].body_len, live.requests[2].body_sha256) == \
            (len(body), hashlib.sha256(body).hexdigest())


def test_max_connections_makes_accept_wait(backend_factory, start_proxy):
    """Past max_connections new clients wait in the listen queue (no busy loop,
    no refusal) and are served as soon as a connection closes."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, max_connections=2)
    first, second = proxy.client(), proxy.client()
    assert first.request("GET", "/1").status == 200
    assert second.request("GET", "/2").status == 200
    third = proxy.client(timeout=0.5)
    third.send(b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n")
    with pytest.raises(Exception):
        third.read_response()  # not accepted yet: nothing comes back
    cpu_before = proxy_cpu(proxy)
    time.sleep(0.5)
    assert proxy_cpu(proxy) - cpu_before < 0.1, "the proxy spins while accept waits"
    first.close()
    third.sock.settimeout(5)
    assert third.read_response().status == 200
    assert "max_connections" in proxy.stderr_text()
    second.close()
    third.close()


def test_a_reload_of_max_connections_applies_to_accepting_at_once(backend_factory, start_proxy):
    """A reload that raises max_connections resumes accepting at once (the
    worker looked again only when one of its connections closed: new clients
    waited up to client_keepalive_ms); one that lowers it below the open
    connections pauses accepting at once (one more got in)."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, max_connections=1)
    held = proxy.client()
    assert held.request("GET", "/1").status == 200
    harness.wait_for(lambda: "accepting paused" in proxy.stderr_text(), what="the pause")
    with open(proxy.conf_path) as f:
        conf = f.read()
    with open(proxy.conf_path, "w") as f:
        f.write(conf.replace("max_connections = 1;", "max_connections = 3;"))
    harness.reload_and_wait(proxy, 1)
    second, third = proxy.client(timeout=3), proxy.client(timeout=3)
    assert second.request("GET", "/2").status == 200
    assert third.request("GET", "/3").status == 200
    with open(proxy.conf_path, "w") as f:
        f.write(conf.replace("max_connections = 1;", "max_connections = 2;"))
    harness.reload_and_wait(proxy, 2)
    fourth = proxy.client(timeout=0.5)
    fourth.send(b"GET /4 HTTP/1.1\r\nHost: t\r\n\r\n")
    with pytest.raises(Exception):
        fourth.read_response()  # three open, two allowed: it waits
    held.close()
    second.close()
    fourth.sock.settimeout(5)
    assert fourth.read_response().status == 200
    third.close()
    fourth.close()


def proxy_cpu(proxy):
    with open("/proc/%d/stat" % proxy.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("data", [
    b"GET /one HTTP/1.1\r\nHost: h\r\n\nPOST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\nContent-Length: 3\r\nHost: h\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: h\r\nX:\r\n Transfer-Encoding: chunked\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade:\r\nUpgrade: websocket\r\n\r\n",
], ids=["bare-lf-ends-head", "bare-lf-ends-request-line", "fold-after-empty-value",
        "empty-then-real-upgrade"])
def test_shapes_llhttp_accepts_are_refused(one, data):
    """llhttp 8.1 (strict) lets these through; other parsers read them
    differently, so the proxy refuses them itself (found by fuzz_request)."""
    proxy, backend = one
    r, closed = bad_request(proxy, data)
    assert r.status == 400 and closed
    assert reached(backend) == []


@pytest.mark.parametrize("reload", [False, True], ids=["", "reloaded-while-paused"])
def test_file_descriptor_exhaustion_is_survived(backend_factory, tmp_path, reload):
    """With only a few descriptors left, accept fails with EMFILE: the proxy
    pauses accepting instead of spinning, keeps serving the connections it has,
    and accepts again once descriptors are free, also when a reload came
    during the pause (it cancelled the resume: the proxy never accepted
    again, while the kernel kept queueing connections for it)."""
    import resource
    b = backend_factory("legacy")
    port = harness.free_port()
    conf = tmp_path / "fd.conf"
    conf.write_text(harness.make_config(port, {"legacy": b}, workers=1))

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
    err = open(tmp_path / "err", "wb")
    proc = subprocess.Popen([harness.BINARY, "-c", str(conf)], stdout=err, stderr=err,
                            preexec_fn=limit)
    clients = []
    try:
        harness.wait_for(lambda: harness.accepts(port), 5, what="proxy up")
        first = harness.RawClient(port)
        assert first.request("GET", "/before").status == 200
        for _ in range(40):  # more than the proxy has descriptors for
            try:
                clients.append(socket.create_connection((harness.HOST, port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        assert proc.poll() is None
        cpu = _cpu(proc.pid)
        time.sleep(0.5)
        assert _cpu(proc.pid) - cpu < 0.2, "the proxy spins on a listener it cannot accept from"
        assert first.request("GET", "/during").status == 200  # existing connections still work
        for c in clients:
            c.close()
        clients = []
        first.close()
        if reload:
            for _ in range(4):  # the first ones may meet EMFILE reading the file
                time.sleep(0.01)
                proc.send_signal(signal.SIGHUP)
            done = "reload: %s: 1 backends" % conf
            harness.wait_for(lambda: done in (tmp_path / "err").read_text(), what="a reload")
        harness.wait_for(lambda: _served(port), 5, what="accepting again")
        assert "accept: Too many open files" in (tmp_path / "err").read_text()
    finally:
        for c in clients:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_admin_listener_pauses_when_descriptors_run_out(backend_factory, start_proxy):
    """The admin listener out of descriptors pauses accepting as the workers'
    do. (It had no error callback: libevent retried accept() at once, a core
    at full speed and a stderr line each time, 130 MB of log in 5 s.)"""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, admin={})
    time.sleep(0.2)  # the harness's start-up probes are gone
    before = len(harness.open_fds(proxy.pid))
    first = socket.create_connection((harness.HOST, proxy.port), timeout=5)
    harness.wait_for(lambda: len(harness.open_fds(proxy.pid)) == before + 1,
                     what="the client accepted")
    fillers = [first] + harness.exhaust_fds(proxy)  # first's descriptor comes free at the end
    try:
        admin = socket.create_connection((harness.HOST, proxy.admin_port), timeout=5)
        admin.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % proxy.admin_port)
        time.sleep(0.3)
        cpu = _cpu(proxy.pid)
        time.sleep(1)
        assert _cpu(proxy.pid) - cpu < 0.2, "the admin listener spins on accept()"
        for f in fillers:
            f.close()
        fillers = []
        assert admin.recv(100).startswith(b"HTTP/1.1 200 ")  # accepted after the pause
        admin.close()
    finally:
        for f in fillers:
            f.close()
    err = proxy.stderr_text()
    assert "Error from accept() call" not in err
    assert 1 <= err.count("admin: accept: Too many open files") <= 2, err[-2000:]


def _served(port):
    try:
        with harness.RawClient(port, timeout=1) as c:
            return c.request("GET", "/after").status == 200
    except Exception:
        return False


def _cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _short_body(sent, announced, pause):
    """A handler announcing `announced` body bytes that sends `sent`, waits
    `pause` seconds and closes."""
    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % announced)
        conn.send(b"y" * sent)
        time.sleep(pause)
        return CLOSE
    return handler


def test_backend_closes_inside_a_large_body_aborts_client(backend_factory, start_proxy):
    """A large Content-Length body is relayed kernel to kernel; a backend that
    stops 3 MiB into 8 still ends the client's connection short of the
    announced length, never with a complete-looking response."""
    sent = 3 * 1024 * 1024
    b = backend_factory("legacy", by_path({"/cut": _short_body(sent, 8 * 1024 * 1024, 0.1)}))
    proxy = start_proxy({"legacy": b}, log_level="debug")
    s = socket.create_connection((harness.HOST, proxy.port), timeout=10)
    s.sendall(build_request("GET", "/cut"))
    got = harness.Stream(s, timeout=10).read_to_eof()
    s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"y" * sent
    e = proxy.wait_access(1)[0]
    assert e["error"] == "upstream response truncated"
    assert e["bytes_out"] == len(got)
    assert re.search(r"response body: \d+ bytes relayed by splice", proxy.stderr_text())
    with proxy.client() as c:
        assert c.request("GET", "/good").status == 200


def test_large_body_that_trickles_is_relayed_as_it_comes(backend_factory, start_proxy):
    """A large body is relayed in batches while it arrives fast, but a backend
    that then sends a little and pauses must not have that little held back
    until a batch fills: the client gets it during the pause."""
    total = 4 * 1024 * 1024
    burst, little = 300 * 1024, 20 * 1024
    release = threading.Event()

    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        time.sleep(0.2)
        conn.send(b"a" * burst)
        time.sleep(0.2)
        conn.send(b"c" * little)
        release.wait(5)
        conn.send(b"b" * (total - burst - little))
        return KEEP

    b = backend_factory("legacy", by_path({"/trickle": handler}))
    proxy = start_proxy({"legacy": b}, log_level="debug")
    s = socket.create_connection((harness.HOST, proxy.port), timeout=10)
    try:
        s.sendall(build_request("GET", "/trickle"))
        got = b""
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(1 << 20)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
            if got.endswith(b"c" * little):
                break
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"a" * burst + b"c" * little, \
            "%d of %d bytes sent before the pause arrived" % (len(body), burst + little)
        release.set()
        s.settimeout(10)
        while len(body) < total:
            chunk = s.recv(1 << 20)
            assert chunk, "connection closed early"
            body += chunk
        assert body == b"a" * burst + b"c" * little + b"b" * (total - burst - little)
    finally:
        release.set()
        s.close()
    assert re.search(r"response body: \d+ bytes relayed by splice", proxy.stderr_text())


def test_large_body_from_a_slow_backend_to_a_slower_client_arrives_whole(backend_factory,
                                                                       start_proxy):
    """A large body that the backend sends steadily but slowly, to a client that
    reads nothing for a while: the relay stops reading while the client is
    behind, and neither that pause nor the slow source ends the exchange."""
    total, piece = 6 * 1024 * 1024, 64 * 1024

    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // piece):
            conn.send(b"p" * piece)
            time.sleep(0.004)
        return KEEP

    b = backend_factory("legacy", by_path({"/slow": handler}))
    proxy = start_proxy({"legacy": {"url": b.url, "response_timeout_ms": 2000}},
                        log_level="debug")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    s.settimeout(10)
    s.connect((harness.HOST, proxy.port))
    try:
        s.sendall(build_request("GET", "/slow"))
        time.sleep(1.5)  # the pipe and the socket buffers fill meanwhile
        got = b""
        while True:
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep and len(body) >= total:
                break
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == total and body == b"p" * total
    e = proxy.wait_access(1)[0]
    assert e["status"] == 200 and not e.get("error")
    assert re.search(r"response body: \d+ bytes relayed by splice", proxy.stderr_text())


def test_large_body_that_stalls_hits_the_response_timeout(backend_factory, start_proxy):
    """A backend that stops in the middle of a large (relayed) body is cut
    after response_timeout_ms without progress, logged as a timeout, and the
    client sees the connection end short of the announced length."""
    sent = 2 * 1024 * 1024
    b = backend_factory("legacy", by_path({"/stall": _short_body(sent, 8 * 1024 * 1024, 3)}))
    proxy = start_proxy({"legacy": {"url": b.url, "response_timeout_ms": 400}}, log_level="debug")
    s = socket.create_connection((harness.HOST, proxy.port), timeout=10)
    s.sendall(build_request("GET", "/stall"))
    t0 = time.monotonic()
    got = harness.Stream(s, timeout=10).read_to_eof()
    elapsed = time.monotonic() - t0
    s.close()
    assert got.partition(b"\r\n\r\n")[2] == b"y" * sent
    assert elapsed < 2.5, "the stalled backend was not cut by its timeout"
    e = proxy.wait_access(1)[0]
    assert e["error"] == "upstream timeout"
    assert re.search(r"response body: \d+ bytes relayed by splice", proxy.stderr_text())


def test_large_upload_that_stalls_hits_the_body_timeout(backend_factory, start_proxy):
    """The same for a client that stops in the middle of a large upload:
    cut after client_body_ms without progress, logged as a body timeout."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, log_level="debug", timeouts={"client_body_ms": 400})
    head = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (8 * 1024 * 1024)
    s = socket.create_connection((harness.HOST, proxy.port), timeout=10)
    try:
        s.sendall(head + b"u" * (2 * 1024 * 1024))
        e = proxy.wait_access(1, timeout=3)[0]
    finally:
        s.close()
    assert e["error"] == "client body timeout"
    assert e["bytes_in"] == len(head) + 2 * 1024 * 1024
    assert re.search(r"request body: \d+ bytes relayed by splice", proxy.stderr_text())


def test_client_closes_inside_a_large_upload(backend_factory, start_proxy):
    """The client stops 3 MiB into an 8 MiB upload: the exchange is logged as
    aborted with the bytes that did arrive, and the proxy serves on."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, log_level="debug")
    head = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (8 * 1024 * 1024)
    s = socket.create_connection((harness.HOST, proxy.port), timeout=10)
    s.sendall(head + b"u" * (3 * 1024 * 1024))
    time.sleep(0.3)
    s.close()
    e = proxy.wait_access(1)[0]
    assert e["error"] == "client closed connection"
    assert e["bytes_in"] == len(head) + 3 * 1024 * 1024
    assert re.search(r"request body: \d+ bytes relayed by splice", proxy.stderr_text())
    with proxy.client() as c:
        assert c.request("GET", "/good").status == 200


def test_client_that_stops_reading_is_dropped_after_send_timeout(backend_factory, start_proxy):
    """A client that asks for a large answer and never reads it does not hold
    the connection (and the backend's) forever: after timeouts.client_send_ms
    without progress the exchange ends, logged as a send timeout."""
    b = backend_factory("legacy", by_path({"/big": harness.stream_body(64 * 1024 * 1024,
                                                                       b"z" * 65536)}))
    proxy = start_proxy({"legacy": b}, timeouts={"client_send_ms": 300})
    s = socket.create_connection((harness.HOST, proxy.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(build_request("GET", "/big"))
    t0 = time.monotonic()
    e = proxy.wait_access(1, timeout=10)[0]
    took = time.monotonic() - t0
    s.close()
    assert e["error"] == "client send timeout"
    assert e["status"] == 200 and 0 < e["bytes_out"] < 64 * 1024 * 1024
    assert took < 5, "dropped after %.1fs" % took
    with proxy.client() as c:
        assert c.request("GET", "/good").status == 200


def chunked_of_path(req, conn):
    """A chunked answer of as many bytes as the path says (/N), at once."""
    n = int(req.path.lstrip("/"))
    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(n // 16384):
        conn.send(b"4000\r\n" + b"z" * 16384 + b"\r\n")
    conn.send(b"0\r\n\r\n")
    return KEEP


@pytest.mark.parametrize("ending", ["half-close", "keep-alive deadline"])
def test_an_answer_still_being_written_is_not_cut(backend_factory, start_proxy, ending):
    """The backend's answer is complete and part of it still waits in the
    proxy for a client that reads late. Neither the client's half-close
    (shutdown(SHUT_WR): it will send nothing more) nor client_keepalive_ms
    (idle starts once everything is written) may cut it: the build before
    this test freed the connection with that part unsent. Which sizes leave
    a part in the proxy depends on the kernel's socket buffers, so a range
    of sizes runs at once."""
    b = backend_factory("legacy", chunked_of_path)
    proxy = start_proxy({"legacy": b}, timeouts={"client_keepalive_ms": 300})
    sizes = [kb << 10 for kb in range(3584, 5376, 64)]
    results = {}

    def one(n):
        with socket.create_connection((harness.HOST, proxy.port), timeout=10) as c:
            c.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
            time.sleep(1.0)  # reads nothing for a while
            if ending == "half-close":
                c.shutdown(socket.SHUT_WR)
            got = bytearray()
            try:
                while not got.endswith(b"\r\n0\r\n\r\n"):
                    d = c.recv(1 << 20)
                    if not d:
                        break
                    got += d
            except OSError:
                pass
            results[n] = got.count(b"z") == n and got.endswith(b"\r\n0\r\n\r\n")

    threads = [threading.Thread(target=one, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    cut = [n >> 10 for n in sizes if not results.get(n)]
    assert cut == [], "answers cut short (KiB): %r" % cut


def test_pipelined_requests_before_a_half_close_are_all_answered(backend_factory, start_proxy):
    """Three requests in one packet, then shutdown(SHUT_WR): three answers,
    then the proxy closes (it answered one and dropped two: the end of the
    stream arrived while the backend was still thinking about the first)."""
    b = backend_factory("legacy", delayed(0.05))
    proxy = start_proxy({"legacy": b})
    with socket.create_connection((harness.HOST, proxy.port), timeout=5) as c:
        c.sendall(b"".join(b"GET /r%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(3)))
        c.shutdown(socket.SHUT_WR)
        got = harness.Stream(c).read_to_eof()
    assert got.count(b"HTTP/1.1 200 ") == 3, got
    assert [r.path for r in b.requests] == ["/r0", "/r1", "/r2"]
    assert [e["path"] for e in proxy.wait_access(3)] == ["/r0", "/r1", "/r2"]
    # an incomplete request before the half-close is not waited for
    with socket.create_connection((harness.HOST, proxy.port), timeout=5) as c:
        c.sendall(b"GET /r3 HTTP/1.1\r\nHost: t\r\n\r\nGET /partial HTTP/1.1\r\nHo")
        c.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        got = harness.Stream(c).read_to_eof()
    assert got.count(b"HTTP/1.1 200 ") == 1 and time.monotonic() - started < 2


def test_a_pipelining_client_that_does_not_read_is_held_back(backend_factory, start_proxy):
    """Pipelined requests are taken only while the client reads its answers:
    one connection sending 20,000 requests and reading nothing grew the proxy
    by the sum of their answers (about 23 MB a second, without limit). Once
    it reads, every answer arrives, in order."""
    n, size = 20000, 4096  # small answers: each exchange ends at once
    answer = (b"HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"  # relayed as is
              b"Content-Length: %d\r\n\r\n" % size + b"x" * size)
    b = backend_factory("legacy", raw(answer, close=False))
    proxy = start_proxy({"legacy": b})
    rss0 = proxy.rss_kb()
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.connect((harness.HOST, proxy.port))
    c.settimeout(10)
    try:
        c.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(n)))
        time.sleep(2)
        grown = proxy.rss_kb() - rss0
        taken = len(b.requests)
        assert grown < 16 * 1024, "RSS grew %d KiB for %d requests taken" % (grown, taken)
        assert taken < n // 4, taken
        want, got = n * len(answer), 0
        while got < want:
            d = c.recv(1 << 20)
            assert d, "closed after %d of %d bytes" % (got, want)
            got += len(d)
    finally:
        c.close()
    assert [r.path for r in b.wait_requests(n)][-1] == "/p%d" % (n - 1)


def test_running_out_of_descriptors_is_not_the_backends_fault(backend_factory, start_proxy):
    """No descriptor left for the backend connection: 503, and the backend is
    not counted as failing. (It was: with the passive check, a burst of
    clients marked a healthy backend down and moved its users to the other
    side of their rollouts.)"""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b})  # health.unhealthy: 3 failures mark it down
    time.sleep(0.2)  # the harness's start-up probe connection is gone
    before = len(harness.open_fds(proxy.pid))
    with proxy.client() as c:
        harness.wait_for(lambda: len(harness.open_fds(proxy.pid)) == before + 1,
                         what="the client accepted")
        fillers = harness.exhaust_fds(proxy)
        for _ in range(3):  # nothing left for a backend connection
            r = c.request("GET", "/x")
            assert r.status == 503 and r.body == b"no local resources to connect\n", r
        for f in fillers:
            f.close()
        harness.limit_fds(proxy.pid)
        assert c.request("GET", "/y").status == 200
    assert "is down" not in proxy.stderr_text()
    assert [e["status"] for e in proxy.wait_access(4)] == [503, 503, 503, 200]


def test_truncated_chunked_answer_to_http10_client_is_not_a_clean_close(backend_factory,
                                                                         start_proxy):
    """security.md: "A body that ends early is never passed off as complete ...
    the client sees an incomplete response rather than a shorter 'successful'
    one." An HTTP/1.0 client gets a chunked answer close-delimited
    (sp_response_body_mode); when the backend cuts it, strangler closes the
    client connection normally (FIN), which for close-delimited framing IS
    the end of a complete response: that client's connection is reset."""
    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n100\r\npartial")
        time.sleep(0.2)
        return harness.CLOSE

    b = backend_factory("legacy", handler)
    p = start_proxy({"legacy": b})
    s = socket.create_connection((harness.HOST, p.port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    outcome = None
    try:
        while True:
            d = s.recv(65536)
            if not d:
                outcome = "clean close"
                break
            data += d
    except ConnectionResetError:
        outcome = "reset"
    s.close()
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Content-Length" not in data  # close-delimited: only the close frames it
    assert outcome == "reset", ("the cut answer %r ended with a clean close: the client "
                                "cannot tell it from a complete one" % data[-40:])


def read_to_end(s):
    """(bytes, "clean close" or "reset") of what a socket gives until it ends."""
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return data, "clean close"
            data += d
    except ConnectionResetError:
        return data, "reset"


def test_an_answer_cut_by_the_drain_timeout_is_not_a_clean_close(backend_factory,
                                                                 start_proxy):
    """A stop's drain_timeout_ms cut a close-delimited answer (an HTTP/1.0
    client's, a backend streaming without a length) with a plain close,
    which for that framing is the end of a complete answer: 9 parts of 40
    passed for the whole. It is reset, as any answer cut short."""
    def stream(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(40):
            conn.send(b"part %02d\n" % i)
            time.sleep(0.1)
        return harness.CLOSE

    p = start_proxy({"legacy": backend_factory("legacy", stream)}, drain_timeout_ms=600)
    s = socket.create_connection((harness.HOST, p.port), timeout=10)
    s.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGTERM)
    data, outcome = read_to_end(s)
    s.close()
    assert data.startswith(b"HTTP/1.0 200 OK\r\n") and b"part 01" in data, data[:200]
    assert b"part 39" not in data
    assert outcome == "reset", "%d bytes of the cut answer ended with a clean close" % len(data)
    assert p.wait_access(1)[0]["error"] == "drain timeout"


def test_an_answer_cut_by_the_send_timeout_is_not_a_clean_close(backend_factory, start_proxy):
    """The same when the client stops reading past client_send_ms: half of
    an 8 MiB close-delimited answer passed for the whole."""
    body = b"y" * (8 << 20)
    b = backend_factory("legacy", lambda req, conn: Response(200, body, length=False))
    p = start_proxy({"legacy": b}, timeouts={"client_send_ms": 500})
    s = socket.create_connection((harness.HOST, p.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
    time.sleep(2.0)  # not reading: the proxy gives up on it
    data, outcome = read_to_end(s)
    s.close()
    assert data.startswith(b"HTTP/1.0 200 OK\r\n") and len(data) < len(body), len(data)
    assert outcome == "reset", "%d bytes of the cut answer ended with a clean close" % len(data)


def test_max_connections_is_shared_out_whole_between_workers(backend_factory, start_proxy):
    """max_connections is per process, split between workers: 3 over 2 gave
    each worker 1, so 2 clients were served at once (the remainder lost);
    the first worker now takes it (2 and 1). 16 connections are spread by
    the kernel over both workers' listeners."""
    p = start_proxy({"legacy": backend_factory("legacy")}, workers=2, max_connections=3)
    socks = []
    try:
        for _ in range(16):
            s = socket.create_connection((harness.HOST, p.port), timeout=3)
            s.sendall(harness.build_request())
            socks.append(s)
        time.sleep(0.5)
        served = 0
        for s in socks:  # answered, and kept open: each holds its worker's slot
            s.settimeout(0.2)
            try:
                served += s.recv(100).startswith(b"HTTP/1.1 200")
            except socket.timeout:
                pass
        assert served == 3, "%d connections served at once with max_connections = 3" % served
    finally:
        for s in socks:
            s.close()
