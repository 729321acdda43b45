"""Guarded rollouts: the rollout is pulled back by itself when the new side
fails or differs, stays back until re-armed, and steps forward while healthy."""
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time

import harness
from harness import Response


def start(start_proxy, legacy, modern, rollout, tmp_path, shadow=None, state=None,
          name="orders"):
    route = {"name": name, "match": {"path_prefix": "/api"}, "backend": "legacy",
             "rollout": rollout}
    if shadow:
        route["shadow"] = shadow
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=[route],
                    admin={"state_file": str(state or tmp_path / "state.json")},
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl")})
    return p


def flaky(every=2):
    """Fails every `every`-th request with a 500 (never several in a row, so the
    passive health check does not take the backend out first)."""
    n = itertools.count()
    lock = threading.Lock()

    def handler(req, conn):
        with lock:
            i = next(n)
        if i % every == 0:
            return Response(500, b"boom", headers=[("X-Backend", "modern")])
        return Response(200, b"ok", headers=[("X-Backend", "modern")])
    return handler


def load(p, n, path="/api/orders"):
    with p.client() as c:
        return [c.request("GET", path, headers=[("X-User-Id", "u%d" % i)]).header("X-Backend")
                for i in range(n)]


def flaky_rollout(start_proxy, backend_factory, tmp_path, state=None):
    """orders 50 % rolled out to a modern that fails every other request,
    under a guard bounding the error rate at 5 %."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", flaky())
    guard = {"max_error_rate": 5.0, "min_requests": 20, "window_s": 10}
    return start(start_proxy, legacy, modern,
                 {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id",
                  "guard": guard}, tmp_path, state=state)


def until_tripped(p):
    """Sends the traffic that trips the error-rate guard; the sides served."""
    sides = load(p, 120)
    harness.wait_for(lambda: "guard: route orders: error rate" in p.stderr_text(), 5,
                     what="the guard tripping")
    return sides


def test_error_rate_trips_the_guard_until_rearmed(start_proxy, backend_factory, tmp_path):
    p = flaky_rollout(start_proxy, backend_factory, tmp_path)
    assert "modern" in until_tripped(p)
    st, route = p.admin("GET", "/api/routes/orders")
    assert route["rollout"]["percent"] == 0
    assert route["guard"]["tripped"] is True and "error rate" in route["guard"]["reason"]
    assert set(load(p, 40)) == {"legacy"}
    st, metrics = p.admin("GET", "/metrics")
    assert 'strangler_guard_tripped{route="orders"} 1' in metrics
    audit = p.admin("GET", "/api/audit")[1]["changes"]
    assert audit[-1]["caller"] == "guard" and audit[-1]["action"] == "guard-trip"
    # no other change lifts the pull-back while tripped (a PATCH to 40 and
    # a DELETE of the override holding the 0 both did)
    st, body = p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 40}})
    assert st == 409 and "re-arm" in body["error"]
    assert p.admin("DELETE", "/api/routes/orders/override")[0] == 409
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 0}})[0] == 200
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 0
    # nothing moves until re-armed; re-arming does not move the percent by itself
    assert p.admin("POST", "/api/routes/orders/guard/rearm")[0] == 200
    st, route = p.admin("GET", "/api/routes/orders")
    assert route["guard"]["tripped"] is False and route["rollout"]["percent"] == 0
    entry = p.admin("GET", "/api/audit")[1]["changes"][-1]
    assert entry["action"] == "guard-rearm" and entry["time"]
    assert entry["before"]["tripped"] is True and entry["after"]["tripped"] is False
    assert p.admin("POST", "/api/routes/orders/guard/rearm")[0] == 409
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 40}})[0] == 200
    assert p.admin("POST", "/api/routes/nope/guard/rearm")[0] == 404


def test_errors_spread_over_two_workers_trip_the_guard_once(start_proxy, backend_factory,
                                                            tmp_path):
    """With workers = 2 and a connection per request, each worker sees part
    of the new side's failures: the guard judges their sum (each worker's
    half alone is under min_requests), trips once, and no worker sends the
    new side another request."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", lambda req, conn: Response(
        500, b"boom", headers=[("X-Backend", "modern")]))
    guard = {"max_error_rate": 5.0, "min_requests": 30, "window_s": 60}
    route = {"name": "orders", "match": {"path_prefix": "/api"}, "backend": "legacy",
             "rollout": {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id",
                         "guard": guard}}
    p = start_proxy({"legacy": legacy, "modern": {"url": modern.url,
                                                  "health": {"unhealthy": 100}}},
                    routes=[route], workers=2, admin={"state_file": str(tmp_path / "state.json")})

    def spread(n):
        sides = []
        for i in range(n):
            with p.client() as c:
                sides.append(c.request("GET", "/api/orders",
                                       headers=[("X-User-Id", "u%d" % i)]).header("X-Backend"))
        return sides

    assert spread(80).count("modern") >= 30
    harness.wait_for(lambda: "guard: route orders: error rate" in p.stderr_text(), 5,
                     what="the guard tripping")
    served = len(modern.requests)
    assert set(spread(80)) == {"legacy"}
    time.sleep(1.5)  # another tick or two: still one trip
    assert len(modern.requests) == served
    assert p.stderr_text().count("guard: route orders: error rate") == 1, p.stderr_text()
    audit = p.admin("GET", "/api/audit")[1]["changes"]
    assert [e["action"] for e in audit if e["caller"] == "guard"] == ["guard-trip"], audit
    assert json.loads((tmp_path / "state.json").read_text())["guards"]["orders"]


def test_rearm_of_a_route_without_a_guard_says_it_has_none(start_proxy, backend_factory,
                                                          tmp_path):
    """A route with no guard (a rollout without one, or no rollout) has no
    guard to re-arm: 404 as for any missing part of a route (DELETE of an
    override that does not exist), not 409 "the route's guard is not tripped"."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    routes = [{"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 5.0, "sticky": "header:X-User-Id"}},
              {"name": "search", "match": {"path": "/api/search"}, "backend": "legacy"}]
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=routes,
                    admin={"state_file": str(tmp_path / "state.json")})
    for route in ("orders", "search"):
        st, body = p.admin("POST", "/api/routes/%s/guard/rearm" % route)
        assert st == 404 and "the route has no guard" in body["error"], (route, st, body)
    assert p.admin("GET", "/api/audit")[1]["changes"] == []


def test_a_tripped_guard_stays_tripped_after_a_restart(start_proxy, backend_factory, tmp_path):
    """The trip is kept in admin.state_file: a restarted proxy still holds the
    rollout back and refuses to raise it until re-armed."""
    state = tmp_path / "state.json"
    p = flaky_rollout(start_proxy, backend_factory, tmp_path, state=state)
    until_tripped(p)
    assert p.stop() == 0
    p = flaky_rollout(start_proxy, backend_factory, tmp_path, state=state)
    route = p.admin("GET", "/api/routes/orders")[1]
    assert route["guard"]["tripped"] is True and "error rate" in route["guard"]["reason"]
    assert route["rollout"]["percent"] == 0
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 40}})[0] == 409


def test_the_guard_trips_while_the_file_on_disk_is_broken(start_proxy, backend_factory,
                                                         tmp_path):
    """A config file left half-edited (not reloaded) must not stop the guard:
    the pull-back builds on the configuration as loaded. (Before, it re-read
    the file, failed, and still reported the guard tripped at 50 %.)"""
    p = flaky_rollout(start_proxy, backend_factory, tmp_path)
    with open(p.conf_path, "a") as f:
        f.write("routes = (\n")  # an edit in progress
    until_tripped(p)
    route = p.admin("GET", "/api/routes/orders")[1]
    assert route["rollout"]["percent"] == 0 and route["guard"]["tripped"] is True
    assert set(load(p, 40)) == {"legacy"}
    assert "cannot guard-trip" not in p.stderr_text()


def test_the_guard_trips_when_the_state_file_cannot_be_written(start_proxy, backend_factory,
                                                               tmp_path):
    """Persisting is best effort for a pull-back: the rollout goes to 0 and
    the failure is logged. (An admin change is refused instead: 500.)"""
    p = flaky_rollout(start_proxy, backend_factory, tmp_path,
                      state=tmp_path / "no-such-dir" / "state.json")
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 60}})[0] == 500
    until_tripped(p)
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 0
    assert set(load(p, 40)) == {"legacy"}
    assert "the change applies but a restart would undo it" in p.stderr_text()


def block_state_writes(p, tmp_path):
    """Makes every write of p's state file fail (EISDIR): a directory where
    it writes the new file first. The start's own write may hold that name
    for a moment: until it is free. Returns the directory (rmdir ends it)."""
    blocker = tmp_path / ("state.json.tmp.%d" % p.pid)

    def block():
        try:
            blocker.mkdir()
            return True
        except FileExistsError:
            return False
    harness.wait_for(block, what="the state file's temporary name blocked")
    return blocker


def test_a_trip_the_disk_refused_is_saved_once_it_takes_it(start_proxy, backend_factory,
                                                             tmp_path):
    """A pull-back whose state file write failed stayed in memory only until
    the next change: a restart in between brought the rollout back at 50 %
    with no trip. The write is now retried every second, and a restart after
    the disk recovered keeps the trip."""
    state = tmp_path / "state.json"
    p = flaky_rollout(start_proxy, backend_factory, tmp_path, state=state)
    blocker = block_state_writes(p, tmp_path)
    until_tripped(p)
    assert "the change applies but a restart would undo it" in p.stderr_text()
    assert not state.exists() or json.loads(state.read_text()).get("guards", {}) == {}
    time.sleep(1.5)  # retries that fail change nothing and log nothing more
    assert p.stderr_text().count("cannot write admin.state_file") == 1
    blocker.rmdir()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
            state.exists() and "orders" in json.loads(state.read_text()).get("guards", {})):
        time.sleep(0.1)
    saved = json.loads(state.read_text())
    assert "error rate" in saved["guards"]["orders"]["reason"]
    assert saved["overrides"]["orders"]["rollout"]["percent"] == 0
    # logged once the directory is synced too, a moment after the rename
    harness.wait_for(lambda: "written again: it holds every change" in p.stderr_text(), 3,
                     what="the log of the state file written again")
    assert p.stop() == 0
    p = flaky_rollout(start_proxy, backend_factory, tmp_path, state=state)
    route = p.admin("GET", "/api/routes/orders")[1]
    assert route["guard"]["tripped"] is True and route["rollout"]["percent"] == 0


TRIPPED_STATE = ('{"overrides": {"orders": {"rollout": {"percent": 0}}}, '
                 '"guards": {"orders": {"reason": "error rate 40.00 % of 300 requests", '
                 '"tripped_at": "2026-11-27T10:00:00Z"}}, "audit": []}')


def test_a_trip_goes_with_its_guard_block(start_proxy, backend_factory, tmp_path):
    """A trip holds only while the route's configuration has the guard: the
    reload that removes the guard block drops it (saved, logged), and so does
    a start without one. Before, PATCH and DELETE stayed 409 with no guard to
    re-arm in the API."""
    state = tmp_path / "state.json"
    state.write_text(TRIPPED_STATE)
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    rollout = {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id",
               "guard": {"max_error_rate": 5.0}}
    p = start(start_proxy, legacy, modern, rollout, tmp_path, state=state)
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 10}})[0] == 409
    # the operator takes the guard out and reloads
    with open(p.conf_path) as f:
        text = f.read()
    with open(p.conf_path, "w") as f:
        f.write(text.replace("guard = { max_error_rate = 5.0; };", ""))
    st, body = p.admin("POST", "/api/reload")
    assert st == 200 and body["ok"], body
    assert ("guard: route orders: the configuration has no guard for it any more: its trip "
            "(error rate 40.00 % of 300 requests, at 2026-11-27T10:00:00Z) is dropped") \
        in p.stderr_text()
    assert "guards" in json.loads(state.read_text()) and json.loads(state.read_text())["guards"] == {}
    st, body = p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 10}})
    assert st == 200 and body["rollout"]["percent"] == 10, body
    assert p.admin("DELETE", "/api/routes/orders/override")[0] == 200
    assert p.stop() == 0
    # a start on a file without the guard drops a saved trip the same way
    state.write_text(TRIPPED_STATE)
    del rollout["guard"]
    p = start(start_proxy, legacy, modern, rollout, tmp_path, state=state)
    assert "its trip (error rate" in p.stderr_text()
    assert json.loads(state.read_text())["guards"] == {}
    assert p.admin("DELETE", "/api/routes/orders/override")[0] == 200


def test_a_change_of_backend_starts_the_window_again(start_proxy, backend_factory,
                                                    tmp_path):
    """The window's counters are per route and backend: a reload that moves
    the rollout from one backend to another must not judge the second by the
    first's counts. Here the rollout goes to a flaky `modern`, then back to
    `spare`, which served the same users before and never failed: the window
    subtracted modern's 6 errors from spare's 0, the count wrapped to a huge
    error rate and the guard pulled spare's healthy rollout back at once."""
    legacy, spare = backend_factory("legacy"), backend_factory("spare")
    modern = backend_factory("modern", flaky(every=5))
    guard = {"max_error_rate": 50.0, "min_requests": 20, "window_s": 5}
    p = start_proxy({"legacy": legacy, "modern": modern, "spare": spare},
                    routes=[{"name": "orders", "match": {"path_prefix": "/api"},
                             "backend": "legacy",
                             "rollout": {"backend": "spare", "percent": 30.0,
                                         "sticky": "header:X-User-Id", "guard": guard}}],
                    admin={"state_file": str(tmp_path / "state.json")})

    def roll_to(old, new):
        with open(p.conf_path) as f:
            text = f.read()
        assert text.count('backend = "%s"' % old) == 1, text
        with open(p.conf_path, "w") as f:
            f.write(text.replace('backend = "%s"' % old, 'backend = "%s"' % new))
        st, body = p.admin("POST", "/api/reload")
        assert st == 200 and body["ok"], body

    load(p, 100)
    roll_to("spare", "modern")
    sides = load(p, 100)
    assert 20 < sides.count("modern") < 40, sides
    # the window's oldest snapshot (5 s) now holds modern's errors
    time.sleep(6.5)
    roll_to("modern", "spare")
    assert set(load(p, 100)) == {"legacy", "spare"}
    time.sleep(2.5)
    assert "guard: route orders" not in p.stderr_text(), p.stderr_text()
    st, route = p.admin("GET", "/api/routes/orders")
    assert route["guard"]["tripped"] is False and route["rollout"]["percent"] == 30, route


def test_the_override_of_a_trip_goes_once_the_file_says_0_too(start_proxy, backend_factory,
                                                                tmp_path):
    """DELETE of the override holding a trip's 0 % got 409 also when the
    file's own percent was 0 (the operator took the rollout back in the file
    and reloaded): deleting it leaves the rollout at 0, which is all the trip
    holds. The guard stays tripped until re-armed."""
    state = tmp_path / "state.json"
    state.write_text(TRIPPED_STATE)
    rollout = {"backend": "modern", "percent": 50.0, "guard": {"max_error_rate": 5.0}}
    p = start(start_proxy, backend_factory("legacy"), backend_factory("modern"), rollout,
              tmp_path, state=state)
    assert p.admin("DELETE", "/api/routes/orders/override")[0] == 409  # the file says 50
    with open(p.conf_path) as f:
        text = f.read()
    with open(p.conf_path, "w") as f:
        f.write(text.replace("percent = 50.0", "percent = 0.0"))
    harness.reload_and_wait(p, 1)
    st, body = p.admin("DELETE", "/api/routes/orders/override")
    assert st == 200, body
    route = p.admin("GET", "/api/routes/orders")[1]
    assert route["rollout"]["percent"] == 0 and route["guard"]["tripped"] is True
    assert "orders" not in json.loads(state.read_text())["overrides"]
    assert set(load(p, 20)) == {"legacy"}


def test_a_rearm_that_cannot_be_saved_is_refused(start_proxy, backend_factory, tmp_path):
    """A re-arm answered 200 though the state file could not be written, and
    a restart tripped the guard again; it now gets 500, as a PATCH does, and
    the guard stays tripped."""
    state = tmp_path / "state.json"
    state.write_text(TRIPPED_STATE)
    rollout = {"backend": "modern", "percent": 50.0, "guard": {"max_error_rate": 5.0}}
    p = start(start_proxy, backend_factory("legacy"), backend_factory("modern"), rollout,
              tmp_path, state=state)
    blocker = block_state_writes(p, tmp_path)
    st, body = p.admin("POST", "/api/routes/orders/guard/rearm")
    assert st == 500, body
    assert body["error"] == ("cannot write admin.state_file: Is a directory; "
                             "the guard stays tripped")
    route = p.admin("GET", "/api/routes/orders")[1]
    assert route["guard"]["tripped"] is True
    assert route["guard"]["reason"] == "error rate 40.00 % of 300 requests"
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 10}})[0] == 409
    assert p.admin("GET", "/api/audit")[1]["changes"] == []
    blocker.rmdir()
    assert p.admin("POST", "/api/routes/orders/guard/rearm")[0] == 200
    assert json.loads(state.read_text())["guards"] == {}


def test_difference_rate_trips_the_guard(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy", lambda req, conn: Response(200, b'{"v": 1}', headers=[
        ("Content-Type", "application/json"), ("X-Backend", "legacy")]))
    modern = backend_factory("modern", lambda req, conn: Response(200, b'{"v": 2}', headers=[
        ("Content-Type", "application/json"), ("X-Backend", "modern")]))
    guard = {"max_diff_rate": 10.0, "min_requests": 20, "window_s": 10}
    p = start(start_proxy, legacy, modern,
              {"backend": "modern", "percent": 30.0, "sticky": "header:X-User-Id", "guard": guard},
              tmp_path, shadow={"backend": "@other"})
    load(p, 60)
    harness.wait_for(lambda: "guard: route orders: difference rate" in p.stderr_text(), 5,
                     what="the guard tripping on differences")
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 0


def stepping(start_proxy, backend_factory, tmp_path, percent, modern_handler=None):
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", modern_handler)
    guard = {"max_error_rate": 5.0, "min_requests": 5, "window_s": 10,
             "steps": [10, 20], "step_interval_s": 1}
    return start(start_proxy, legacy, modern,
                 {"backend": "modern", "percent": percent, "sticky": "header:X-User-Id",
                  "guard": guard}, tmp_path)


def percent(p):
    return p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"]


def test_steps_advance_while_the_guard_holds(start_proxy, backend_factory, tmp_path):
    p = stepping(start_proxy, backend_factory, tmp_path, 5.0)
    assert "modern" in load(p, 300)  # about 15 users on the rollout side: a verdict
    harness.wait_for(lambda: percent(p) == 20, 6, what="two steps")
    assert "next step 5.00 % -> 10.00 %" in p.stderr_text()
    assert "next step 10.00 % -> 20.00 %" in p.stderr_text()
    route = p.admin("GET", "/api/routes/orders")[1]
    assert route["guard"]["tripped"] is False and route["guard"]["steps"] == [10, 20]


def test_steps_wait_for_step_interval_s(start_proxy, backend_factory, tmp_path):
    """A healthy rollout with a verdict still waits step_interval_s (here an
    hour) between steps: it does not climb at every tick."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern")
    guard = {"max_error_rate": 5.0, "min_requests": 5, "window_s": 10,
             "steps": [10, 20], "step_interval_s": 3600}
    p = start(start_proxy, legacy, modern,
              {"backend": "modern", "percent": 5.0, "sticky": "header:X-User-Id",
               "guard": guard}, tmp_path)
    assert "modern" in load(p, 300)  # a verdict on the rollout side
    harness.time.sleep(2.5)  # two guard ticks
    assert percent(p) == 5
    assert "next step" not in p.stderr_text()


def test_steps_wait_for_a_verdict_and_never_start_from_zero(start_proxy, backend_factory,
                                                              tmp_path):
    """Without traffic on the rollout side there is no verdict, so no step
    (the percent climbed to 100 % with the new backend down); and 0 % stays
    0 % (steps raised an operator's 0 to 1, 5, 25)."""
    p = stepping(start_proxy, backend_factory, tmp_path, 5.0)
    load(p, 10)  # below min_requests on the rollout side (5 % of 10 users)
    harness.time.sleep(2.5)
    assert percent(p) == 5
    assert p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 0}})[0] == 200
    load(p, 300)
    harness.time.sleep(2.5)
    assert percent(p) == 0
    assert "next step" not in p.stderr_text()


def test_the_p99_bound_measures_the_backend_not_the_client(start_proxy, backend_factory,
                                                          tmp_path):
    """Two equally fast backends; the rollout side's users upload slowly. The
    p99 bound compares the backends' answer times, so it holds (it counted
    the whole exchange: 275 ms against 0.2 ms, and pulled the rollout back).
    The bound is wide: sub-millisecond answers on a loaded machine (ASan,
    other jobs) differ by a scheduler delay, 2 ms against 0.3."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern")
    guard = {"max_p99_ratio": 50.0, "min_requests": 4, "window_s": 10}
    p = start(start_proxy, legacy, modern,
              {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id",
               "guard": guard}, tmp_path)
    sides = dict(zip(["u%d" % i for i in range(30)], load(p, 30)))
    for user, side in sides.items():
        with p.client() as c:
            c.send(b"POST /api/orders HTTP/1.1\r\nHost: t\r\nX-User-Id: %s\r\n"
                   b"Content-Length: 4\r\n\r\n" % user.encode())
            if side == "modern":
                harness.time.sleep(0.3)  # the client's pace
            c.send(b"body")
            assert c.read_response().status == 200
    assert {"legacy", "modern"} <= set(sides.values())
    harness.time.sleep(2.5)  # two guard ticks
    route = p.admin("GET", "/api/routes/orders")[1]
    assert route["guard"]["tripped"] is False, route["guard"]["reason"]
    assert route["rollout"]["percent"] == 50


def test_a_slow_new_backend_trips_the_p99_bound(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", harness.delayed(0.05))
    guard = {"max_p99_ratio": 3.0, "min_requests": 4, "window_s": 10}
    p = start(start_proxy, legacy, modern,
              {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id",
               "guard": guard}, tmp_path)
    load(p, 30)
    harness.wait_for(lambda: "guard: route orders: p99" in p.stderr_text(), 5,
                     what="the guard tripping on p99")
    assert p.admin("GET", "/api/routes/orders")[1]["rollout"]["percent"] == 0


def test_a_guard_on_a_route_with_a_long_name_trips(start_proxy, backend_factory, tmp_path):
    """64 four-byte characters (256 bytes): the counters cut such names at 71
    bytes and the guard never saw its route's traffic, nor could it change
    the route (its copy of the name was cut at 255)."""
    from urllib.parse import quote
    name = "\U0001F333" * 64
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", flaky())
    guard = {"max_error_rate": 5.0, "min_requests": 20, "window_s": 10}
    p = start(start_proxy, legacy, modern,
              {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id",
               "guard": guard}, tmp_path, name=name)
    load(p, 120)
    harness.wait_for(lambda: "pulled back" in p.stderr_text(), 5, what="the guard tripping")
    route = p.admin("GET", "/api/routes/" + quote(name))[1]
    assert route["guard"]["tripped"] is True and route["rollout"]["percent"] == 0


def test_steps_wait_while_the_rollout_side_sheds_its_users(start_proxy, backend_factory,
                                                          tmp_path):
    """modern at its max_conns hands the users it has no room for back to
    legacy: no error for the guard to see, but the step to 100 % would send
    it twice as many. The guard holds the step while more than 1 % of
    modern's requests fall back (strangler_fallbacks_total)."""
    def slow(req, conn):
        time.sleep(0.05)
        return Response(200, b"ok", headers=[("X-Backend", "modern")])
    legacy, modern = backend_factory("legacy"), backend_factory("modern", slow)
    rollout = {"backend": "modern", "percent": 50, "sticky": "header:X-User-Id",
               "guard": {"max_error_rate": 1.0, "min_requests": 5, "window_s": 5,
                         "steps": [50, 100], "step_interval_s": 1}}
    p = start(start_proxy, legacy, {"url": modern.url, "max_conns": 1}, rollout, tmp_path)
    stop = time.monotonic() + 3.5

    def users(k):
        with p.client() as c:
            i = 0
            while time.monotonic() < stop:
                c.request("GET", "/api/orders", headers=[("X-User-Id", "u%d-%d" % (k, i))])
                i += 1
    threads = [threading.Thread(target=users, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    st, text = p.admin("GET", "/metrics")
    fell = int(re.search(r'^strangler_fallbacks_total\{route="orders",backend="modern"\} (\d+)$',
                         text, re.M).group(1))
    assert fell > 10, text
    route = p.admin("GET", "/api/routes/orders")[1]
    assert route["rollout"]["percent"] == 50, route
    assert "guard-step" not in json.dumps(p.admin("GET", "/api/audit")[1])


def drop_backend_from_file(p, name):
    text = open(p.conf_path).read()
    start = text.index("  %s = " % name)
    open(p.conf_path, "w").write(text[:start] + text[text.index("\n", start) + 1:])
    harness.reload_and_wait(p, 1)


def test_a_trip_is_in_force_when_a_reload_made_part_of_the_override_unfit(
        start_proxy, backend_factory, tmp_path):
    """A stored override that moved the route's base to a backend a reload
    then removed: that part is skipped, and the guard's pull-back, merged
    into the same override, must still take effect (not be skipped with it
    while the guard says tripped)."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", flaky())
    spare = backend_factory("spare")
    guard = {"max_error_rate": 5.0, "min_requests": 20, "window_s": 10}
    route = {"name": "orders", "match": {"path_prefix": "/api"}, "backend": "legacy",
             "rollout": {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id",
                         "guard": guard}}
    p = start_proxy({"legacy": legacy, "modern": modern, "spare": spare}, routes=[route],
                    admin={"state_file": str(tmp_path / "state.json")})
    assert p.admin("PATCH", "/api/routes/orders", {"backend": "spare"})[0] == 200
    drop_backend_from_file(p, "spare")
    assert 'override of route "orders" skipped: backend: unknown backend "spare"' in \
        p.stderr_text()
    st, r = p.admin("GET", "/api/routes/orders")
    assert (r["backend"], r["rollout"]["percent"]) == ("legacy", 50)
    assert r["override_skipped"]["override"] == {"backend": "spare"}
    load(p, 120)
    harness.wait_for(lambda: "guard: route orders: error rate" in p.stderr_text(), 5,
                     what="the guard tripping")
    st, r = p.admin("GET", "/api/routes/orders")
    assert r["guard"]["tripped"] is True
    assert r["rollout"]["percent"] == 0, r
    assert r["override"] == {"rollout": {"percent": 0}}  # the part in force
    assert r["override_skipped"]["override"] == {"backend": "spare"}
    assert set(load(p, 40)) == {"legacy"}
    # an operator's PATCH on that route is in force too
    p.admin("POST", "/api/routes/orders/guard/rearm")
    st, r = p.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 100}})
    assert st == 200 and r["rollout"]["percent"] == 100, r


# A zero-downtime upgrade (operations.md): the new process starts beside the
# old one (SO_REUSEPORT), the old one gets SIGTERM and finishes what it has.
# Its guard must not judge that remainder and write its own view into the
# shared admin.state_file over what the new process saved since (here a
# server the operator drained on the new process for a deploy).


def slow_500(req, conn):
    """The new backend fails, slowly."""
    time.sleep(2.0)
    return Response(500, b"boom", headers=[("X-Backend", "modern")])


def test_a_stopping_process_does_not_overwrite_the_state_file(start_proxy, backend_factory,
                                                              tmp_path):
    """The stopping process writes nothing to the state file."""
    slow = harness.by_path({"/slow": harness.delayed(6.0)})
    legacy1, legacy2 = backend_factory("legacy1", slow), backend_factory("legacy2", slow)
    modern = backend_factory("modern", slow_500)
    state = tmp_path / "state.json"
    guard = {"max_error_rate": 5.0, "min_requests": 5, "window_s": 30}
    routes = [{"name": "orders", "match": {"path_prefix": "/api"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 100.0, "sticky": "header:X-User-Id",
                           "guard": guard}}]
    old = start_proxy({"legacy": {"servers": [legacy1.url, legacy2.url]}, "modern": modern},
                      routes=routes, admin={"state_file": str(state)})
    # requests in flight on the old process (the new backend fails them, slowly)
    clients = []
    for i in range(8):
        c = old.client(timeout=10)
        c.send(harness.build_request("GET", "/api/o%d" % i, [("X-User-Id", "u%d" % i)]))
        clients.append(c)
    modern.wait_requests(8)
    # and a long one (a download, say) that keeps it draining a while
    long = old.client(timeout=10)
    long.send(harness.build_request("GET", "/slow"))
    # the new process, same file (same listen and admin addresses: SO_REUSEPORT)
    err = open(tmp_path / "new.stderr", "wb")
    new = subprocess.Popen([harness.BINARY, "-c", old.conf_path], stdin=subprocess.DEVNULL,
                           stdout=err, stderr=err)
    try:
        harness.wait_for(lambda: b"admin API on" in open(tmp_path / "new.stderr", "rb").read(), 5,
                         what="the new process")
        os.kill(old.pid, signal.SIGTERM)
        harness.wait_for(lambda: "stopping; finishing" in old.stderr_text(), 3)
        os.kill(old.pid, signal.SIGHUP)  # a reload now is the new process's business
        harness.wait_for(lambda: "SIGHUP: stopping: no reload" in old.stderr_text(), 3)
        # the operator drains legacy1 for a deploy: the old process says 503,
        # a retry lands on the new one
        server = "127.0.0.1:%d" % legacy1.port
        for _ in range(50):
            st, body = old.admin("PATCH", "/api/backends/legacy", {"server": server, "drain": True})
            if st == 200:
                break
            assert st == 503, (st, body)
        assert st == 200
        saved = json.load(open(state))
        assert saved["drained"] == [legacy1.url], saved
        # the old process's requests end (500s): its guard trips while it drains
        for c in clients:
            assert c.read_response().status == 500
            c.close()
        time.sleep(2.0)
        saved = json.load(open(state))
        # what the running (new) process holds must still be on disk
        assert saved["drained"] == [legacy1.url], (saved, old.stderr_text()[-1500:])
        long.close()
    finally:
        new.send_signal(signal.SIGTERM)
        new.wait(timeout=10)
        err.close()
