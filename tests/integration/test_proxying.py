"""The relay itself: connection reuse on both sides, pipelining, bodies in both
directions (chunked, large, absent), 100-continue, upgrades, and the headers the
proxy removes or adds."""
import hashlib
import json
import re
import socket
import threading
import time

import pytest

import harness
from harness import (CLOSE, KEEP, Closed, Response, build_request, by_path, delayed, raw,
                     stream_body, upgrade_echo)

MiB = 1 << 20


@pytest.fixture
def one(backend_factory, start_proxy):
    """One backend (legacy) as the default; yields (proxy, backend)."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b})
    return p, b


# -- keep-alive and pipelining


def test_client_keepalive_many_requests_one_socket(one):
    proxy, backend = one
    with proxy.client() as c:
        for i in range(5):
            r = c.request("GET", "/ka/%d" % i)
            assert r.status == 200
            assert r.json()["target"] == "/ka/%d" % i
            assert r.header("Connection") is None  # HTTP/1.1 default: stays open
    assert [e["path"] for e in proxy.wait_access(5)] == ["/ka/%d" % i for i in range(5)]


def test_backend_connection_reused_for_sequential_requests(one):
    proxy, backend = one
    with proxy.client() as c:
        for i in range(3):
            assert c.request("GET", "/seq/%d" % i).status == 200
    # a new client connection still gets the pooled backend connection
    for i in range(3, 6):
        with proxy.client() as c:
            assert c.request("POST", "/seq/%d" % i, body=b"x" * i).status == 200
    reqs = backend.wait_requests(6)
    assert backend.connections == 1
    assert [r.conn_id for r in reqs] == [0] * 6
    assert [r.seq for r in reqs] == list(range(6))


def test_client_connection_close_is_honoured(one):
    proxy, backend = one
    with proxy.client() as c:
        r = c.request("GET", "/bye", headers=[("Connection", "close")])
        assert r.status == 200
        assert r.header("Connection") == "close"
        assert c.is_closed()


def test_pipelined_requests_answered_in_order(one):
    proxy, backend = one
    reqs = (build_request("GET", "/p/1") +
            build_request("POST", "/p/2", body=b"second body") +
            build_request("GET", "/p/3", headers=[("X-N", "3")]))
    with proxy.client() as c:
        c.send(reqs)
        got = [c.read_response() for _ in range(3)]
    assert [r.status for r in got] == [200, 200, 200]
    assert [r.json()["target"] for r in got] == ["/p/1", "/p/2", "/p/3"]
    assert [r.json()["method"] for r in got] == ["GET", "POST", "GET"]
    assert got[1].json()["body_len"] == len(b"second body")
    recorded = backend.wait_requests(3)
    assert recorded[1].body == b"second body"
    assert recorded[2].header("X-N") == "3"


def test_pipelined_requests_with_slow_first_answer(backend_factory, start_proxy):
    """A slow first answer must not let the second overtake it."""
    b = backend_factory("legacy", by_path({"/slow": delayed(0.3, lambda req, conn: Response(
        200, b"slow"))}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/slow") + build_request("GET", "/fast"))
        first, second = c.read_response(), c.read_response()
    assert first.body == b"slow"
    assert second.json()["target"] == "/fast"


# -- bodies


def test_chunked_request_body_forwarded(one):
    proxy, backend = one
    parts = [b"hello", b" ", b"w" * 300, b"\r\n0\r\n", b"end"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts[:2])
    body += b"%x;ext=1\r\n%s\r\n" % (len(parts[2]), parts[2])  # chunk extension
    body += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts[3:])
    body += b"0\r\nX-Trailer: t\r\n\r\n"
    with proxy.client() as c:
        c.send(build_request("POST", "/chunked", [("Transfer-Encoding", "chunked")]) + body)
        r = c.read_response()
        assert r.status == 200
        # the connection stays usable after a chunked request
        assert c.request("GET", "/after").status == 200
    got = backend.wait_requests(1)[0]
    assert got.chunked, "the proxy re-chunks a chunked request body"
    assert got.header("Content-Length") is None
    assert got.body == b"".join(parts)


def test_length_request_body_forwarded(one):
    proxy, backend = one
    payload = bytes(range(256)) * 40
    with proxy.client() as c:
        r = c.request("PUT", "/put", body=payload)
    assert r.status == 200
    got = backend.wait_requests(1)[0]
    assert got.header("Content-Length") == str(len(payload))
    assert not got.chunked
    assert got.body == payload


def test_chunked_response_is_streamed(backend_factory, start_proxy):
    gate = threading.Event()

    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        if not gate.wait(5):
            return CLOSE
        conn.send(b"6\r\nsecond\r\n0\r\n\r\n")
        return KEEP

    b = backend_factory("legacy", handler)
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/stream"))
        head = c.stream.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in head.lower()
        # the first chunk arrives while the backend still holds the rest back
        assert c.stream.read_until(b"\r\n") == b"5\r\n"
        assert c.stream.read_exact(7) == b"first\r\n"
        gate.set()
        assert c.stream.read_until(b"\r\n") == b"6\r\n"
        assert c.stream.read_exact(8) == b"second\r\n"
        assert c.stream.read_exact(5) == b"0\r\n\r\n"
        # and the connection is ready for the next request
        assert c.request("GET", "/next").status == 200


def test_chunked_response_body_intact(backend_factory, start_proxy):
    chunks = [b"a", b"bb" * 1000, b"\r\n0\r\n\r\n", bytes(range(256)) * 300]
    b = backend_factory("legacy", lambda req, conn: Response(200, chunks=chunks))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        r = c.request("GET", "/chunks")
        assert r.framing == "chunked"
        assert r.body == b"".join(chunks)
        assert c.request("GET", "/chunks").body == b"".join(chunks)


class RssSampler:
    """Samples the proxy's VmRSS every few milliseconds in a thread."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(self.proxy.rss_kb())
            except (OSError, ValueError):
                pass
            self._stop.wait(0.005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(5)


RSS_LIMIT_KB = 60 * 1024
BLOCK = bytes(range(256)) * 4096  # 1 MiB


def test_large_upload_streams_with_bounded_memory(one):
    proxy, backend = one
    backend.store_body = False
    backend.pause_every, backend.pause = 4 * MiB, 0.02  # a reader slower than the sender
    total = 64 * MiB
    digest = hashlib.sha256(BLOCK * 64).hexdigest()
    errors = []
    with proxy.client(timeout=10) as c:
        def send():
            try:
                c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
                for _ in range(64):
                    c.send(BLOCK)
            except OSError as e:
                errors.append(e)

        sender = threading.Thread(target=send, daemon=True)
        with RssSampler(proxy) as rss:
            sender.start()
            sender.join(30)
            r = c.read_response()
    assert not sender.is_alive() and not errors, errors
    assert r.status == 200
    assert r.json()["body_len"] == total
    got = backend.wait_requests(1)[0]
    assert got.body_sha256 == digest
    assert len(rss.samples) > 10
    print("RSS samples: %d, max %d kB" % (len(rss.samples), max(rss.samples)))
    assert max(rss.samples) < RSS_LIMIT_KB, "proxy RSS peaked at %d kB" % max(rss.samples)


def assert_next_request_is_prompt(client, target):
    """After a relayed (spliced) body, the same connection serves a small
    request at once: the relay gave both connections back to their usual
    reads and writes."""
    started = time.monotonic()
    r = client.request("GET", target)
    assert r.status == 200
    assert time.monotonic() - started < 1.0


def test_large_upload_then_small_request_on_the_same_connection(one):
    proxy, backend = one
    backend.store_body = False
    total = 16 * MiB
    with proxy.client(timeout=10) as c:
        r = c.request("POST", "/upload", body=BLOCK * 16)
        assert r.status == 200 and r.json()["body_len"] == total
        assert_next_request_is_prompt(c, "/after")
    assert [q.path for q in backend.wait_requests(2)] == ["/upload", "/after"]


def test_large_download_streams_with_bounded_memory(backend_factory, start_proxy):
    total = 64 * MiB
    b = backend_factory("legacy", by_path({"/download": stream_body(total, BLOCK)}))
    proxy = start_proxy({"legacy": b})
    h = hashlib.sha256()
    n = [0]

    def sink(data):
        h.update(data)
        n[0] += len(data)

    with proxy.client(timeout=10) as c, RssSampler(proxy) as rss:
        c.send(build_request("GET", "/download"))
        head = c.stream.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: %d\r\n" % total in head
        c.stream.consume(total, sink, pause_every=4 * MiB, pause=0.02)  # a slow reader
        assert_next_request_is_prompt(c, "/after")
    assert n[0] == total
    assert h.hexdigest() == hashlib.sha256(BLOCK * 64).hexdigest()
    assert len(rss.samples) > 10
    print("RSS samples: %d, max %d kB" % (len(rss.samples), max(rss.samples)))
    assert max(rss.samples) < RSS_LIMIT_KB, "proxy RSS peaked at %d kB" % max(rss.samples)


# -- responses without a body


def head_handler(body_too):
    def handler(req, conn):
        if req.method != "HEAD":
            return Response(200, b"full body", headers=[("X-Backend", "legacy")])
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Head: 1\r\n\r\n" +
                  (b"x" * 1234 if body_too else b""))
        return KEEP
    return handler


@pytest.mark.parametrize("body_too", [False, True], ids=["correct-backend", "backend-sends-body"])
def test_head_response_has_no_body(backend_factory, start_proxy, body_too):
    b = backend_factory("legacy", head_handler(body_too))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        r = c.request("HEAD", "/thing")
        assert r.status == 200
        assert r.header("Content-Length") == "1234"
        assert r.header("X-Head") == "1"
        assert r.header("Transfer-Encoding") is None
        # no body bytes may follow: the next response must parse cleanly
        r2 = c.request("GET", "/thing")
        assert r2.status == 200
        assert r2.body == b"full body"


@pytest.mark.parametrize("status,extra", [
    (204, b""),
    (304, b"Content-Length: 50\r\nETag: \"v1\"\r\n"),
    (304, b""),
])
def test_204_and_304_have_no_body(backend_factory, start_proxy, status, extra):
    def handler(req, conn):
        if req.path == "/next":
            return Response(200, b"next")
        conn.send(b"HTTP/1.1 %d X\r\n%s\r\n" % (status, extra))
        return KEEP

    b = backend_factory("legacy", handler)
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/empty"))
        head = c.stream.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d" % status)
        assert b"transfer-encoding" not in head.lower()
        if status == 204:
            assert b"content-length" not in head.lower()
        assert c.request("GET", "/next").body == b"next"


# -- Expect: 100-continue


def test_expect_100_continue(one):
    proxy, backend = one
    body = b"the body after 100"
    with proxy.client() as c:
        c.send(b"POST /expect HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
               b"Expect: 100-continue\r\n\r\n" % len(body))
        interim = c.read_response()
        assert (interim.status, interim.reason) == (100, "Continue")
        assert backend.requests == []  # nothing complete yet: the body is still here
        c.send(body)
        final = c.read_response("POST")
        assert final.status == 200
        assert final.json()["body_len"] == len(body)
    got = backend.wait_requests(1)[0]
    assert got.header("Expect") == "100-continue"
    assert got.body == body
    # the 100 was written too (it was left out of the count)
    e = proxy.wait_access(1)[0]
    assert e["bytes_out"] == len(interim.raw_head) + len(final.raw_head) + len(final.body)


@pytest.mark.parametrize("minor", [1, 0])
def test_informational_responses_reach_http11_clients(backend_factory, start_proxy, minor):
    """A 103 Early Hints goes to an HTTP/1.1 client with its end-to-end
    headers, before the final answer (RFC 9110 §15.2: it was swallowed); an
    HTTP/1.0 client, which knows no 1xx, gets the final answer alone."""
    hints = (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n"
             b"Connection: x-hop\r\nX-Hop: 1\r\n\r\n")
    b = backend_factory("legacy", lambda req, conn: (conn.send(hints), Response(200, b"ok"))[1])
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(b"GET /h HTTP/1.%d\r\nHost: t\r\n\r\n" % minor)
        first = c.read_response()
        if minor:
            assert (first.status, first.reason) == (103, "Early Hints")
            assert first.header("Link") == "</s.css>; rel=preload"
            assert first.header("X-Hop") is None and first.header("Connection") is None
            first = c.read_response()
        assert (first.status, first.body) == (200, b"ok")


def test_expect_100_continue_refused_by_backend(backend_factory, start_proxy):
    """The backend answers 417 without reading the body: the client gets the
    417 and no 100."""
    b = backend_factory("legacy", lambda req, conn: Response(417, b"no", close=True))
    b.auto_continue = False
    b.read_bodies = False  # answer from the head alone
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(b"POST /expect HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response("POST")
        assert r.status == 417
        assert r.body == b"no"


# -- upgrades


def test_upgrade_tunnel_echoes_both_ways(backend_factory, start_proxy):
    b = backend_factory("legacy", upgrade_echo(greeting=b"welcome"))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]))
        r = c.read_response()
        assert r.status == 101
        assert r.header("Upgrade") == "websocket"
        assert r.header("Connection").lower() == "upgrade"
        assert c.stream.read_exact(7) == b"welcome"
        c.send(b"ping")
        assert c.stream.read_exact(4) == b"ping"
        blob = bytes(range(256)) * 4096 * 2  # 2 MiB through the tunnel
        t = threading.Thread(target=c.send, args=(blob,), daemon=True)
        t.start()
        assert c.stream.read_exact(len(blob)) == blob
        t.join(5)
        head_len = len(r.raw_head)
    got = b.wait_requests(1)[0]
    assert got.header("Upgrade") == "websocket"
    assert got.header("Connection").lower() == "upgrade"
    assert got.header("Sec-WebSocket-Key") == "dGhlIHNhbXBsZSBub25jZQ=="
    entry = proxy.wait_access(1)[0]
    assert entry["status"] == 101
    # the tunnel's bytes count too (the log had the two heads only)
    assert entry["bytes_in"] > len(blob) + 4
    assert entry["bytes_out"] == head_len + 7 + 4 + len(blob)


def test_an_http10_upgrade_is_ignored(backend_factory, start_proxy):
    """Upgrade is HTTP/1.1's (RFC 9110 §7.8): a 1.0 request asking for one is
    forwarded as a plain request, and its answer closes the connection (it
    was forwarded as an upgrade, and a 101 relayed to the 1.0 client)."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(b"GET /ws HTTP/1.0\r\nHost: t\r\nConnection: Upgrade, keep-alive\r\n"
               b"Upgrade: websocket\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and c.is_closed()
    got = b.wait_requests(1)[0]
    assert got.header("Upgrade") is None and "upgrade" not in (got.header("Connection") or "")


@pytest.mark.parametrize("upgrade", ["h2c", "H2C", "websocket, h2c"])
def test_an_h2c_upgrade_is_ignored(backend_factory, start_proxy, upgrade):
    """h2c (HTTP/2 over cleartext, dropped by RFC 9113): a backend that
    accepted the upgrade would speak HTTP/2 with the client, past every route
    and header rule (h2c smuggling). It was forwarded as any upgrade; it is
    ignored now, as Envoy does: a plain request, and the connection closes."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(b"GET /h2 HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: " + upgrade.encode() + b"\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and c.is_closed()
    got = b.wait_requests(1)[0]
    assert got.header("Upgrade") is None and got.header("HTTP2-Settings") is None
    assert "upgrade" not in (got.header("Connection") or "").lower()


def test_upgrade_tunnel_closed_by_backend(backend_factory, start_proxy):
    def handler(req, conn):
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
                  b"last words")
        return CLOSE

    b = backend_factory("legacy", handler)
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/up", [("Connection", "upgrade"), ("Upgrade", "x")]))
        assert c.read_response().status == 101
        assert c.stream.read_exact(10) == b"last words"
        assert c.is_closed()


def test_upgrade_refused_by_backend_is_plain_response(one):
    """The backend ignores the Upgrade and answers 200: relayed, then close."""
    proxy, backend = one
    with proxy.client() as c:
        r = c.request("GET", "/noup", [("Connection", "Upgrade"), ("Upgrade", "websocket")])
        assert r.status == 200
        assert r.json()["target"] == "/noup"


# -- headers


def test_hop_by_hop_request_headers_removed(one):
    proxy, backend = one
    with proxy.client() as c:
        r = c.request("GET", "/hop", [
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "s"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("X-Kept", "yes"),
        ])
        assert r.status == 200
    got = backend.wait_requests(1)[0]
    names = [k.lower() for k, _ in got.headers]
    for hop in ("connection", "x-secret", "keep-alive", "te", "proxy-connection", "trailer",
                "upgrade"):
        assert hop not in names, (hop, got.headers)
    assert got.header("X-Kept") == "yes"
    assert got.header("Host") == "test.local"


def test_hop_by_hop_response_headers_removed(backend_factory, start_proxy):
    b = backend_factory("legacy", lambda req, conn: Response(200, b"ok", headers=[
        ("Connection", "X-Internal"), ("X-Internal", "1"), ("Keep-Alive", "timeout=9"),
        ("Proxy-Connection", "keep-alive"), ("X-Public", "ok")]))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        r = c.request("GET", "/")
        names = [k.lower() for k, _ in r.headers]
        assert r.header("X-Public") == "ok"
        for hop in ("x-internal", "keep-alive", "proxy-connection"):
            assert hop not in names, r.headers
        assert r.header("Connection") is None
        assert r.body == b"ok"


def test_x_forwarded_headers(one):
    proxy, backend = one
    with proxy.client() as c:
        c.request("GET", "/xff", [("X-Forwarded-For", "1.2.3.4"),
                                  ("X-Forwarded-Proto", "https"),
                                  ("X-Forwarded-Host", "spoofed.example")], host="front.example:81")
        c.request("GET", "/xff2")
        c.request("GET", "/xff3", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "5.6.7.8")])
    first, second, third = backend.wait_requests(3)
    assert first.header_all("X-Forwarded-For") == ["1.2.3.4, 127.0.0.1"]
    assert first.header_all("X-Forwarded-Proto") == ["http"]
    assert first.header_all("X-Forwarded-Host") == ["front.example:81"]
    assert first.header("Host") == "front.example:81"
    assert second.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert second.header_all("X-Forwarded-Host") == ["test.local"]
    assert third.header_all("X-Forwarded-For") == ["1.2.3.4, 5.6.7.8, 127.0.0.1"]


def test_underscore_names_cannot_pose_as_the_proxys_headers(one):
    """CGI-style backends read X_Forwarded_Proto as HTTP_X_FORWARDED_PROTO:
    such names of headers the proxy sets or removes are dropped (a client
    could pass X-Strangler_Shadow: 1 off as a mirror's request); other
    names with "_" pass."""
    proxy, backend = one
    with proxy.client() as c:
        c.request("GET", "/u", [("X-Strangler_Shadow", "1"), ("X-Forwarded_Proto", "https"),
                                ("X_Forwarded_Host", "evil.example"), ("X_Request_Id", "z"),
                                ("Transfer_Encoding", "chunked"), ("X-Custom_Thing", "kept")])
    got = backend.wait_requests(1)[0]
    names = [n.lower() for n, _ in got.headers]
    assert not [n for n in names if "_" in n and n != "x-custom_thing"], names
    assert got.header("X-Custom_Thing") == "kept"


@pytest.mark.parametrize("sent", [
    [("X-Request-Id", "first"), ("X-Request-Id", "second")],
    [("Connection", "X-Request-Id"), ("X-Request-Id", "abc123")],
], ids=["two", "named-by-connection"])
def test_the_backend_gets_the_logged_request_id_alone(one, sent):
    """Two ids reached the backend while the log said the first; an id named
    by Connection reached it not at all."""
    proxy, backend = one
    with proxy.client() as c:
        assert c.request("GET", "/rid", sent).status == 200
    logged = proxy.wait_access(1)[0]["request_id"]
    assert logged == sent[0][1] if sent[0][0] == "X-Request-Id" else logged == "abc123"
    assert backend.wait_requests(1)[0].header_all("X-Request-Id") == [logged]


def test_an_invalid_host_is_refused(one):
    """Host is host[:port]: a list, a path, userinfo or a bad port went to the
    backend and into X-Forwarded-Host."""
    proxy, backend = one
    for host in ["a.example, b.example", "evil.example/x?y", "user@evil.example", "x:notaport"]:
        with proxy.client() as c:
            c.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
            r = c.read_response()
            assert r.status == 400 and b"invalid Host header" in r.body, host
    assert backend.requests == []


def test_a_date_is_added_where_the_answer_has_none(backend_factory, start_proxy):
    """RFC 9110 §6.6.1: a proxy with a clock adds the Date a response lacks,
    and its own answers carry one; a backend's Date is kept as it is."""
    import email.utils
    old = "Thu, 01 Jan 2026 00:00:00 GMT"
    b = backend_factory("legacy", by_path(
        {"/dated": lambda req, conn: Response(200, b"d", headers=[("Date", old)])},
        lambda req, conn: Response(200, b"u")))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        undated = c.request("GET", "/undated")
        dated = c.request("GET", "/dated")
        c.send(b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n")
        own = c.read_response()
    assert own.status == 400
    for r in (undated, own):
        t = email.utils.parsedate_to_datetime(r.header("Date")).timestamp()
        assert abs(t - time.time()) < 5, r.header("Date")
    assert dated.header_all("Date") == [old]


def test_request_id_added_when_absent(one):
    proxy, backend = one
    with proxy.client() as c:
        assert c.request("GET", "/rid").status == 200
    got = backend.wait_requests(1)[0]
    ids = got.header_all("X-Request-Id")
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", ids[0]), ids
    assert proxy.wait_access(1)[0]["request_id"] == ids[0]


def test_request_ids_differ_per_request(one):
    proxy, backend = one
    with proxy.client() as c:
        for _ in range(5):
            c.request("GET", "/rid")
    ids = [r.header("X-Request-Id") for r in backend.wait_requests(5)]
    assert len(set(ids)) == 5


def test_request_id_kept_when_present(one):
    proxy, backend = one
    with proxy.client() as c:
        assert c.request("GET", "/rid", [("X-Request-Id", "client-id-42")]).status == 200
    got = backend.wait_requests(1)[0]
    assert got.header_all("X-Request-Id") == ["client-id-42"]
    assert proxy.wait_access(1)[0]["request_id"] == "client-id-42"


@pytest.mark.parametrize("bad_id", ["x" * 100, "has space", "tab\there"],
                         ids=["too-long", "space", "tab"])
def test_unusable_request_id_is_replaced_not_duplicated(one, bad_id):
    """An X-Request-Id the proxy will not keep must be replaced: the backend and
    the access log must agree on one id."""
    proxy, backend = one
    with proxy.client() as c:
        assert c.request("GET", "/rid", [("X-Request-Id", bad_id)]).status == 200
    got = backend.wait_requests(1)[0]
    ids = got.header_all("X-Request-Id")
    logged = proxy.wait_access(1)[0]["request_id"]
    assert ids == [logged], "backend saw X-Request-Id %r, access log has %r" % (ids, logged)


# -- HTTP/1.0 clients


def test_http10_client_length_delimited(one):
    proxy, backend = one
    with proxy.client() as c:
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.version == "HTTP/1.0"
        assert r.status == 200
        assert r.framing == "length"
        assert r.json()["target"] == "/old"
        assert r.header("Connection") == "close"
        assert c.is_closed()


def test_http10_client_gets_close_delimited_for_chunked_backend(backend_factory, start_proxy):
    chunks = [b"one,", b"two,", b"three"]
    b = backend_factory("legacy", lambda req, conn: Response(200, chunks=chunks))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.version == "HTTP/1.0"
        assert r.header("Transfer-Encoding") is None
        assert r.header("Content-Length") is None
        assert r.framing == "close"
        assert r.body == b"one,two,three"


def test_http10_keepalive(one):
    proxy, backend = one
    with proxy.client() as c:
        for i in range(2):
            c.send(b"GET /old/%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            r = c.read_response()
            assert r.status == 200
            assert r.header("Connection").lower() == "keep-alive"
            assert r.json()["target"] == "/old/%d" % i


def test_http10_request_without_host_reaches_backend_with_host(one):
    """The proxy speaks HTTP/1.1 upstream, where Host is mandatory (RFC 9112
    3.2): a Host-less HTTP/1.0 request must still carry one to the backend."""
    proxy, backend = one
    with proxy.client() as c:
        c.send(b"GET /nohost HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200
    got = backend.wait_requests(1)[0]
    assert got.version == "HTTP/1.1"
    assert got.header("Host"), "backend got an HTTP/1.1 request without Host: %r" % got.headers


# -- more connection handling


def test_connection_close_stops_pipelined_requests(one):
    """Nothing after a request with Connection: close is answered."""
    proxy, backend = one
    with proxy.client() as c:
        c.send(build_request("GET", "/last", [("Connection", "close")]) +
               build_request("GET", "/never"))
        r = c.read_response()
        assert r.json()["target"] == "/last"
        assert c.is_closed()
    time.sleep(0.1)
    assert [r.target for r in backend.requests] == ["/last"]


def test_many_pipelined_requests(one):
    proxy, backend = one
    n = 300
    with proxy.client(timeout=10) as c:
        c.send(b"".join(build_request("GET", "/burst/%d" % i) for i in range(n)))
        targets = [c.read_response().json()["target"] for _ in range(n)]
    assert targets == ["/burst/%d" % i for i in range(n)]
    assert backend.connections == 1


def test_half_closed_client_still_gets_its_answer(backend_factory, start_proxy):
    import socket as s
    b = backend_factory("legacy", by_path({"/slow": delayed(0.2, lambda req, conn: Response(
        200, b"late"))}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/slow"))
        c.sock.shutdown(s.SHUT_WR)
        r = c.read_response()
        assert (r.status, r.body) == (200, b"late")
        assert c.is_closed()


def test_a_reset_client_ends_its_exchange_at_once(backend_factory, start_proxy):
    """A half-closed client still waits for its answer (above); one whose
    connection is gone (a reset) does not: the exchange ends then, not when
    the backend answers."""
    import struct
    b = backend_factory("legacy", delayed(3))
    proxy = start_proxy({"legacy": b})
    c = socket.create_connection((harness.HOST, proxy.port), timeout=5)
    c.sendall(build_request("GET", "/slow"))
    b.wait_requests(1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # a reset
    e = proxy.wait_access(1, timeout=1)[0]
    assert (e["status"], e["error"]) == (499, "client closed connection")


def test_backend_connection_close_is_not_reused(backend_factory, start_proxy):
    b = backend_factory("legacy", lambda req, conn: Response(200, b"c%d" % req.conn_id, close=True))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        bodies = [c.request("GET", "/x").body for _ in range(3)]
    assert bodies == [b"c0", b"c1", b"c2"]


def test_backend_closing_idle_connection_is_noticed(backend_factory, start_proxy):
    """The backend closes its keep-alive connection while it sits in the pool."""
    def handler(req, conn):
        conn.send(Response(200, b"c%d" % req.conn_id).serialize())
        time.sleep(0.05)
        return CLOSE

    b = backend_factory("legacy", handler)
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        assert c.request("GET", "/1").body == b"c0"
        time.sleep(0.3)
        r = c.request("POST", "/2", body=b"payload")  # a body: not retryable
        assert (r.status, r.body) == (200, b"c1")


def test_close_delimited_backend_response_rechunked(backend_factory, start_proxy):
    def handler(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        return CLOSE

    b = backend_factory("legacy", by_path({"/eof": handler}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        r = c.request("GET", "/eof")
        assert r.framing == "chunked"
        assert r.body == b"until the end"
        assert c.request("GET", "/again").status == 200  # the client connection lives on


def test_interim_103_is_not_mistaken_for_the_answer(backend_factory, start_proxy):
    b = backend_factory("legacy", raw(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                                      b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
                                      close=False))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/"))
        r = c.read_final()
        assert (r.status, r.body) == (200, b"final")
        c.send(build_request("GET", "/"))
        assert c.read_final().body == b"final"


@pytest.mark.parametrize("n,version", [(10, "1.1"), (11, "1.1"), (None, "1.1"), (None, "1.0")],
                         ids=["10", "11", "endless", "endless-http10"])
def test_interim_answers_are_capped(backend_factory, start_proxy, n, version):
    """Up to 10 interim (1xx) answers precede the final one; more is a bad
    upstream response. (A backend sending them without end kept the exchange
    alive at a core's full speed, also after its client had left: the 1xx it
    got were not even written to an HTTP/1.0 client.)"""
    hint = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"

    def hints(req, conn):
        if n is not None:
            conn.send(hint * n + final)
            return KEEP
        try:
            for _ in range(10000):  # as good as endless
                conn.send(hint * 100)
        except OSError:
            pass
        return CLOSE
    proxy = start_proxy({"legacy": backend_factory("legacy", hints)})
    with proxy.client() as c:
        c.send(b"GET / HTTP/%s\r\nHost: t\r\n\r\n" % version.encode())
        r = c.read_final()
    if n == 10:
        assert (r.status, r.body) == (200, b"final")
        return
    assert r.status == 502 and r.body == b"bad upstream response\n"
    e = proxy.wait_access(1)[0]
    assert (e["status"], e["error"]) == (502, "bad upstream response")
    assert "backend legacy: more than 10 interim (1xx) answers" in proxy.stderr_text()


def test_client_abort_mid_body_does_not_hurt_others(one):
    proxy, backend = one
    with proxy.client() as c:
        c.send(b"POST /abort HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        time.sleep(0.1)
    with proxy.client() as c:
        assert c.request("GET", "/fine").status == 200
    entries = proxy.wait_access(2)
    aborted = [e for e in entries if e["path"] == "/abort"][0]
    assert aborted["error"] == "client closed connection"
    assert aborted["status"] == 499


def test_pipelined_request_after_backend_failure(backend_factory, start_proxy):
    b = backend_factory("legacy", by_path({"/bad": raw(b"junk\r\n\r\n")}))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/bad") + build_request("GET", "/good"))
        first, second = c.read_response(), c.read_response()
    assert first.status == 502
    assert (second.status, second.json()["target"]) == (200, "/good")


def test_upgrade_with_bytes_sent_before_the_101(backend_factory, start_proxy):
    """Bytes the client sends right behind the upgrade request belong to the
    tunnel and reach the backend once it has switched."""
    b = backend_factory("legacy", upgrade_echo())
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket")]) +
               b"early-bytes")
        assert c.read_response().status == 101
        assert c.stream.read_exact(11) == b"early-bytes"


def test_options_asterisk_forwarded(one):
    proxy, backend = one
    with proxy.client() as c:
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 200
    got = backend.wait_requests(1)[0]
    assert (got.method, got.target) == ("OPTIONS", "*")


def test_early_error_while_client_still_uploads_is_delivered(backend_factory, start_proxy):
    """The proxy refuses a large upload (413) as soon as it sees the head; the
    client, still sending, must be able to read that answer rather than a
    connection reset (the lingering-close problem)."""
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, limits={"max_body_bytes": 1000})
    total = 8 * MiB
    with proxy.client() as c:
        c.send(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        errors = []

        def upload():
            try:
                for _ in range(total // MiB):
                    c.sock.sendall(BLOCK)
            except OSError as e:
                errors.append(e)  # the proxy stops reading: expected

        t = threading.Thread(target=upload, daemon=True)
        t.start()
        try:
            r = c.read_response("POST")
        except (Closed, ConnectionResetError) as e:
            raise AssertionError("the 413 was lost: %r" % e)
        assert r.status == 413
        t.join(10)
    assert b.requests == []


def test_a_routes_max_body_bytes_replaces_the_limit(backend_factory, start_proxy):
    """An upload endpoint takes 1 MiB while the rest keeps the 1 KiB limit,
    and an endpoint may be stricter; chunked bodies are cut at the route's
    limit too. The 413 names the limit that applied, and the access log the
    route."""
    b = backend_factory("legacy")
    routes = [{"name": "upload", "match": {"path_prefix": "/upload"}, "backend": "legacy",
               "max_body_bytes": MiB},
              {"name": "tiny", "match": {"path_prefix": "/tiny"}, "backend": "legacy",
               "max_body_bytes": 10},
              {"name": "free", "match": {"path_prefix": "/free"}, "backend": "legacy",
               "max_body_bytes": 0}]
    proxy = start_proxy({"legacy": b}, routes=routes, limits={"max_body_bytes": 1000})
    cases = [("/upload/a", 500_000, "length", "upload", 200),
             ("/upload/b", MiB + 1, "length", "upload", 413),
             ("/other", 1001, "length", None, 413), ("/other", 1000, "length", None, 200),
             ("/tiny", 11, "length", "tiny", 413), ("/tiny", 11, "chunked", "tiny", 413),
             ("/upload/c", 300_000, "chunked", "upload", 200),
             ("/free", 2 * MiB, "length", "free", 200)]
    for path, size, framing, _, status in cases:
        with proxy.client() as c:
            headers = [("Transfer-Encoding", "chunked")] if framing == "chunked" else []
            body = b"x" * size
            if framing == "chunked":
                body = b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                                for p in (body[i:i + 65536] for i in range(0, size, 65536)))
                body += b"0\r\n\r\n"
            try:
                r = c.request("POST", path, headers, body)
            except (Closed, ConnectionResetError, BrokenPipeError):
                r = c.read_response("POST")
            assert r.status == status, (path, size, framing, r.status, r.body)
            if status == 413:
                want = b"limits.max_body_bytes" if path == "/other" else b"route's max_body_bytes"
                assert want in r.body, (path, r.body)
    log = proxy.wait_access(len(cases))
    assert [(e["route"], e["status"]) for e in log] == [(rt, st) for _, _, _, rt, st in cases]
    assert [r.body_len for r in b.requests] == [500_000, 1000, 300_000, 2 * MiB]


def test_max_idle_zero_disables_backend_reuse(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": {"url": b, "max_idle": 0}})
    with proxy.client() as c:
        for i in range(3):
            assert c.request("GET", "/%d" % i).status == 200
    assert [r.conn_id for r in b.wait_requests(3)] == [0, 1, 2]


def test_http10_keepalive_with_chunked_backend_closes(backend_factory, start_proxy):
    """A close-delimited body cannot keep the HTTP/1.0 connection alive."""
    b = backend_factory("legacy", lambda req, conn: Response(200, chunks=[b"ab", b"cd"]))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.framing == "close"
        assert r.body == b"abcd"
        assert (r.header("Connection") or "").lower() == "close"


def test_http10_clients_reuse_the_backend_connection_of_a_chunked_answer(backend_factory,
                                                                       start_proxy):
    """The close ends the client's connection, not the backend's: a chunked
    answer that ended is reusable whoever asked (each HTTP/1.0 request made
    and dropped a backend connection; nginx and HAProxy reuse it)."""
    b = backend_factory("legacy", lambda req, conn: Response(200, chunks=[b"ab", b"cd"]))
    proxy = start_proxy({"legacy": b})
    for i in range(4):
        with proxy.client() as c:
            c.send(b"GET /%d HTTP/1.0\r\n\r\n" % i)
            r = c.read_response()
            assert (r.status, r.framing, r.body) == (200, "close", b"abcd")
    assert [r.conn_id for r in b.wait_requests(4)] == [0, 0, 0, 0]


def test_ordinary_client_http_client(one):
    """The standard library's client, keep-alive and all."""
    proxy, backend = one
    conn = proxy.http()
    try:
        for i in range(3):
            conn.request("POST", "/std/%d?x=%d" % (i, i), body=b"data-%d" % i,
                         headers={"Content-Type": "text/plain"})
            r = conn.getresponse()
            doc = json.loads(r.read())
            assert r.status == 200
            assert (doc["target"], doc["body_len"]) == ("/std/%d?x=%d" % (i, i), 6)
    finally:
        conn.close()
    assert backend.connections == 1
    assert [r.body for r in backend.wait_requests(3)] == [b"data-0", b"data-1", b"data-2"]


# -- Content-Length bodies relayed past the parser end exactly where they should


def test_length_bodies_back_to_back_on_kept_connections(backend_factory, start_proxy):
    """Large Content-Length bodies move as whole buffers, past the parser: the
    message must still end on its last byte, so the next request and response
    on both kept connections are read correctly."""
    size = 3 * MiB + 7
    body = (BLOCK * 4)[:size]
    b = backend_factory("legacy", by_path({"/dl": stream_body(size, BLOCK)}))
    proxy = start_proxy({"legacy": b})
    with proxy.client(timeout=10) as c:
        for i in range(2):  # an upload with the next request pipelined right behind it
            c.send(b"POST /up%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (i, size)
                   + body + build_request("GET", "/after%d" % i))
            r = c.read_response()
            assert r.status == 200 and r.json()["body_len"] == size
            r = c.read_response()
            assert r.status == 200 and r.json()["target"] == "/after%d" % i
        for i in range(2):  # downloads, then a small exchange on the same connections
            c.send(build_request("GET", "/dl"))
            r = c.read_response()
            assert r.status == 200 and r.body == (BLOCK * 4)[:size]
        r = c.request("GET", "/last")
        assert r.status == 200 and r.json()["target"] == "/last"
    got = b.wait_requests(7)
    assert [q.target for q in got] == ["/up0", "/after0", "/up1", "/after1", "/dl", "/dl", "/last"]
    assert got[0].body_sha256 == got[2].body_sha256 == hashlib.sha256(body).hexdigest()
    assert {q.conn_id for q in got} == {got[0].conn_id}, "the backend connection was not kept"


SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"


def bytes_until_eof(stream):
    n = 0
    while True:
        data = stream.read_some()
        if not data:
            return n
        n += len(data)


def open_tunnel(proxy):
    """A client connection through the proxy, upgraded (101 read)."""
    c = socket.create_connection((harness.HOST, proxy.port), timeout=5)
    c.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
    st = harness.Stream(c)
    assert st.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
    return c, st


def test_a_half_closed_tunnel_still_relays_the_answer(backend_factory, start_proxy):
    """After a 101, the client sends its last bytes and half-closes
    (shutdown(SHUT_WR)): the end is passed on to the backend, whose answer
    still reaches the client (the tunnel was closed at once: the client got
    EOF and no answer)."""
    def counter(req, conn):
        conn.send(SWITCH)
        conn.send(b"got:%d" % bytes_until_eof(conn.stream))
        return CLOSE
    proxy = start_proxy({"legacy": backend_factory("legacy", counter)})
    c, st = open_tunnel(proxy)
    with c:
        c.sendall(b"z" * 100000)
        c.shutdown(socket.SHUT_WR)
        assert st.read_to_eof() == b"got:100000"


def test_a_tunnel_whose_backend_stops_reading_ends_after_client_send_ms(backend_factory,
                                                                        start_proxy):
    """After a 101 the backend takes no more bytes and the client leaves: the
    bytes waiting for the backend make no progress for timeouts.client_send_ms
    and the tunnel ends (it was held for good: the client's reading is paused
    once 256 KiB wait for the backend, so its close was never seen either,
    and no timeout applied to the backend's side)."""
    done = threading.Event()

    def deaf(req, conn):
        conn.send(SWITCH)
        done.wait(10)
        return CLOSE
    proxy = start_proxy({"legacy": backend_factory("legacy", deaf)},
                        timeouts={"client_send_ms": 500})
    time.sleep(0.2)  # the harness's start-up probe is gone
    before = len(harness.open_fds(proxy.pid))
    try:
        c, st = open_tunnel(proxy)
        c.setblocking(False)
        sent, stuck = 0, 0
        while stuck < 10:  # until every buffer on the way is full (0.1 s without progress)
            try:
                sent += c.send(b"w" * 65536)
                stuck = 0
            except BlockingIOError:
                stuck += 1
                time.sleep(0.01)
        c.close()
        e = proxy.wait_access(1)[0]
        assert e["status"] == 101 and e["error"] == "upstream send timeout", e
        assert 0 < e["bytes_in"] < sent
        harness.wait_for(lambda: len(harness.open_fds(proxy.pid)) == before,
                         what="both connections closed")
    finally:
        done.set()


def test_an_idle_tunnel_outlives_client_send_ms(backend_factory, start_proxy):
    """Silence is no stuck transfer: a tunnel with nothing to send in either
    direction stays open past client_send_ms."""
    proxy = start_proxy({"legacy": backend_factory("legacy", upgrade_echo())},
                        timeouts={"client_send_ms": 200})
    c, st = open_tunnel(proxy)
    with c:
        c.sendall(b"ping")
        assert st.read_exact(4) == b"ping"
        time.sleep(0.6)
        c.sendall(b"pong")
        assert st.read_exact(4) == b"pong"


def test_memory_goes_back_once_a_crowd_of_connections_leaves(backend_factory, start_proxy):
    """2,000 keep-alive clients, then none: strangler hands the freed memory
    back to the system within seconds (glibc would keep it, and RSS would
    stay at its peak for good)."""
    if harness.sanitized():
        pytest.skip("memory figures of an ASan build")
    import resource
    # the clients and the backend's ends of the proxy's connections: this
    # process holds up to 4,000 descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192 and (hard == resource.RLIM_INFINITY or hard >= 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, hard))
    elif soft < 8192:
        pytest.skip("needs 8,192 descriptors; the hard limit is %d" % hard)
    proxy = start_proxy({"legacy": backend_factory("legacy")})
    cs = []
    try:
        for _ in range(2000):
            c = socket.create_connection((harness.HOST, proxy.port), timeout=10)
            c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            cs.append(c)
        for c in cs:
            assert c.recv(100).startswith(b"HTTP/1.1 200")
        crowd = proxy.rss_kb()
    finally:
        for c in cs:
            c.close()
    # within 2.5 s on a quiet machine; a loaded one takes longer to see the
    # 2,000 closes and reach the next tick
    idle = harness.wait_for(lambda: (lambda r: r if r < crowd - 2048 else None)(proxy.rss_kb()),
                            timeout=15, what="RSS 2 MiB below the crowd's %d kB" % crowd)
    assert idle < crowd - 2048


def test_a_tunnel_silent_both_ways_ends_after_tunnel_idle_ms(backend_factory, start_proxy):
    """timeouts.tunnel_idle_ms: bytes either way keep a tunnel open (the
    client's alone, then the backend's alone: each counts); silence for that
    long ends it, logged as "tunnel idle timeout", and the backend's
    connection goes with it."""
    ends = []

    def server_talks(req, conn):
        conn.send(SWITCH)
        for _ in range(6):  # the backend alone speaks for 0.6 s
            time.sleep(0.1)
            conn.send(b"s")
        ends.append(bytes_until_eof(conn.stream))
        return CLOSE
    proxy = start_proxy({"legacy": backend_factory("legacy", server_talks)},
                        timeouts={"tunnel_idle_ms": 300})
    c, st = open_tunnel(proxy)
    with c:
        assert st.read_exact(6) == b"ssssss"
        t0 = time.monotonic()
        assert st.read_to_eof() == b""
        waited = time.monotonic() - t0
    assert 0.2 < waited < 2.0, waited
    harness.wait_for(lambda: ends, what="the backend's connection closed")
    e = proxy.wait_access(1)[0]
    assert (e["status"], e["error"]) == (101, "tunnel idle timeout"), e
    # the client alone speaking keeps it open too
    got = []

    def listens(req, conn):
        conn.send(SWITCH)
        got.append(bytes_until_eof(conn.stream))
        return CLOSE
    proxy2 = start_proxy({"legacy": backend_factory("sink", listens)},
                         timeouts={"tunnel_idle_ms": 300})
    c, st = open_tunnel(proxy2)
    with c:
        for _ in range(6):
            time.sleep(0.1)
            c.sendall(b"c")
        assert st.read_to_eof() == b""  # then silence ends it
    harness.wait_for(lambda: got, what="the backend's connection closed")
    assert got == [6]  # every byte: open while the client spoke
    # bytes waiting for a slow reader are no silence: a client that reads a
    # little every 0.1 s keeps a long download open, though strangler,
    # its buffers full, reads nothing from the backend for longer
    total = 24 << 20  # more than the kernel's buffers on both sides hold

    def floods(req, conn):
        conn.send(SWITCH)
        conn.send(b"d" * total)
        bytes_until_eof(conn.stream)
        return CLOSE
    proxy3 = start_proxy({"legacy": backend_factory("flood", floods)},
                         timeouts={"tunnel_idle_ms": 300})
    c, st = open_tunnel(proxy3)
    with c:
        n = len(st.read_some())
        for _ in range(15):  # 1.5 s, five times the limit, reading a little
            time.sleep(0.1)
            n += len(c.recv(16384))
        while n < total:  # then all of it: the tunnel is still open
            data = c.recv(1 << 20)
            assert data, "closed after %d of %d bytes" % (n, total)
            n += len(data)
    assert n == total


def test_a_tunnel_half_closed_by_the_backend_still_relays_the_client(backend_factory, start_proxy):
    """After a 101, the backend sends its last bytes and half-closes: the
    client sees them and then EOF, and what it sends afterwards still reaches
    the backend (the tunnel was closed at once: those bytes were lost)."""
    received = []
    def farewell(req, conn):
        conn.send(SWITCH + b"bye")
        conn.sock.shutdown(socket.SHUT_WR)
        received.append(bytes_until_eof(conn.stream))
        return CLOSE
    proxy = start_proxy({"legacy": backend_factory("legacy", farewell)})
    c, st = open_tunnel(proxy)
    with c:
        assert st.read_to_eof() == b"bye"
        c.sendall(b"z" * 100000)
        c.shutdown(socket.SHUT_WR)
        harness.wait_for(lambda: received, what="the backend to see the client's end")
        assert received == [100000]
        assert c.recv(1) == b""
    assert proxy.wait_access(1)[0]["status"] == 101


def test_a_tunnel_ended_by_both_sides_delivers_every_byte(backend_factory, start_proxy):
    """The backend half-closes after its 101 and then reads slowly; the client
    uploads 8 MiB and half-closes. Every byte reaches the backend: the
    client's end ended the tunnel at once, and up to 256 KiB still waiting
    for the backend were dropped with its connection."""
    got = []

    def slow_reader(req, conn):
        conn.send(SWITCH)
        conn.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
        h, n = hashlib.sha256(), 0
        while True:
            d = conn.sock.recv(32768)
            if not d:
                break
            h.update(d)
            n += len(d)
            time.sleep(0.01)
        got.append((n, h.hexdigest()))
        return CLOSE
    proxy = start_proxy({"legacy": backend_factory("legacy", slow_reader)})
    c, st = open_tunnel(proxy)
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB
    with c:
        assert st.read_to_eof() == b""
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        harness.wait_for(lambda: got, timeout=60, what="the backend to see the client's end")
    assert got[0] == (len(payload), hashlib.sha256(payload).hexdigest()), got[0][0]
    assert [e["status"] for e in proxy.wait_access(1)] == [101]


def test_a_client_half_close_before_the_101_reaches_the_backend(backend_factory, start_proxy):
    """The client sends its upgrade request, its first bytes, and its end
    before the 101 comes back: the end, read before the tunnel began, was
    never passed on, and the backend waited for it until tunnel_idle_ms (an
    hour by default), holding its max_conns slot."""
    seen = []

    def counter(req, conn):
        time.sleep(0.3)  # the client's end reaches the proxy before the 101
        conn.send(SWITCH)
        n = 0
        conn.sock.settimeout(3)
        try:
            while True:
                d = conn.sock.recv(65536)
                if not d:
                    break
                n += len(d)
        except socket.timeout:
            seen.append("no end after %d bytes" % n)
            return CLOSE
        seen.append(n)
        conn.send(b"got %d" % n)
        return CLOSE
    proxy = start_proxy({"legacy": backend_factory("legacy", counter)})
    c = socket.create_connection((harness.HOST, proxy.port), timeout=10)
    with c:
        c.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nhello")
        c.shutdown(socket.SHUT_WR)
        st = harness.Stream(c, 10)
        assert st.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        rest = st.read_to_eof()
    harness.wait_for(lambda: seen, timeout=6, what="the backend's verdict")
    assert (seen, rest) == ([5], b"got 5")


def test_a_tunnel_is_logged_once_whichever_way_it_ends(backend_factory, start_proxy):
    """Clients half-close their tunnels and read nothing more; the backend
    sends each some MB and closes. A tunnel ended while the proxy still held
    bytes for its client was logged a second time when client_send_ms gave
    up on them (status 0, no method, "client send timeout"), and counted as
    a second request. Sizes around what the kernel buffers hold (2.8-3 MB
    here) hit that window."""
    sizes = [2_000_000 + i * 128_000 for i in range(16)]

    def burst(req, conn):
        conn.send(SWITCH)
        while conn.stream.read_some():
            pass
        conn.send(b"y" * int(req.path.rsplit("/", 1)[1]))
        return CLOSE
    proxy = start_proxy({"legacy": backend_factory("legacy", burst)},
                        timeouts={"client_send_ms": 500})
    socks = []
    for n in sizes:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.settimeout(10)
        c.connect((harness.HOST, proxy.port))
        c.sendall(b"GET /ws/%d HTTP/1.1\r\nHost: t\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n" % n)
        socks.append(c)
    time.sleep(0.5)
    for c in socks:
        c.shutdown(socket.SHUT_WR)  # and reads nothing
    time.sleep(2.5)
    for c in socks:
        c.close()
    harness.wait_for(lambda: len(proxy.access_lines()) >= len(sizes), what="the tunnels' lines")
    time.sleep(0.5)
    assert [e["status"] for e in proxy.access_lines()] == [101] * len(sizes)


def test_a_backend_connection_answered_before_the_body_went_is_not_pooled(backend_factory,
                                                                           start_proxy):
    """A backend answers a POST from its head, never reads the body, and keeps
    the connection; the client's body (bytes that read as a request) goes out
    after that answer began. The connection was pooled (the body was all sent
    by the time the answer ended), and the next client's request on it got
    the answer to the body's "request"."""
    smuggled = b"GET /slow-smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    b = backend_factory("legacy")
    b.read_bodies = False

    def handler(req, conn):
        if req.path == "/upload":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
            for ch in b"stream":
                time.sleep(0.1)
                conn.send(bytes([ch]))
            return KEEP
        if req.path.startswith("/slow"):
            time.sleep(0.5)
        body = ("answer to %s" % req.path).encode()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return KEEP
    b.handler = handler
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(smuggled))
        time.sleep(0.2)  # the answer's head has come back
        c.send(smuggled)
        r = c.read_response("POST")
        assert (r.status, r.body) == (200, b"stream")
    time.sleep(0.1)
    with proxy.client() as c:
        assert c.request("GET", "/mine").body == b"answer to /mine"
