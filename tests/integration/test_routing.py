"""Routing end to end: each match condition sends the request to its backend,
the default backend takes the rest, and the path the router decides on is the
path the backend receives."""
import pytest

from harness import build_request, make_config, run_strangler

ROUTES = [
    {"name": "users", "match": {"path_prefix": "/api/users", "methods": ["GET", "HEAD"]},
     "backend": "users"},
    {"name": "search", "match": {"path": "/api/search"}, "backend": "search"},
    {"name": "items", "match": {"path_regex": "/items/[0-9]+"}, "backend": "items"},
    {"name": "canary", "match": {"path_prefix": "/h", "headers": {"X-Canary": "yes"}},
     "backend": "canary"},
    {"name": "tenant", "match": {"path_prefix": "/h", "headers": {"X-Tenant": "*"}},
     "backend": "tenant"},
    {"name": "debug", "match": {"path_prefix": "/q", "query": {"debug": "1"}}, "backend": "debug"},
    {"name": "flagged", "match": {"path_prefix": "/q", "query": {"flag": "*"}},
     "backend": "flagged"},
    {"name": "first", "match": {"path_prefix": "/fm", "methods": ["POST"]}, "backend": "first"},
    {"name": "second", "match": {"path_prefix": "/fm/x"}, "backend": "second"},
    {"name": "api-host", "match": {"host": "api.example.com", "path_prefix": "/v"},
     "backend": "apihost"},
    {"name": "shops", "match": {"host": "*.shop.example"}, "backend": "shops"},
]
NAMES = ["legacy", "users", "search", "items", "canary", "tenant", "debug", "flagged", "first",
         "second", "apihost", "shops"]


@pytest.fixture
def routed(backend_factory, start_proxy):
    backends = {n: backend_factory(n) for n in NAMES}
    proxy = start_proxy(backends, default_backend="legacy", routes=ROUTES)
    client = proxy.client()
    yield proxy, backends, client
    client.close()


def send(client, method="GET", target="/", headers=()):
    r = client.request(method, target, headers)
    return r


CASES = [
    # (id, method, target, headers, backend)
    ("prefix-exact", "GET", "/api/users", (), "users"),
    ("prefix-subpath", "GET", "/api/users/7", (), "users"),
    ("prefix-trailing-slash", "GET", "/api/users/", (), "users"),
    ("prefix-head", "HEAD", "/api/users/7", (), "users"),
    ("prefix-segment-boundary", "GET", "/api/usersettings", (), "legacy"),
    ("prefix-method-mismatch", "POST", "/api/users/7", (), "legacy"),
    ("exact", "GET", "/api/search", (), "search"),
    ("exact-with-query", "GET", "/api/search?q=x", (), "search"),
    ("exact-no-subpath", "GET", "/api/search/more", (), "legacy"),
    ("exact-trailing-slash", "GET", "/api/search/", (), "legacy"),
    ("regex", "GET", "/items/123", (), "items"),
    ("regex-anchored-end", "GET", "/items/123/x", (), "legacy"),
    ("regex-anchored-start", "GET", "/x/items/123", (), "legacy"),
    ("regex-no-digits", "GET", "/items/abc", (), "legacy"),
    ("header-value", "GET", "/h/1", (("X-Canary", "yes"),), "canary"),
    ("header-name-case", "GET", "/h/1", (("x-canary", "yes"),), "canary"),
    ("header-wrong-value", "GET", "/h/1", (("X-Canary", "no"),), "legacy"),
    ("header-value-case", "GET", "/h/1", (("X-Canary", "YES"),), "legacy"),
    ("header-any", "GET", "/h/1", (("X-Tenant", "acme"),), "tenant"),
    ("header-any-empty", "GET", "/h/1", (("X-Tenant", ""),), "tenant"),
    ("header-absent", "GET", "/h/1", (), "legacy"),
    ("query-value", "GET", "/q?debug=1", (), "debug"),
    ("query-value-among-others", "GET", "/q/a?x=2&debug=1&y", (), "debug"),
    ("query-value-decoded", "GET", "/q?debug=%31", (), "debug"),
    ("query-wrong-value", "GET", "/q?debug=0", (), "legacy"),
    ("query-any", "GET", "/q?flag=", (), "flagged"),
    ("query-any-no-equals", "GET", "/q?flag", (), "flagged"),
    ("query-absent", "GET", "/q?other=1", (), "legacy"),
    ("query-name-is-case-sensitive", "GET", "/q?DEBUG=1", (), "legacy"),
    ("first-match-wins", "POST", "/fm/x", (), "first"),
    ("second-when-first-fails", "GET", "/fm/x", (), "second"),
    ("default", "GET", "/nowhere", (), "legacy"),
    ("root", "GET", "/", (), "legacy"),
]


@pytest.mark.parametrize("method,target,headers,expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_route_choice(routed, method, target, headers, expected):
    proxy, backends, client = routed
    r = send(client, method, target, headers)
    assert r.status == 200, r
    assert r.header("X-Backend") == expected
    got = backends[expected].last
    assert got.method == method
    assert got.target == target
    others = [n for n in NAMES if n != expected and backends[n].requests]
    assert others == []


@pytest.mark.parametrize("host,target,expected", [
    ("api.example.com", "/v/1", "apihost"),
    ("API.Example.com:8443", "/v/1", "apihost"),   # any case, any port
    ("api.example.com.", "/v", "apihost"),         # a final dot
    ("api.example.com", "/w", "legacy"),            # every condition must hold
    ("www.example.com", "/v/1", "legacy"),
    ("eu.shop.example", "/anything", "shops"),
    ("a.eu.shop.example:80", "/", "shops"),         # any depth below
    ("shop.example", "/", "legacy"),                # not the name itself
    ("[::1]:8080", "/v", "legacy"),
])
def test_route_by_host(routed, host, target, expected):
    proxy, backends, client = routed
    r = client.request("GET", target, host=host)
    assert r.status == 200 and r.header("X-Backend") == expected, (host, r)
    assert backends[expected].last.header("Host") == host  # forwarded as it came


def test_explain_agrees_on_hosts(tmp_path):
    """explain routes by -H 'Host: ...' as the proxy does, and answers 400
    where the proxy would (a bad or a second Host)."""
    conf = tmp_path / "h.conf"
    conf.write_text(make_config(18080, {"legacy": "http://127.0.0.1:9",
                                        "apihost": "http://127.0.0.1:8"}, routes=ROUTES[-2:-1]))

    def explain(*hosts):
        args = [a for h in hosts for a in ("-H", "Host: " + h)]
        r = run_strangler("explain", "-c", str(conf), *args, "GET", "/v/1")
        assert r.returncode == 0, r.stderr
        return [line for line in r.stdout.splitlines() if line.startswith(("route:", "answer:"))]
    assert explain("API.example.com:8443")[0].startswith("route:    api-host")
    assert explain("www.example.com") == ["route:    (none: default_backend)"]
    assert explain() == ["route:    (none: default_backend)"]  # any Host but api.example.com
    assert explain("api.example.com:") == ["answer:   400 (invalid Host header)"]
    assert explain("api.example.com", "evil.example") == \
        ["answer:   400 (more than one Host header)"]
    # an absolute-form target names its host, with or without -H
    for hosts in ((), ("www.example.com",)):
        r = run_strangler("explain", "-c", str(conf), *[a for h in hosts for a in ("-H", "Host: " + h)],
                          "GET", "http://api.example.com/v/1")
        assert "route:    api-host" in r.stdout, r.stdout
    r = run_strangler("explain", "-c", str(conf), "GET", "http://u@api.example.com/v/1")
    assert "answer:   400 (invalid host in the request target)" in r.stdout, r.stdout
    # framing the proxy's parser refuses before routing (it printed a route)
    for headers, why in ((["Content-Length: x"], "Invalid character in Content-Length"),
                         (["Content-Length: 1", "Content-Length: 1"], "Duplicate Content-Length"),
                         (["Content-Length: 1", "Transfer-Encoding: chunked"],
                          "Content-Length can't be present with Transfer-Encoding")):
        r = run_strangler("explain", "-c", str(conf), *[a for h in headers for a in ("-H", h)],
                          "POST", "/v/1")
        assert "answer:   400 (%s)" % why in r.stdout.splitlines(), (headers, r.stdout)


def test_route_name_in_access_log(routed):
    proxy, backends, client = routed
    send(client, "GET", "/api/users/1")
    send(client, "GET", "/nowhere")
    a, b = proxy.wait_access(2)
    assert (a["route"], a["backend"]) == ("users", "users")
    assert (b["route"], b["backend"]) == (None, "legacy")


def test_lowercase_method_is_refused_not_routed(routed):
    """Methods are case-sensitive: "get" is an unknown method (501), never GET."""
    proxy, backends, client = routed
    client.send(build_request("get", "/api/users/7"))
    r = client.read_response()
    assert r.status == 501
    assert all(not b.requests for b in backends.values())


# -- path normalisation, end to end


@pytest.mark.parametrize("target,backend,received", [
    ("/api/%75sers/../users/7", "users", "/api/users/7"),
    ("//api///users", "users", "/api/users"),
    ("/api/./users/./7", "users", "/api/users/7"),
    ("/api/users/%2e%2e/users/8", "users", "/api/users/8"),
    ("/api/x/%2E%2E/users", "users", "/api/users"),
    ("/api/users/a%2Fb", "users", "/api/users/a%2Fb"),
    ("/api/users/a%2fb", "users", "/api/users/a%2Fb"),
    ("/api/users%2F7", "legacy", "/api/users%2F7"),
    ("/api/users/%41%7e", "users", "/api/users/A~"),
    ("/api/users/a%20b", "users", "/api/users/a%20b"),
    ("/items/%31%32", "items", "/items/12"),
    ("/api/users/7/", "users", "/api/users/7/"),
    ("/api/users/7/..", "users", "/api/users/"),
    ("/api/search/.", "legacy", "/api/search/"),
    ("/api/users/%2e/7", "users", "/api/users/7"),
    ("/api/users/x%00y", "users", "/api/users/x%00y"),
])
def test_path_normalisation(routed, target, backend, received):
    proxy, backends, client = routed
    r = send(client, "GET", target)
    assert r.status == 200, r
    assert r.header("X-Backend") == backend
    assert backends[backend].last.target == received


def test_escaped_slashes_can_be_refused(backend_factory, start_proxy, tmp_path):
    """A route guarding /internal does not catch /internal%2Fsecrets or
    /internal\\secrets (no separators to strangler), which Go's ServeMux,
    nginx or Node read as /internal/secrets. limits.reject_escaped_slashes
    refuses such a path with a 400 (Envoy's path_with_escaped_slashes_action
    REJECT_REQUEST); explain says so too."""
    legacy = backend_factory("legacy")
    routes = [{"name": "internal", "match": {"path_prefix": "/internal"}, "return": 403}]
    p = start_proxy({"legacy": legacy}, routes=routes,
                    limits={"reject_escaped_slashes": True})
    for target in ["/internal%2Fsecrets", "/internal%2fsecrets", "/internal\\secrets",
                   "/x/..%5Cinternal", "/internal%5csecrets"]:
        with p.client() as c:
            c.send(build_request("GET", target))
            r = c.read_response()
            assert (r.status, r.body) == (400, b"an escaped slash or a backslash in the path "
                                          b"(%2F, %5C or \\)\n"), (target, r)
    with p.client() as c:
        assert c.request("GET", "/internal/x").status == 403
        assert c.request("GET", "/public%20page").status == 200
    assert [q.target for q in legacy.requests] == ["/public%20page"]
    out = run_strangler("explain", "-c", p.conf_path, "GET", "/internal%2Fsecrets")
    assert "answer:   400 (an escaped slash or a backslash in the path" in out.stdout, out.stdout
    # without it (the default), the path goes as it is, routed as one segment
    q = start_proxy({"legacy": legacy}, routes=routes)
    with q.client() as c:
        assert c.request("GET", "/internal%2Fsecrets").status == 200
    assert legacy.requests[-1].target == "/internal%2Fsecrets"
    bad = tmp_path / "bad.conf"
    bad.write_text(make_config(1, {"legacy": legacy}, limits={"reject_escaped_slashes": 1}))
    out = run_strangler("-t", "-c", str(bad))
    assert out.returncode == 1
    assert "limits.reject_escaped_slashes: must be true or false" in out.stderr, out.stderr


@pytest.mark.parametrize("target", ["/..", "/../api/users", "/api/../../x", "/%2e%2e/x",
                                    "/a/%2E%2E/%2e%2e/.."])
def test_path_above_root_is_400(routed, target):
    proxy, backends, client = routed
    client.send(build_request("GET", target))
    r = client.read_response()
    assert r.status == 400
    assert b"above the root" in r.body
    assert r.header("Connection") == "close"
    assert client.is_closed()
    assert all(not b.requests for b in backends.values())
    # the log has the path as received (it had the normaliser's partial "/")
    assert proxy.wait_access(1)[0]["path"] == target


@pytest.mark.parametrize("target", ["/../x?a=1", "/../x#frag", "/../x?a=1#frag"])
def test_a_refused_path_is_logged_without_query_or_fragment(routed, target):
    """The log's path of a refused target is its path as received: the query
    and the fragment are not part of it."""
    proxy, backends, client = routed
    client.send(build_request("GET", target))
    assert client.read_response().status == 400
    assert proxy.wait_access(1)[0]["path"] == "/../x"


@pytest.mark.parametrize("target", ["/api/users/%zz", "/api/users/%4", "/%"])
def test_bad_percent_encoding_is_400(routed, target):
    proxy, backends, client = routed
    client.send(build_request("GET", target + "?q=1"))
    r = client.read_response()
    assert r.status == 400
    assert all(not b.requests for b in backends.values())
    assert proxy.wait_access(1)[0]["path"] == target


@pytest.mark.parametrize("target", [
    "/api/users/7?x=1&y=%20z&y=2",
    "/api/users/7?a=%2F..%2F&b=/../",
    "/api/users/7?",
    "/api/users/7?only",
    "/api/%75sers/7?q=%75",
])
def test_query_string_preserved(routed, target):
    proxy, backends, client = routed
    r = send(client, "GET", target)
    assert r.status == 200
    got = backends["users"].last
    path, _, query = target.partition("?")
    assert got.query == query
    assert got.path == path.replace("%75", "u")


def test_absolute_form_target_routes_on_its_path(routed):
    proxy, backends, client = routed
    client.send(build_request("GET", "http://example.com/api/users/9?z=1"))
    r = client.read_response()
    assert r.status == 200
    assert r.header("X-Backend") == "users"
    assert backends["users"].last.target == "/api/users/9?z=1"


@pytest.mark.parametrize("target,host,expected", [
    ("http://api.example.com/v/1", "www.example.com", "apihost"),
    ("HTTP://API.example.com:8443/v/1?x", "www.example.com", "apihost"),
    ("http://www.example.com/v/1", "api.example.com", "legacy"),
    ("https://eu.shop.example", "api.example.com", "shops"),
])
def test_an_absolute_form_target_routes_on_its_host(routed, target, host, expected):
    """The target's host is the request's, whatever Host says (RFC 9112
    3.2.2): routing and the backend see that one, as nginx does, so a
    balancer in front that routes on the target and strangler never
    disagree about which site a request is for."""
    proxy, backends, client = routed
    client.send(build_request("GET", target, host=host))
    r = client.read_response()
    assert (r.status, r.header("X-Backend")) == (200, expected), target
    authority = target.split("/")[2].split("?")[0]
    got = backends[expected].last
    assert (got.header("Host"), got.header("X-Forwarded-Host")) == (authority, authority)


@pytest.mark.parametrize("target", ["http://user@api.example.com/v/1", "http://[zz]/v/1"])
def test_an_absolute_form_target_without_a_valid_host_is_400(routed, target):
    proxy, backends, client = routed
    client.send(build_request("GET", target, host="api.example.com"))
    r = client.read_response()
    assert r.status == 400 and b"invalid host in the request target" in r.body
    assert all(not b.requests for b in backends.values())


def test_routes_on_keepalive_connection_are_independent(routed):
    """Each request on a kept-alive connection is routed on its own."""
    proxy, backends, client = routed
    seq = [("/api/users/1", "users"), ("/nowhere", "legacy"), ("/items/5", "items"),
           ("/api/search", "search"), ("/api/users/2", "users")]
    for target, expected in seq:
        assert send(client, "GET", target).header("X-Backend") == expected


@pytest.mark.parametrize("target,route", [("/api/search#frag", "search"),
                                          ("/api/users#x", "users"),
                                          ("/api/users/7?q=1#frag", "users")])
def test_fragment_never_reaches_backend(routed, target, route):
    """A fragment is not part of a request-target (RFC 9112 3.2). Whatever the
    proxy does with one (refuse with 400, or drop it), the router and the
    backend must see the same path: a backend's URL parser strips "#..."
    before routing, so forwarding it means the router decided on a path the
    backend never sees."""
    proxy, backends, client = routed
    client.send(build_request("GET", target))
    r = client.read_response()
    if r.status == 400:
        assert all(not b.requests for b in backends.values())
        return
    assert r.status == 200
    got = [(n, req.target) for n, b in backends.items() for req in b.requests]
    assert len(got) == 1
    name, received = got[0]
    assert "#" not in received, "backend %s received %r" % (name, received)
    assert name == route, "routed to %s, want %s" % (name, route)


def test_an_http10_absolute_form_target_without_host_routes_on_its_host(routed):
    """HTTP/1.0 may go without Host: an absolute-form target's host is then
    the request's Host, for routing, for the backend and for
    X-Forwarded-Host (it was routed as a request without Host, and sent
    with the backend's own)."""
    proxy, backends, client = routed
    client.send(build_request("GET", "http://api.example.com/v/1", host=None,
                              version="HTTP/1.0"))
    r = client.read_response()
    assert (r.status, r.header("X-Backend")) == (200, "apihost")
    got = backends["apihost"].last
    assert (got.header("Host"), got.header("X-Forwarded-Host")) == \
        ("api.example.com", "api.example.com")
    assert got.target == "/v/1"


STAFF = [
    {"name": "staff", "match": {"path_prefix": "/admin",
                                "client_ip": ["127.0.0.5", "10.0.0.0/8", "2001:db8::/32"]},
     "backend": "users"},
    {"name": "closed", "match": {"path_prefix": "/admin"}, "return": 403},
]


def test_client_ip_routes_by_the_clients_address(backend_factory, start_proxy):
    """match.client_ip: staff from their networks reach the admin pages, the
    rest get the route after it (a 403): nginx's allow/deny. The address is
    the client's own: the connection's peer, or behind a trusted balancer
    what its X-Forwarded-For says (a client cannot claim one by itself)."""
    backends = {n: backend_factory(n) for n in ("legacy", "users")}
    p = start_proxy(backends, default_backend="legacy", routes=STAFF,
                    trusted_proxies=["127.0.0.2"])
    for source, xff, status, route in [
            ("127.0.0.5", None, 200, "staff"),          # the listed address
            ("127.0.0.1", None, 403, "closed"),         # any other
            ("127.0.0.1", "10.1.2.3", 403, "closed"),   # not trusted: its X-Forwarded-For is not believed
            ("127.0.0.2", "10.1.2.3", 200, "staff"),    # the trusted balancer's client
            ("127.0.0.2", "2001:db8::7", 200, "staff"),
            ("127.0.0.2", "192.0.2.1", 403, "closed"),
            ("127.0.0.2", "::ffff:10.0.0.9", 200, "staff"),  # an IPv4-mapped address is IPv4
    ]:
        c = p.client(source=source)
        try:
            r = c.request("GET", "/admin/users",
                          headers=(("X-Forwarded-For", xff),) if xff else ())
        finally:
            c.close()
        assert r.status == status, (source, xff, r)
    logs = p.wait_access(7)
    assert [a["route"] for a in logs] == ["staff", "closed", "closed", "staff", "staff", "closed",
                                          "staff"]
    assert [a["client"] for a in logs[3:]] == ["10.1.2.3", "2001:db8::7", "192.0.2.1", "10.0.0.9"]
    assert len(backends["users"].requests) == 4
    # the other paths are not the route's: anyone reaches them
    c = p.client(source="127.0.0.9")
    r = c.request("GET", "/home")
    c.close()
    assert r.status == 200 and r.header("X-Backend") == "legacy"


def test_explain_takes_the_client_address(tmp_path):
    conf = tmp_path / "ip.conf"
    conf.write_text(make_config(18080, {"legacy": "http://127.0.0.1:9",
                                        "users": "http://127.0.0.1:8"}, routes=STAFF))

    def route(*args):
        r = run_strangler("explain", "-c", str(conf), *args, "GET", "/admin/x")
        assert r.returncode == 0, r.stderr
        return [line for line in r.stdout.splitlines() if line.startswith("route:")][0]
    assert route("--client-ip", "10.9.8.7").startswith("route:    staff")
    assert route("--client-ip", "::ffff:10.9.8.7").startswith("route:    staff")
    assert route("--client-ip", "2001:db8:0:1::5").startswith("route:    staff")
    assert route("--client-ip", "192.0.2.1").startswith("route:    closed")
    assert route().startswith("route:    closed")  # 127.0.0.1 by default
    r = run_strangler("explain", "-c", str(conf), "--client-ip", "staff.example", "GET", "/")
    assert r.returncode == 2
    assert 'explain: --client-ip "staff.example": not an IPv4 or IPv6 address' in r.stderr


def test_explain_reads_x_forwarded_for_from_a_trusted_peer_as_the_proxy_does(
        backend_factory, start_proxy):
    """--client-ip is the connection's peer: when it is a trusted proxy, its
    X-Forwarded-For names the client, for the route (match.client_ip) and for
    a client_ip sticky key, as in the running proxy. explain ignored it."""
    backends = {n: backend_factory(n) for n in ("legacy", "users")}
    p = start_proxy(backends, default_backend="legacy", routes=STAFF,
                    trusted_proxies=["127.0.0.2"])
    xff = "X-Forwarded-For: 198.51.100.9, 10.1.2.3"
    c = p.client(source="127.0.0.2")
    r = c.request("GET", "/admin/x", headers=[("X-Forwarded-For", "198.51.100.9, 10.1.2.3")])
    c.close()
    assert r.status == 200 and [e["route"] for e in p.wait_access(1)] == ["staff"]

    def explain(*args):
        out = run_strangler("explain", "-c", p.conf_path, *args, "GET", "/admin/x")
        assert out.returncode == 0, out.stderr
        return out.stdout
    text = explain("--client-ip", "127.0.0.2", "-H", xff)
    assert "route:    staff" in text, text
    assert "client:   10.1.2.3 (X-Forwarded-For: 127.0.0.2 is a trusted proxy)" in text, text
    # from a peer not trusted, the header is the client's claim: not believed
    text = explain("--client-ip", "127.0.0.1", "-H", xff)
    assert "route:    closed" in text and "client:" not in text, text


def test_a_bad_client_ip_block_is_reported_at_its_line(tmp_path):
    conf = tmp_path / "bad.conf"
    routes = [{"name": "staff", "match": {"client_ip": ["10.0.0.0/8", "10.1.0.0/8"]},
               "backend": "legacy"}]
    conf.write_text(make_config(18080, {"legacy": "http://127.0.0.1:9"}, routes=routes))
    r = run_strangler("-t", "-c", str(conf))
    assert r.returncode == 1
    line = next(i + 1 for i, text in enumerate(conf.read_text().splitlines())
                if "client_ip" in text)
    assert ('%s:%d: routes.[0].match.client_ip.[1]: "10.1.0.0/8": bits set past the /8 prefix: '
            'write 10.0.0.0/8 (the block) or 10.1.0.0 (the address)' % (conf, line)) in r.stderr
