"""The admin API: route changes without a restart (validated, applied to every
worker, audited, persisted), authentication, metrics, health, reload."""
import json
import os
import re
import signal
import socket

import harness
from harness import delayed

TOKEN = "s3cret-token-0123456789"


def admin_proxy(start_proxy, two_backends, tmp_path, token=False, workers=2, percent=25.0):
    legacy, modern = two_backends
    admin = {"state_file": str(tmp_path / "state.json")}
    if token:
        (tmp_path / "token").write_text(TOKEN + "\n")
        admin["token_file"] = str(tmp_path / "token")
    routes = [
        {"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy",
         "rollout": {"backend": "modern", "percent": percent, "sticky": "header:X-User-Id"}},
        {"name": "users", "match": {"path_prefix": "/api/users"}, "backend": "legacy"},
    ]
    return start_proxy({"legacy": legacy, "modern": modern}, routes=routes, workers=workers,
                       admin=admin)


def side_of(p, user):
    with p.client() as c:
        r = c.request("GET", "/api/orders/1", headers=[("X-User-Id", user)])
        assert r.status == 200
        return r.header("X-Backend")


def expected_side(user, percent):
    return "modern" if harness_bucket("orders", user) < percent * 100 else "legacy"


def harness_bucket(cohort, key):
    h = 2166136261
    for b in (cohort + ":" + key).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % 10000


def test_patch_percent_applies_to_every_worker_and_is_audited(start_proxy, two_backends, tmp_path):
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    users = ["user-%d" % i for i in range(60)]
    assert [side_of(p, u) for u in users] == [expected_side(u, 25) for u in users]
    st, body = p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 50}})
    assert st == 200, body
    assert body["rollout"]["percent"] == 50 and body["override"] == {"rollout": {"percent": 50}}
    # new connections land on either worker: all must use the new split
    assert [side_of(p, u) for u in users] == [expected_side(u, 50) for u in users]
    st, audit = p.admin("GET", "/api/audit")
    (entry,) = audit["changes"]
    assert entry["route"] == "orders" and entry["caller"] == "127.0.0.1"
    assert entry["before"]["rollout"]["percent"] == 25 and entry["after"]["rollout"]["percent"] == 50
    assert "change by 127.0.0.1: patch route orders" in p.stderr_text()


def test_a_change_answered_200_is_in_force_in_the_workers(start_proxy, two_backends, tmp_path):
    """The answer to a PATCH leaves once the workers run the change, so the
    next request is routed by it. strace holds the worker 100 ms before each
    epoll_wait, so whatever arrives meanwhile comes in one wake-up: the build
    before this test answered as soon as the change was handed over, and the
    worker, finding the request and the hand-over together, served the
    request first, the old way."""
    import subprocess
    p = admin_proxy(start_proxy, two_backends, tmp_path, workers=1)
    client = p.http()
    client.request("GET", "/api/users/1")
    assert client.getresponse().read()
    tid = harness.worker_thread(p.pid)
    tracer = subprocess.Popen(["strace", "-q", "-o", "/dev/null", "-p", str(tid),
                               "-e", "trace=epoll_wait", "-e",
                               "inject=epoll_wait:delay_enter=100000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    served = []
    try:
        harness.wait_traced(p.pid, tid, tracer)
        for want in ("modern", "legacy", "modern"):
            assert p.admin("PATCH", "/api/routes/users", {"backend": want})[0] == 200
            client.request("GET", "/api/users/1")
            r = client.getresponse()
            r.read()
            served.append((want, r.getheader("X-Backend")))
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
        client.close()
    assert all(want == got for want, got in served), served


def test_backend_flip_and_override_removal(start_proxy, two_backends, tmp_path):
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    with p.client() as c:
        assert c.request("GET", "/api/users/1").header("X-Backend") == "legacy"
    st, body = p.admin("PATCH", "/api/routes/users", {"backend": "modern"})
    assert st == 200 and body["backend"] == "modern"
    with p.client() as c:
        assert c.request("GET", "/api/users/1").header("X-Backend") == "modern"
    st, body = p.admin("DELETE", "/api/routes/users/override")
    assert st == 200 and body["backend"] == "legacy" and body["override"] is None
    with p.client() as c:
        assert c.request("GET", "/api/users/1").header("X-Backend") == "legacy"
    st, _ = p.admin("DELETE", "/api/routes/users/override")
    assert st == 404


def test_bad_patches_are_refused_with_clear_errors(start_proxy, two_backends, tmp_path):
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    cases = [
        ({"rollout": {"percent": 120}}, 400, "rollout.percent: 120: must be between 0 and 100"),
        ({"rollout": {"percent": 12.345}}, 400, "at most two decimals"),
        ({"rollout": {"percent": "50"}}, 400, "rollout.percent: must be a number"),
        ({"backend": "nowhere"}, 400, 'backend: unknown backend "nowhere"'),
        ({"colour": "blue"}, 400, "colour: unknown field"),
        ({}, 400, "must be a JSON object"),
        ("{not json", 400, "body is not valid JSON"),
    ]
    for body, status, msg in cases:
        st, got = p.admin("PATCH", "/api/routes/orders", body)
        assert st == status and msg in got["error"], (body, got)
    st, got = p.admin("PATCH", "/api/routes/users", {"rollout": {"percent": 5}})
    assert st == 400 and "the route has no rollout" in got["error"]
    st, got = p.admin("PATCH", "/api/routes/nope", {"backend": "modern"})
    assert st == 404
    st, got = p.admin("GET", "/api/routes/orders")
    assert got["rollout"]["percent"] == 25 and got["override"] is None
    assert p.admin("GET", "/api/audit")[1]["changes"] == []


def test_changes_survive_restart_and_reload(start_proxy, two_backends, tmp_path):
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 75}})[0] == 200
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["overrides"] == {"orders": {"rollout": {"percent": 75}}}
    # reload keeps it
    os.kill(p.pid, signal.SIGHUP)
    harness.wait_for(lambda: "reload: " in p.stderr_text(), what="reload")
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 75
    assert p.stop() == 0
    # a restart with the same file and state keeps it too
    p2 = admin_proxy(start_proxy, two_backends, tmp_path)
    st, got = p2.admin("GET", "/api/routes/orders")
    assert got["rollout"]["percent"] == 75 and got["override"] == {"rollout": {"percent": 75}}
    assert "1 route overrides restored" in p2.stderr_text()
    users = ["u%d" % i for i in range(40)]
    assert [side_of(p2, u) for u in users] == [expected_side(u, 75) for u in users]
    assert len(p2.admin("GET", "/api/audit")[1]["changes"]) == 1


def test_token_is_required_when_configured(start_proxy, two_backends, tmp_path):
    p = admin_proxy(start_proxy, two_backends, tmp_path, token=True)
    assert p.admin("GET", "/api/routes")[0] == 401
    assert p.admin("GET", "/api/routes", token="wrong-token-0123456789")[0] == 401
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 1}})[0] == 401
    st, got = p.admin("GET", "/api/routes", token=TOKEN)
    assert st == 200 and [r["name"] for r in got["routes"]] == ["orders", "users"]
    # every backend is listed, used by a route or not (the dashboard offers them)
    assert got["backends"] == ["legacy", "modern"]
    # a 401 says how to authenticate (it was "401 Unknown", without a challenge)
    st, reason, headers, _ = raw_admin(p, "GET", "/api/routes")
    assert (st, reason) == (401, "Unauthorized")
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    # the scheme is case-insensitive (RFC 9110 §11.1): "bearer" was refused
    assert raw_admin(p, "GET", "/api/routes", {"Authorization": "bearer " + TOKEN})[0] == 200
    assert raw_admin(p, "GET", "/api/routes", {"Authorization": "Basic " + TOKEN})[0] == 401


def test_only_the_whole_token_is_accepted(start_proxy, two_backends, tmp_path):
    """The token is compared whole: the token with anything after it, or a
    start of it, is refused like any wrong token."""
    p = admin_proxy(start_proxy, two_backends, tmp_path, token=True)
    for value in [TOKEN + "x", TOKEN + " x", TOKEN + TOKEN, TOKEN[:-1], ""]:
        got = raw_admin(p, "GET", "/api/routes", {"Authorization": "Bearer " + value})[0]
        assert got == 401, repr(value)
    assert raw_admin(p, "GET", "/api/routes", {"Authorization": "Bearer " + TOKEN})[0] == 200


def test_non_loopback_admin_without_token_is_a_config_error(tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:1"; } );\n'
                    'backends = { a = { url = "http://127.0.0.1:2"; }; };\n'
                    'default_backend = "a";\n'
                    'admin = { address = "0.0.0.0:9901"; };\n')
    import subprocess
    r = subprocess.run([harness.BINARY, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert "%s:4: admin.address: \"0.0.0.0:9901\" is not a loopback address: set admin.token_file" \
        % conf in r.stderr


def test_metrics_and_health(start_proxy, two_backends, tmp_path):
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    for i in range(20):
        side_of(p, "user-%d" % i)
    with p.client() as c:
        c.request("GET", "/elsewhere")
    st, text = p.admin("GET", "/metrics")
    assert st == 200
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    modern = sum(1 for i in range(20) if expected_side("user-%d" % i, 25) == "modern")
    assert int(lines['strangler_requests_total{route="orders",backend="modern",class="2xx"}']) == modern
    assert int(lines['strangler_requests_total{route="orders",backend="legacy",class="2xx"}']) == 20 - modern
    assert int(lines['strangler_requests_total{route="(default)",backend="legacy",class="2xx"}']) == 1
    assert float(lines['strangler_rollout_percent{route="orders"}']) == 25.0
    assert int(lines['strangler_request_duration_seconds_count{route="orders",backend="legacy"}']) == 20 - modern
    assert lines['strangler_reloads_total{result="ok"}'] == "0"
    assert "# TYPE strangler_request_duration_seconds histogram" in text
    assert p.admin("GET", "/healthz") == (200, "ok\n")
    assert p.admin("GET", "/readyz") == (200, "ready\n")
    st, got = p.admin("GET", "/api/routes/orders")
    assert got["counters"]["modern"]["requests"] == modern


def families_in_one_group_each(text):
    """The text format wants one group per metric family: its HELP and TYPE,
    then all its samples. Returns the families in order; fails otherwise."""
    order, typed = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert name not in typed, "%s typed twice" % name
            typed[name] = kind
            order.append(name)
        elif line and line[0] != "#":
            name = line.split("{")[0].split(" ")[0]
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            family = base if typed.get(base) == "histogram" else name
            assert order and order[-1] == family, "%s outside its group" % name
    return order


def test_metrics_families_and_duration_buckets(start_proxy, backend_factory, tmp_path):
    """Each family in one group (the three per-route families were
    interleaved route by route, which Python's Prometheus parser reads as 90
    untyped families); and a duration counts under every `le` at or above it
    (about 240 ms requests were missing from le="0.25": the log-scale buckets
    straddled the bound)."""
    legacy = backend_factory("legacy", delayed(0.235))
    modern = backend_factory("modern")
    routes = [{"name": "a", "match": {"path_prefix": "/a"}, "backend": "legacy",
               "shadow": {"backend": "modern"}},
              {"name": "b", "match": {"path_prefix": "/b"}, "backend": "modern",
               "shadow": {"backend": "legacy"}}]  # two shadowed routes: their families too
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=routes, admin={})
    with p.client() as c:
        for path in ["/a/1", "/a/2", "/a/3", "/b/1", "/c"]:
            assert c.request("GET", path).status == 200
    took = [e["total_ms"] for e in p.wait_access(5) if e["route"] == "a"]
    st, text = p.admin("GET", "/metrics")
    families = families_in_one_group_each(text)
    assert families[:5] == [
        "strangler_requests_total", "strangler_upstream_errors_total",
        "strangler_request_duration_seconds", "strangler_shadow_total",
        "strangler_shadow_skipped_total"]
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    key = 'strangler_request_duration_seconds_bucket{route="a",backend="legacy",le="%s"}'
    assert int(lines[key % "0.25"]) == sum(1 for t in took if t <= 250)
    assert int(lines[key % "0.1"]) == 0
    assert int(lines[key % "+Inf"]) == 3
    total = float(lines['strangler_request_duration_seconds_sum{route="a",backend="legacy"}'])
    assert abs(total * 1000 - sum(took)) < 1


def test_answers_that_wait_for_the_workers_close_the_connection(start_proxy, two_backends,
                                                               tmp_path):
    """A reload or a change is answered once every worker runs it; then the
    connection closes, as `Connection: close` says (it stayed open until the
    10 s exchange timer: a client reading to EOF waited 10 s)."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    for method, path, body in [(b"POST", b"/api/reload", b""),
                               (b"PATCH", b"/api/routes/orders", b'{"rollout": {"percent": 30}}')]:
        with socket.create_connection((harness.HOST, p.admin_port), timeout=5) as s:
            t0 = harness.time.monotonic()
            s.sendall(b"%s %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
                      % (method, path, len(body), body))
            answer = harness.Stream(s).read_to_eof()
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert harness.time.monotonic() - t0 < 2, path


def test_post_reload(start_proxy, two_backends, tmp_path):
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    text = open(p.conf_path).read()
    open(p.conf_path, "w").write(text.replace("percent = 25.0", "percent = 30.0"))
    st, got = p.admin("POST", "/api/reload")
    assert st == 200 and got["ok"] is True
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 30
    open(p.conf_path, "w").write(text.replace("percent = 25.0", "percent = 300.0"))
    st, got = p.admin("POST", "/api/reload")
    assert st == 400 and got["ok"] is False
    assert any("rollout.percent: 300: must be between 0 and 100" in e for e in got["errors"])
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 30


def test_a_change_applies_to_the_loaded_file_not_to_unreloaded_edits(start_proxy, two_backends,
                                                                     tmp_path):
    """A runtime change builds on the configuration as last loaded: an edit
    on disk, valid or half-done, applies only with a reload. (Before, the
    change re-read the file: a broken file refused it with 409, a valid edit
    went live without any reload.)"""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    text = open(p.conf_path).read()
    open(p.conf_path, "w").write(text.replace("percent = 25.0", "percent = 300.0"))
    st, got = p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 40}})
    assert st == 200, got
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 40
    open(p.conf_path, "w").write(text.replace("percent = 25.0", "percent = 10.0"))
    assert p.admin("PATCH", "/api/routes/users", {"backend": "modern"})[0] == 200
    # the override holds; the file's unreloaded 10 % does not show
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 40
    assert p.admin("DELETE", "/api/routes/orders/override")[0] == 200
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 25
    st, got = p.admin("POST", "/api/reload")
    assert st == 200 and got["ok"] is True
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 10


def test_a_body_over_64_kib_gets_413_at_once(start_proxy, two_backends, tmp_path):
    """Announced too big, answered from the head (the client waited for the
    10 s timeout and got no answer); sent too big, answered once read."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    with socket.create_connection((harness.HOST, p.admin_port), timeout=2) as c:
        c.sendall(b"PATCH /api/routes/orders HTTP/1.1\r\nHost: a\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n")
        head = harness.Stream(c).read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    st, got = p.admin("PATCH", "/api/routes/orders", b"{" + b" " * (70 << 10) + b"}")
    assert st == 413 and "64 KiB" in got["error"]
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 25


def test_a_chunked_body_is_bounded_at_exactly_64_kib(start_proxy, two_backends, tmp_path):
    """A chunked body (no length announced) of 65536 bytes is taken, one
    byte more gets 413."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)

    def patch_chunked(size):
        doc = b'{"rollout": {"percent": 30}}'
        body = doc[:-1] + b" " * (size - len(doc)) + b"}"
        with socket.create_connection((harness.HOST, p.admin_port), timeout=5) as c:
            c.sendall(b"PATCH /api/routes/orders HTTP/1.1\r\nHost: a\r\n"
                      b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                      b"Connection: close\r\n\r\n")
            for i in range(0, size, 8192):
                part = body[i:i + 8192]
                c.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            c.sendall(b"0\r\n\r\n")
            return harness.Stream(c).read_until(b"\r\n\r\n")
    assert patch_chunked(65537).startswith(b"HTTP/1.1 413 ")
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 25
    assert patch_chunked(65536).startswith(b"HTTP/1.1 200 ")
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 30


def test_route_names_are_percent_decoded(start_proxy, two_backends, tmp_path):
    """The dashboard writes a route name with encodeURIComponent: a name with
    a space was listed but could be neither read nor changed (404)."""
    legacy, modern = two_backends
    route = {"name": "user search", "match": {"path_prefix": "/search"}, "backend": "legacy"}
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=[route], admin={})
    st, got = p.admin("GET", "/api/routes/user%20search")
    assert st == 200 and got["name"] == "user search"
    st, got = p.admin("PATCH", "/api/routes/user%20search", {"backend": "modern"})
    assert st == 200 and got["backend"] == "modern"
    assert p.admin("DELETE", "/api/routes/user%20search/override")[0] == 200
    assert p.admin("GET", "/api/routes/user%zzsearch")[0] == 400
    assert p.admin("GET", "/api/routes/user%00search")[0] == 400
    assert p.admin("POST", "/api/routes/no%20such/guard/rearm")[0] == 404


def raw_admin(p, method, path, headers=None):
    """(status, reason, headers, body bytes) of one admin call."""
    import http.client
    c = http.client.HTTPConnection(harness.HOST, p.admin_port, timeout=harness.IO_TIMEOUT)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.reason, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_an_overlong_admin_target_gets_414(start_proxy, two_backends, tmp_path):
    """A path of 4096 bytes or more is refused as too long, not cut to fit
    and looked up; a query does not count towards it."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    st, reason, _, body = raw_admin(p, "GET", "/api/routes/" + "a" * 5000)
    assert (st, reason) == (414, "URI Too Long"), body
    assert raw_admin(p, "GET", "/api/routes/" + "a" * (4096 - 12))[0] == 414
    assert raw_admin(p, "GET", "/api/routes/" + "a" * (4095 - 12))[0] == 404
    assert raw_admin(p, "GET", "/api/routes/orders?" + "x" * 5000)[0] == 200


def test_a_long_route_name_has_counters_and_can_be_changed(start_proxy, two_backends, tmp_path):
    """A name of 64 characters may take 256 bytes: names past 71 bytes had no
    counters (a guard on them never tripped), no metrics, and could not be
    addressed (the path was cut)."""
    from urllib.parse import quote
    legacy, modern = two_backends
    name = "\U0001F333" * 64  # 64 four-byte characters
    route = {"name": name, "match": {"path_prefix": "/api"}, "backend": "legacy"}
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=[route], admin={})
    with p.client() as c:
        for _ in range(5):
            assert c.request("GET", "/api/x").status == 200
    st, got = p.admin("GET", "/api/routes/" + quote(name))
    assert st == 200 and got["name"] == name
    assert got["counters"]["legacy"]["requests"] == 5
    st, metrics = p.admin("GET", "/metrics")
    assert 'strangler_requests_total{route="%s",backend="legacy",class="2xx"} 5' % name in metrics
    st, got = p.admin("PATCH", "/api/routes/" + quote(name), {"backend": "modern"})
    assert st == 200 and got["backend"] == "modern"


def test_unknown_paths_and_methods(start_proxy, two_backends, tmp_path):
    """404 for what is not there; 405 with Allow for a known path and
    another method (they were 404, and the one 405 had no Allow); HEAD is
    GET without the body (it was 404)."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    assert p.admin("GET", "/nope")[0] == 404
    assert p.admin("GET", "/api/routes/orders/extra")[0] == 404
    for method, path, allow in [("PUT", "/api/routes/orders", "GET, HEAD, PATCH"),
                                ("POST", "/metrics", "GET, HEAD"),
                                ("GET", "/api/reload", "POST"),
                                ("GET", "/api/routes/orders/guard/rearm", "POST"),
                                ("DELETE", "/api/routes", "GET, HEAD")]:
        st, reason, headers, _ = raw_admin(p, method, path)
        assert (st, reason, headers.get("Allow")) == (405, "Method Not Allowed", allow), path
    for path in ["/healthz", "/metrics", "/api/routes", "/"]:
        st, _, headers, body = raw_admin(p, "HEAD", path)
        assert st == 200 and body == b"" and int(headers["Content-Length"]) > 0, path
    st, _, headers, body = raw_admin(p, "GET", "/healthz")
    assert body == b"ok\n" and headers["Content-Length"] == "3"


def test_reload_cannot_drop_the_token(start_proxy, two_backends, tmp_path):
    p = admin_proxy(start_proxy, two_backends, tmp_path, token=True)
    text = open(p.conf_path).read()
    start = text.index("admin = ")
    end = text.index(";\n", text.index("}", start)) + 2
    open(p.conf_path, "w").write(text[:start] + text[end:])  # no admin block at all
    os.kill(p.pid, signal.SIGHUP)
    harness.wait_for(lambda: "admin settings changed: apply after a restart" in p.stderr_text(),
                     what="the restart-only warning")
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 1}})[0] == 401
    assert p.admin("GET", "/api/routes", token=TOKEN)[0] == 200


def test_a_reload_rotates_the_token(start_proxy, two_backends, tmp_path):
    """A leaked token is replaced by writing the token file and reloading;
    a token file that lost its admin block does not remove the token."""
    p = admin_proxy(start_proxy, two_backends, tmp_path, token=True)
    new = "n3w-token-0123456789abcdef"
    (tmp_path / "token").write_text(new + "\n")
    st, got = p.admin("POST", "/api/reload", token=TOKEN)
    assert st == 200 and got["ok"] is True
    assert "reload: admin token replaced" in p.stderr_text()
    assert p.admin("GET", "/api/routes", token=TOKEN)[0] == 401
    assert p.admin("GET", "/api/routes", token=new)[0] == 200
    assert "admin settings changed" not in p.stderr_text()


def test_readyz_says_503_while_draining(start_proxy, backend_factory, tmp_path):
    slow = backend_factory("legacy", harness.delayed(1.0))
    modern = backend_factory("modern")
    p = admin_proxy(start_proxy, (slow, modern), tmp_path)
    import threading
    done = {}

    def slow_request():
        with p.client(timeout=5) as c:
            done["status"] = c.request("GET", "/api/users/1").status
    t = threading.Thread(target=slow_request)
    t.start()
    slow.wait_requests(1)
    p.proc.send_signal(signal.SIGTERM)
    harness.wait_for(lambda: "stopping" in p.stderr_text(), what="SIGTERM handled")
    assert p.admin("GET", "/readyz") == (503, "stopping\n")
    # a change made here would be lost with this process: refused, while
    # reading still works
    st, body = p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 1}})
    assert st == 503 and "stopping" in body["error"], body
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 25
    t.join(5)
    assert done["status"] == 200
    assert p.stop() == 0


def dead_backend_proxy(start_proxy, backend_factory):
    """An admin-enabled proxy whose route `gone` (/gone) goes to `dead`, a
    backend refusing connections; `legacy` answers everything else."""
    legacy = backend_factory("legacy")
    dead = "http://127.0.0.1:%d" % harness.refused_port()
    return start_proxy({"legacy": legacy, "dead": dead},
                       routes=[{"name": "gone", "match": {"path_prefix": "/gone"},
                                "backend": "dead"}],
                       admin={})


def test_upstream_errors_by_reason_in_metrics(start_proxy, backend_factory, tmp_path):
    p = dead_backend_proxy(start_proxy, backend_factory)
    for _ in range(2):
        with p.client() as c:
            assert c.request("GET", "/gone/x").status == 502
    st, text = p.admin("GET", "/metrics")
    assert 'strangler_upstream_errors_total{route="gone",backend="dead",reason="connect refused"} 2' \
        in text
    assert 'strangler_upstream_errors_total{route="gone",backend="dead",reason="upstream timeout"} 0' \
        in text


def test_backend_health_in_metrics(start_proxy, backend_factory, tmp_path):
    """A backend refusing connections is marked down after `unhealthy` (3)
    failures in a row: its strangler_backend_up gauge goes to 0 and its
    transitions counter to 1; the healthy backend stays at 1 and 0."""
    p = dead_backend_proxy(start_proxy, backend_factory)

    def gauges():
        text = p.admin("GET", "/metrics")[1]
        assert "# TYPE strangler_backend_up gauge" in text
        assert "# TYPE strangler_backend_health_transitions_total counter" in text
        return dict(line.rsplit(" ", 1) for line in text.splitlines()
                    if line.startswith("strangler_backend_"))
    before = gauges()
    assert before['strangler_backend_up{backend="dead"}'] == "1"
    assert before['strangler_backend_shadows_paused{backend="dead"}'] == "0"
    for _ in range(3):
        with p.client() as c:
            assert c.request("GET", "/gone/x").status == 502
    after = gauges()
    assert after['strangler_backend_up{backend="dead"}'] == "0"
    assert after['strangler_backend_health_transitions_total{backend="dead"}'] == "1"
    assert after['strangler_backend_up{backend="legacy"}'] == "1"
    assert after['strangler_backend_health_transitions_total{backend="legacy"}'] == "0"
