"""The dashboard in a real browser: headless Chromium (Debian's) driven by
playwright-core loads the page from a running proxy, the numbers it shows are
checked against the admin API, a control is used and its effect checked, and a
screenshot is saved."""
import http.client
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from conftest import backend_factory, start_proxy  # noqa: E402,F401

NODE_MODULES = os.path.join(HERE, "node_modules", "playwright-core")


def admin(p, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", p.admin_port, timeout=5)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"} if body is not None else {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def test_dashboard_shows_the_api_and_changes_a_route(start_proxy, backend_factory, tmp_path):
    assert shutil.which("node"), "node is needed for the browser test"
    assert os.path.isdir(NODE_MODULES), "run: npm ci --prefix tests/dashboard"
    assert os.path.exists(os.environ.get("CHROMIUM", "/usr/bin/chromium")), "apt install chromium"
    legacy = backend_factory("legacy", lambda req, conn: harness.Response(
        200, b'{"v": 1}', headers=[("Content-Type", "application/json"), ("X-Backend", "legacy")]))
    modern = backend_factory("modern", lambda req, conn: harness.Response(
        200, b'{"v": 2}', headers=[("Content-Type", "application/json"), ("X-Backend", "modern")]))
    admin_port = harness.free_port()
    routes = [{"name": "orders", "match": {"path_prefix": "/api/orders"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 25.0, "sticky": "header:X-User-Id"},
               "shadow": {"backend": "@other"}},
              {"name": "users", "match": {"path_prefix": "/api/users"}, "backend": "modern"},
              {"name": "export-v1", "match": {"path_prefix": "/api/v1/export"}, "return": 410}]
    spare = backend_factory("spare")  # no route uses it yet
    dead = harness.refused_port()
    # the spare backend's second server, a backup of weight 2, refuses its
    # health checks: the page shows it down, with its settings, and the
    # backend up
    spare_def = {"servers": [spare.url, {"url": "http://127.0.0.1:%d" % dead, "weight": 2,
                                         "backup": True}],
                 "health": {"path": "/health", "unhealthy": 1, "interval_ms": 200},
                 "balance": "least_conn", "max_conns": 8, "retry_on_status": [502, 503],
                 "per_try_timeout_ms": 900,
                 "host_header": "spare.internal",
                 "request_headers": {"set": {"X-Api-Key": "k-secret"}, "remove": ["X-Debug"]},
                 "response_headers": {"remove": ["Server"]},
                 "path_rewrite": [{"prefix": "/api", "to": "/"}]}
    # legacy's second copy answers 500 to everything (and stays up): the page
    # shows its share of failures
    flaky = backend_factory("flaky", lambda req, conn: harness.Response(500, b"no"))
    legacy_def = {"servers": [legacy.url, flaky.url], "health": {"unhealthy": 100}}
    p = start_proxy({"legacy": legacy_def, "modern": modern, "spare": spare_def}, routes=routes,
                    admin={"address": "127.0.0.1:%d" % admin_port,
                           "state_file": str(tmp_path / "state.json")})
    p.admin_port = admin_port
    harness.wait_for(lambda: "admin API on" in p.stderr_text(), what="admin listener")
    with p.client() as c:
        for i in range(40):
            c.request("GET", "/api/orders/%d" % i, headers=[("X-User-Id", "u%d" % i)])
        for i in range(10):
            c.request("GET", "/api/users/%d" % i)
        c.request("GET", "/elsewhere")
    harness.wait_for(lambda: not json.loads(admin(p, "GET", "/api/backends")[1])
                     ["backends"][2]["servers"][1]["up"], what="the refusing server down")
    harness.wait_for(lambda: json.loads(admin(p, "GET", "/api/routes/orders")[1])
                     ["shadow_counters"]["compared"] >= 40, what="the mirrors compared")
    api = json.loads(admin(p, "GET", "/api/routes")[1])
    # the flaky server's share of failures, as the API counts it (its answers
    # to the shadows of modern's requests count as answers: ok)
    fl = json.loads(admin(p, "GET", "/api/backends")[1])["backends"][0]["servers"][1]
    assert fl["failed"] > 0 and fl["ok"] > 0, fl
    flaky_failed = 100 * fl["failed"] / (fl["ok"] + fl["failed"])
    # a drained server says so
    assert admin(p, "PATCH", "/api/backends/spare",
                 {"server": "127.0.0.1:%d" % spare.port, "drain": True})[0] == 200
    shot = os.path.abspath(os.path.join(os.environ.get("STRANGLER_BUILD", str(tmp_path)),
                                        "dashboard.png"))
    out = subprocess.run(["node", os.path.join(HERE, "drive.mjs"),
                          "http://127.0.0.1:%d/" % admin_port, "orders", "40", shot],
                         capture_output=True, text=True, timeout=120, cwd=HERE)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    orders = next(r for r in api["routes"] if r["name"] == "orders")
    # what the page shows is what the API says
    assert seen["state"] == "25 %"
    assert seen["sides"] == {b: c["requests"] for b, c in orders["counters"].items()}
    totals = {}
    for counters in [api["default_counters"]] + [r["counters"] for r in api["routes"]]:
        for b, c in counters.items():
            totals[b] = totals.get(b, 0) + c["requests"]
    assert seen["shares"] == totals
    # users is on modern, the default backend is legacy; export-v1 answers
    # itself: it has no backend to move (it was counted, "1 of 3")
    assert seen["moved"] == "1 of 2"
    # a route that answers itself says so, and has no backend to change
    assert seen["states"]["export-v1"] == "answers 410"
    assert sorted(seen["selects"]) == ["orders", "users"]
    assert seen["movedRef"] == "legacy"  # what "moved" is judged against, named
    assert seen["diffrate"].startswith("100.0 % of ")
    assert seen["diffs"] is True
    # a route can be moved to any backend, not only to those routes use already
    assert seen["backends"] == ["legacy", "modern", "spare"]
    # each backend's health, and its servers'
    assert seen["health"] == {"legacy": "up", "modern": "up", "spare": "up (some servers down)"}
    assert seen["servers"] == {"legacy-127.0.0.1:%d" % legacy.port: "127.0.0.1:%d: up" % legacy.port,
                               "legacy-127.0.0.1:%d" % flaky.port:
                               "127.0.0.1:%d: up, %.1f %% failed" % (flaky.port, flaky_failed),
                               "modern-127.0.0.1:%d" % modern.port: "127.0.0.1:%d: up" % modern.port,
                               "spare-127.0.0.1:%d" % spare.port:
                               "127.0.0.1:%d: up, drained" % spare.port,
                               "spare-127.0.0.1:%d" % dead:
                               "127.0.0.1:%d (weight 2, backup): down" % dead}
    # how each backend balances, and whether it serves other paths
    assert seen["balance"] == {"legacy": "round robin", "modern": "round robin",
                               "spare": "least_conn, max_conns 8, retry on 502 503, per try 900 ms, "
                               "1 path rule"}
    # what it changes of requests and answers, by name (never the key's value)
    assert seen["changes"] == {"spare": "Host spare.internal; sets X-Api-Key; removes X-Debug; "
                                        "answer removes Server"}
    # the control worked: the API agrees, and the audit trail names the change
    assert seen["after"] == "40 %"
    after = json.loads(admin(p, "GET", "/api/routes/orders")[1])
    assert after["rollout"]["percent"] == 40
    audit = json.loads(admin(p, "GET", "/api/audit")[1])["changes"]
    assert audit[-1]["route"] == "orders" and audit[-1]["after"]["rollout"]["percent"] == 40
    assert os.path.getsize(shot) > 10000
    # an outage of the API is said, and no longer once it answers again (the
    # message stayed); a cancelled change does not stop the refresh (the
    # focused button held it)
    assert seen["outage"].startswith("routes: ") and seen["outageCleared"] is True
    assert seen["refreshedAfterCancel"] is True


def test_a_dashboard_whose_token_prompt_is_cancelled_asks_no_more(start_proxy, backend_factory,
                                                                   tmp_path):
    """With admin.token_file the page asks for the token. Cancelled, it
    asked again at every refresh (every 2 s), the prompt never leaving the
    screen; now it says the token is needed, and asks again when the page
    is loaded again."""
    assert os.path.isdir(NODE_MODULES), "run: npm ci --prefix tests/dashboard"
    token = "dashboard-token-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    admin_port = harness.free_port()
    p = start_proxy({"legacy": backend_factory("legacy")},
                    routes=[{"name": "orders", "match": {"path_prefix": "/o"},
                             "backend": "legacy"}],
                    admin={"address": "127.0.0.1:%d" % admin_port,
                           "token_file": str(token_file)})
    harness.wait_for(lambda: "admin API on" in p.stderr_text(), what="admin listener")
    out = subprocess.run(["node", os.path.join(HERE, "drive-token.mjs"),
                          "http://127.0.0.1:%d/" % admin_port, token, "orders"],
                         capture_output=True, text=True, timeout=120, cwd=HERE)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["declined"]["prompts"] == 1, seen
    assert "the admin token is needed" in seen["declined"]["msg"], seen
    assert seen["given"] == {"prompts": 2, "state": "legacy"}, seen
