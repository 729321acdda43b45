"""Backend health: active checks, passive failure counting, fallback to the
route's other side, and the one retry of a refused idempotent request."""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
from harness import Response, by_path


def rollout_route(percent=100.0):
    return [{"name": "orders", "match": {"path_prefix": "/api"}, "backend": "legacy",
             "rollout": {"backend": "modern", "percent": percent}}]


def served(p, path="/api/x", method="GET"):
    with p.client() as c:
        r = c.request(method, path)
        return r.status, r.header("X-Backend")


class Switch:
    """A health endpoint whose answer the test flips."""

    def __init__(self):
        self.ok = True
        self.lock = threading.Lock()

    def handler(self, req, conn):
        return Response(200 if self.ok else 503, b"health")


def test_active_check_takes_a_backend_out_and_back(backend_factory, start_proxy):
    sw = Switch()
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path({"/health": sw.handler}))
    health = {"path": "/health", "interval_ms": 100, "timeout_ms": 500, "healthy": 2,
              "unhealthy": 2}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": health}},
                    routes=rollout_route())
    assert served(p) == (200, "modern")
    sw.ok = False
    harness.wait_for(lambda: "backend modern" in p.stderr_text() and "is down" in p.stderr_text(),
                     what="modern marked down")
    assert served(p) == (200, "legacy")
    entry = [e for e in p.access_lines() if e["path"] == "/api/x"][-1]
    assert entry["backend"] == "legacy" and entry["fallback_from"] == "modern"
    sw.ok = True
    harness.wait_for(lambda: "is up again" in p.stderr_text(), what="modern back up")
    assert served(p) == (200, "modern")
    checks = [r for r in modern.requests if r.path == "/health"]
    assert checks and checks[0].header("User-Agent") == "strangler-health-check"


def test_checks_skipped_while_the_proxy_has_no_descriptors(backend_factory, start_proxy):
    """A check that cannot even get a socket (strangler's own open-files limit
    reached) says nothing about the backend: it is skipped, logged once, and
    not counted. (It failed the check: a healthy backend was marked down and
    its users moved to the other side of their rollouts.)"""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path({"/health": lambda req, conn: Response(200)}))
    health = {"path": "/health", "interval_ms": 100, "timeout_ms": 500, "unhealthy": 2}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": health}},
                    routes=rollout_route())
    harness.wait_for(lambda: len(modern.requests) >= 2, what="checks running")
    fillers = harness.exhaust_fds(p)
    try:
        time.sleep(0.6)  # six checks' worth
    finally:
        for f in fillers:
            f.close()
        harness.limit_fds(p.pid)
    n = len(modern.requests)
    harness.wait_for(lambda: len(modern.requests) >= n + 2, what="checks running again")
    err = p.stderr_text()
    assert "is down" not in err
    assert err.count("health check skipped: Too many open files") == 1, err[-2000:]
    assert served(p) == (200, "modern")


def test_health_counts_start_afresh_at_each_transition(backend_factory, start_proxy):
    """Passive failures take modern down; the active check brings it back
    only after `healthy` passes counted from then (passes from before used to
    bring it back at the next check), and once back, one failed request is
    not `unhealthy` failed requests (the count from before used to linger)."""
    fail = Switch()
    fail.ok = True
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path(
        {"/health": lambda req, conn: Response(200, b"ok")},
        default=lambda req, conn: Response(200 if fail.ok else 500, b"x")))
    health = {"path": "/health", "interval_ms": 300, "timeout_ms": 1000, "healthy": 3,
              "unhealthy": 2}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": health}},
                    routes=rollout_route())
    time.sleep(1.0)  # passes pile up while it is up
    fail.ok = False
    assert [served(p)[0] for _ in range(2)] == [500, 500]
    down_at = time.monotonic()
    assert "is down: consecutive failed requests" in p.stderr_text()
    fail.ok = True
    harness.wait_for(lambda: "is up again" in p.stderr_text(), timeout=3, what="modern back")
    assert time.monotonic() - down_at >= 0.55  # three passes, 300 ms apart
    fail.ok = False
    assert served(p)[0] == 500
    time.sleep(0.1)
    assert p.stderr_text().count("is down") == 1
    assert served(p)[0] == 500  # the second one does it
    harness.wait_for(lambda: p.stderr_text().count("is down") == 2, what="down again")


@pytest.mark.parametrize("failing", [503, 404])
def test_exactly_healthy_passes_bring_a_backend_back(backend_factory, start_proxy, failing):
    """With healthy = 3, three passes after the check took modern down bring it
    back: the health endpoint fails (503, or 404: only 2xx and 3xx pass) until
    then, answers 200 three times, then fails again, so a count that needs a
    fourth pass never sees modern up."""
    state = {"passes": None}  # None: failing; a number: passes left
    lock = threading.Lock()

    def health(req, conn):
        with lock:
            if not state["passes"]:
                return Response(failing, b"down")
            state["passes"] -= 1
            return Response(200, b"ok")
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path({"/health": health}))
    check = {"path": "/health", "interval_ms": 100, "timeout_ms": 500, "healthy": 3,
             "unhealthy": 2}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": check}},
                    routes=rollout_route())
    harness.wait_for(lambda: "is down: health check: bad status" in p.stderr_text(),
                     what="modern down")
    with lock:
        state["passes"] = 3
    harness.wait_for(lambda: "is up again: health check passed" in p.stderr_text(), timeout=3,
                     what="modern back after three passes")
    assert state["passes"] == 0


def test_an_actively_checked_backend_gets_no_trial_requests(backend_factory, start_proxy):
    """A backend that the active check took down stays out until the check
    passes: requests are not sent to it as passive trials every interval_ms
    (only a backend nothing checks actively gets those)."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path(
        {"/health": lambda req, conn: Response(503, b"down")}))
    check = {"path": "/health", "interval_ms": 100, "timeout_ms": 500, "unhealthy": 1}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": check}},
                    routes=rollout_route())
    harness.wait_for(lambda: "is down: health check: bad status" in p.stderr_text(),
                     what="modern down")
    sides = []
    for _ in range(10):
        sides.append(served(p))
        time.sleep(0.06)
    assert sides == [(200, "legacy")] * 10
    assert [r.path for r in modern.requests if r.path != "/health"] == []


def test_a_request_that_succeeds_does_not_overrule_the_active_check(backend_factory,
                                                                    start_proxy):
    """A route whose only backend is down still sends it requests (there is
    nowhere else to go); one that succeeds does not bring the backend back
    while its active check fails: the check says when it is back."""
    modern = backend_factory("modern", by_path(
        {"/health": lambda req, conn: Response(503, b"down")}))
    check = {"path": "/health", "interval_ms": 100, "timeout_ms": 500, "unhealthy": 1}
    p = start_proxy({"modern": {"url": modern, "health": check}}, default_backend="modern",
                    admin={})
    harness.wait_for(lambda: "is down: health check: bad status" in p.stderr_text(),
                     what="modern down")
    assert served(p, "/x") == (200, "modern")
    time.sleep(0.3)
    assert "is up again" not in p.stderr_text()
    assert 'strangler_backend_up{backend="modern"} 0' in p.admin("GET", "/metrics")[1]


def test_a_check_slower_than_the_interval_has_its_timeout(backend_factory, start_proxy):
    """timeout_ms longer than interval_ms: a check answered within timeout_ms
    passes (it was failed at the next interval's tick)."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path({"/health": harness.delayed(0.35)}))
    health = {"path": "/health", "interval_ms": 100, "timeout_ms": 2000, "unhealthy": 1}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": health}},
                    routes=rollout_route())
    time.sleep(1.5)
    assert "is down" not in p.stderr_text()
    assert served(p) == (200, "modern")
    assert len([r for r in modern.requests if r.path == "/health"]) >= 2


def test_refused_idempotent_request_is_retried_on_the_other_side(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    dead = "http://127.0.0.1:%d" % harness.refused_port()
    p = start_proxy({"legacy": legacy, "modern": dead}, routes=rollout_route())
    assert served(p) == (200, "legacy")
    entry = p.wait_access(1)[0]
    assert entry["fallback_from"] == "modern" and entry["backend"] == "legacy"
    assert "retried on legacy" in p.stderr_text()


def test_passive_failures_mark_a_backend_down(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", lambda req, conn: Response(500, b"broken"))
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=rollout_route())
    # the first answers are 500s from modern (passed to the client as they are)
    statuses = [served(p)[0] for _ in range(3)]
    assert statuses == [500, 500, 500]
    assert "backend modern" in p.stderr_text() and "is down" in p.stderr_text()
    # now requests fall back to legacy while modern is down
    assert served(p) == (200, "legacy")


def test_passive_checks_tuned_without_an_active_check(backend_factory, start_proxy):
    """A health block without path sets how many failures mark the backend
    down (unhealthy) and how long it is avoided before a trial request
    (interval_ms), and checks nothing actively."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", lambda req, conn: Response(500, b"broken"))
    p = start_proxy({"legacy": legacy,
                     "modern": {"url": modern, "health": {"unhealthy": 1, "interval_ms": 400}}},
                    routes=rollout_route())
    assert served(p)[0] == 500  # modern's answer; one failure is enough
    assert "backend modern" in p.stderr_text() and "is down" in p.stderr_text()
    assert served(p) == (200, "legacy")
    # after interval_ms one request tries modern again, and it fails again
    harness.wait_for(lambda: served(p)[0] == 500, timeout=3, interval=0.05,
                     what="a trial request to modern")
    assert served(p) == (200, "legacy")
    assert [r.path for r in modern.requests] == ["/api/x", "/api/x"]


def test_a_refused_post_goes_to_the_other_side_with_its_body(backend_factory, start_proxy):
    """A refused connection carried none of the request: a POST goes to the
    route's other side as a GET does, its body with it."""
    legacy = backend_factory("legacy")
    dead = "http://127.0.0.1:%d" % harness.refused_port()
    p = start_proxy({"legacy": legacy, "modern": dead}, routes=rollout_route())
    with p.client() as c:
        r = c.request("POST", "/api/charge", body=b"amount=12")
    assert (r.status, r.header("X-Backend")) == (200, "legacy"), r
    assert [(x.method, x.body) for x in legacy.requests] == [("POST", b"amount=12")]
    e = p.wait_access(1)[0]
    assert (e["backend"], e["fallback_from"]) == ("legacy", "modern"), e


def test_a_post_the_other_side_dropped_is_not_sent_again(backend_factory, start_proxy):
    """A POST whose connection the rollout side closed unanswered reached
    it and may have acted: 502, and the base side never sees it."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", lambda req, conn: harness.CLOSE)
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=rollout_route())
    with p.client() as c:
        r = c.request("POST", "/api/charge", body=b"amount=12")
    assert r.status == 502 and b"upstream closed connection" in r.body, r
    assert [x.method for x in modern.requests] == ["POST"]
    assert legacy.requests == []


def test_health_settings_checked(tmp_path):
    conf = tmp_path / "h.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:1"; } );\n'
                    'backends = { a = { url = "http://127.0.0.1:2";\n'
                    '  health = { path = "health"; interval_ms = 5; colour = 1; }; };\n'
                    '  b = { url = "http://127.0.0.1:3"; health = { path = "/h x"; }; }; };\n'
                    'default_backend = "a";\n')
    r = subprocess.run([harness.BINARY, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert '%s:3: backends.a.health.path: "health": must start with \'/\'' % conf in r.stderr
    assert "%s:3: backends.a.health.interval_ms: must be between 100 and 3600000" % conf in r.stderr
    assert "%s:3: backends.a.health.colour: unknown setting" % conf in r.stderr
    assert ("%s:4: backends.b.health.path: must not contain spaces or control characters"
            % conf) in r.stderr


def refused_reload(p, backends, routes):
    """Rewrites p's file with backends and routes plus a second listener on an
    address another socket holds, sends SIGHUP and waits for the refusal."""
    squatter = socket.socket()
    squatter.bind((harness.HOST, 0))
    squatter.listen(1)
    try:
        text = harness.make_config(p.port, backends, None, routes, 1, p.access_log_path)
        own = 'listen = ( { address = "%s:%d"; } );' % (harness.HOST, p.port)
        both = 'listen = ( { address = "%s:%d"; }, { address = "%s:%d"; } );' % (
            harness.HOST, p.port, harness.HOST, squatter.getsockname()[1])
        assert own in text
        with open(p.conf_path, "w") as f:
            f.write(text.replace(own, both))
        os.kill(p.pid, signal.SIGHUP)
        harness.wait_for(lambda: "keeping the running configuration" in p.stderr_text(),
                         what="the reload refused")
    finally:
        squatter.close()


def test_a_refused_reload_leaves_backend_health_as_it_was(backend_factory, start_proxy):
    """A reload refused after its file was read (here: a listen address in
    use) adds health.path to modern, which has passive checks only. Nothing
    of it may apply: modern, once down, still gets a trial request every
    interval_ms and comes back with its first success. The refused reload
    used to mark modern's shared health state as actively checked, with no
    check running, so it never came back."""
    fail = Switch()
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", lambda req, conn: Response(
        200 if fail.ok else 500, b"m", headers=[("X-Backend", "modern")]))
    passive = {"unhealthy": 2, "interval_ms": 300}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": passive}},
                    routes=rollout_route())
    assert served(p) == (200, "modern")
    refused_reload(p, {"legacy": legacy,
                       "modern": {"url": modern, "health": dict(passive, path="/health")}},
                   rollout_route())
    fail.ok = False
    assert [served(p)[0] for _ in range(2)] == [500, 500]
    assert "is down: consecutive failed requests" in p.stderr_text()
    fail.ok = True
    harness.wait_for(lambda: served(p) == (200, "modern"), timeout=3, interval=0.05,
                     what="a trial request to modern")
    assert "is up again: a request succeeded" in p.stderr_text()
    assert [r for r in modern.requests if r.path == "/health"] == []


def reload(p):
    """SIGHUP with the file as it is; waits until the reload is logged."""
    done = p.stderr_text().count(" routes\n")
    os.kill(p.pid, signal.SIGHUP)
    harness.wait_for(lambda: p.stderr_text().count(" routes\n") > done, what="the reload")


@pytest.mark.parametrize("change", ["sighup", "patch"])
def test_health_checks_outlive_configuration_changes(change, backend_factory, start_proxy):
    """A reload or a runtime change that leaves a backend's URL and health
    settings as they were keeps its check as it runs: its passes so far, its
    timer. Every change used to start all checks afresh (one at once, counts
    from zero), so with changes more often than healthy x interval_ms a down
    backend never came back, and each change cost every backend a check."""
    sw = Switch()
    sw.ok = False
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path({"/health": sw.handler}))
    health = {"path": "/health", "interval_ms": 500, "timeout_ms": 400, "healthy": 2,
              "unhealthy": 2}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": health}},
                    routes=rollout_route(), admin={})
    harness.wait_for(lambda: "is down" in p.stderr_text(), what="modern down")
    sw.ok = True
    before = len(modern.requests)
    start, changes = time.monotonic(), 0
    while "is up again" not in p.stderr_text() and time.monotonic() - start < 4:
        if change == "sighup":
            reload(p)
        else:
            st, _ = p.admin("PATCH", "/api/routes/orders",
                            {"rollout": {"percent": 99.0 if changes % 2 else 100.0}})
            assert st == 200
        changes += 1
        time.sleep(0.2)
    took = time.monotonic() - start
    assert "is up again: health check passed" in p.stderr_text(), "%d changes" % changes
    assert changes >= 3 and took < 1.8
    checks = [r for r in modern.requests[before:] if r.path == "/health"]
    assert len(checks) <= took / 0.5 + 1, "%d checks in %.1f s" % (len(checks), took)


def test_a_reload_restarts_only_the_checks_it_changes(backend_factory, start_proxy):
    """Changing one backend's health.path starts its new check at once and
    stops the old one; the other backend's check keeps its timer (it used to
    be checked again at every reload)."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern")
    slow = {"path": "/health", "interval_ms": 3000, "timeout_ms": 500}
    backends = {"legacy": {"url": legacy, "health": slow},
                "modern": {"url": modern, "health": slow}}
    p = start_proxy(backends, routes=rollout_route())

    def checks(b, path):
        return len([r for r in b.requests if r.path == path])

    harness.wait_for(lambda: checks(legacy, "/health") == 1 and checks(modern, "/health") == 1,
                     what="the first checks")
    backends["modern"] = {"url": modern, "health": dict(slow, path="/ready")}
    with open(p.conf_path, "w") as f:
        f.write(harness.make_config(p.port, backends, None, rollout_route(), 1,
                                    p.access_log_path))
    reload(p)
    harness.wait_for(lambda: checks(modern, "/ready") == 1, what="modern's new check")
    reload(p)  # nothing changed
    time.sleep(0.3)
    assert (checks(legacy, "/health"), checks(modern, "/health"), checks(modern, "/ready")) == \
        (1, 1, 1)


def test_a_down_backend_whose_check_is_removed_gets_a_trial_at_once(backend_factory,
                                                                     start_proxy):
    """With health.path removed by a reload, nothing would bring a down
    backend back but a passive trial: the next request is one (it used to
    wait for interval_ms from when the backend went down)."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path(
        {"/health": lambda req, conn: Response(503, b"h")},
        default=lambda req, conn: Response(200, b"m", headers=[("X-Backend", "modern")])))
    health = {"path": "/health", "interval_ms": 10000, "unhealthy": 1}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": health}},
                    routes=rollout_route())
    harness.wait_for(lambda: "is down" in p.stderr_text(), what="modern down")
    assert served(p) == (200, "legacy")
    del health["path"]
    with open(p.conf_path, "w") as f:
        f.write(harness.make_config(p.port, {"legacy": legacy,
                                             "modern": {"url": modern, "health": health}},
                                    None, rollout_route(), 1, p.access_log_path))
    reload(p)
    time.sleep(0.05)  # the workers apply it from their own loops
    assert served(p) == (200, "modern")
    assert "is up again: a request succeeded" in p.stderr_text()


def test_a_check_answer_trickled_a_byte_at_a_time_fails_at_timeout_ms(backend_factory,
                                                                     start_proxy):
    """timeout_ms bounds the whole check: a health endpoint that sends its
    status line a byte every 100 ms (a wedged server, a proxy in front of
    it) failed no check at all (each byte put the timeout off again), and a
    check in flight holds the next ones back: the server never went down."""
    stop = threading.Event()

    def trickle(req, conn):
        for b in b"HTTP/1.1 200 OK but this line never ends" * 30:
            if stop.is_set():
                break
            try:
                conn.send(bytes([b]))
            except OSError:
                break
            time.sleep(0.1)
        return harness.CLOSE

    legacy = backend_factory("legacy")
    modern = backend_factory("modern", by_path({"/health": trickle}))
    health = {"path": "/health", "interval_ms": 200, "timeout_ms": 300, "healthy": 1,
              "unhealthy": 1}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern, "health": health}},
                    routes=rollout_route())
    try:
        harness.wait_for(lambda: "backend modern" in p.stderr_text() and
                         "is down: health check timed out" in p.stderr_text(), timeout=3,
                         what="modern marked down by a check that never ends")
    finally:
        stop.set()


def sticky_keys(cohort, percent_bp, n):
    """n keys the rollout sends to its backend, and n it leaves on the base."""
    new, base = [], []
    for i in range(4000):
        k = "u%d" % i
        (new if harness.rollout_bucket(cohort, k) < percent_bp else base).append(k)
    return new[:n], base[:n]


def failing_modern_route(percent=50.0):
    return {"name": "orders", "match": {"path_prefix": "/api"}, "backend": "legacy",
            "rollout": {"backend": "modern", "percent": percent, "sticky": "header:X-User-Id"},
            "shadow": {"backend": "@other"}}


def test_a_mirrors_5xx_does_not_keep_a_failing_backend_up(backend_factory, start_proxy):
    """The usual migration: a rollout, and the rest of the traffic mirrored
    to the new backend. The new backend answers 500 to everything: its own
    users' requests fail, and after health.unhealthy of them in a row it is
    down and they are served by the old one. A mirror's 500 (a difference to
    report) counted as a success and cleared that run every time: the
    backend was never marked down and its users kept getting 500s."""
    legacy = backend_factory("legacy", lambda req, conn: Response(
        200, b"ok", headers=[("X-Backend", "legacy")]))
    modern = backend_factory("modern", lambda req, conn: Response(
        500, b"boom", headers=[("X-Backend", "modern")]))
    p = start_proxy({"legacy": legacy,
                     "modern": {"url": modern, "health": {"unhealthy": 3, "interval_ms": 60000}}},
                    routes=[failing_modern_route()], admin={})
    new, base = sticky_keys("orders", 5000, 6)
    got = []
    with p.client() as c:
        for i in range(6):
            # a user of the old side, mirrored to modern (which answers 500)
            # while modern is up (shadows to a down backend are skipped)
            assert c.request("GET", "/api/x", headers=[("X-User-Id", base[i])]).status == 200
            if i < 3:
                harness.wait_for(lambda: p.admin("GET", "/api/backends/modern")[1]["servers"][0]
                                 ["ok"] == i + 1, what="the mirror's answer")
            r = c.request("GET", "/api/x", headers=[("X-User-Id", new[i])])
            got.append((r.status, r.header("X-Backend")))
    assert got == [(500, "modern")] * 3 + [(200, "legacy")] * 3, got
    assert "is down: consecutive failed requests" in p.stderr_text()
    server = p.admin("GET", "/api/backends/modern")[1]["servers"][0]
    assert (server["up"], server["ok"], server["failed"]) == (False, 3, 3), server
    assert len(modern.requests) == 6


def test_a_mirrors_500_does_not_bring_a_down_backend_back(backend_factory, start_proxy):
    """A down backend's trial may be a shadow (a backend only mirrored to
    comes back that way): an answer below 500 brings it back, a 500 does not
    (it said `is up again: a request succeeded`, and its users got 500s
    until it went down again)."""
    legacy = backend_factory("legacy", lambda req, conn: Response(
        200, b"ok", headers=[("X-Backend", "legacy")]))
    modern = backend_factory("modern", lambda req, conn: Response(
        500, b"boom", headers=[("X-Backend", "modern")]))
    p = start_proxy({"legacy": legacy,
                     "modern": {"url": modern, "health": {"unhealthy": 1, "interval_ms": 300}}},
                    routes=[failing_modern_route()])
    new, base = sticky_keys("orders", 5000, 3)
    with p.client() as c:
        assert c.request("GET", "/api/x", headers=[("X-User-Id", new[0])]).status == 500
        harness.wait_for(lambda: "is down" in p.stderr_text(), what="modern down")
        r = c.request("GET", "/api/x", headers=[("X-User-Id", new[1])])
        assert r.header("X-Backend") == "legacy"
        time.sleep(0.4)  # modern's trial is due
        n = len(modern.requests)
        assert c.request("GET", "/api/x", headers=[("X-User-Id", base[0])]).status == 200
        harness.wait_for(lambda: len(modern.requests) > n, what="the mirror reaching modern")
        time.sleep(0.1)
        assert "is up again" not in p.stderr_text(), p.stderr_text()[-600:]
        r = c.request("GET", "/api/x", headers=[("X-User-Id", new[2])])
        assert (r.status, r.header("X-Backend")) == (200, "legacy")


def test_a_url_two_backends_list_is_checked_once(backend_factory, start_proxy):
    """Health belongs to the URL: listed by two backends with active
    checks, it was checked twice each interval_ms, each check counting its
    own passes and failures towards the one state. Once now, by the first
    backend in the file, whose settings judge it."""
    seen = []

    def health(req, conn):
        seen.append(req.path)
        return Response(200, b"ok")

    s = backend_factory("s", by_path({"/a-health": health, "/b-health": health}))
    p = start_proxy({"a": {"url": s, "health": {"path": "/a-health", "interval_ms": 200}},
                     "b": {"url": s, "health": {"path": "/b-health", "interval_ms": 200}}},
                    routes=[{"name": "r", "match": {"path_prefix": "/b"}, "backend": "b"}])
    time.sleep(1.1)
    assert 2 <= len(seen) <= 7 and set(seen) == {"/a-health"}, seen
    with p.client() as c:
        assert c.request("GET", "/b/x").status == 200
