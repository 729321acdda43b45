"""Sticky percentage rollouts end to end: the documented hash (FNV-1a 32 of
cohort ":" key, mod 10000, compared with the percentage in basis points) decides
which backend serves each request, and `strangler explain` agrees with the
running proxy."""
import re

import pytest

from harness import rollout_bucket, run_strangler

ROUTES = [
    {"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy",
     "rollout": {"backend": "modern", "percent": 25.0, "sticky": "header:X-User-Id"}},
    {"name": "cart", "match": {"path_prefix": "/cart"}, "backend": "legacy",
     "rollout": {"backend": "modern", "percent": 50.0, "sticky": "cookie:uid"}},
    {"name": "search", "match": {"path_prefix": "/search"}, "backend": "legacy",
     "rollout": {"backend": "modern", "percent": 10.5, "sticky": "query:u", "cohort": "exp-7"}},
    {"name": "zero", "match": {"path_prefix": "/zero"}, "backend": "legacy",
     "rollout": {"backend": "modern", "percent": 0.0, "sticky": "header:X-User-Id"}},
    {"name": "all", "match": {"path_prefix": "/all"}, "backend": "legacy",
     "rollout": {"backend": "modern", "percent": 100, "sticky": "header:X-User-Id"}},
    {"name": "byip", "match": {"path_prefix": "/byip"}, "backend": "legacy",
     "rollout": {"backend": "modern", "percent": 50.0, "sticky": "client_ip"}},
]

KEYS = ["user-%d" % i for i in range(200)]


@pytest.fixture
def rollout(two_backends, start_proxy):
    legacy, modern = two_backends
    proxy = start_proxy({"legacy": legacy, "modern": modern}, default_backend="legacy",
                        routes=ROUTES)
    client = proxy.client()
    yield proxy, client
    client.close()


def expected_side(cohort, key, percent_bp):
    return "modern" if rollout_bucket(cohort, key) < percent_bp else "legacy"


def test_reference_hash_values():
    """The Python reference matches FNV-1a 32 test vectors, so the expectations
    below are computed independently of the proxy."""
    from harness import fnv1a32
    assert fnv1a32(b"") == 0x811C9DC5
    assert fnv1a32(b"a") == 0xE40C292C
    assert fnv1a32(b"foobar") == 0xBF9CF968


def test_sticky_header_200_keys(rollout):
    proxy, client = rollout
    sides = {}
    for key in KEYS:
        r = client.request("GET", "/api/orders/1", [("X-User-Id", key)])
        assert r.status == 200
        sides[key] = r.header("X-Backend")
    expected = {k: expected_side("orders", k, 2500) for k in KEYS}
    wrong = {k: (sides[k], expected[k], rollout_bucket("orders", k))
             for k in KEYS if sides[k] != expected[k]}
    assert not wrong, "keys on the wrong side (got, want, bucket): %r" % wrong
    assert 20 < sum(v == "modern" for v in sides.values()) < 80  # both sides are exercised
    entries = proxy.wait_access(len(KEYS))
    for key, e in zip(KEYS, entries):
        assert e["route"] == "orders"
        assert e["bucket"] == rollout_bucket("orders", key)
        assert e["backend"] == expected[key]


def test_same_key_always_same_side(rollout):
    proxy, client = rollout
    for key in KEYS[:20]:
        want = expected_side("orders", key, 2500)
        for i in range(3):
            assert client.request("GET", "/api/orders/%d" % i,
                                  [("X-User-Id", key)]).header("X-Backend") == want
        with proxy.client() as other:  # and from another connection
            assert other.request("POST", "/api/orders", [("X-User-Id", key)],
                                 body=b"{}").header("X-Backend") == want


def test_sticky_cookie(rollout):
    proxy, client = rollout
    for key in KEYS[:60]:
        r = client.request("GET", "/cart", [("Cookie", "theme=dark; uid=%s; z=1" % key)])
        assert r.header("X-Backend") == expected_side("cart", key, 5000), key
    quoted = client.request("GET", "/cart", [("Cookie", 'uid="user-7"')])
    assert quoted.header("X-Backend") == expected_side("cart", "user-7", 5000)
    entries = proxy.wait_access(61)
    assert [e["bucket"] for e in entries[:60]] == [rollout_bucket("cart", k) for k in KEYS[:60]]


def test_sticky_query_with_explicit_cohort(rollout):
    proxy, client = rollout
    for key in KEYS[:100]:
        r = client.request("GET", "/search?q=shoes&u=%s" % key)
        assert r.header("X-Backend") == expected_side("exp-7", key, 1050), key
    # the key is the decoded value: %2D is "-"
    r = client.request("GET", "/search?u=user%2D3")
    assert r.header("X-Backend") == expected_side("exp-7", "user-3", 1050)
    entries = proxy.wait_access(101)
    assert entries[100]["bucket"] == rollout_bucket("exp-7", "user-3")


def test_an_empty_first_value_is_passed_over_as_a_cookies_is(rollout):
    """`X-User-Id:` then `X-User-Id: u42`, or `?u=&u=u42`: the key is the
    first value that is not empty, as for a cookie (the user was sent to a
    side at random on every request); explain prints the key it hashes as
    a JSON string, so a decoded %0A or %00 neither breaks nor cuts its line."""
    proxy, client = rollout
    keys = [k for k in KEYS if expected_side("orders", k, 2500) == "modern"][:3] + \
        [k for k in KEYS if expected_side("orders", k, 2500) == "legacy"][:3]
    for key in keys:
        for _ in range(3):
            r = client.request("GET", "/api/orders/1", [("X-User-Id", ""), ("X-User-Id", key)])
            assert r.header("X-Backend") == expected_side("orders", key, 2500), key
            r = client.request("GET", "/search?u=&u=%s" % key)
            assert r.header("X-Backend") == expected_side("exp-7", key, 1050), key
    out = run_strangler("explain", "-c", proxy.conf_path, "GET", "/search?u=&u=a%0Ab%00c")
    assert out.returncode == 0, out.stderr
    assert 'key:      "a\\nb\\u0000c"\n' in out.stdout, out.stdout
    assert re.search(r"^bucket:\s+%d " % rollout_bucket("exp-7", "a\nb\x00c"), out.stdout, re.M)


def test_sticky_client_ip(rollout):
    proxy, client = rollout
    want = expected_side("byip", "127.0.0.1", 5000)
    for _ in range(5):
        assert client.request("GET", "/byip").header("X-Backend") == want
    assert {e["bucket"] for e in proxy.wait_access(5)} == {rollout_bucket("byip", "127.0.0.1")}


@pytest.mark.parametrize("prefix,side", [("/zero", "legacy"), ("/all", "modern")])
def test_zero_and_hundred_percent(rollout, prefix, side):
    proxy, client = rollout
    for key in KEYS[:50]:
        assert client.request("GET", prefix, [("X-User-Id", key)]).header("X-Backend") == side
    for _ in range(20):  # no key: random bucket, still all on one side
        assert client.request("GET", prefix).header("X-Backend") == side


def test_missing_key_gets_a_random_bucket_consistent_with_the_log(rollout):
    proxy, client = rollout
    sides = [client.request("GET", "/api/orders/x").header("X-Backend") for _ in range(100)]
    entries = proxy.wait_access(100)
    for side, e in zip(sides, entries):
        assert 0 <= e["bucket"] < 10000
        assert side == ("modern" if e["bucket"] < 2500 else "legacy")
    assert len({e["bucket"] for e in entries}) > 50  # not one fixed bucket


def test_empty_key_counts_as_missing(rollout):
    proxy, client = rollout
    for _ in range(40):
        client.request("GET", "/api/orders/x", [("X-User-Id", "")])
    buckets = {e["bucket"] for e in proxy.wait_access(40)}
    assert len(buckets) > 20, "an empty key must not pin every request to one bucket"


# -- explain agrees with the live decision


def explain(proxy, method, target, *headers):
    args = ["explain", "-c", proxy.conf_path]
    for h in headers:
        args += ["-H", h]
    out = run_strangler(*(args + [method, target]))
    assert out.returncode == 0, out.stderr
    backend = re.search(r"^backend:\s+(\S+)", out.stdout, re.M)
    bucket = re.search(r"^bucket:\s+(\d+)", out.stdout, re.M)
    route = re.search(r"^route:\s+(\S+)", out.stdout, re.M)
    return (backend.group(1) if backend else None, int(bucket.group(1)) if bucket else None,
            route.group(1) if route else None, out.stdout)


def test_explain_matches_live_header_decisions(rollout):
    proxy, client = rollout
    keys = KEYS[:30]
    live = []
    for key in keys:
        live.append(client.request("GET", "/api/orders/5", [("X-User-Id", key)]).header("X-Backend"))
    entries = proxy.wait_access(len(keys))
    for key, side, e in zip(keys, live, entries):
        backend, bucket, route, text = explain(proxy, "GET", "/api/orders/5", "X-User-Id: " + key)
        assert (backend, bucket, route) == (side, e["bucket"], "orders"), text


def test_explain_matches_live_cookie_and_query_decisions(rollout):
    proxy, client = rollout
    for key in KEYS[:10]:
        side = client.request("GET", "/cart/x", [("Cookie", "uid=" + key)]).header("X-Backend")
        backend, bucket, route, text = explain(proxy, "GET", "/cart/x", "Cookie: uid=" + key)
        assert (backend, bucket, route) == (side, rollout_bucket("cart", key), "cart"), text
        side = client.request("GET", "/search?u=" + key).header("X-Backend")
        backend, bucket, route, text = explain(proxy, "GET", "/search?u=" + key)
        assert (backend, bucket, route) == (side, rollout_bucket("exp-7", key), "search"), text


def test_explain_default_and_plain_routes(rollout):
    proxy, client = rollout
    backend, bucket, route, text = explain(proxy, "GET", "/elsewhere")
    assert backend == "legacy" and bucket is None
    assert "default_backend" in text
    assert client.request("GET", "/elsewhere").header("X-Backend") == "legacy"


def test_explain_normalises_like_the_proxy(rollout):
    proxy, client = rollout
    key = "user-11"
    side = client.request("GET", "/api/%6Frders/../orders/1",
                          [("X-User-Id", key)]).header("X-Backend")
    backend, bucket, route, text = explain(proxy, "GET", "/api/%6Frders/../orders/1",
                                           "X-User-Id: " + key)
    assert (backend, route) == (side, "orders"), text
    assert re.search(r"^path:\s+/api/orders/1$", text, re.M), text


def test_explain_answers_as_the_proxy_for_a_method_it_does_not_take(rollout):
    """Methods are case-sensitive: the proxy answers "get" with 501, and
    explain said which backend it would reach."""
    proxy, client = rollout
    client.send(b"get /api/orders/1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert client.read_response().status == 501
    text = explain(proxy, "get", "/api/orders/1")[3]
    assert re.search(r"^answer:\s+501 ", text, re.M) and "backend:" not in text, text
    out = run_strangler("explain", "-c", proxy.conf_path, "-H", "X-User-Id user-3", "GET", "/")
    assert out.returncode == 2 and "a header is 'Name: value'" in out.stderr, out.stderr


def test_explain_answers_connect_and_pri_as_the_proxy_does(rollout):
    """CONNECT gets 405 from the proxy, an HTTP/2 preface (PRI) 505; explain
    routed CONNECT /path to a backend (and called PRI an unknown method)."""
    proxy, client = rollout
    client.send(b"CONNECT /api/orders/1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert client.read_response().status == 405
    with proxy.client() as c:
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        r = c.read_response()  # it was 400 with llhttp's "Pause on PRI/Upgrade"
        assert (r.status, r.body) == (505, b"HTTP/2 is not served here: only HTTP/1.0 and "
                                           b"HTTP/1.1\n")
    for method, target, answer in [("CONNECT", "/api/orders/1", "405 (CONNECT is not supported)"),
                                   ("CONNECT", "api.example:443", "405 (CONNECT is not supported)"),
                                   ("PRI", "*", "505 (HTTP/2 is not served here: only HTTP/1.0 and HTTP/1.1)")]:
        text = explain(proxy, method, target)[3]
        assert re.search(r"^answer:\s+%s$" % re.escape(answer), text, re.M), text
        assert "backend:" not in text, text


def test_explain_ignores_blanks_a_shell_quote_kept(rollout):
    """' /api/orders/1 ' is the target /api/orders/1 (strangler(8) takes the
    target as the shell gave it), not a 400 for a space."""
    proxy, client = rollout
    plain = explain(proxy, "GET", "/api/orders/1", "X-User-Id: user-11")
    blanks = explain(proxy, "GET", "  /api/orders/1  ", "X-User-Id: user-11")
    assert blanks[:3] == plain[:3] and plain[0] is not None, blanks[3]


def test_explain_takes_up_to_64_headers(rollout):
    """strangler(8): -H adds a request header, up to 64; the 65th is a usage
    error."""
    proxy, client = rollout
    extra = ["X-Pad-%d: %d" % (i, i) for i in range(63)]
    backend, bucket, route, text = explain(proxy, "GET", "/api/orders/1",
                                           *(extra + ["X-User-Id: user-11"]))
    assert route == "orders" and bucket == rollout_bucket("orders", "user-11"), text
    args = ["explain", "-c", proxy.conf_path]
    for h in extra + ["X-Pad-x: x", "X-User-Id: user-11"]:
        args += ["-H", h]
    out = run_strangler(*(args + ["GET", "/api/orders/1"]))
    assert out.returncode == 2 and "(at most 64)" in out.stderr, out.stderr
    # a header without a name, which the proxy refuses, is a usage error too
    out = run_strangler("explain", "-c", proxy.conf_path, "-H", ": v", "GET", "/api/orders/1")
    assert out.returncode == 2 and "a header is 'Name: value'" in out.stderr, out.stderr


def test_explain_client_ip_default_and_option(rollout):
    """A client_ip sticky key: explain takes 127.0.0.1 unless --client-ip
    says otherwise (strangler(8)), and agrees with the proxy for a local
    client."""
    proxy, client = rollout
    side = client.request("GET", "/byip").header("X-Backend")
    backend, bucket, route, text = explain(proxy, "GET", "/byip")
    assert (route, bucket, backend) == ("byip", rollout_bucket("byip", "127.0.0.1"), side), text
    for ip in ("10.1.2.3", "2001:db8::7"):
        out = run_strangler("explain", "-c", proxy.conf_path, "--client-ip", ip, "GET", "/byip")
        assert out.returncode == 0, out.stderr
        want = rollout_bucket("byip", ip)
        assert re.search(r"^bucket:\s+%d " % want, out.stdout, re.M), out.stdout
        assert re.search(r"^backend:\s+%s " % expected_side("byip", ip, 5000), out.stdout,
                         re.M), out.stdout


@pytest.mark.parametrize("target", ["/api/orders/\x7f1", "/api/orders/\x011"])
def test_explain_refuses_a_target_byte_the_proxy_refuses(rollout, target):
    """DEL and control bytes in the request target: the proxy answers 400,
    and explain says so instead of naming a backend."""
    proxy, client = rollout
    client.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target.encode())
    assert client.read_response().status == 400
    text = explain(proxy, "GET", target)[3]
    assert re.search(r"^answer:\s+400 ", text, re.M) and "backend:" not in text, text


@pytest.mark.parametrize("target,header", [
    ("/api/orders/1#/../../elsewhere", "X-User-Id: user-11"),  # a fragment is dropped
    ("http://other.example/api/orders/1", "X-User-Id: user-11"),  # absolute form
    ("/search?u=user-11#x", None),  # the fragment is not part of the query
    ("/api/orders/1", "X-User-Id: user-11  "),  # trailing blanks are not part of a value
])
def test_explain_takes_the_target_and_headers_as_the_proxy_does(rollout, target, header):
    """explain read fragments and absolute-form targets as part of the path,
    and kept trailing blanks in values: its answer differed from the proxy's."""
    proxy, client = rollout
    name, value = header.split(":", 1) if header else (None, None)
    headers = [(name, value.lstrip())] if header else []  # trailing blanks sent as they are
    side = client.request("GET", target, headers).header("X-Backend")
    entry = proxy.wait_access(1)[-1]
    backend, bucket, route, text = explain(proxy, "GET", target, *([header] if header else []))
    assert (backend, bucket, route) == (side, entry["bucket"], entry["route"]), text
    assert re.search(r"^path:\s+%s$" % re.escape(entry["path"]), text, re.M), text


def test_a_client_without_the_sticky_cookie_is_given_one(two_backends, start_proxy):
    """rollout.set_cookie: a browser that has no `uid` cookie yet gets one
    drawn for it, and its side is that key's bucket; with the cookie back, it
    stays on that side and is given no other. Without it, an anonymous user
    would switch sides at random on every request."""
    legacy, modern = two_backends
    routes = [{"name": "web", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "sticky": "cookie:uid",
                           "set_cookie": True}}]
    proxy = start_proxy({"legacy": legacy, "modern": modern}, routes=routes)
    seen = set()
    with proxy.client() as c:
        for _ in range(30):
            r = c.request("GET", "/page")
            m = re.fullmatch(r"uid=([0-9a-f]{16}); Path=/; Max-Age=31536000; HttpOnly; "
                             r"SameSite=Lax", r.header("Set-Cookie") or "")
            assert r.status == 200 and m, r.headers
            key = m.group(1)
            side = r.header("X-Backend")
            assert side == expected_side("web", key, 5000), key
            seen.add(side)
            for _ in range(3):  # the cookie back: the same side, no new cookie
                again = c.request("GET", "/other", [("Cookie", "a=1; uid=" + key)])
                assert (again.header("X-Backend"), again.header("Set-Cookie")) == (side, None)
    assert seen == {"legacy", "modern"}
    # the backends never see the drawn key as a cookie of the first request
    assert all("uid=" not in (q.header("Cookie") or "") for q in legacy.requests + modern.requests
               if q.path == "/page")
    out = run_strangler("explain", "-c", proxy.conf_path, "GET", "/page")
    assert "key:      (absent: strangler draws one and the answer sets cookie uid to it: the " \
        "side is random once, then sticky)" in out.stdout, out.stdout


def test_a_drawn_cookie_never_replaces_the_applications_and_leads_the_shadow_sample(
        backend_factory, start_proxy, tmp_path):
    """The backend sets the sticky cookie itself (a session it opened): its
    value stands, strangler adds none. The shadow sample of a visitor's
    first request follows the drawn key, as its later requests do."""
    from harness import Response
    def app(name):
        def handler(req, conn):
            headers = [("X-Backend", name)]
            if req.path == "/login":
                headers.append(("Set-Cookie", "uid=REAL-SESSION; Path=/; HttpOnly"))
            return Response(200, b"ok", headers=headers)
        return handler
    legacy, modern = backend_factory("legacy", app("legacy")), backend_factory("modern", app("m"))
    mirror = backend_factory("mirror")
    routes = [{"name": "web", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "sticky": "cookie:uid",
                           "set_cookie": True},
               "shadow": {"backend": "mirror", "percent": 50.0}}]
    proxy = start_proxy({"legacy": legacy, "modern": modern, "mirror": mirror}, routes=routes,
                        shadow_defaults={"diff_log": str(tmp_path / "d.jsonl"),
                                         "timeout_ms": 2000})
    with proxy.client() as c:
        r = c.request("POST", "/login", body=b"u=1")
        assert r.header_all("Set-Cookie") == ["uid=REAL-SESSION; Path=/; HttpOnly"]
        keys = []
        for i in range(40):
            r = c.request("GET", "/first/%d" % i)
            keys.append(re.match(r"uid=([0-9a-f]{16});", r.header("Set-Cookie")).group(1))
    want = {"/first/%d" % i for i, k in enumerate(keys) if rollout_bucket("web/shadow", k) < 5000}
    assert 5 < len(want) < 35
    from harness import wait_for
    wait_for(lambda: {q.path for q in mirror.requests} >= want, what="the sampled mirrors")
    import time
    time.sleep(0.3)
    assert {q.path for q in mirror.requests} == want


def test_a_drawn_cookie_is_secure_when_a_trusted_balancer_says_https(two_backends,
                                                                      start_proxy):
    """Behind a balancer that ends TLS, the browser's connection is https:
    a trusted peer's `X-Forwarded-Proto: https` (with trusted_headers) makes
    the drawn cookie `Secure`; the same header from a peer not trusted, or
    `http`, does not. GET /api/routes says the route sets the cookie."""
    legacy, modern = two_backends
    routes = [{"name": "web", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "sticky": "cookie:uid",
                           "set_cookie": True}}]
    cookie = r"uid=[0-9a-f]{16}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"

    def given(proxy, proto):
        with proxy.client() as c:
            return c.request("GET", "/", [("X-Forwarded-Proto", proto)]).header("Set-Cookie")
    trusting = start_proxy({"legacy": legacy, "modern": modern}, routes=routes, admin={},
                           trusted_proxies=["127.0.0.1"], trusted_headers=["X-Forwarded-Proto"])
    assert re.fullmatch(cookie + "; Secure", given(trusting, "https"))
    assert re.fullmatch(cookie, given(trusting, "http"))
    st, doc = trusting.admin("GET", "/api/routes/web")
    assert st == 200 and doc["rollout"]["set_cookie"] == \
        {"max_age_s": 31536000, "path": "/", "domain": None}, doc
    not_trusting = start_proxy({"legacy": legacy, "modern": modern}, routes=routes,
                               trusted_proxies=["10.0.0.0/8"],
                               trusted_headers=["X-Forwarded-Proto"])
    assert re.fullmatch(cookie, given(not_trusting, "https"))


def test_the_drawn_cookies_attributes_can_be_set(two_backends, start_proxy):
    """set_cookie as a group: its lifetime, its path, and a Domain, so that
    a site on several hosts (www., api.) keeps a visitor on one side
    everywhere; the API says which."""
    legacy, modern = two_backends
    routes = [{"name": "web", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "sticky": "cookie:uid",
                           "set_cookie": {"max_age_s": 86400, "path": "/shop",
                                          "domain": "example.com"}}}]
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=routes, admin={})
    with p.client() as c:
        got = c.request("GET", "/shop/cart").header("Set-Cookie")
    assert re.fullmatch(r"uid=[0-9a-f]{16}; Path=/shop; Max-Age=86400; Domain=example.com; "
                        r"HttpOnly; SameSite=Lax", got), got
    st, doc = p.admin("GET", "/api/routes/web")
    assert doc["rollout"]["set_cookie"] == {"max_age_s": 86400, "path": "/shop",
                                            "domain": "example.com"}, doc


def test_check_of_set_cookie(tmp_path):
    from harness import assert_check_reports
    conf = tmp_path / "c.conf"
    head = ('listen = ( { address = "127.0.0.1:18080"; } );\n'
            'backends = { a = { url = "http://127.0.0.1:9001"; }; b = { url = "http://127.0.0.1:9002"; }; };\n'
            'default_backend = "a";\nroutes = (\n')
    rows = [
        'set_cookie = { path = "shop"; };',
        'set_cookie = { path = "/a;b"; };',
        'set_cookie = { domain = ".example.com"; };',
        'set_cookie = { domain = "example.com:8080"; };',
        'set_cookie = { max_age_s = 0; };',
        'set_cookie = { domain = "a..b"; };',
        'set_cookie = { domain = "x.-y.z"; };',
        'set_cookie = "yes";',
        'set_cookie = { maxage = 5; };',
    ]
    conf.write_text(head + ",\n".join(
        '{ name = "r%d"; match = { path = "/%d"; }; backend = "a"; rollout = { backend = "b"; '
        'percent = 5.0; sticky = "cookie:uid"; %s }; }' % (i, i, r) for i, r in enumerate(rows))
        + "\n);\n")
    P = "routes.[%d].rollout.set_cookie"
    DOMAIN = "must be a host name (labels of letters, digits and '-' between dots)"
    assert_check_reports(conf, [
        (5, (P % 0) + '.path: "shop": must start with \'/\', at most 256 visible ASCII '
             "characters, no ';' or ','"),
        (6, (P % 1) + '.path: "/a;b": must start with \'/\', at most 256 visible ASCII '
             "characters, no ';' or ','"),
        (7, (P % 2) + '.domain: ".example.com": ' + DOMAIN),
        (8, (P % 3) + '.domain: "example.com:8080": ' + DOMAIN),
        (9, (P % 4) + ".max_age_s: must be between 1 and 34560000"),
        (10, (P % 5) + '.domain: "a..b": ' + DOMAIN),
        (11, (P % 6) + '.domain: "x.-y.z": ' + DOMAIN),
        (12, (P % 7) + ': must be true, false or a group: { max_age_s = 2592000; path = "/"; '
              'domain = "example.com"; }'),
        (13, (P % 8) + ".maxage: unknown setting"),
    ])


FALLBACK = [{"name": "fb", "match": {"path_prefix": "/fb"}, "backend": "legacy",
             "rollout": {"backend": "modern", "percent": 50.0,
                         "sticky": ["header:X-User-Id", "cookie:sid", "client_ip"]}}]


def test_a_sticky_list_takes_the_first_key_the_request_has(two_backends, start_proxy):
    """sticky = [user id, else session cookie, else address]: each request is
    decided by the first key it carries, hashed as that key alone would be,
    so a signed-in user keeps a side by user id, an anonymous visitor by
    cookie, and a bare client by address; explain and the API agree."""
    legacy, modern = two_backends
    p = start_proxy({"legacy": legacy, "modern": modern}, default_backend="legacy",
                    routes=FALLBACK, admin={})
    c = p.client()
    want = []
    for key in KEYS[:30]:
        side = c.request("GET", "/fb", [("X-User-Id", key), ("Cookie", "sid=other")]).header(
            "X-Backend")
        assert side == expected_side("fb", key, 5000), key
        want.append(rollout_bucket("fb", key))
    for key in KEYS[30:60]:
        side = c.request("GET", "/fb", [("X-User-Id", ""), ("Cookie", "a=1; sid=" + key)]).header(
            "X-Backend")
        assert side == expected_side("fb", key, 5000), key
        want.append(rollout_bucket("fb", key))
    c.close()
    for i in range(2, 22):
        ip = "127.0.0.%d" % i
        c = p.client(source=ip)
        for _ in range(2):  # the same side every time
            assert c.request("GET", "/fb").header("X-Backend") == expected_side("fb", ip, 5000)
            want.append(rollout_bucket("fb", ip))
        c.close()
    assert [e["bucket"] for e in p.wait_access(len(want))] == want
    st, body = p.admin("GET", "/api/routes/fb")
    assert st == 200
    assert body["rollout"]["sticky"] == ["header:X-User-Id", "cookie:sid", "client_ip"]
    out = run_strangler("explain", "-c", p.conf_path, "-H", "Cookie: sid=" + KEYS[40],
                        "GET", "/fb")
    assert out.returncode == 0, out.stderr
    assert "sticky header:X-User-Id, then cookie:sid, then client_ip" in out.stdout, out.stdout
    assert 'key:      "%s" (cookie:sid)' % KEYS[40] in out.stdout, out.stdout
    assert re.search(r"^bucket:\s+%d " % rollout_bucket("fb", KEYS[40]), out.stdout, re.M)
    out = run_strangler("explain", "-c", p.conf_path, "--client-ip", "10.1.2.3", "GET", "/fb")
    assert 'key:      "10.1.2.3" (client_ip)' in out.stdout, out.stdout


def test_a_sticky_list_with_set_cookie_draws_the_cookie_for_the_rest(two_backends,
                                                                       start_proxy):
    legacy, modern = two_backends
    routes = [{"name": "web", "match": {"path_prefix": "/web"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "set_cookie": True,
                           "sticky": ["header:X-User-Id", "cookie:sid"]}}]
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=routes)
    c = p.client()
    r = c.request("GET", "/web")
    sid = re.match(r"sid=([0-9a-f]{16});", r.header("Set-Cookie")).group(1)
    assert r.header("X-Backend") == expected_side("web", sid, 5000)
    for _ in range(5):  # the drawn cookie keeps the side
        r = c.request("GET", "/web", [("Cookie", "sid=" + sid)])
        assert r.header("Set-Cookie") is None
        assert r.header("X-Backend") == expected_side("web", sid, 5000)
    r = c.request("GET", "/web", [("X-User-Id", "u7")])  # a user id: no cookie drawn
    assert r.header("Set-Cookie") is None
    assert r.header("X-Backend") == expected_side("web", "u7", 5000)
    c.close()
