"""Routes that answer themselves (`routes.[i].return`, nginx's `return`,
Envoy's `direct_response`): an endpoint retired with a 410, moved with a 301
to its new address, kept out of reach with a 403, without a backend. What
the client gets, what the backends never see, the connection, the log, the
counters, explain, the API and the checks of -t."""
import re
import signal
import time

import pytest

from harness import assert_check_reports, build_request, run_strangler

ROUTES = [
    {"name": "retired", "match": {"path_prefix": "/api/v1/export"},
     "return": {"status": 410, "body": "export moved to /api/v2/export\n"}},
    {"name": "moved", "match": {"path_prefix": "/old"},
     "return": {"status": 301, "location": "https://new.example$request_uri"}},
    {"name": "here", "match": {"path_prefix": "/same-site"},
     "return": {"status": 308, "location": "$scheme://$host/v2$request_uri"}},
    {"name": "deny", "match": {"path_prefix": "/internal"}, "return": 403, "max_body_bytes": 100},
    {"name": "html", "match": {"path": "/maintenance"},
     "return": {"status": 503, "body": "<p>back soon</p>", "content_type": "text/html"}},
]


@pytest.fixture
def proxy(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, routes=ROUTES, admin={})
    return p, legacy


def test_a_retired_endpoint_answers_its_status_and_body(proxy):
    """The answer is the route's, with its body, X-Request-Id and Date; the
    connection goes on; the backend never sees the request."""
    p, legacy = proxy
    with p.client() as c:
        r = c.request("GET", "/api/v1/export/7?fmt=csv")
        assert (r.status, r.reason, r.body) == (410, "Gone", b"export moved to /api/v2/export\n")
        assert r.header("Content-Type") == "text/plain; charset=utf-8"
        assert re.fullmatch(r"[0-9a-f]{32}", r.header("X-Request-Id"))
        assert r.header("Date") and r.header("Connection") is None
        r = c.request("GET", "/elsewhere")  # the same connection, on to the backend
        assert r.status == 200
    assert [q.path for q in legacy.requests] == ["/elsewhere"]
    e = p.wait_access(2)[0]
    assert (e["route"], e["status"], e["backend"], e["server"]) == ("retired", 410, None, None), e


@pytest.mark.parametrize("target,host,location", [
    ("/old/orders/7?page=2", "shop.example", "https://new.example/old/orders/7?page=2"),
    ("/old/a/../b//c", "shop.example", "https://new.example/old/b/c"),  # normalised
    ("/old", "shop.example", "https://new.example/old"),
    ("/same-site/x?q=1", "Shop.Example:8080", "http://shop.example/v2/same-site/x?q=1"),
])
def test_a_moved_endpoint_redirects_with_the_requests_path(proxy, target, host, location):
    """$request_uri is the request's path as strangler routes it (normalised:
    never "//evil.example", which a browser reads as another site) with
    its query; $host the Host's name without its port, $scheme the
    client's."""
    p, legacy = proxy
    with p.client() as c:
        c.send(build_request("GET", target, host=host))
        r = c.read_response()
    assert (r.status, r.header("Location"), r.header("Content-Length"), r.body) == \
        (301 if target.startswith("/old") else 308, location, "0", b"")
    assert legacy.requests == []


def test_a_redirect_to_the_request_uri_never_names_another_site(backend_factory, start_proxy):
    """location = "$request_uri" with a target "//evil.example/x": a
    browser would read "//evil.example/x" as another site; the normalised
    path is "/evil.example/x", on this one."""
    routes = [{"name": "all", "match": {"path_prefix": "/"},
               "return": {"status": 302, "location": "$request_uri"}}]
    p = start_proxy({"legacy": backend_factory("legacy")}, routes=routes)
    with p.client() as c:
        c.send(build_request("GET", "//evil.example/x?a=b", host="h"))
        r = c.read_response()
    assert (r.status, r.header("Location")) == (302, "/evil.example/x?a=b")


def test_a_backslash_or_an_asterisk_never_makes_a_broken_redirect(backend_factory, start_proxy):
    """A browser reads "/\\evil.example/x" in a Location as another site, as
    it does "//": $request_uri writes the backslash %5C. OPTIONS * has no
    path: $request_uri is "/" there."""
    routes = [{"name": "all", "match": {"path_prefix": "/"},
               "return": {"status": 302, "location": "$request_uri"}},
              {"name": "star", "match": {"methods": ["OPTIONS"]},
               "return": {"status": 301, "location": "https://new.example$request_uri"}}]
    routes.reverse()
    p = start_proxy({"legacy": backend_factory("legacy")}, routes=routes)
    with p.client() as c:
        c.send(b"GET /\\evil.example/x?q=\\ HTTP/1.1\r\nHost: h\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.header("Location")) == (302, "/%5Cevil.example/x?q=\\"), r
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.header("Location")) == (301, "https://new.example/"), r


def test_an_http10_client_keeps_its_connection_as_it_asked(proxy):
    """HTTP/1.0 with Connection: keep-alive: the answer says keep-alive (a
    1.0 client waits for the close otherwise) and the next request is
    served on the same connection; its Expect is ignored (RFC 9110
    10.1.1): the body is sent at once, read and dropped."""
    p, legacy = proxy
    with p.client() as c:
        c.send(b"POST /internal HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\nhello")
        r = c.read_response()
        assert (r.status, r.header("Connection")) == (403, "keep-alive"), r
        c.send(b"GET /maintenance HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.header("Connection"), r.body) == \
            (503, "keep-alive", b"<p>back soon</p>")
        c.send(b"GET /maintenance HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.header("Connection")) == (503, "close")
        assert c.is_closed()


def test_a_head_request_gets_the_head_alone(proxy):
    p, _ = proxy
    with p.client() as c:
        r = c.request("HEAD", "/maintenance")
        assert (r.status, r.header("Content-Type"), r.header("Content-Length"), r.body) == \
            (503, "text/html", "16", b"")
        r = c.request("GET", "/maintenance")
        assert r.body == b"<p>back soon</p>"


def test_a_request_body_is_read_and_dropped_and_the_connection_goes_on(proxy):
    """A POST (with a length, or chunked) to a route that answers itself:
    its body goes nowhere, the answer comes once it is read, and the next
    request on the connection is served."""
    p, legacy = proxy
    with p.client() as c:
        r = c.request("POST", "/api/v1/export", body=b"x" * 50000)
        assert r.status == 410
        c.send(b"POST /internal HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
        assert c.read_response().status == 403
        assert c.request("GET", "/next").status == 200
    assert [q.path for q in legacy.requests] == ["/next"]
    log = p.wait_access(3)
    assert [(e["status"], e["bytes_in"] > 50000) for e in log[:1]] == [(410, True)]


def test_the_routes_body_limit_still_applies(proxy):
    p, legacy = proxy
    with p.client() as c:
        r = c.request("POST", "/internal", body=b"x" * 101)
    assert r.status == 413
    assert legacy.requests == []


def test_a_client_waiting_for_100_continue_is_answered_at_once(proxy):
    """Expect: 100-continue: the client would send its body for nothing;
    it gets the answer instead, and the connection closes."""
    p, _ = proxy
    with p.client() as c:
        c.send(b"PUT /api/v1/export HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.header("Connection")) == (410, "close")
        assert r.body == b"export moved to /api/v2/export\n"
        assert c.is_closed()


def test_a_body_still_coming_does_not_hold_the_answer_back(proxy):
    """An upload to a retired endpoint gets its 410 at once, not after the
    client has sent all of it for nothing (nginx's return answers at once
    too); the rest of the body is dropped as it comes, and the connection
    goes on once it has."""
    p, legacy = proxy
    with p.client(timeout=5) as c:
        c.send(b"POST /api/v1/export HTTP/1.1\r\nHost: h\r\nContent-Length: 300000\r\n\r\n" +
               b"x" * 100000)
        r = c.read_response()
        assert (r.status, r.header("Connection"), r.body) == \
            (410, None, b"export moved to /api/v2/export\n")
        c.send(b"y" * 200000)
        assert c.request("GET", "/next").status == 200
        c.send(b"POST /internal HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n")
        assert c.read_response().status == 403
        c.send(b"0\r\n\r\n")
        assert c.request("GET", "/next2").status == 200
    assert [q.path for q in legacy.requests] == ["/next", "/next2"]
    log = p.wait_access(4)
    assert [(e.get("route"), e["status"], e["bytes_in"] > 300000, e.get("error")) for e in log] == [
        ("retired", 410, True, None), (None, 200, False, None), ("deny", 403, False, None),
        (None, 200, False, None)], log


def test_a_body_that_fails_after_the_answer_ends_the_connection(backend_factory, start_proxy):
    """The answer went out before the body came: a malformed chunk, a body
    past the route's limit or one that stalls gets no second answer; the
    connection closes once the first is written, and the log says why."""
    p = start_proxy({"legacy": backend_factory("legacy")}, routes=ROUTES,
                    timeouts={"client_body_ms": 300})
    chunked = b"POST /internal HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    for rest in (b"zz\r\n", b"65\r\n" + b"x" * 101 + b"\r\n", None):
        with p.client(timeout=5) as c:
            c.send(chunked + b"5\r\nhello\r\n")
            r = c.read_response()
            assert (r.status, r.header("Connection")) == (403, None)
            if rest is not None:
                c.send(rest)
            assert c.is_closed()  # nothing more
    log = p.wait_access(3)
    assert [(e["status"], e["error"]) for e in log] == [
        (403, "Invalid character in chunk size"),
        (403, "request body larger than the route's max_body_bytes"),
        (403, "client body timeout")], log


def test_a_stop_during_a_body_answered_early_sends_no_second_answer(backend_factory,
                                                                     start_proxy):
    """The 410 went out when the head was read; the client is still sending
    the body when SIGTERM comes, and still when drain_timeout_ms passes: the
    drain closed the exchange with a '503 shutting down' after the 410 (two
    answers to one request), logged as a 503."""
    p = start_proxy({"legacy": backend_factory("legacy")}, routes=ROUTES, drain_timeout_ms=500)
    with p.client(timeout=5) as c:
        c.send(b"POST /api/v1/export HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n" +
               b"x" * 1000)
        r = c.read_response()
        assert r.status == 410
        p.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        c.send(b"x" * 1000)  # still sending
        assert c.stream.read_to_eof() == b""
    assert p.proc.wait(timeout=5) == 0
    assert [(e["status"], e.get("error")) for e in p.wait_access(1)] == [(410, "drain timeout")]


def test_an_upgrade_request_gets_the_answer_and_the_connection_closes(proxy):
    p, _ = proxy
    with p.client() as c:
        c.send(b"GET /old/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.header("Connection")) == (301, "close")
        assert c.is_closed()


def test_counters_explain_and_the_api(proxy):
    """The route's requests are counted as the proxy's answers (no
    backend); explain prints the answer this request would get; the API
    gives the route's return and refuses to change its backend."""
    p, _ = proxy
    with p.client() as c:
        for _ in range(3):
            assert c.request("GET", "/internal/x").status == 403
    st, doc = p.admin("GET", "/api/routes/deny")
    assert st == 200
    assert doc["backend"] is None
    assert doc["return"] == {"status": 403, "location": None, "body_bytes": 0,
                             "content_type": None}
    assert sum(c["requests"] for c in doc["counters"].values()) == 3, doc["counters"]
    assert all(c["4xx"] == c["requests"] for c in doc["counters"].values())
    st, err = p.admin("PATCH", "/api/routes/deny", {"backend": "legacy"})
    assert st == 400 and "answers itself" in err["error"], err
    out = run_strangler("explain", "-c", p.conf_path, "GET", "/same-site/p?x=1",
                        "-H", "Host: a.example")
    lines = out.stdout.splitlines()
    assert "answer:   308 Permanent Redirect (the route answers itself: return; no backend)" \
        in lines, out.stdout
    assert "location: http://a.example/v2/same-site/p?x=1" in lines, out.stdout
    # without a Host the location read "http:///v2/...", which the proxy never sends
    out = run_strangler("explain", "-c", p.conf_path, "GET", "/same-site/p?x=1")
    assert ("location: http:///v2/same-site/p?x=1 (no -H 'Host: ...' given: $host is empty "
            "here, the request's Host in the proxy)") in out.stdout.splitlines(), out.stdout
    out = run_strangler("explain", "-c", p.conf_path, "GET", "/maintenance")
    assert "body:     16 bytes, text/html" in out.stdout.splitlines(), out.stdout
    out = run_strangler("explain", "-c", p.conf_path, "HEAD", "/maintenance")
    assert "answer:   503 Service Unavailable (the route answers itself: return; no backend)" \
        in out.stdout.splitlines() and "body:" not in out.stdout, out.stdout


BAD = """listen = ( { address = "127.0.0.1:18080"; } );
backends = { legacy = { url = "http://127.0.0.1:9001"; }; };
default_backend = "legacy";
routes = (
  { name = "a"; match = { path = "/a"; }; return = 199; },
  { name = "b"; match = { path = "/b"; }; return = 301; },
  { name = "c"; match = { path = "/c"; }; return = { body = "x"; }; },
  { name = "d"; match = { path = "/d"; }; return = { status = 302; }; },
  { name = "e"; match = { path = "/e"; }; return = { status = 200; location = "/x"; }; },
  { name = "f"; match = { path = "/f"; }; return = { status = 204; body = "x"; }; },
  { name = "g"; match = { path = "/g"; }; return = { status = 301; location = "https://x$uri"; }; },
  { name = "h"; match = { path = "/h"; }; return = { status = 200; content_type = "text/html"; }; },
  { name = "i"; match = { path = "/i"; }; backend = "legacy"; return = 404; },
  { name = "j"; match = { path = "/j"; }; return = { status = 301; location = " https://x"; }; },
  { name = "k"; match = { path = "/k"; }; return = "410"; },
  { name = "l"; match = { path = "/l"; }; return = { status = 410; colour = "red"; }; },
  { name = "m"; match = { path = "/m"; }; return = { status = 302; location = "/a\tb"; }; },
  { name = "n"; match = { path = "/n"; }; return = { status = 205; body = "x"; }; },
  { name = "o"; match = { path = "/o"; }; return = { status = 410L; }; },
  { name = "p"; match = { path = "/p"; }; return = 404L; }
);
"""

BAD_EXPECTED = [
    (5, "routes.[0].return: must be a status from 200 to 599"),
    (6, 'routes.[1].return: a 301 needs a location: return = { status = 301; location = '
        '"https://example.com/"; }'),
    (7, "routes.[2].return.status: required"),
    (8, "routes.[3].return.location: required for a 302 (where the client is sent)"),
    (9, "routes.[4].return.location: only a 3xx or 201 answer has one"),
    (10, "routes.[5].return.body: a 204 answer has no content"),
    (11, "routes.[6].return.location: \"https://x$uri\": '$' starts a variable: $scheme, $host, "
         "$http_host, $request_uri, $request_id or $remote_addr (or ${name}); write $$ for a "
         "'$'"),
    (12, "routes.[7].return.content_type: needs a body"),
    (13, "routes.[8].backend: the route answers itself (return): it has no backend"),
    (14, "routes.[9].return.location: must be 1 to 4096 bytes, no control characters, no blank "
         "at either end"),
    (15, "routes.[10].return: must be a status (return = 410;) or a group: { status = 301; "
         "location = \"https://example.com$request_uri\"; }"),
    (16, "routes.[11].return.colour: unknown setting"),
    (17, "routes.[12].return.location: a URL has no blanks (write a space as %20)"),
    (18, "routes.[13].return.body: a 205 answer has no content"),
]


def test_check_of_return(tmp_path):
    conf = tmp_path / "r.conf"
    conf.write_text(BAD)
    assert_check_reports(conf, BAD_EXPECTED)
