"""The admin API: route changes without a restart (validated, applied to every
worker, audited, persisted), authentication, metrics, health, reload."""
import json
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
import types

import pytest

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
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=routes, workers=workers,
                    admin=admin)
    # its first write of the state file comes a moment after it listens:
    # a test that plants or reads something there waits for it
    harness.wait_for((tmp_path / "state.json").exists, 5, what="the state file's first write")
    return p


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
    assert st == 200 and body["backend"] == "modern" and body["warnings"] == []
    with p.client() as c:
        assert c.request("GET", "/api/users/1").header("X-Backend") == "modern"
    # what the file's loader warns about, the change is told too: the route
    # on its rollout's backend leaves the rollout nothing to do
    st, body = p.admin("PATCH", "/api/routes/orders", {"backend": "modern"})
    assert st == 200 and body["warnings"] == [
        "rollout.backend: same backend as the route; the rollout changes nothing"], body
    assert "admin: route orders: warning: rollout.backend: same backend" in p.stderr_text()
    assert p.admin("DELETE", "/api/routes/orders/override")[0] == 200
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
    assert "1 route overrides, 0 drained servers restored" in p2.stderr_text()
    users = ["u%d" % i for i in range(40)]
    assert [side_of(p2, u) for u in users] == [expected_side(u, 75) for u in users]
    assert len(p2.admin("GET", "/api/audit")[1]["changes"]) == 1


def test_a_state_file_that_is_not_stranglers_stops_the_start(tmp_path):
    """Valid JSON of another shape (an array, someone else's object, overrides
    that are not an object) was taken as an empty state, and the first change
    overwrote the file; it now stops the start as invalid JSON does."""
    import subprocess
    state = tmp_path / "state.json"
    conf = tmp_path / "s.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:%d"; } );\n'
                    'backends = { a = { url = "http://127.0.0.1:2"; }; };\n'
                    'default_backend = "a";\n'
                    'admin = { address = "127.0.0.1:%d"; state_file = "%s"; };\n'
                    % (harness.free_port(), harness.free_port(), state))
    for text, why in [
            ('[1, 2, 3]', "not a strangler state: a JSON array, not an object"),
            ('{"name": "my-app", "dependencies": {}}',
             'not a strangler state: none of "overrides", "audit", "guards", "drained" in it'),
            ('{"drained": ["http://a", 7]}', "drained.[1]: must be a server's URL"),
            ('{"overrides": ["orders"], "audit": []}',
             "overrides: must be an object (route name: change)"),
            ('{"overrides": {}, "guards": {"orders": 5}}',
             "guards.orders: must be an object with strings reason and tripped_at")]:
        state.write_text(text)
        r = subprocess.run([harness.BINARY, "-c", str(conf)], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 1, r.stderr
        assert "admin.state_file: %s: %s; move it away" % (state, why) in r.stderr, r.stderr
        assert state.read_text() == text
        # -t and explain, which read the state file too, fail as the start does
        # (-t said "configuration OK" and the restart then failed)
        for argv in (["-t", "-c", str(conf)], ["explain", "-c", str(conf), "GET", "/"]):
            r = subprocess.run([harness.BINARY, *argv], capture_output=True, text=True,
                               timeout=10)
            assert r.returncode == 1, (argv, r.stdout, r.stderr)
            assert "%s:4: admin.state_file: %s: %s; move it away" % (conf, state, why) \
                in r.stderr, r.stderr
    # a FIFO held the start (and -t) until someone wrote into it
    state.unlink()
    os.mkfifo(state)
    for argv in (["-c", str(conf)], ["-t", "-c", str(conf)]):
        r = subprocess.run([harness.BINARY, *argv], capture_output=True, text=True, timeout=10)
        assert r.returncode == 1, (argv, r.stderr)
        assert "admin.state_file: %s: not a regular file" % state in r.stderr, r.stderr


def test_the_override_of_a_route_gone_is_listed_deleted_and_warned_about(start_proxy,
                                                                        two_backends, tmp_path):
    """An override whose route a reload renamed away could not be deleted
    (404) and silently came back with the name. It is now listed in
    stale_overrides, can be deleted (audited), and a route of that name
    coming back says in the reload's warnings that the override applies
    again."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    assert p.admin("PATCH", "/api/routes/users", {"backend": "modern"})[0] == 200
    conf = open(p.conf_path).read()

    def reload_with(text):
        with open(p.conf_path, "w") as f:
            f.write(text)
        st, body = p.admin("POST", "/api/reload")
        assert st == 200, body
        return body["warnings"]

    reload_with(conf.replace('name = "users"', 'name = "people"'))
    st, routes = p.admin("GET", "/api/routes")
    assert routes["stale_overrides"] == {"users": {"backend": "modern"}}
    st, body = p.admin("GET", "/api/routes/users")
    assert st == 404 and "stale override" in body["error"]
    # the name comes back: the override applies again, and the reload says so
    warnings = reload_with(conf)
    assert any('route "users" is back: its stored override applies again' in w
               for w in warnings), warnings
    assert p.admin("GET", "/api/routes/users")[1]["backend"] == "modern"
    assert p.admin("GET", "/api/routes")[1]["stale_overrides"] == {}
    # gone again: DELETE drops it, audited and saved
    reload_with(conf.replace('name = "users"', 'name = "people"'))
    st, body = p.admin("DELETE", "/api/routes/users/override")
    assert st == 200 and body == {"stale_override_of": "users", "override": None}, body
    entry = p.admin("GET", "/api/audit")[1]["changes"][-1]
    assert entry["action"] == "delete-override" and entry["route"] == "users"
    assert entry["before"] == {"stale_override_of": "users", "override": {"backend": "modern"}}
    assert entry["after"] is None
    assert json.loads((tmp_path / "state.json").read_text())["overrides"] == {}
    assert p.admin("GET", "/api/routes")[1]["stale_overrides"] == {}
    assert p.admin("DELETE", "/api/routes/users/override")[0] == 404
    assert not any("users" in w for w in reload_with(conf))
    assert p.admin("GET", "/api/routes/users")[1]["backend"] == "legacy"
    # two overrides gone at once: a warning each (they were one, joined by '?')
    assert p.admin("PATCH", "/api/routes/users", {"backend": "modern"})[0] == 200
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 5}})[0] == 200
    warnings = reload_with(conf.replace('name = "users"', 'name = "people"')
                           .replace('name = "orders"', 'name = "sales"'))
    assert len([w for w in warnings if "stale" in w or "skipped" in w]) == 2, warnings
    assert all("?" not in w for w in warnings), warnings


def admin_call(port, method, path, headers, body=None):
    """(status, JSON or bytes) of a request with exactly these headers."""
    import http.client
    c = http.client.HTTPConnection(harness.HOST, port, timeout=harness.IO_TIMEOUT)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            c.putheader(k, v)
        c.putheader("Content-Length", str(len(body or b"")))
        c.endheaders(body)
        r = c.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data.startswith(b"{") else data
    finally:
        c.close()


def test_requests_a_web_page_could_send_are_refused(start_proxy, two_backends, tmp_path):
    """Without a token the admin API took a cross-site form POST (no
    preflight) and any Host, so a page DNS rebinding pointed at it could read
    and PATCH. A Host that is a name other than the listener's, an Origin
    that is not the request's own, and a change that is not JSON are refused;
    the dashboard's own requests (same origin), IP addresses and localhost on
    any port (a port forward) pass."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    port = p.admin_port
    me = "127.0.0.1:%d" % port

    def call(method, path, headers, body=None):
        return admin_call(port, method, path, headers, body)

    patch = b'{"rollout": {"percent": 60}}'
    # a DNS-rebound page: its own name as Host, same-origin for the browser
    st, body = call("GET", "/api/routes", {"Host": "rebind.attacker.example:%d" % port})
    assert st == 403 and 'Host "rebind.attacker.example:%d" is not this admin listener' % port \
        in body["error"] and "admin.token_file" in body["error"], body
    assert call("PATCH", "/api/routes/orders", {
        "Host": "rebind.attacker.example:%d" % port, "Content-Type": "application/json",
        "Origin": "http://rebind.attacker.example:%d" % port}, patch)[0] == 403
    assert call("GET", "/", {"Host": "evil:%d" % port})[0] == 403
    # two Host headers: 400, as on the proxy's listener (RFC 9112 3.2)
    assert call("GET", "/api/routes", {"Host": me, "X": "1", "host": me})[0] == 400
    # a cross-site form post, and an Origin that is not the request's own
    st, body = call("POST", "/api/reload", {"Host": me, "Origin": "http://attacker.example",
                                            "Content-Type": "text/plain"}, b"x")
    assert st == 403 and 'Origin "http://attacker.example" is not this admin listener' \
        in body["error"], body
    for origin in ["null", "https://" + me, "http://localhost:1", "http://127.0.0.1:1"]:
        assert call("POST", "/api/reload", {"Host": me, "Origin": origin})[0] == 403, origin
    # a change that is not JSON (what a form sends; curl -d without -H too)
    for ctype in [None, "application/x-www-form-urlencoded", "text/plain"]:
        st, body = call("PATCH", "/api/routes/orders",
                        {"Host": me, **({"Content-Type": ctype} if ctype else {})}, patch)
        assert st == 415 and body["error"] == "Content-Type must be application/json", ctype
    assert call("POST", "/api/reload", {"Host": me, "Content-Type": "text/plain"})[0] == 415
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 25
    assert p.admin("GET", "/api/audit")[1]["changes"] == []
    # what the dashboard, curl, scripts and port forwards send
    for host in [me, "localhost:%d" % port, "LOCALHOST:%d" % port, "localhost:8080",
                 "127.0.0.1:1", "[::1]:9901"]:
        assert call("GET", "/api/routes", {"Host": host})[0] == 200, host
        st, body = call("PATCH", "/api/routes/orders", {
            "Host": host, "Origin": "http://" + host,
            "Content-Type": "application/json; charset=utf-8"}, patch)
        assert st == 200 and body["rollout"]["percent"] == 60, body
    assert call("DELETE", "/api/routes/orders/override", {"Host": me, "Origin": "http://" + me})[0] \
        == 200
    assert call("POST", "/api/reload", {"Host": me})[0] == 200
    assert call("GET", "/healthz", {})[0] == 200  # no Host: not a browser


def test_with_a_token_any_host_may_call(start_proxy, two_backends, tmp_path):
    """A page cannot send the token, so with one the admin API is reached by
    any name (a Prometheus target by host name, a load balancer's), which the
    Host check refused even with the right token."""
    p = admin_proxy(start_proxy, two_backends, tmp_path, token=True)
    auth = {"Authorization": "Bearer " + TOKEN}
    for host in ["prometheus-target.internal:%d" % p.admin_port, "vm:9901"]:
        assert admin_call(p.admin_port, "GET", "/metrics", dict(auth, Host=host))[0] == 200
        assert admin_call(p.admin_port, "GET", "/metrics", {"Host": host})[0] == 401
    st, body = admin_call(p.admin_port, "PATCH", "/api/routes/orders",
                          dict(auth, Host="ops.example:443", **{"Content-Type": "application/json"}),
                          b'{"rollout": {"percent": 60}}')
    assert st == 200 and body["rollout"]["percent"] == 60, body


def test_the_state_files_rename_reaches_the_disk(start_proxy, two_backends, tmp_path):
    """The state file is written to a temporary file, fsynced, renamed, and
    then its directory is fsynced: without that, a crash could bring the old
    state back after the change was answered 200."""
    import shutil
    import subprocess
    assert shutil.which("strace"), "strace is missing (tests/lib/common.sh installs it)"
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    out = tmp_path / "strace.txt"
    tracer = subprocess.Popen(["strace", "-q", "-e", "trace=openat,fsync,rename", "-p",
                               str(p.pid), "-o", str(out)], stderr=subprocess.PIPE)
    harness.wait_for(lambda: out.exists() and out.stat().st_size >= 0 and
                     p.admin("GET", "/healthz")[0] == 200, what="strace attached")
    time.sleep(0.3)
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 30}})[0] == 200
    time.sleep(0.2)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=5)
    calls = out.read_text().splitlines()
    renames = [i for i, c in enumerate(calls) if c.startswith("rename(") and "state.json" in c]
    assert renames, calls
    after = calls[renames[0] + 1:renames[0] + 3]
    assert re.match(r'openat\(AT_FDCWD, "%s", .*O_DIRECTORY.*\) = (\d+)' % re.escape(str(tmp_path)),
                    after[0]), calls
    fd = after[0].rsplit("= ", 1)[1]
    assert after[1].startswith("fsync(%s)" % fd) and after[1].endswith("= 0"), calls


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
    assert families[:8] == [
        "strangler_requests_total", "strangler_upstream_errors_total",
        "strangler_fallbacks_total", "strangler_queued_total", "strangler_queue_waiting",
        "strangler_request_duration_seconds",
        "strangler_shadow_total", "strangler_shadow_skipped_total"]
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
            s.sendall(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (method, path, p.admin_port, len(body), body))
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
        c.sendall(b"PATCH /api/routes/orders HTTP/1.1\r\nHost: localhost:%d\r\n" % p.admin_port +
                  b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n")
        head = harness.Stream(c).read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    # one answer: the message ended there, and it was answered a second time
    got = exchange_raw(p.admin_port, b"PATCH /api/routes/orders HTTP/1.1\r\nHost: localhost\r\n"
                       b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    assert got.count(b"HTTP/1.1 ") == 1 and got.startswith(b"HTTP/1.1 413 "), got
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
            c.sendall(b"PATCH /api/routes/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
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
    # a name that is not UTF-8, and a long one cut inside a character in the
    # message, got 500 "out of memory" (jansson refused the error's text)
    for method, path, body, status in [
            ("PATCH", "/api/routes/%FF", {"backend": "modern"}, 404),
            ("DELETE", "/api/routes/%C3/override", None, 404),
            ("PATCH", "/api/routes/user%20search", {"\u00e9" * 600: 1}, 400),
            ("PATCH", "/api/routes/user%20search", {"backend": "\u00e9" * 600}, 400)]:
        st, got = p.admin(method, path, body)
        assert st == status and "error" in got, (path, st, got)
    assert p.admin("DELETE", "/api/routes/%C3/override")[1]["error"] == 'no route named "\u00c3"'


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
    # a reload refused after the file loaded (a new listen address another
    # process holds) replaces nothing, and says nothing of it (it said the
    # token was replaced, to the operator revoking a leaked one)
    holder = socket.socket()
    holder.bind((harness.HOST, 0))
    holder.listen(1)
    text = open(p.conf_path).read()
    with open(p.conf_path, "w") as f:
        f.write(text.replace("listen = ( {", 'listen = ( { address = "%s:%d"; }, {'
                             % (harness.HOST, holder.getsockname()[1]), 1))
    try:
        assert p.admin("POST", "/api/reload", token=TOKEN)[0] == 400
    finally:
        holder.close()
    assert "admin token replaced" not in p.stderr_text()
    assert p.admin("GET", "/api/routes", token=TOKEN)[0] == 200
    with open(p.conf_path, "w") as f:
        f.write(text)
    st, got = p.admin("POST", "/api/reload", token=TOKEN)
    assert st == 200 and got["ok"] is True
    assert p.stderr_text().count("reload: admin token replaced") == 1
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


def test_an_override_that_masks_the_file_is_said_at_every_reload_and_by_t_and_explain(
        start_proxy, two_backends, tmp_path):
    """Runbook steps 4 and 5: after a PATCH, file edits to the same value were
    silently ignored (the override wins), and a rollback to a rollout file
    brought an old 100 % override back with no word; `-t` and `explain`
    spoke of the file alone, so support told users the wrong side. Every
    reload now says which values a runtime change holds over the file's, and
    `-t` and `explain` apply the overrides saved in admin.state_file."""
    p = admin_proxy(start_proxy, two_backends, tmp_path, percent=25.0)
    conf = open(p.conf_path).read()
    masked = ('route "orders": rollout.percent %s from a runtime change is in force, not the '
              "file's %s (DELETE /api/routes/orders/override to follow the file)")

    def reload_with(text):
        with open(p.conf_path, "w") as f:
            f.write(text)
        st, body = p.admin("POST", "/api/reload")
        assert st == 200, body
        return [w.split(": warning: ", 1)[1] for w in body["warnings"]]

    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 5}})[0] == 200
    # the operator edits the file to 25 % and reloads: 5 % holds, and it says so
    assert reload_with(conf) == [masked % ("5", "25")]
    assert masked % ("5", "25") in p.stderr_text()
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 5
    # -t and explain see what runs
    out = harness.run_strangler("-t", "-c", p.conf_path)
    assert out.returncode == 0
    assert "%s: warning: %s" % (p.conf_path, masked % ("5", "25")) in out.stderr, out.stderr
    assert "1 warnings" in out.stdout
    user = next(u for u in ("user-%d" % i for i in range(200))
                if 500 <= harness_bucket("orders", u) < 2500)  # 25 % would say modern
    out = harness.run_strangler("explain", "-c", p.conf_path, "-H", "X-User-Id: " + user,
                                "GET", "/api/orders/1")
    assert "rollout:  5.00% to modern" in out.stdout, out.stdout
    assert "backend:  legacy" in out.stdout and side_of(p, user) == "legacy"
    # a value the override sets as the file does is no news
    assert reload_with(conf.replace("percent = 25.0", "percent = 5.0")) == []
    # step 5's flip leaves the override aside; the rollback to a rollout file
    # brings it back, and the reload says so
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 100}})[0] == 200
    flipped = re.sub(r"rollout = \{[^}]*\}; ", "", conf).replace(
        'path_prefix = "/api/orders"; }; backend = "legacy"',
        'path_prefix = "/api/orders"; }; backend = "modern"')
    assert "rollout" not in flipped.split("orders")[1].split("users")[0]
    warnings = reload_with(flipped)
    assert any('override of route "orders" skipped' in w for w in warnings), warnings
    assert reload_with(conf.replace("percent = 25.0", "percent = 1.0")) == [masked % ("100", "1")]
    assert side_of(p, user) == "modern"
    # once deleted, the file rules again, with nothing to say
    assert p.admin("DELETE", "/api/routes/orders/override")[0] == 200
    assert reload_with(conf) == []
    out = harness.run_strangler("-t", "-c", p.conf_path)
    assert "0 warnings" in out.stdout, out.stdout + out.stderr


def test_a_failed_state_write_costs_no_descriptor_per_retry(start_proxy, two_backends, tmp_path):
    """A state file write that fails after open() (a full disk's ENOSPC; here
    the file size limit's EFBIG, which fails the write the same way) left its
    descriptor open; since failed writes are retried every second, that was
    one descriptor a second until the process could accept nothing. Past the
    size limit the process lives on: SIGXFSZ, whose default action kills it,
    is ignored, and the access log's lines past the limit are dropped."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    soft, hard = resource.prlimit(p.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (16, hard))
    try:
        st, body = p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 50}})
        assert st == 500 and "File too large" in body["error"], body
        before = len(harness.open_fds(p.pid))
        time.sleep(3.5)  # three retries, each failing the same way
        assert len(harness.open_fds(p.pid)) <= before
        assert side_of(p, "user-1") in ("legacy", "modern")
        # its log line is dropped (the report went to stderr, a file past the limit
        # too: the metric tells)
        dropped = 'strangler_log_lines_dropped_total{log="access"} 1\n'
        harness.wait_for(lambda: dropped in p.admin("GET", "/metrics")[1],
                         what="the access log line dropped")
    finally:
        resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert p.proc.poll() is None, p.stderr_text()
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 40}})[0] == 200
    assert json.loads((tmp_path / "state.json").read_text())["overrides"]["orders"] == \
        {"rollout": {"percent": 40}}
    assert list(tmp_path.glob("state.json.tmp.*")) == []


def test_a_link_at_the_temporary_name_is_replaced_not_followed(start_proxy, two_backends,
                                                                tmp_path):
    """The state goes through STATE.tmp.PID: a link planted at that name (in
    a directory others can write) made the write truncate and fill the file
    it pointed to, and the rename then made the state file that link."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    tmp = tmp_path / ("state.json.tmp.%d" % p.pid)
    tmp.symlink_to(victim)
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 40}})[0] == 200
    assert victim.read_text() == "keep me\n"
    state = tmp_path / "state.json"
    assert not state.is_symlink()
    assert json.loads(state.read_text())["overrides"]["orders"] == {"rollout": {"percent": 40}}
    assert not tmp.exists() and not tmp.is_symlink()


def test_the_process_started_last_owns_the_state_file(start_proxy, two_backends, tmp_path):
    """An upgrade starts the new process, then stops the old one. In between
    the old one took changes (200) and wrote them to the state file, which
    the new one had read at its start: the change was not in force there,
    and the new one's next write dropped it. The new process now writes the
    file as it starts, and the old one, finding another's file, refuses
    changes (409, saying why) instead of acknowledging what would be lost."""
    legacy, modern = two_backends
    state = tmp_path / "state.json"
    routes = [{"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 50.0}}]
    backends = {"legacy": legacy, "modern": modern}
    old = start_proxy(backends, routes=routes, admin={"state_file": str(state)})
    assert old.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 40}})[0] == 200
    new = start_proxy(backends, routes=routes, admin={"state_file": str(state)})
    assert new.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 40
    st, body = old.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 0}})
    assert st == 409 and "another process wrote it since" in body["error"], body
    assert old.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 40
    assert new.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 0}})[0] == 200
    assert old.stop() == 0
    assert json.loads(state.read_text())["overrides"]["orders"] == {"rollout": {"percent": 0}}
    assert new.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 5}})[0] == 200
    assert json.loads(state.read_text())["overrides"]["orders"] == {"rollout": {"percent": 5}}


class HeldStart:
    """A second process on the same state file (an upgrade's new one) that
    stops in its start after reading the file: its access log is a FIFO,
    which it opens only once release() gives it a reader."""

    def __init__(self, tmp_path, backends, routes, state):
        self.fifo = str(tmp_path / "access.fifo")
        os.mkfifo(self.fifo)
        self.api = types.SimpleNamespace(admin_port=harness.free_port())
        conf = tmp_path / "new.conf"
        conf.write_text(harness.make_config(
            harness.free_port(), backends, routes=routes, access_log=self.fifo,
            admin={"address": "%s:%d" % (harness.HOST, self.api.admin_port),
                   "state_file": str(state)}))
        self.log = tmp_path / "new.stderr"
        self.err = open(self.log, "wb")
        self.proc = subprocess.Popen([harness.BINARY, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=self.err, stderr=self.err)
        self.reader = None

    def text(self):
        return self.log.read_text()

    def admin(self, *args):
        return harness.Proxy.admin(self.api, *args)

    def release(self):
        self.reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        harness.wait_for(lambda: "admin API on" in self.text(), 5, what="the new process")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.err.close()
        if self.reader is not None:
            os.close(self.reader)


def test_a_change_made_while_the_new_process_starts_is_kept(start_proxy, two_backends,
                                                            tmp_path):
    """The new process of an upgrade read the state file, then took a while
    to start (here: its access log a FIFO that nobody reads yet); the old one
    confirmed a change (200) meanwhile. The new process ran without it, its
    first write failed (another process wrote the file since it read it)
    and every change of its own got 409 until a restart. It reads the file
    again when it finds it changed, runs the change and owns the file."""
    legacy, modern = two_backends
    state = tmp_path / "state.json"
    routes = [{"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 25.0}}]
    backends = {"legacy": legacy, "modern": modern}
    old = start_proxy(backends, routes=routes, admin={"state_file": str(state)})
    # written once the old process is up (it listens a moment before)
    harness.wait_for(state.exists, 5, what="the old process's state file")
    new = HeldStart(tmp_path, backends, routes, state)
    try:
        harness.wait_for(lambda: "route overrides" in new.text(), 5,
                         what="the new process reading the state file")
        assert old.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 50}})[0] == 200
        new.release()
        st, route = new.admin("GET", "/api/routes/orders")
        assert route["rollout"]["percent"] == 50, new.text()
        assert "read again" in new.text()
        assert old.stop() == 0
        st, body = new.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 60}})
        assert st == 200, body
        assert json.loads(state.read_text())["overrides"]["orders"] == {"rollout": {"percent": 60}}
        assert "cannot write" not in new.text(), new.text()
    finally:
        new.stop()


def test_a_state_file_spoilt_while_the_new_process_starts_leaves_it_as_it_read_it(
        start_proxy, two_backends, tmp_path):
    """The same overlap, with the file left unreadable meanwhile: the new
    process keeps what it read (a drained server stays drained: the first
    version undrained every server before finding it could not read the
    file) and says why, instead of "Invalid argument"."""
    legacy, modern = two_backends
    state = tmp_path / "state.json"
    routes = [{"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy"}]
    backends = {"legacy": legacy, "modern": modern}
    old = start_proxy(backends, routes=routes, admin={"state_file": str(state)})
    harness.wait_for(state.exists, 5, what="the old process's state file")
    server = "127.0.0.1:%d" % legacy.port
    assert old.admin("PATCH", "/api/backends/legacy", {"server": server, "drain": True})[0] == 200
    new = HeldStart(tmp_path, backends, routes, state)
    try:
        harness.wait_for(lambda: "1 drained servers restored" in new.text(), 5,
                         what="the new process reading the state file")
        state.write_text("{ not json")
        new.release()
        st, be = new.admin("GET", "/api/backends/legacy")
        assert be["servers"][0]["drained"] is True, be
        assert ("written by another process since it was read, and cannot be read again"
                in new.text())
        assert "Invalid argument" not in new.text(), new.text()
        assert state.read_text() == "{ not json"  # not written over
    finally:
        new.stop()


def test_a_change_reads_nothing_from_disk(start_proxy, two_backends, tmp_path):
    """A PATCH (or a guard's pull-back) builds on the configuration as last
    loaded: an include file broken on disk since, or a token file changed
    without a reload, neither refuses the change (409) nor slips into it."""
    p = admin_proxy(start_proxy, two_backends, tmp_path, token=True)
    with open(p.conf_path) as f:
        text = f.read()
    # the routes move to an include file, and a reload loads it
    start = text.index("routes = ")
    end = text.index("\n  );", start) + len("\n  );")
    (tmp_path / "routes.inc").write_text(text[start:end] + "\n")
    with open(p.conf_path, "w") as f:
        f.write(text[:start] + '@include "%s"' % (tmp_path / "routes.inc") + text[end:])
    harness.reload_and_wait(p, 1)
    assert "keeping the running configuration" not in p.stderr_text()
    # then both files change on disk, with no reload
    (tmp_path / "routes.inc").write_text("routes = ( { name = \"orders\"; oops\n")
    (tmp_path / "token").write_text("another-token-9876543210\n")
    st, body = p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 0}}, token=TOKEN)
    assert st == 200, body
    assert body["rollout"]["percent"] == 0
    # the route is shown where it is written now: the included file
    assert (body["file"], body["line"]) == (str(tmp_path / "routes.inc"), 2), body
    assert [side_of(p, "user-%d" % i) for i in range(20)] == ["legacy"] * 20
    assert p.admin("GET", "/api/routes", token=TOKEN)[0] == 200
    assert "admin token replaced" not in p.stderr_text()


def test_the_dashboard_names_what_moved_is_judged_against(start_proxy, two_backends, tmp_path):
    """The API does not say which backend is the new one, so the page judges
    "moved" against default_backend; after the runbook's last step (the
    default is the new service) it showed "Routes fully moved: 0 of 2" with
    nothing saying against what. The line now names the backend, filled from
    the API's default_backend."""
    legacy, modern = two_backends
    routes = [{"name": n, "match": {"path_prefix": "/" + n}, "backend": "modern"}
              for n in ("orders", "users")]
    p = start_proxy({"legacy": legacy, "modern": modern}, default_backend="modern",
                    routes=routes, admin={"state_file": str(tmp_path / "state.json")})
    st, page = p.admin("GET", "/")
    assert st == 200
    assert re.search(r'Routes fully moved off <span id="ref" data-testid="moved-ref">\?</span> '
                     r'<small>\(default_backend\)</small>: <span id="moved"', page), page[:2000]
    assert 'const def = data.default_backend;' in page
    assert 'document.getElementById("ref").textContent = def;' in page
    assert p.admin("GET", "/api/routes")[1]["default_backend"] == "modern"


def test_backends_list_their_servers_and_health(start_proxy, backend_factory, tmp_path):
    """GET /api/backends: each backend, its servers and whether each is up."""
    live = backend_factory("legacy-1")
    dead = harness.refused_port()
    modern = backend_factory("modern")
    p = start_proxy(
        {"legacy": {"servers": [live.url, "http://127.0.0.1:%d" % dead],
                    "health": {"unhealthy": 1, "interval_ms": 60000}},
         "modern": modern},
        admin={"state_file": str(tmp_path / "state.json")})
    st, got = p.admin("GET", "/api/backends")
    assert st == 200
    legacy = got["backends"][0]
    assert [b["name"] for b in got["backends"]] == ["legacy", "modern"]
    assert [s["url"] for s in legacy["servers"]] == [live.url, "http://127.0.0.1:%d" % dead]
    assert [s["address"] for s in legacy["servers"]] == [
        "127.0.0.1:%d" % live.port, "127.0.0.1:%d" % dead]
    assert all(s["up"] for s in legacy["servers"]) and legacy["up"]
    with p.client() as c:  # round-robin: one of these meets the refusing server
        for _ in range(2):
            assert c.request("GET", "/x").status == 200
    st, got = p.admin("GET", "/api/backends")
    legacy = got["backends"][0]
    assert [s["up"] for s in legacy["servers"]] == [True, False]
    assert legacy["up"] is True and legacy["health_transitions"] == 1
    assert got["backends"][1]["servers"][0]["up"] is True
    assert p.admin("POST", "/api/backends")[0] == 405


def exchange_raw(port, data):
    with socket.create_connection((harness.HOST, port), timeout=5) as s:
        try:
            s.sendall(data)
        except (ConnectionResetError, BrokenPipeError) as e:
            return b"<%s while sending>" % type(e).__name__.encode()
        out = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out += d
        except ConnectionResetError:
            return out + b"<reset>"
        return out


@pytest.mark.parametrize("size", [8 << 20])
def test_a_too_big_body_sent_with_its_head_gets_its_413(start_proxy, backend_factory, size):
    """A client that writes its whole body before it reads (Python's
    http.client) gets the 413, not a reset: the admin listener closes
    lingering, dropping the unread body, as the proxy's listener does."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b}, routes=[{"name": "r", "match": {"path_prefix": "/"},
                                            "backend": "legacy"}], admin={})
    body = b"{" + b" " * size + b"}"
    req = (b"PATCH /api/routes/r HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
           b"\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    got = [exchange_raw(p.admin_port, req)[:40] for _ in range(5)]
    assert all(g.startswith(b"HTTP/1.1 413 ") for g in got), got


def test_an_http_0_9_request_gets_505_not_a_head_it_would_read_as_body(start_proxy,
                                                                       backend_factory):
    """"GET /healthz" without a version is HTTP/0.9, whose answer has no
    head: the admin API refuses it as the proxy's listener does (it answered
    200, a head such a client would take for the body)."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b}, routes=[{"name": "r", "match": {"path_prefix": "/"},
                                            "backend": "legacy"}], admin={})
    got = exchange_raw(p.admin_port, b"GET /healthz\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), got
    assert p.admin("GET", "/healthz")[0] == 200


def test_the_admin_listener_checks_requests_as_the_proxy_does(start_proxy, backend_factory):
    """Two Host headers, a Transfer-Encoding on HTTP/1.0 (applied: the PATCH
    went through), a coding other than chunked (its body taken as plain):
    answered 200 by the admin listener, 400 and 501 by the proxy's. A
    missing Host stays accepted there (security.md). Answers carry Date
    (RFC 9110 6.6.1), as the proxy's own do."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b}, routes=[{"name": "r", "match": {"path_prefix": "/"},
                                            "backend": "legacy",
                                            "rollout": {"backend": "legacy", "percent": 5.0}}],
                    admin={})
    patch = b'{"rollout": {"percent": 7}}'
    cases = [
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
        (b"PATCH /api/routes/r HTTP/1.0\r\nContent-Type: application/json\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(patch), patch),
         b"400"),
        (b"PATCH /api/routes/r HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
         b"Transfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
         % (len(patch), patch), b"501"),
        (b"GET /healthz HTTP/1.1\r\n\r\n", b"200"),
    ]
    for req, status in cases:
        got = exchange_raw(p.admin_port, req)
        assert got.startswith(b"HTTP/1.1 " + status + b" "), (req, got)
        assert re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", got), got
    assert p.admin("GET", "/api/routes/r")[1]["rollout"]["percent"] == 5


def test_admin_connections_past_128_wait_in_the_backlog(start_proxy, backend_factory):
    """128 admin connections at once: the next one waits, unanswered, in the
    kernel's backlog until one ends, then is served; the proxy's own clients
    are not affected, and the pause is logged."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b}, routes=[{"name": "r", "match": {"path_prefix": "/"},
                                            "backend": "legacy"}], admin={})
    idle = [socket.create_connection((harness.HOST, p.admin_port), timeout=5)
            for _ in range(128)]
    try:
        late = socket.create_connection((harness.HOST, p.admin_port), timeout=1)
        late.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with pytest.raises(socket.timeout):
            late.recv(100)
        with p.client() as c:
            assert c.request("GET", "/x").status == 200
        idle.pop().close()
        late.settimeout(5)
        assert late.recv(100).startswith(b"HTTP/1.1 200 "), "served once one ended"
        late.close()
        assert "admin: 128 connections open: accepting paused" in p.stderr_text()
    finally:
        for s in idle:
            s.close()
    assert p.admin("GET", "/healthz")[0] == 200


def test_a_route_keeps_apart_the_counters_of_every_backend_it_used(start_proxy, backend_factory):
    """A route flipped through 11 backends counts each under its own name, in
    the metrics and the API, with 2 workers: past the 8th its counts went to
    the 8th backend's series."""
    names = ["b%d" % i for i in range(11)]
    backends = {n: backend_factory(n) for n in names}
    p = start_proxy(backends, routes=[{"name": "r", "match": {"path_prefix": "/"},
                                       "backend": "b0"}], admin={}, workers=2)
    for i, n in enumerate(names):
        assert p.admin("PATCH", "/api/routes/r", {"backend": n})[0] == 200
        for _ in range(i + 1):  # a new connection each: both workers serve
            with p.client() as c:
                assert c.request("GET", "/x").status == 200
    _, metrics = p.admin("GET", "/metrics")
    _, got = p.admin("GET", "/api/routes/r")
    for i, n in enumerate(names):
        assert len(backends[n].requests) == i + 1, n
        assert 'strangler_requests_total{route="r",backend="%s",class="2xx"} %d' % (n, i + 1) \
            in metrics, n
        assert got["counters"][n]["requests"] == i + 1, n


def test_the_dashboard_page_may_not_be_framed(start_proxy, two_backends, tmp_path):
    """Another site's page could lay the dashboard in a frame under its own
    buttons (clickjacking): its CSP had no frame-ancestors, and there was no
    X-Frame-Options."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    st, _, headers, body = raw_admin(p, "GET", "/")
    assert st == 200 and b"<script>" in body
    csp = [d.strip() for d in headers["Content-Security-Policy"].split(";")]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_metrics_say_their_charset(start_proxy, two_backends, tmp_path):
    """Route names are UTF-8 text: the exposition's content type says so, as
    Prometheus' own does (it said version=0.0.4 alone)."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    st, _, headers, _ = raw_admin(p, "GET", "/metrics")
    assert st == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_a_configuration_under_a_latin1_path_is_served_by_the_api(two_backends, tmp_path):
    """The configuration file's path in Latin-1 (a directory named so), which
    jansson takes only as UTF-8: GET /api/routes listed no route, GET and
    PATCH /api/routes/NAME answered 500 (the PATCH was applied all the
    same, and missing from the audit trail), and POST /api/reload dropped
    every warning line (each begins with the path). The path's bytes that
    are not UTF-8 are given as U+FFFD."""
    legacy, modern = two_backends
    d = os.path.join(os.fsencode(str(tmp_path)), b"str\xe4ngler")
    os.mkdir(d)
    conf = os.path.join(d, b"strangler.conf")
    port, aport = harness.free_port(), harness.free_port()
    routes = [{"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 25.0}},
              {"name": "s", "match": {"path_prefix": "/s"}, "backend": "legacy",
               "shadow": {"backend": "modern"}}]  # a warning: no diff_log
    with open(conf, "w") as f:
        f.write(harness.make_config(port, {"legacy": legacy, "modern": modern}, routes=routes,
                                    admin={"address": "127.0.0.1:%d" % aport,
                                           "state_file": str(tmp_path / "state.json")}))
    err = open(str(tmp_path / "stderr"), "wb")
    proc = subprocess.Popen([harness.BINARY, "-c", conf], stdout=err, stderr=err,
                            stdin=subprocess.DEVNULL)
    try:
        harness.wait_for(lambda: harness.accepts(aport), timeout=5, what="the admin API")
        where = str(d, "latin-1").replace("\xe4", "\ufffd") + "/strangler.conf"
        st, body = admin_call(aport, "GET", "/api/routes", {})
        assert st == 200 and [r["name"] for r in body["routes"]] == ["orders", "s"], body
        assert body["routes"][0]["file"] == where
        st, one = admin_call(aport, "GET", "/api/routes/orders", {})
        assert (st, one["file"]) == (200, where)
        st, patched = admin_call(aport, "PATCH", "/api/routes/orders",
                                 {"Content-Type": "application/json"},
                                 json.dumps({"rollout": {"percent": 50}}).encode())
        assert (st, patched["rollout"]["percent"]) == (200, 50), patched
        st, audit = admin_call(aport, "GET", "/api/audit", {})
        assert len(audit["changes"]) == 1, audit
        st, reloaded = admin_call(aport, "POST", "/api/reload", {})
        # the shadow without a diff_log, the override in force
        assert st == 200 and len(reloaded["warnings"]) == 2, reloaded
        assert all(w.startswith(where + ":") for w in reloaded["warnings"]), reloaded
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        err.close()


def test_admin_inputs_that_could_be_read_two_ways_are_refused(start_proxy, two_backends,
                                                              tmp_path):
    """Two Authorization headers (the first one won: "right, wrong" passed,
    "wrong, right" did not), a PATCH with a key twice (the last one won,
    silently), limit=+5 or " 5" (strtol took them) are 400s; every admin
    answer says nosniff (only the dashboard page did)."""
    p = admin_proxy(start_proxy, two_backends, tmp_path, token=True)
    right, wrong = "Bearer " + TOKEN, "Bearer wrong-token-0123456789"
    import http.client
    for pair in ((right, wrong), (wrong, right), (right, right)):
        c = http.client.HTTPConnection(harness.HOST, p.admin_port, timeout=harness.IO_TIMEOUT)
        c.putrequest("GET", "/api/routes")
        c.putheader("Authorization", pair[0])
        c.putheader("Authorization", pair[1])
        c.endheaders()
        r = c.getresponse()
        assert (r.status, json.loads(r.read())["error"]) == (
            400, "Authorization given more than once"), pair
        c.close()
    st, body = p.admin("PATCH", "/api/routes/orders",
                       '{"rollout": {"percent": 10}, "rollout": {"percent": 90}}', token=TOKEN)
    assert st == 400 and "duplicate" in body["error"], body
    assert p.admin("GET", "/api/routes/orders", token=TOKEN)[1]["rollout"]["percent"] != 90
    for limit in ("+5", "%205", "-1", "0", "1001", "5x", ""):
        st, body = p.admin("GET", "/api/diffs?limit=" + limit, token=TOKEN)
        assert (st, body["error"]) == (400, "limit: a whole number from 1 to 1000"), limit
    assert p.admin("GET", "/api/diffs?limit=5", token=TOKEN)[0] == 200
    for path in ("/api/routes", "/metrics", "/nowhere"):
        headers = raw_admin(p, "GET", path, {"Authorization": right})[2]
        assert headers["X-Content-Type-Options"] == "nosniff", path
    c = http.client.HTTPConnection(harness.HOST, p.admin_port, timeout=harness.IO_TIMEOUT)
    c.request("GET", "/")  # the dashboard: once, not twice
    r = c.getresponse()
    assert [k for k, _ in r.getheaders()].count("X-Content-Type-Options") == 1
    c.close()


def test_a_patch_that_expects_100_continue_is_not_kept_waiting(start_proxy, two_backends,
                                                               tmp_path):
    """A client that sends Expect: 100-continue (curl does for a body past
    1 KiB) waits for the 100 before its body: the admin API never sent one,
    so each such call took curl's one-second wait, and a client without that
    fallback waited until the admin API's 10-second limit."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    body = b'{"rollout": {"percent": 5}' + b" " * 2000 + b"}"
    with socket.create_connection((harness.HOST, p.admin_port), timeout=5) as s:
        s.sendall(b"PATCH /api/routes/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        s.settimeout(0.5)
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # no body sent before it
        s.settimeout(5)
        s.sendall(body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_an_admin_request_not_whole_in_time_gets_a_408(start_proxy, two_backends, tmp_path):
    """A request begun and not whole within the admin exchange's 10 s (an
    HTTP/0.9 line, a body shorter than its Content-Length) was closed
    without a word; the proxy's listeners answer 408, and so does the admin
    API now. A connection that sent nothing is closed as before."""
    p = admin_proxy(start_proxy, two_backends, tmp_path)
    sent = [b"GET /healthz\r\n",
            b"PATCH /api/routes/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{", b""]
    socks = [socket.create_connection((harness.HOST, p.admin_port), timeout=15) for _ in sent]
    t0 = time.monotonic()
    answers = []
    for s, data in zip(socks, sent):  # all three at once: one 10 s wait
        s.sendall(data)
    for s in socks:
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        answers.append(answer)
        s.close()
    assert 9 < time.monotonic() - t0 < 14
    for answer in answers[:2]:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b"request not whole within 10 s" in answer
    assert answers[2] == b""
