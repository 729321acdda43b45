"""What one backend gets differently from the others. Its paths
(`backends.NAME.path_rewrite`): each side of a rollout, a mirror, a noise
sample and a request moved to the route's other side get the path of the
backend they go to, with the query as it came; routing, the logs and the diff
log keep the client's path; explain says what is sent; a reload changes the
rules. Its headers (`request_headers`, `response_headers`): set and removed
for that backend's requests only, never leaking to another, and on its
answers to the client, not in what the comparison reads."""
import json
import re

import pytest

import harness
from harness import HOST, Response, refused_port, rollout_bucket, run_strangler, wait_for

MODERN_RULES = [{"prefix": "/api/v1/orders", "to": "/orders"}, {"prefix": "/api/v1", "to": "/"}]


def echo_target(name):
    """Answers JSON naming the target it received, as a backend whose paths
    differ would have to be compared: the body is the order, by its own path."""
    def handler(req, conn):
        return Response(200, json.dumps({"got": req.target}).encode(),
                        headers=[("X-Backend", name), ("Content-Type", "application/json")])
    return handler


def orders(name, prefix):
    """A backend serving orders under prefix: {"id": N} for prefix/N, 404 else."""
    def handler(req, conn):
        m = re.fullmatch(re.escape(prefix) + r"/(\d+)", req.path)
        if not m:
            return Response(404, b'{"error": "not found"}', headers=[("X-Backend", name)])
        return Response(200, json.dumps({"id": int(m.group(1))}).encode(),
                        headers=[("X-Backend", name), ("Content-Type", "application/json")])
    return handler


def modern_def(b, rules=MODERN_RULES):
    return {"url": b.url, "path_rewrite": rules}


def test_each_side_of_a_rollout_gets_its_own_path(backend_factory, start_proxy):
    legacy = backend_factory("legacy", echo_target("legacy"))
    modern = backend_factory("modern", echo_target("modern"))
    routes = [{"name": "orders", "match": {"path_prefix": "/api/v1/orders"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "sticky": "header:X-User"}}]
    p = start_proxy({"legacy": legacy, "modern": modern_def(modern)}, routes=routes)
    keys = ["u%d" % i for i in range(30)]
    with p.client() as c:
        for i, key in enumerate(keys):
            r = c.request("GET", "/api/v1/orders/%d?expand=items&k=/api/v1" % i, [("X-User", key)])
            want_side = "modern" if rollout_bucket("orders", key) < 5000 else "legacy"
            assert r.header("X-Backend") == want_side, key
            want = ("/orders/%d" if want_side == "modern" else "/api/v1/orders/%d") % i
            assert json.loads(r.body)["got"] == want + "?expand=items&k=/api/v1"
    assert len(legacy.requests) and len(modern.requests), "one side got nothing: pick other keys"
    # the logs keep the path the client asked for
    logged = p.wait_access(len(keys))
    assert [e["path"] for e in logged] == ["/api/v1/orders/%d" % i for i in range(len(keys))]


def test_the_default_backend_and_other_prefixes(backend_factory, start_proxy):
    """The rules belong to the backend, whatever sends it the request: the
    default backend's requests follow them too, the first rule that covers
    the path applies, and a path no rule covers goes as it came."""
    modern = backend_factory("modern", echo_target("modern"))
    p = start_proxy({"modern": modern_def(modern)})
    with p.client() as c:
        for target, want in (("/api/v1/orders", "/orders"), ("/api/v1/orders/", "/orders/"),
                             ("/api/v1/ordersX", "/ordersX"), ("/api/v1/users/7", "/users/7"),
                             ("/api/v1", "/"), ("/api/v2/x", "/api/v2/x"), ("/", "/"),
                             ("/api//v1/./orders/%37", "/orders/7")):
            assert json.loads(c.request("GET", target).body)["got"] == want, target


def test_a_mirror_gets_the_shadow_backends_path(backend_factory, start_proxy, tmp_path):
    """The shadow backend serves orders under /orders, the primary under
    /api/v1/orders: with the rule, the two answers are the same order and
    compare identical; the diff log names the client's path."""
    legacy = backend_factory("legacy", orders("legacy", "/api/v1/orders"))
    modern = backend_factory("modern", orders("modern", "/orders"))
    routes = [{"name": "orders", "match": {"path_prefix": "/api/v1/orders"}, "backend": "legacy",
               "shadow": {"backend": "modern"}}]
    log = tmp_path / "diffs.jsonl"
    p = start_proxy({"legacy": legacy, "modern": modern_def(modern)}, routes=routes, admin={},
                    shadow_defaults={"diff_log": str(log), "timeout_ms": 2000})
    with p.client() as c:
        for i in range(5):
            r = c.request("GET", "/api/v1/orders/%d?v=1" % i)
            assert (r.status, json.loads(r.body)) == (200, {"id": i})
        assert c.request("GET", "/api/v1/orders/x").status == 404  # 404 on both: identical
    modern.wait_requests(6)
    # mirrors may come over different pooled connections: in any order
    assert sorted(q.target for q in modern.requests) == sorted(
        ["/orders/%d?v=1" % i for i in range(5)] + ["/orders/x"])
    assert all(q.header("X-Strangler-Shadow") == "1" for q in modern.requests)
    sc = wait_for(lambda: (lambda s: s if s["compared"] >= 6 else None)(
        p.admin("GET", "/api/routes/orders")[1]["shadow_counters"]), what="6 comparisons")
    assert (sc["identical"], sc["different"]) == (6, 0), sc


def test_a_noise_sample_asks_the_primary_at_its_own_path(backend_factory, start_proxy,
                                                        tmp_path):
    modern = backend_factory("modern", orders("modern", "/orders"))
    legacy = backend_factory("legacy", orders("legacy", "/api/v1/orders"))
    routes = [{"name": "orders", "match": {"path_prefix": "/api/v1/orders"}, "backend": "modern",
               "shadow": {"backend": "legacy", "noise": {"samples": 1}}}]
    p = start_proxy({"legacy": legacy, "modern": modern_def(modern)}, routes=routes, admin={},
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl"),
                                     "timeout_ms": 2000})
    with p.client() as c:
        assert json.loads(c.request("GET", "/api/v1/orders/7").body) == {"id": 7}
    modern.wait_requests(2)
    assert [q.target for q in modern.requests] == ["/orders/7", "/orders/7"]
    assert [q.target for q in legacy.wait_requests(1)] == ["/api/v1/orders/7"]


def test_a_request_moved_to_the_other_side_takes_that_sides_path(backend_factory, start_proxy):
    """A refused connection sends the request to the route's other side: with
    the path of that side's backend, whichever way it moves."""
    legacy = backend_factory("legacy", echo_target("legacy"))
    modern = backend_factory("modern", echo_target("modern"))
    dead = "http://%s:%d" % (HOST, refused_port())

    def run(percent, backends):
        routes = [{"name": "orders", "match": {"path_prefix": "/api/v1/orders"},
                   "backend": "legacy",
                   "rollout": {"backend": "modern", "percent": percent,
                               "sticky": "header:X-User"}}]
        p = start_proxy(backends, routes=routes)
        with p.client() as c:
            r = c.request("GET", "/api/v1/orders/7?q=1", [("X-User", "u1")])
        assert r.status == 200
        return r.header("X-Backend"), json.loads(r.body)["got"], p.stderr_text()

    # to modern, which refuses: legacy gets the client's path back
    side, got, err = run(100, {"legacy": legacy, "modern": {"url": dead,
                                                            "path_rewrite": MODERN_RULES}})
    assert (side, got) == ("legacy", "/api/v1/orders/7?q=1")
    assert "retried on legacy" in err
    # to legacy, which refuses: modern (with a share: at 0 % it takes none
    # of legacy's requests) gets its own
    assert rollout_bucket("orders", "u1") >= 1
    side, got, err = run(0.01, {"legacy": dead, "modern": modern_def(modern)})
    assert (side, got) == ("modern", "/orders/7?q=1")
    assert "retried on modern" in err


def test_explain_says_what_each_backend_is_sent(backend_factory, start_proxy):
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    routes = [{"name": "orders", "match": {"path_prefix": "/api/v1/orders"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 100, "sticky": "header:X-User"}}]
    p = start_proxy({"legacy": legacy, "modern": modern_def(modern)}, routes=routes)
    out = run_strangler("explain", "-c", p.conf_path, "-H", "X-User: u1", "GET",
                        "/api/v1/orders/7?x=1")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^path:\s+/api/v1/orders/7$", out.stdout, re.M), out.stdout
    assert ('sent as:  /orders/7?x=1 to modern (its path_rewrite.[0]: "/api/v1/orders" to '
            '"/orders")') in out.stdout, out.stdout
    # no key: either side, each with its path
    out = run_strangler("explain", "-c", p.conf_path, "GET", "/api/v1/orders/7")
    assert "sent as:  /orders/7 to modern" in out.stdout, out.stdout
    out = run_strangler("explain", "-c", p.conf_path, "GET", "/elsewhere")
    assert "sent as" not in out.stdout, out.stdout


def test_explain_and_the_api_name_each_backends_changes_not_their_values(backend_factory,
                                                                          start_proxy):
    """What a backend changes of what it is sent and what it answers, in
    explain and GET /api/backends: the names of its header rules, never a
    set value (an API key in a pasted output or a dashboard is a leak)."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    mdef = dict(modern_def(modern), host_header="modern.internal", max_conns=50,
                request_headers={"set": {"X-Api-Key": "s3cret", "X-Env": "prod"},
                                 "remove": ["X-Debug"]},
                response_headers={"remove": ["Server", "X-Powered-By"]})
    p = start_proxy({"legacy": legacy, "modern": mdef}, admin={})
    out = run_strangler("explain", "-c", p.conf_path, "GET", "/x")
    assert "headers:" not in out.stdout and "answers:" not in out.stdout, out.stdout
    with open(p.conf_path) as f:
        text = f.read()
    conf = p.conf_path + ".m"
    with open(conf, "w") as f:
        f.write(text.replace('default_backend = "legacy"', 'default_backend = "modern"'))
    out = run_strangler("explain", "-c", conf, "GET", "/api/v1/orders/7")
    lines = out.stdout.splitlines()
    assert "backend:  modern (%s) max_conns=50" % modern.url in lines, out.stdout
    assert "headers:  to modern: Host modern.internal (host_header); set X-Api-Key, X-Env; " \
        "remove X-Debug" in lines, out.stdout
    assert "answers:  from modern: Location in the client's terms (location_rewrite); " \
        "remove Server, X-Powered-By" in lines, out.stdout
    assert "s3cret" not in out.stdout
    st, body = p.admin("GET", "/api/backends")
    m = next(b for b in body["backends"] if b["name"] == "modern")
    assert (m["host_header"], m["path_rewrite"], m["location_rewrite"]) == \
        ("modern.internal", MODERN_RULES, True)
    assert m["request_headers"] == {"set": ["X-Api-Key", "X-Env"], "remove": ["X-Debug"]}
    assert m["response_headers"] == {"set": [], "remove": ["Server", "X-Powered-By"]}
    lg = next(b for b in body["backends"] if b["name"] == "legacy")
    assert (lg["host_header"], lg["path_rewrite"], lg["location_rewrite"]) == (None, [], False)
    assert "s3cret" not in json.dumps(body)


def test_a_reload_changes_the_rules(backend_factory, start_proxy):
    modern = backend_factory("modern", echo_target("modern"))
    p = start_proxy({"modern": modern_def(modern)})
    with p.client() as c:
        assert json.loads(c.request("GET", "/api/v1/orders/7").body)["got"] == "/orders/7"
    with open(p.conf_path, "w") as f:
        f.write(harness.make_config(p.port, {"modern": modern_def(
            modern, [{"prefix": "/api/v1", "to": "/v1"}])}, None, (), 1, p.access_log_path))
    harness.reload_and_wait(p, 1)
    with p.client() as c:
        assert json.loads(c.request("GET", "/api/v1/orders/7").body)["got"] == "/v1/orders/7"
    with open(p.conf_path, "w") as f:
        f.write(harness.make_config(p.port, {"modern": modern.url}, None, (), 1,
                                    p.access_log_path))
    harness.reload_and_wait(p, 2)
    with p.client() as c:
        assert json.loads(c.request("GET", "/api/v1/orders/7").body)["got"] == "/api/v1/orders/7"


def test_t_refuses_a_rule_with_its_place(tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:%d"; } );\n'
                    'backends = { modern = { url = "http://127.0.0.1:9";\n'
                    '  path_rewrite = ( { prefix = "/api//v1"; to = "/v1"; } ); }; };\n'
                    'default_backend = "modern";\n' % harness.free_port())
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 1
    assert ('%s:3: backends.modern.path_rewrite.[0].prefix: "/api//v1" is not normalised and '
            'would never apply; write "/api/v1"' % conf) in out.stderr, out.stderr


# --------------------------------------------------------------------------
# request_headers and response_headers

API_KEY = {"set": {"X-Api-Key": "modern-secret", "X-Via": "strangler"}, "remove": ["X-Debug"]}
CLIENT_HEADERS = [("X-Api-Key", "client-key"), ("X-Debug", "1"), ("Accept", "*/*")]


def headers_of(req):
    return {n.lower(): v for n, v in req.headers if n.lower() in ("x-api-key", "x-debug", "x-via",
                                                                  "accept")}


CLIENT_SEEN = {"x-api-key": "client-key", "x-debug": "1", "accept": "*/*"}
MODERN_SEEN = {"x-api-key": "modern-secret", "x-via": "strangler", "accept": "*/*"}


def test_each_side_of_a_rollout_gets_its_own_request_headers(backend_factory, start_proxy):
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "sticky": "header:X-User"}}]
    p = start_proxy({"legacy": legacy, "modern": {"url": modern.url, "request_headers": API_KEY}},
                    routes=routes)
    keys = ["u%d" % i for i in range(20)]
    with p.client() as c:
        for key in keys:
            assert c.request("GET", "/x", CLIENT_HEADERS + [("X-User", key)]).status == 200
    assert legacy.requests and modern.requests, "one side got nothing: pick other keys"
    assert all(headers_of(q) == CLIENT_SEEN for q in legacy.requests)
    assert all(headers_of(q) == MODERN_SEEN for q in modern.requests)
    # one field of each set name, whatever the client sent
    assert all(len(q.header_all("X-Api-Key")) == 1 for q in modern.requests)


@pytest.mark.parametrize("primary", ["legacy", "modern"])
def test_a_mirror_gets_its_backends_headers_and_never_the_others(backend_factory, start_proxy,
                                                                 tmp_path, primary):
    """The key meant for modern reaches modern only: mirrored from legacy it
    is added, mirrored from modern to legacy it is not passed on, and the
    client's own headers go to legacy as they came."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    other = "modern" if primary == "legacy" else "legacy"
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": primary,
               "shadow": {"backend": other, "noise": {"samples": 1}}}]
    p = start_proxy({"legacy": legacy, "modern": {"url": modern.url, "request_headers": API_KEY}},
                    routes=routes, shadow_defaults={"diff_log": str(tmp_path / "d.jsonl"),
                                                    "timeout_ms": 2000})
    with p.client() as c:
        assert c.request("GET", "/x", CLIENT_HEADERS).status == 200
    # the primary's backend gets the request and its noise sample
    by_name = {"legacy": legacy, "modern": modern}
    by_name[primary].wait_requests(2)
    by_name[other].wait_requests(1)
    assert [headers_of(q) for q in legacy.requests] == [CLIENT_SEEN] * len(legacy.requests)
    assert [headers_of(q) for q in modern.requests] == [MODERN_SEEN] * len(modern.requests)


def test_a_clients_underscore_spelling_does_not_get_past_the_rules(backend_factory,
                                                                    start_proxy):
    """A CGI-style backend reads X_Debug as X-Debug: the client's X_Debug is
    removed with X-Debug, and its X_Api_Key does not ride beside the key."""
    modern = backend_factory("modern")
    p = start_proxy({"modern": {"url": modern.url, "request_headers": API_KEY}})
    with p.client() as c:
        assert c.request("GET", "/x", [("X_Debug", "1"), ("X_Api_Key", "attacker"),
                                       ("X_Other", "kept")]).status == 200
    names = [n.lower() for n, _ in modern.requests[0].headers]
    assert "x_debug" not in names and "x_api_key" not in names, names
    assert "x_other" in names
    assert modern.requests[0].header_all("X-Api-Key") == ["modern-secret"]


def test_a_request_moved_off_a_backend_leaves_its_headers(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    dead = "http://%s:%d" % (HOST, refused_port())
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 100, "sticky": "header:X-User"}}]
    p = start_proxy({"legacy": legacy, "modern": {"url": dead, "request_headers": API_KEY}},
                    routes=routes)
    with p.client() as c:
        r = c.request("GET", "/x", CLIENT_HEADERS + [("X-User", "u1")])
    assert r.status == 200 and "retried on legacy" in p.stderr_text()
    assert headers_of(legacy.requests[0]) == CLIENT_SEEN


def test_response_headers_change_what_the_client_gets_not_the_comparison(
        backend_factory, start_proxy, tmp_path):
    def answering(server):
        return lambda req, conn: Response(200, b'{"a": 1}', headers=[
            ("Server", server), ("X-Powered-By", server), ("Cache-Control", "max-age=60"),
            ("Content-Type", "application/json")])
    legacy = backend_factory("legacy", answering("go"))
    modern = backend_factory("modern", answering("hyper"))
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "sticky": "header:X-User"},
               "shadow": {"backend": "@other", "compare": {"headers": ["Server"]}}}]
    p = start_proxy({"legacy": legacy, "modern": {
        "url": modern.url, "response_headers": {"set": {"Cache-Control": "no-store"},
                                                "remove": ["Server", "X-Powered-By"]}}},
        routes=routes, admin={}, shadow_defaults={"diff_log": str(tmp_path / "d.jsonl"),
                                                  "timeout_ms": 2000})
    seen = {}
    with p.client() as c:
        for i in range(12):
            r = c.request("GET", "/x", [("X-User", "u%d" % i)])
            assert r.status == 200 and r.body == b'{"a": 1}'
            seen.setdefault(r.header("X-Powered-By") or "modern",
                            (r.header("Server"), r.header("Cache-Control")))
    assert seen == {"go": ("go", "max-age=60"), "modern": (None, "no-store")}, seen
    # the comparison reads the backends' own answers: the Server headers differ
    sc = wait_for(lambda: (lambda s: s if s["compared"] >= 12 else None)(
        p.admin("GET", "/api/routes/r")[1]["shadow_counters"]), what="12 comparisons")
    assert sc["different"] == 12, sc


def test_a_health_check_carries_the_set_headers(backend_factory, start_proxy):
    """A backend that answers only requests with its key: its active checks
    send the key too, so it stays up."""
    def keyed(req, conn):
        ok = req.header("X-Api-Key") == "modern-secret"
        return Response(200 if ok else 401, b"ok" if ok else b"no key")
    modern = backend_factory("modern", keyed)
    p = start_proxy({"modern": {"url": modern.url, "request_headers": API_KEY,
                                "health": {"path": "/health", "interval_ms": 100,
                                           "unhealthy": 1}}}, admin={})
    wait_for(lambda: sum(q.path == "/health" for q in modern.requests) >= 3, what="3 checks")
    checks = [q for q in modern.requests if q.path == "/health"]
    assert all(q.header("X-Api-Key") == "modern-secret" for q in checks)
    assert all(q.header("User-Agent") == "strangler-health-check" for q in checks)
    st, text = p.admin("GET", "/metrics")
    assert 'strangler_backend_up{backend="modern"} 1' in text


VARS = {"set": {"X-Real-IP": "$remote_addr", "X-Orig": "${scheme}://$http_host ($host)",
                "X-Trace": "$request_id", "X-Price": "$$5"}}


def test_header_values_name_the_exchange(backend_factory, start_proxy, tmp_path):
    """nginx's proxy_set_header X-Real-IP $remote_addr: a set value's
    variables are the client's address, scheme, Host and request id; the
    mirror of the request gets the same; a health check, which has no
    client, gets them empty (a field left empty is not sent, as nginx's
    proxy_set_header); an answer's rules take them too."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "shadow": {"backend": "modern"}}]
    p = start_proxy({"legacy": {"url": legacy.url, "request_headers": VARS,
                                "response_headers": {"set": {"X-Served-For": "$remote_addr"}}},
                     "modern": {"url": modern.url, "request_headers": VARS,
                                "health": {"path": "/health", "interval_ms": 100}}},
                    routes=routes, admin={}, shadow_defaults={
                        "diff_log": str(tmp_path / "d.jsonl"), "timeout_ms": 2000})
    with p.client() as c:
        r = c.request("GET", "/x", [("X-Request-Id", "rid-1"), ("X-Real-IP", "6.6.6.6")],
                      host="Shop.Example:8080")
    assert r.status == 200 and r.header("X-Served-For") == "127.0.0.1"
    want = {"X-Real-IP": "127.0.0.1", "X-Orig": "http://Shop.Example:8080 (shop.example)",
            "X-Trace": "rid-1", "X-Price": "$5"}
    got = legacy.requests[0]
    assert {k: got.header_all(k) for k in want} == {k: [v] for k, v in want.items()}
    wait_for(lambda: [q for q in modern.requests if q.path == "/x"], what="the mirror")
    mirror = next(q for q in modern.requests if q.path == "/x")
    assert {k: mirror.header(k) for k in want} == want
    check = next(q for q in modern.requests if q.path == "/health")
    assert (check.header("X-Real-IP"), check.header("X-Orig"), check.header("X-Price")) == \
        (None, ":// ()", "$5")


def test_t_refuses_an_unknown_variable(tmp_path):
    conf = tmp_path / "v.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:18080"; } );\n'
                    'backends = { legacy = { url = "http://127.0.0.1:9001";\n'
                    '  request_headers = { set = { X-Real-IP = "$remote_ip"; }; }; }; };\n'
                    'default_backend = "legacy";\n')
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 1
    assert out.stderr.splitlines()[0] == (
        "%s:3: backends.legacy.request_headers.set.X-Real-IP: \"$remote_ip\": '$' starts a "
        "variable: $remote_addr, $scheme, $request_id, $http_host or $host (or ${name}); write "
        "$$ for a '$'" % conf)


def redirecting(name, prefix):
    """A backend that sends prefix/N to prefix/N/ (302), once as a path and
    once as a URL naming the Host it got (?abs), and answers prefix/N/ with a
    201 whose Location names prefix/N/items; anything else: a redirect to
    another site."""
    def handler(req, conn):
        m = re.fullmatch(re.escape(prefix) + r"/(\d+)(/?)", req.path)
        if not m:
            return Response(302, b"", headers=[("Location", "https://login.example/x?back=" +
                                                req.path), ("X-Backend", name)])
        if m.group(2):
            return Response(201, b"", headers=[("Location", req.path + "items?x=1"),
                                               ("X-Backend", name)])
        where = req.path + "/"
        if "abs" in (req.target.split("?", 1) + [""])[1]:
            where = "http://%s%s" % (req.header("Host"), where)
        return Response(302, b"", headers=[("Location", where), ("X-Backend", name)])
    return handler


def test_a_location_names_the_path_the_client_uses(backend_factory, start_proxy):
    """A backend serving /orders where the client asked for /api/v1/orders
    redirects to its own path: the client is sent to the public one (as
    nginx's proxy_redirect default); a backend without rules, another site's
    URL and location_rewrite = false are left alone."""
    modern = backend_factory("modern", redirecting("modern", "/orders"))
    legacy = backend_factory("legacy", redirecting("legacy", "/api/v1/orders"))
    plain = backend_factory("plain", redirecting("plain", "/orders"))
    routes = [{"name": "legacy", "match": {"path_prefix": "/legacy"}, "backend": "legacy"},
              {"name": "plain", "match": {"path_prefix": "/plain"}, "backend": "plain"}]
    p = start_proxy({"modern": modern_def(modern), "legacy": legacy,
                     "plain": {"url": plain.url, "location_rewrite": False,
                               "path_rewrite": [{"prefix": "/plain", "to": "/"}]}},
                    routes=routes, default_backend="modern")
    host = "test.local"  # the client's Host, which the backend got
    with p.client() as c:
        def where(target):
            r = c.request("GET", target)
            return r.status, r.header("Location")
        assert where("/api/v1/orders/7") == (302, "/api/v1/orders/7/")
        assert where("/api/v1/orders/7?abs") == (302, "http://%s/api/v1/orders/7/" % host)
        assert where("/api/v1/orders/7/") == (201, "/api/v1/orders/7/items?x=1")
        assert where("/api/v1/users") == (302, "https://login.example/x?back=/users")
        # legacy serves the public paths: nothing to map
        assert where("/legacy") == (302, "https://login.example/x?back=/legacy")
        # location_rewrite = false: the backend's own path reaches the client
        assert where("/plain/orders/3") == (302, "/orders/3/")
    assert [q.target for q in modern.requests[:3]] == ["/orders/7", "/orders/7?abs", "/orders/7/"]


def test_a_location_naming_host_header_names_the_clients_host(backend_factory, start_proxy):
    def handler(req, conn):
        return Response(301, b"", headers=[
            ("Location", "https://%s%s" % (req.header("Host"), req.path)),
            ("Content-Location", req.path)])
    modern = backend_factory("modern", handler)
    p = start_proxy({"modern": {"url": modern.url, "host_header": "modern.internal",
                                "path_rewrite": [{"prefix": "/shop", "to": "/v2"}]}})
    with p.client() as c:
        r = c.request("GET", "/shop/cart", host="Shop.Example:8443")
        assert r.status == 301
        assert r.header("Location") == "https://Shop.Example:8443/shop/cart"
        assert r.header("Content-Location") == "/v2/cart"  # not a Location: as it came
    assert modern.requests[0].header("Host") == "modern.internal"


def test_locations_are_compared_in_the_clients_terms(backend_factory, start_proxy, tmp_path):
    """Compared on Location, a legacy and a modern backend that redirect to
    the same public place are identical; without location_rewrite they
    differ (and response_headers still have the last word for the client)."""
    legacy = backend_factory("legacy", redirecting("legacy", "/api/v1/orders"))
    modern = backend_factory("modern", redirecting("modern", "/orders"))
    routes = [{"name": "orders", "match": {"path_prefix": "/api/v1/orders"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0, "sticky": "header:X-User"},
               "shadow": {"backend": "@other", "compare": {"headers": ["Location"]}}}]

    def run(modern_extra):
        p = start_proxy({"legacy": legacy, "modern": dict(modern_def(modern), **modern_extra)},
                        routes=routes, admin={},
                        shadow_defaults={"diff_log": str(tmp_path / "d.jsonl"),
                                         "timeout_ms": 2000})
        got = set()
        with p.client() as c:
            # as a path, and as a URL naming the Host each backend got
            # (the mirror's own, read from the head it was sent)
            for i in range(10):
                r = c.request("GET", "/api/v1/orders/%d%s" % (i, "?abs" if i % 2 else ""),
                              [("X-User", "u%d" % i)])
                assert r.status == 302
                want = "%s/api/v1/orders/%d/" % ("http://test.local" if i % 2 else "", i)
                loc = r.header("Location")
                got.add((r.header("X-Backend"), loc if loc == "/fixed" else loc == want))
        sc = wait_for(lambda: (lambda s: s if s["compared"] >= 10 else None)(
            p.admin("GET", "/api/routes/orders")[1]["shadow_counters"]), what="10 comparisons")
        p.stop()
        return got, (sc["identical"], sc["different"])
    got, counts = run({})
    assert got == {("legacy", True), ("modern", True)} and counts == (10, 0), (got, counts)
    got, counts = run({"location_rewrite": False})
    assert got == {("legacy", True), ("modern", False)} and counts == (0, 10), (got, counts)
    # the rules apply after the mapping: the client gets the value they set
    got, _ = run({"response_headers": {"set": {"Location": "/fixed"}}})
    assert got == {("legacy", True), ("modern", "/fixed")}, got
