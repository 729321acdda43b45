"""Shadow mirroring and comparison: what the SRE reads in the diff log, and
that the client's response never changes because of the shadow."""
import gzip
import json
import re
import os
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import Response

# --------------------------------------------------------------------------
# helpers


def test_a_reload_that_shortens_the_shadow_timeout_applies_to_new_shadows(start_proxy,
                                                                           backend_factory,
                                                                           tmp_path):
    """A mirror that never answers: a shadow started after a reload to a
    shorter timeout_ms times out after the new one, though a shadow started
    before, under the longer one, is still waiting; that one times out after
    its own."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern", harness.delayed(10))
    routes = [shadow_route()]
    log = str(tmp_path / "diffs.jsonl")
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=routes, admin={},
                    shadow_defaults={"diff_log": log, "timeout_ms": 2500})
    timeouts = lambda: p.admin("GET", "/api/routes/r")[1]["shadow_counters"]["timeouts"]
    assert get(p, "/old").status == 200
    with open(p.conf_path, "w") as f:
        f.write(harness.make_config(p.port, {"legacy": legacy, "modern": modern}, None, routes,
                                    1, p.access_log_path, admin={"address": "%s:%d" % (
                                        harness.HOST, p.admin_port)},
                                    shadow_defaults={"diff_log": log, "timeout_ms": 300}))
    harness.reload_and_wait(p, 1)
    t0 = time.monotonic()
    assert get(p, "/new").status == 200
    harness.wait_for(lambda: timeouts() == 1, timeout=2, what="the new shadow's timeout")
    assert time.monotonic() - t0 < 1.5
    time.sleep(0.3)
    assert timeouts() == 1  # the old one has until 2.5 s
    harness.wait_for(lambda: timeouts() == 2, timeout=4, what="the old shadow's timeout")


def json_backend(doc_for, headers=()):
    """A backend answering JSON built by doc_for(request)."""
    def handler(req, conn):
        body = json.dumps(doc_for(req)).encode()
        return Response(200, body, headers=[("Content-Type", "application/json")] + list(headers))
    return handler


def shadow_route(backend="modern", **shadow):
    sh = {"backend": backend}
    sh.update(shadow)
    return {"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy", "shadow": sh}


def start(start_proxy, legacy, modern, routes, tmp_path, **defaults):
    log = str(tmp_path / "diffs.jsonl")
    sd = {"diff_log": log, "timeout_ms": 2000}
    sd.update(defaults)
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=routes, shadow_defaults=sd)
    p.diff_log = log
    return p


def diff_lines(proxy, kind="diff"):
    try:
        with open(proxy.diff_log) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return [x for x in lines if x["type"] == kind]


def summary(proxy):
    """Stops the proxy (which writes the final summary) and returns it."""
    assert proxy.stop() == 0
    s = diff_lines(proxy, "summary")
    assert s, "no summary line in the diff log"
    return s[-1]


def get(proxy, target, headers=(), method="GET", body=None):
    with proxy.client() as c:
        return c.request(method, target, headers=headers, body=body)


def wait_shadow(backend, n=1):
    return backend.wait_requests(n, timeout=5)


# --------------------------------------------------------------------------
# comparison results


def test_identical_answers_give_no_diff(start_proxy, backend_factory, tmp_path):
    doc = lambda req: {"a": 1, "b": [1, 2]}
    legacy = backend_factory("legacy", json_backend(doc))
    modern = backend_factory("modern", json_backend(doc))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    for _ in range(5):
        assert get(p, "/x").status == 200
    wait_shadow(modern, 5)
    s = summary(p)
    assert diff_lines(p) == []
    assert (s["mirrored"], s["compared"], s["identical"], s["different"]) == (5, 5, 5, 0)


def test_json_field_difference_reported_at_its_pointer(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy", json_backend(lambda r: {"results": [{"id": 1, "score": 0.9}], "n": 1}))
    modern = backend_factory("modern", json_backend(lambda r: {"n": 1, "results": [{"score": 0.8, "id": 1}]}))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    r = get(p, "/api/search?q=red", headers=[("X-Request-Id", "req-42")])
    assert r.status == 200 and json.loads(r.body)["results"][0]["score"] == 0.9
    wait_shadow(modern)
    s = summary(p)
    (d,) = diff_lines(p)
    assert d["route"] == "r" and d["path"] == "/api/search" and d["request_id"] == "req-42"
    assert d["primary"]["backend"] == "legacy" and d["shadow"]["backend"] == "modern"
    assert d["differences"] == [{"kind": "json", "where": "/results/0/score",
                                 "primary": 0.9, "shadow": 0.8, "noise": False}]
    assert s["different"] == 1 and s["identical"] == 0


def test_status_and_header_differences(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy", lambda req, conn: Response(
        200, b"same", headers=[("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")]))
    modern = backend_factory("modern", lambda req, conn: Response(
        404, b"same", headers=[("content-type", "text/plain")]))
    routes = [shadow_route(compare={"headers": ["Content-Type", "Cache-Control"]})]
    p = start(start_proxy, legacy, modern, routes, tmp_path)
    assert get(p, "/x").status == 200
    wait_shadow(modern)
    summary(p)
    (d,) = diff_lines(p)
    kinds = {(x["kind"], x["where"]): (x["primary"], x["shadow"]) for x in d["differences"]}
    assert kinds[("status", None)] == (200, 404)
    assert kinds[("header", "Cache-Control")] == ("max-age=60", None)
    assert ("header", "Content-Type") not in kinds  # names are case-insensitive
    assert len(kinds) == 2


def test_bytes_difference(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy", lambda req, conn: Response(200, b"hello world"))
    modern = backend_factory("modern", lambda req, conn: Response(200, b"hello there"))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    assert get(p, "/x").body == b"hello world"
    wait_shadow(modern)
    summary(p)
    (d,) = diff_lines(p)
    (x,) = d["differences"]
    assert x["kind"] == "body" and x["where"] == "bytes@6"


def test_key_order_and_gzip_are_not_differences(start_proxy, backend_factory, tmp_path):
    doc = {"user": {"id": 7, "name": "ann"}, "tags": ["a", "b"], "n": 1.0}
    legacy = backend_factory("legacy", lambda req, conn: Response(
        200, json.dumps(doc).encode(), headers=[("Content-Type", "application/json")]))
    reordered = json.dumps({"n": 1, "tags": ["a", "b"], "user": {"name": "ann", "id": 7}})
    modern = backend_factory("modern", lambda req, conn: Response(
        200, gzip.compress(reordered.encode()),
        headers=[("Content-Type", "application/json; charset=utf-8"), ("Content-Encoding", "gzip")]))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    assert json.loads(get(p, "/x").body) == doc
    wait_shadow(modern)
    s = summary(p)
    assert diff_lines(p) == [] and s["identical"] == 1
    host, pid, started = s["instance"].rsplit(":", 2)  # names the process
    assert host and pid == str(p.pid) and abs(int(started) - time.time()) < 60


def test_ignore_rules_suppress_only_what_they_name(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy", json_backend(
        lambda r: {"generated_at": "t1", "results": [{"took_ms": 3, "id": 1}], "total": 1}))
    modern = backend_factory("modern", json_backend(
        lambda r: {"generated_at": "t2", "results": [{"took_ms": 9, "id": 1}], "total": 2}))
    routes = [shadow_route(compare={"ignore_json": ["/generated_at", "/results/*/took_ms"]})]
    p = start(start_proxy, legacy, modern, routes, tmp_path)
    get(p, "/x")
    wait_shadow(modern)
    summary(p)
    (d,) = diff_lines(p)
    assert [x["where"] for x in d["differences"]] == ["/total"]


def test_noise_detection(start_proxy, backend_factory, tmp_path):
    counter = iter(range(1000000))
    # legacy's "nonce" changes on every answer (noise); "v" differs for real
    legacy = backend_factory("legacy", json_backend(lambda r: {"nonce": next(counter), "v": 1}))
    modern = backend_factory("modern", json_backend(lambda r: {"nonce": -1, "v": 2}))
    routes = [shadow_route(noise={"samples": 1})]
    p = start(start_proxy, legacy, modern, routes, tmp_path)
    get(p, "/x")
    harness.wait_for(lambda: len(legacy.requests) >= 2, what="the noise sample")
    wait_shadow(modern)
    s = summary(p)
    (d,) = diff_lines(p)
    got = {x["where"]: x["noise"] for x in d["differences"]}
    assert got == {"/nonce": True, "/v": False}
    assert s["different"] == 1
    # the noise sample is marked as a shadow request too
    assert sum(1 for r in legacy.requests if r.header("X-Strangler-Shadow") == "1") == 1


def test_a_post_is_never_sent_twice_for_a_noise_sample_or_a_mirror_retry(
        start_proxy, backend_factory, tmp_path):
    """A mirrored POST without a body was sent a second time to the serving
    backend as the noise sample (the primary, production, acted twice), and
    a mirror whose pooled connection turned out closed was sent again. Only
    what may be sent twice (no body, an idempotent method) is; and a noise
    sample only for a safe method: a DELETE or PUT was sent twice to
    production for it."""
    seen = []

    def close_after_answer(req, conn):  # every shadow connection is closed after use
        seen.append(req.method)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        conn.send(Response(200, b"{}", headers=[("Content-Type", "application/json")])
                  .serialize())
        return harness.CLOSE

    legacy = backend_factory("legacy", json_backend(lambda r: {"v": 1}))
    modern = backend_factory("modern", close_after_answer)
    routes = [shadow_route(noise={"samples": 1}, methods=["GET", "POST"])]
    p = start(start_proxy, legacy, modern, routes, tmp_path)
    for _ in range(3):
        assert get(p, "/charge", method="POST").status == 200
    harness.wait_for(lambda: len(seen) >= 3, what="three mirrors")
    time.sleep(0.3)
    assert [r.method for r in legacy.requests] == ["POST"] * 3  # no noise sample
    assert seen == ["POST"] * 3  # each mirrored once
    # a GET still gets its noise sample
    assert get(p, "/x").status == 200
    harness.wait_for(lambda: len(legacy.requests) == 5, what="the GET and its noise sample")
    p.stop()
    routes = [shadow_route(noise={"samples": 1}, methods=["GET", "DELETE", "PUT"])]
    legacy.requests.clear()
    p = start(start_proxy, legacy, modern, routes, tmp_path)
    for method in ("DELETE", "PUT", "GET"):
        assert get(p, "/item/1", method=method).status == 200
    harness.wait_for(lambda: len(legacy.requests) == 4, what="the requests and the GET's sample")
    time.sleep(0.3)
    assert [r.method for r in legacy.requests] == ["DELETE", "PUT", "GET", "GET"]


def test_noise_only_difference_counts_as_noise(start_proxy, backend_factory, tmp_path):
    counter = iter(range(1000000))
    legacy = backend_factory("legacy", json_backend(lambda r: {"nonce": next(counter)}))
    modern = backend_factory("modern", json_backend(lambda r: {"nonce": -1}))
    p = start(start_proxy, legacy, modern, [shadow_route(noise={"samples": 1})], tmp_path)
    get(p, "/x")
    harness.wait_for(lambda: len(legacy.requests) >= 2, what="the noise sample")
    wait_shadow(modern)
    s = summary(p)
    assert diff_lines(p) == []
    assert (s["noise"], s["different"]) == (1, 0)


def test_secret_headers_and_redacted_fields_never_logged(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy", lambda req, conn: Response(
        200, json.dumps({"user": {"email": "a@x", "id": 1}}).encode(),
        headers=[("Content-Type", "application/json"), ("Set-Cookie", "sid=SECRET1")]))
    modern = backend_factory("modern", lambda req, conn: Response(
        200, json.dumps({"user": {"email": "b@x", "id": 2}}).encode(),
        headers=[("Content-Type", "application/json"), ("Set-Cookie", "sid=SECRET2")]))
    routes = [shadow_route(compare={"headers": ["Set-Cookie"], "redact_json": ["/user/email"]})]
    p = start(start_proxy, legacy, modern, routes, tmp_path)
    get(p, "/x", headers=[("Authorization", "Bearer TOKEN"), ("Cookie", "sid=C")])
    wait_shadow(modern)
    summary(p)
    text = open(p.diff_log).read()
    for secret in ("SECRET1", "SECRET2", "a@x", "b@x", "TOKEN"):
        assert secret not in text
    (d,) = diff_lines(p)
    got = {x["where"]: (x["primary"], x["shadow"]) for x in d["differences"]}
    assert got["Set-Cookie"] == ("[redacted]", "[redacted]")
    assert got["/user/email"] == ("[redacted]", "[redacted]")
    assert got["/user/id"] == (1, 2)


# --------------------------------------------------------------------------
# what is mirrored


def test_shadow_request_is_a_faithful_copy_with_marker(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy")
    modern = backend_factory("modern")
    routes = [shadow_route(methods=["GET", "POST"])]
    p = start(start_proxy, legacy, modern, routes, tmp_path)
    body = b"x" * 5000
    r = get(p, "/api/orders?id=3", method="POST", body=body,
            headers=[("X-Request-Id", "rid-1"), ("X-Custom", "v"),
                     ("X-Strangler-Shadow", "1")])  # a client cannot fake the marker
    assert r.status == 200
    (prim,) = legacy.wait_requests(1)
    (shad,) = wait_shadow(modern)
    assert prim.header("X-Strangler-Shadow") is None
    assert shad.header("X-Strangler-Shadow") == "1"
    assert len(shad.header_all("X-Strangler-Shadow")) == 1
    for rec in (prim, shad):
        assert (rec.method, rec.target, rec.body_len) == ("POST", "/api/orders?id=3", 5000)
        assert rec.header("X-Request-Id") == "rid-1" and rec.header("X-Custom") == "v"
    assert shad.body_sha256 == prim.body_sha256


def test_post_not_mirrored_unless_listed(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy")
    modern = backend_factory("modern")
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    assert get(p, "/x", method="POST", body=b"{}").status == 200
    assert get(p, "/y").status == 200
    wait_shadow(modern, 1)
    time.sleep(0.2)
    assert [r.method for r in modern.requests] == ["GET"]


def test_percent_zero_mirrors_nothing(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy")
    modern = backend_factory("modern")
    p = start(start_proxy, legacy, modern, [shadow_route(percent=0.0)], tmp_path)
    for _ in range(10):
        get(p, "/x")
    time.sleep(0.2)
    assert modern.requests == []


def test_other_side_of_a_rollout(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy")
    modern = backend_factory("modern")
    route = {"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
             "rollout": {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id"},
             "shadow": {"backend": "@other"}}
    p = start(start_proxy, legacy, modern, [route], tmp_path)
    for i in range(20):
        r = get(p, "/x", headers=[("X-User-Id", "u%d" % i)])
        assert r.status == 200
    harness.wait_for(lambda: len(legacy.requests) + len(modern.requests) >= 40, what="mirrors")
    for b in (legacy, modern):
        marked = [r for r in b.requests if r.header("X-Strangler-Shadow")]
        served = [r for r in b.requests if not r.header("X-Strangler-Shadow")]
        assert marked and served
    # every request was served by one side and mirrored to the other
    ids = lambda b, m: sorted(r.header("X-User-Id") for r in b.requests
                              if bool(r.header("X-Strangler-Shadow")) == m)
    assert ids(legacy, False) == ids(modern, True)
    assert ids(modern, False) == ids(legacy, True)


def test_both_ways_of_a_rollout_are_counted_and_reported_apart(start_proxy, backend_factory,
                                                              tmp_path):
    """With "@other", legacy's requests are mirrored to modern and modern's to
    legacy. Each direction is counted apart in the summary and reported
    apart by diff-report, named by backend: the same missing result reads
    "shadow": null one way and "primary": null the other, and the latency of
    legacy and modern were mixed into one primary and one shadow figure."""
    legacy = backend_factory("legacy", json_backend(lambda r: {"results": [{"id": 1}]}))
    modern = backend_factory("modern", json_backend(lambda r: {"results": []}))
    route = {"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
             "rollout": {"backend": "modern", "percent": 50.0, "sticky": "header:X-User-Id"},
             "shadow": {"backend": "@other"}}
    p = start(start_proxy, legacy, modern, [route], tmp_path)
    for i in range(20):
        assert get(p, "/x", headers=[("X-User-Id", "u%d" % i)]).status == 200
    harness.wait_for(lambda: len(legacy.requests) + len(modern.requests) >= 40, what="mirrors")
    time.sleep(0.3)
    served = {n: len([r for r in b.requests if not r.header("X-Strangler-Shadow")])
              for n, b in (("legacy", legacy), ("modern", modern))}
    s = summary(p)
    assert (s["compared"], s["different"]) == (20, 20), s
    dirs = {(d["primary"], d["shadow"]): d for d in s["directions"]}
    assert sorted(dirs) == [("legacy", "modern"), ("modern", "legacy")], dirs
    nl, nm = served["legacy"], served["modern"]
    assert 0 < nl < 20 and nl + nm == 20
    for (pri, _), d in dirs.items():
        n = served[pri]
        assert (d["mirrored"], d["compared"], d["different"]) == (n, n, n), d
        assert d["since"] >= s["counters_since"]
    out = subprocess.run([harness.BINARY, "diff-report", p.diff_log], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "route r: 20 compared, 0 identical (0.0 %), 20 different (100.0 %)" in text
    one_way, other_way = text.split("\n  modern -> legacy")
    assert re.search(r"\n  legacy -> modern, since \S+: %d compared, 0 identical \(0.0 %%\), "
                     r"%d different" % (nl, nl), one_way), text
    assert "    latency p50/p99: primary legacy " in one_way
    assert re.search(r"\n      json /results/\*  %d " % nl, one_way), text
    assert re.match(r", since \S+: %d compared, 0 identical \(0.0 %%\), %d different" % (nm, nm),
                    other_way), text
    assert "    latency p50/p99: primary modern " in other_way
    assert re.search(r"\n      json /results/\*  %d " % nm, other_way), text


# --------------------------------------------------------------------------
# the client is never affected


def raw_exchange(p, target):
    """The head (its Date, which the proxy adds, at most a second apart
    between two exchanges, made the same) and the body, byte for byte."""
    with p.client() as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: t\r\nX-Request-Id: fixed\r\n\r\n" % target.encode())
        r = c.read_response()
        head = re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: (now)\r\n", r.raw_head)
        assert head != r.raw_head, r.raw_head  # a Date was there, once
        return head, r.body


def test_client_response_identical_with_and_without_shadow(start_proxy, backend_factory, tmp_path):
    fixed = lambda req, conn: Response(200, b'{"a": 1}', headers=[("Content-Type", "application/json"),
                                                                ("X-Thing", "1")])
    legacy = backend_factory("legacy", fixed)
    modern = backend_factory("modern", lambda req, conn: Response(500, b"boom"))
    plain = start_proxy({"legacy": legacy, "modern": modern})
    shadowed = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    assert raw_exchange(plain, "/x") == raw_exchange(shadowed, "/x")


def test_dead_slow_or_broken_shadow_leaves_primary_intact(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy", lambda req, conn: Response(200, b"primary"))
    slow = backend_factory("modern", harness.delayed(1.5))
    garbage = backend_factory("garbage", harness.raw(b"NOT HTTP AT ALL\r\n\r\n"))
    backends = {"legacy": legacy, "slow": slow, "garbage": garbage,
                "dead": "http://127.0.0.1:%d" % harness.refused_port()}
    routes = [{"name": n, "match": {"path_prefix": "/" + n}, "backend": "legacy",
               "shadow": {"backend": n}} for n in ("slow", "garbage", "dead")]
    log = str(tmp_path / "diffs.jsonl")
    p = start_proxy(backends, routes=routes,
                    shadow_defaults={"diff_log": log, "timeout_ms": 500})
    p.diff_log = log
    for name in ("slow", "garbage", "dead"):
        with p.client() as c:
            for _ in range(3):
                t0 = time.monotonic()
                r = c.request("GET", "/" + name)
                took = time.monotonic() - t0
                assert (r.status, r.body) == (200, b"primary"), name
                assert took < 0.5, "%s shadow delayed the primary by %.2fs" % (name, took)
    time.sleep(0.7)  # let the slow shadows time out
    assert p.stop() == 0
    sums = {s["route"]: s for s in diff_lines(p, "summary")}
    assert sums["slow"]["shadow_timeouts"] == 3
    assert sums["garbage"]["shadow_errors"] == 3
    assert sums["dead"]["shadow_errors"] == 3
    assert all(s["different"] == 0 for s in sums.values())


def test_over_budget_is_skipped_and_counted(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", harness.delayed(0.5))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path, max_in_flight=2)
    results = []

    def one():
        results.append(get(p, "/x").status)
    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6
    time.sleep(0.8)
    s = summary(p)
    assert s["mirrored"] == 2
    assert s["skipped"]["budget"] == 4


def test_large_bodies_are_skipped_not_compared(start_proxy, backend_factory, tmp_path):
    big = b"y" * 5000
    legacy = backend_factory("legacy", lambda req, conn: Response(200, big))
    modern = backend_factory("modern", lambda req, conn: Response(200, b"small"))
    p = start(start_proxy, legacy, modern, [shadow_route(methods=["GET", "POST"])], tmp_path,
              max_body_bytes=1000)
    assert get(p, "/x").body == big  # the client still gets all of it
    r = get(p, "/x", method="POST", body=b"z" * 3000)
    assert r.status == 200 and legacy.requests[-1].body_len == 3000
    time.sleep(0.3)
    s = summary(p)
    assert s["skipped"]["response_body_too_large"] == 1
    assert s["skipped"]["request_body_too_large"] == 1
    # a skip is not also a shadow error (the request-body skip was counted twice)
    assert s["shadow_errors"] == 0 and s["compared"] == 0
    assert diff_lines(p) == []


def test_bodies_that_decompress_past_the_limit_are_skipped_not_identical(
        start_proxy, backend_factory, tmp_path):
    """Two different gzip bodies that each inflate past max_body_bytes (the
    default 1 MiB; here 9 MiB, past the 8 MiB that bounded it before) cannot
    be compared; counting them identical (as before) would hide a
    difference, and flatter a guard's difference rate."""
    def zipped(byte):
        body = gzip.compress(byte * (9 << 20))
        return lambda req, conn: Response(200, body, headers=[("Content-Encoding", "gzip")])
    legacy = backend_factory("legacy", zipped(b"a"))
    modern = backend_factory("modern", zipped(b"b"))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    assert gzip.decompress(get(p, "/x").body) == b"a" * (9 << 20)
    wait_shadow(modern)
    time.sleep(0.3)
    s = summary(p)
    assert s["skipped"]["response_body_too_large"] == 1
    assert s["compared"] == 0 and s["identical"] == 0


def test_a_small_gzip_answer_is_decoded_only_up_to_max_body_bytes(start_proxy, backend_factory,
                                                                  tmp_path):
    """max_body_bytes bounds an answer decoded as on the wire: a 200 KB
    gzip bomb of 3 MiB was decoded whole (up to 8 MiB) with max_body_bytes
    64 KiB, and both sides' JSON trees took the proxy to hundreds of MiB."""
    def zipped(byte):
        body = gzip.compress(b"[" + byte * (3 << 20) + b"]")
        return lambda req, conn: Response(200, body, headers=[
            ("Content-Encoding", "gzip"), ("Content-Type", "application/json")])
    legacy = backend_factory("legacy", zipped(b"1,"))
    modern = backend_factory("modern", zipped(b"2,"))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path, max_body_bytes=65536)
    assert get(p, "/x").status == 200
    wait_shadow(modern)
    time.sleep(0.3)
    s = summary(p)
    assert s["skipped"]["response_body_too_large"] == 1 and s["compared"] == 0, s


BIG = (1 << 20) - 64  # a JSON array of about 1 MiB: a third of a second to compare


def big_array(last):
    """A backend answering a JSON array of small numbers, of BIG bytes, whose
    last element is last."""
    body = b"[" + b"1," * ((BIG - 16) // 2) + last + b"]"
    return lambda req, conn: Response(200, body, headers=[("Content-Type", "application/json")])


def test_a_large_comparison_holds_up_no_client(start_proxy, backend_factory, tmp_path):
    """Comparing two 1 MiB JSON answers takes a third of a second (seconds
    under ASan). It ran on the worker's thread as the primary's answer was
    done, before that answer went out: the mirrored client, and every other
    client of the worker, waited for it. It runs on the comparer's thread
    now, and is still counted and logged."""
    n = (1 << 20) - 64

    def big(last, delay):
        body = b"[" + b"1," * ((n - 16) // 2) + last + b"]"

        def handler(req, conn):
            if req.path == "/other":
                return Response(200, b"ok")
            time.sleep(delay)
            return Response(200, body, headers=[("Content-Type", "application/json")])
        return handler, body
    h_legacy, primary = big(b"1", 0.3)  # the mirror has answered by then
    h_modern, _ = big(b"2", 0.0)
    legacy = backend_factory("legacy", h_legacy)
    modern = backend_factory("modern", h_modern)
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path, timeout_ms=60000)
    with p.client(timeout=30) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/api")
        took = time.monotonic() - t0
        assert r.status == 200 and r.body == primary
        assert took < 0.3 + 0.25, "the client waited %.3f s for a 0.3 s backend" % took
        worst = 0.0
        for _ in range(5):  # the same worker, while the comparison runs
            t0 = time.monotonic()
            assert c.request("GET", "/other").status == 200
            worst = max(worst, time.monotonic() - t0)
        assert worst < 0.15, "a request waited %.3f s for the comparison" % worst
    harness.wait_for(lambda: diff_lines(p), timeout=30, what="the difference logged")
    d = diff_lines(p)[0]
    assert [x["where"] for x in d["differences"]] == ["/%d" % ((n - 16) // 2)]
    s = summary(p)
    assert (s["compared"], s["different"]) == (6, 1), s  # the "/other" ones are identical


def test_a_stop_counts_the_comparison_in_progress(start_proxy, backend_factory, tmp_path):
    """A stop right after a large answer: the worker waits for the comparer
    to hand the comparison back, so the final summary counts it and the diff
    log has its line."""
    legacy = backend_factory("legacy", big_array(b"1"))
    modern = backend_factory("modern", big_array(b"2"))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path, timeout_ms=60000)
    assert get(p, "/api").status == 200
    wait_shadow(modern)
    s = summary(p)
    assert (s["compared"], s["different"]) == (1, 1), s
    assert len(diff_lines(p)) == 1


def test_a_primary_retried_on_the_shadow_backend_is_not_compared_with_itself(
        start_proxy, backend_factory, tmp_path):
    """The serving side refuses the connection, so the GET is retried on the
    rollout's other side, which is also the mirror (@other): comparing that
    backend with itself said "identical" about a legacy that never answered."""
    modern = backend_factory("modern")
    dead = "http://127.0.0.1:%d" % harness.refused_port()
    log = str(tmp_path / "diffs.jsonl")
    route = {"name": "r", "match": {"path_prefix": "/"}, "backend": "modern",
             "rollout": {"backend": "legacy", "percent": 100.0}, "shadow": {"backend": "@other"}}
    p = start_proxy({"legacy": dead, "modern": modern}, routes=[route],
                    shadow_defaults={"diff_log": log, "timeout_ms": 2000})
    p.diff_log = log
    r = get(p, "/x")
    assert r.status == 200 and r.header("X-Backend") == "modern"
    time.sleep(0.3)
    s = summary(p)
    assert s["skipped"]["primary_fell_back"] == 1, s
    assert s["compared"] == 0 and s["identical"] == 0
    assert diff_lines(p) == []


def test_a_reload_applies_a_new_summary_interval(start_proxy, backend_factory, tmp_path):
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    routes = [shadow_route()]
    p = start(start_proxy, legacy, modern, routes, tmp_path, summary_interval_ms=60000)
    assert get(p, "/x").status == 200
    wait_shadow(modern)
    sd = {"diff_log": p.diff_log, "timeout_ms": 2000, "summary_interval_ms": 1000}
    with open(p.conf_path, "w") as f:
        f.write(harness.make_config(p.port, {"legacy": legacy, "modern": modern}, None, routes,
                                    1, p.access_log_path, shadow_defaults=sd))
    os.kill(p.pid, signal.SIGHUP)
    harness.wait_for(lambda: "reload: " in p.stderr_text(), what="the reload")
    # one a second from the reload on (it waited out the old minute before)
    harness.wait_for(lambda: len(diff_lines(p, "summary")) >= 2, timeout=3.5,
                     what="two summaries within 3.5 s")


def test_a_reload_that_drops_a_routes_shadow_keeps_its_last_counts(start_proxy, backend_factory,
                                                                   tmp_path):
    """The runbook's last step removes the route's shadow block and reloads:
    the comparisons since the last summary line went into no summary (one
    was written only for a route that went away), and diff-report counted
    them in nothing, for good."""
    legacy = backend_factory("legacy", json_backend(lambda r: {"v": 1}))
    modern = backend_factory("modern", json_backend(lambda r: {"v": 2 if r.path == "/d" else 1}))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    for i, path in enumerate(["/d", "/d", "/d", "/s", "/s"]):
        assert get(p, path).status == 200
        wait_shadow(modern, i + 1)
    harness.wait_for(lambda: len(modern.requests) == 5 and len(diff_lines(p)) == 3,
                     what="5 comparisons")
    plain = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy"}]
    sd = {"diff_log": p.diff_log, "timeout_ms": 2000}
    with open(p.conf_path, "w") as f:
        f.write(harness.make_config(p.port, {"legacy": legacy, "modern": modern}, None, plain,
                                    1, p.access_log_path, shadow_defaults=sd))
    os.kill(p.pid, signal.SIGHUP)
    harness.wait_for(lambda: diff_lines(p, "summary"), what="the route's last summary")
    (summary,) = diff_lines(p, "summary")
    assert (summary["route"], summary["compared"], summary["identical"],
            summary["different"]) == ("r", 5, 2, 3), summary
    assert p.stop() == 0
    assert len(diff_lines(p, "summary")) == 1  # no other at the exit: the route has no shadow
    out = subprocess.run([harness.BINARY, "diff-report", p.diff_log], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.startswith("route r: 5 compared, 2 identical"), out.stdout


def test_a_sticky_shadow_sample_follows_the_documented_hash(start_proxy, backend_factory,
                                                            tmp_path):
    """shadow.percent with a sticky rollout: a user is mirrored when
    FNV-1a(cohort + "/shadow:" + key) % 10000 < percent * 100, whatever the
    cohort's length (a fixed buffer cut cohorts of 89 characters and more)."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    cohort = "c" * 120
    route = {"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
             "rollout": {"backend": "modern", "percent": 0.0, "sticky": "header:X-User-Id",
                         "cohort": cohort},
             "shadow": {"backend": "modern", "percent": 50.0}}
    p = start(start_proxy, legacy, modern, [route], tmp_path)
    users = ["user-%d" % i for i in range(40)]
    want = {"/x/" + u for u in users if harness.rollout_bucket(cohort + "/shadow", u) < 5000}
    assert 5 < len(want) < 35
    for u in users:
        assert get(p, "/x/" + u, headers=[("X-User-Id", u)]).status == 200
        if "/x/" + u in want:  # one at a time: on a busy machine the pacer's first
            # tokens (before any mirror has ended) would skip some as "budget"
            harness.wait_for(lambda: "/x/" + u in {r.path for r in modern.requests},
                             what="the mirror of " + u)
    time.sleep(0.2)
    assert {r.path for r in modern.requests} == want


def test_diff_report_reads_the_log(start_proxy, backend_factory, tmp_path):
    legacy = backend_factory("legacy", json_backend(lambda r: {"results": [{"score": 1}]}))
    modern = backend_factory("modern", json_backend(
        lambda r: {"results": [{"score": 2 if "bad" in r.target else 1}]}))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    for i in range(8):
        get(p, "/q?bad=1" if i < 2 else "/q", headers=[("X-Request-Id", "id%d" % i)])
    wait_shadow(modern, 8)
    summary(p)
    out = subprocess.run([harness.BINARY, "diff-report", p.diff_log], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "route r: 8 compared, 6 identical (75.0 %), 2 different (25.0 %)" in out.stdout
    assert "json /results/*/score" in out.stdout
    assert "id0" in out.stdout and "id1" in out.stdout
    # the same file named twice (a glob and a name) is read once: its
    # differences counted twice, and "logged after the last summary"
    again = subprocess.run([harness.BINARY, "diff-report", p.diff_log,
                            os.path.join(os.path.dirname(p.diff_log), ".",
                                         os.path.basename(p.diff_log))],
                           capture_output=True, text=True, timeout=10)
    assert (again.returncode, again.stdout) == (0, out.stdout), again.stdout
    assert "the same file as one named before: read once" in again.stderr


class TinyServer:
    """Answers every request on a given port (0: any) with 200 "mirror";
    notes which requests were shadow copies, and counts connections. For a
    backend that comes up mid-test."""

    def __init__(self, port=0):
        self.shadowed = self.conns = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((harness.HOST, port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(2)
        data = b""
        try:
            while not self.stop.is_set():
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                if b"\r\nx-strangler-shadow: 1" in head.lower():
                    self.shadowed += 1
                self.answer(c)
        except OSError:
            pass
        finally:
            c.close()

    def answer(self, c):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nmirror")

    def close(self):
        self.stop.set()
        self.sock.close()
        self.t.join(2)


class EarlyAnswerMirror(TinyServer):
    """Answers every request as soon as its head is read (a 413, its body in
    two parts 0.3 s apart) and skips nothing of the request's body: what it
    leaves unread on a connection is no next request's."""

    def answer(self, c):
        c.sendall(b"HTTP/1.1 413 Too Large\r\nContent-Length: 10\r\n\r\n12345")
        time.sleep(0.3)
        c.sendall(b"67890")


def test_a_mirror_that_answered_before_the_request_was_sent_is_not_pooled(start_proxy,
                                                                          backend_factory,
                                                                          tmp_path):
    """A mirror's answer that began before the whole request had gone out
    (an early 413) leaves the body's rest on the connection, unread: pooled,
    the next mirrored request went out behind it (the primary's connection
    in that case was not pooled already)."""
    legacy = backend_factory("legacy")
    mirror = EarlyAnswerMirror()
    try:
        p = start_proxy({"legacy": legacy, "mirror": "http://127.0.0.1:%d" % mirror.port},
                        routes=[shadow_route("mirror", methods=["GET", "POST"])],
                        shadow_defaults={"timeout_ms": 3000})
        with p.client() as c:
            c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n" +
                   b"a" * 1000)
            time.sleep(0.15)  # the mirror's answer has begun
            c.send(b"b" * 1000)
            assert c.read_response().status == 200
            time.sleep(0.5)  # and has ended
            assert c.request("GET", "/next").status == 200
        harness.wait_for(lambda: mirror.conns >= 2, what="a connection of its own for the next")
        assert mirror.conns == 2
    finally:
        mirror.close()


def until_mirrored(p, server, seconds):
    """Sends requests (primaries must be intact) until server has received a
    shadow copy: a trial got through and shadowing resumed."""
    deadline = time.monotonic() + seconds
    with p.client() as c:
        while server.shadowed == 0:
            assert time.monotonic() < deadline, "shadowing never resumed"
            assert c.request("GET", "/x").body == b"primary"
            time.sleep(0.05)


def test_shadow_backend_refusing_connections_is_skipped_until_it_is_back(start_proxy,
                                                                         backend_factory,
                                                                         tmp_path):
    """A mirror that refuses connections is marked down after `unhealthy`
    failures: later requests skip it (counted as backend_down) instead of
    paying a connect each, and shadowing resumes once it answers again."""
    legacy = backend_factory("legacy", lambda req, conn: Response(200, b"primary"))
    port = harness.refused_port()
    mirror = {"url": "http://127.0.0.1:%d" % port,
              "health": {"path": "/", "interval_ms": 200, "unhealthy": 2, "healthy": 1}}
    log = str(tmp_path / "diffs.jsonl")
    p = start_proxy({"legacy": legacy, "mirror": mirror}, routes=[shadow_route("mirror")],
                    shadow_defaults={"diff_log": log, "timeout_ms": 500})
    p.diff_log = log
    with p.client() as c:
        for _ in range(20):
            r = c.request("GET", "/x")
            assert (r.status, r.body) == (200, b"primary")
    assert "backend mirror (127.0.0.1:%d) is down" % port in p.stderr_text()
    server = TinyServer(port)
    try:
        until_mirrored(p, server, 5)
    finally:
        server.close()
    s = summary(p)
    assert s["skipped"]["backend_down"] >= 15, s
    assert s["shadow_errors"] <= 5, s
    assert s["mirrored"] >= 1


def test_shadow_backend_that_never_answers_is_paused_until_it_answers(start_proxy,
                                                                      backend_factory,
                                                                      tmp_path):
    """A mirror that takes connections but never answers: after `unhealthy`
    (3) shadows in a row timed out, later requests skip it (counted as
    backend_unresponsive) instead of holding a connection and a budget slot
    each for a whole shadow timeout; one trial per `health.interval_ms` (5 s)
    finds out when it answers again, and shadowing resumes. The primaries
    are served and the backend is not marked down for them."""
    legacy = backend_factory("legacy", lambda req, conn: Response(200, b"primary"))
    port = harness.refused_port()
    silent = socket.socket()  # the kernel completes connections; nobody accepts
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind((harness.HOST, port))
    silent.listen(64)
    log = str(tmp_path / "diffs.jsonl")
    p = start_proxy({"legacy": legacy, "mirror": "http://127.0.0.1:%d" % port},
                    routes=[shadow_route("mirror")],
                    shadow_defaults={"diff_log": log, "timeout_ms": 200},
                    admin={})
    p.diff_log = log

    def paused():
        status, text = p.admin("GET", "/metrics")
        assert status == 200
        assert 'strangler_backend_up{backend="mirror"} 1' in text  # never down for primaries
        return 'strangler_backend_shadows_paused{backend="mirror"} 1' in text
    assert not paused()
    with p.client() as c:
        for _ in range(3):
            assert c.request("GET", "/x").body == b"primary"
    time.sleep(0.5)  # the three shadows time out
    assert "backend mirror (127.0.0.1:%d) does not answer shadows" % port in p.stderr_text()
    assert paused()
    with p.client() as c:
        for _ in range(20):
            t0 = time.monotonic()
            r = c.request("GET", "/x")
            assert (r.status, r.body) == (200, b"primary")
            assert time.monotonic() - t0 < 0.15
    silent.close()
    server = TinyServer(port)
    try:
        until_mirrored(p, server, 8)
        with p.client() as c:
            for _ in range(5):
                assert c.request("GET", "/x").body == b"primary"
        deadline = time.monotonic() + 2
        while server.shadowed < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.shadowed >= 6, "after the trial, every request is mirrored again"
    finally:
        server.close()
    assert "backend mirror (127.0.0.1:%d) answers shadows again" % port in p.stderr_text()
    assert "is down" not in p.stderr_text()
    assert not paused()
    s = summary(p)
    assert s["shadow_timeouts"] == 3, s
    assert s["skipped"]["backend_unresponsive"] >= 20, s
    assert s["skipped"]["backend_down"] == 0, s


def test_the_admin_api_serves_the_latest_differences(start_proxy, backend_factory, tmp_path):
    """GET /api/diffs?route=NAME&limit=N: the newest differences first; an
    unknown route is 404 (a name that is not UTF-8 got 500 out of memory)."""
    legacy = backend_factory("legacy", lambda req, conn: Response(200, b'{"v": 1}'))
    modern = backend_factory("modern", lambda req, conn: Response(200, b'{"v": 2}'))
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=[shadow_route("modern")],
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl")}, admin={})
    with p.client() as c:
        for i in range(3):  # one after the other: mirrors may end in any order
            assert c.request("GET", "/x", [("X-Request-Id", "r%d" % i)]).status == 200
            harness.wait_for(lambda: p.admin("GET", "/api/diffs/summary")[1]["routes"]["r"]
                             ["different"] == i + 1, what="difference %d" % (i + 1))
    st, got = p.admin("GET", "/api/diffs?route=r&limit=2")
    assert st == 200 and [d["request_id"] for d in got["diffs"]] == ["r2", "r1"]
    assert p.admin("GET", "/api/diffs?route=nope")[0] == 404
    assert p.admin("GET", "/api/diffs?route=%ff%fe")[0] == 404
    for bad in ["abc", "0", "1001", "", "5x"]:
        assert p.admin("GET", "/api/diffs?route=r&limit=" + bad)[0] == 400, bad
    # reals as the diff log writes them, not 0.067000000000000004
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/api/diffs" % p.admin_port,
                                  timeout=5).read().decode()
    assert '"ms"' in text and not re.search(r"\d\.\d{16}", text), text



def test_differences_show_the_values_compared(start_proxy, backend_factory, tmp_path):
    """What an SRE reads is what was compared: a real shown at 15 digits was
    another value (9007199254740992.0 read 9.00719925474099e15, a timestamp
    lost its milliseconds) and /api/diffs showed 0.3 for both 0.3 and
    0.30000000000000004; a value one side lacks is told from one it sends as
    null; keys below a redacted pointer (an object keyed by e-mail address)
    stay out of the log, the API and the report."""
    legacy = backend_factory("legacy", lambda req, conn: Response(
        200, b'{"v": 0.3, "w": 9007199254740993, "t": 1732849200123.4567, "x": null,'
             b' "by_email": {"alice@example.com": {"n": 1}, "carol@example.com": 1}}',
        headers=[("Content-Type", "application/json")]))
    modern = backend_factory("modern", lambda req, conn: Response(
        200, b'{"v": 0.30000000000000004, "w": 9007199254740992.0,'
             b' "by_email": {"alice@example.com": {"n": 2}, "bob@example.com": 1}}',
        headers=[("Content-Type", "application/json")]))
    log = str(tmp_path / "diffs.jsonl")
    p = start_proxy({"legacy": legacy, "modern": modern},
                    routes=[shadow_route("modern", compare={"redact_json": ["/by_email"]})],
                    shadow_defaults={"diff_log": log}, admin={})
    p.diff_log = log
    with p.client() as c:
        assert c.request("GET", "/x").status == 200
    harness.wait_for(lambda: p.admin("GET", "/api/diffs/summary")[1]["routes"]["r"]
                     ["different"] == 1, what="the difference")
    st, api = p.admin("GET", "/api/diffs?route=r")
    assert st == 200
    # each value as written (at 17 digits for all, 0.3 read 0.29999999999999999)
    import urllib.request
    raw = urllib.request.urlopen("http://127.0.0.1:%d/api/diffs?route=r" % p.admin_port,
                                 timeout=5).read().decode()
    assert '"primary":0.3,"shadow":0.30000000000000004' in raw, raw
    assert not re.search(r'"ms":\d+\.\d{4}', raw), raw
    summary(p)
    (d,) = diff_lines(p)
    for where, diffs in (("diff log", d["differences"]),
                         ("/api/diffs", api["diffs"][0]["differences"])):
        got = {x["where"]: (x["primary"], x["shadow"], x.get("missing")) for x in diffs}
        assert got["/v"] == (0.3, 0.30000000000000004, None), where
        assert got["/w"] == (9007199254740993, 9007199254740992.0, None), where
        assert got["/t"] == (1732849200123.4567, None, "shadow"), where
        assert got["/x"] == (None, None, "shadow"), where
        # three differences below it (a value, a key each side lacks): one,
        # their number and which side lacks what unsaid
        assert got["/by_email"] == ("[redacted]", "[redacted]", None), where
        assert len(diffs) == len(got) == 5, (where, diffs)
    report = subprocess.run([harness.BINARY, "diff-report", log],
                            capture_output=True, text=True, timeout=30)
    assert report.returncode == 0 and "json /by_email " in report.stdout, report.stdout
    for text in (open(log).read(), json.dumps(api), report.stdout):
        assert "alice" not in text and "bob" not in text and "carol" not in text


def test_a_pointer_cut_for_length_is_still_redacted(start_proxy, backend_factory, tmp_path):
    """A difference's pointer is cut at 512 bytes ("…" ends it): cut inside
    the redacted segment ("ema…" for "email"), it matched no redact_json
    pattern and both e-mail addresses went to the diff log (the fuzzing
    campaign's finding). A segment cut short counts as the pattern's."""
    key = "k" * 507
    legacy = backend_factory("legacy", lambda req, conn: Response(
        200, json.dumps({key: {"email": "alice@example.com"}}).encode(),
        headers=[("Content-Type", "application/json")]))
    modern = backend_factory("modern", lambda req, conn: Response(
        200, json.dumps({key: {"email": "bob@example.com"}}).encode(),
        headers=[("Content-Type", "application/json")]))
    p = start(start_proxy, legacy, modern,
              [shadow_route(compare={"redact_json": ["/*/email"]})], tmp_path)
    get(p, "/x")
    wait_shadow(modern)
    summary(p)
    (d,) = diff_lines(p)
    (x,) = d["differences"]
    assert x["where"].endswith("\u2026") and (x["primary"], x["shadow"]) == (
        "[redacted]", "[redacted]"), x
    assert "alice" not in open(p.diff_log).read() and "bob" not in open(p.diff_log).read()


def test_a_request_without_host_names_each_backend_its_own(start_proxy, backend_factory,
                                                           tmp_path):
    """An HTTP/1.0 request without Host gets the backend's own host:port; the
    mirror of it names the shadow backend's (it named the primary's)."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    with p.client() as c:
        c.send(b"GET /x HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200
    (got,) = legacy.wait_requests(1)
    (mirrored,) = modern.wait_requests(1)
    assert got.header("Host") == legacy.url.split("//")[1]
    assert mirrored.header("Host") == modern.url.split("//")[1]


def test_log_query_puts_the_query_string_in_both_logs(start_proxy, backend_factory, tmp_path):
    """The runbook's example difference hangs on the query (q=red), which
    neither log held: with `log_query = true` the access log and the diff
    log carry it as received (null when the target had no '?'); without it,
    neither has a query field, as before."""
    legacy = backend_factory("legacy", json_backend(lambda r: {"q": r.query}))
    modern = backend_factory("modern", json_backend(lambda r: {"q": (r.query or "") + "!"}))
    log = str(tmp_path / "diffs.jsonl")
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=[shadow_route()],
                    shadow_defaults={"diff_log": log, "timeout_ms": 2000}, log_query=True)
    p.diff_log = log
    for target in ("/api/search?q=red%20shoes&n=1", "/api/search", "/api/search?"):
        assert get(p, target).status == 200
    harness.wait_for(lambda: len(diff_lines(p)) == 3, what="three diff lines")
    diffs = {d["request_id"]: d for d in diff_lines(p)}
    access = p.wait_access(3)
    assert [(e["path"], e["query"]) for e in access] == [
        ("/api/search", "q=red%20shoes&n=1"), ("/api/search", None), ("/api/search", "")]
    assert [diffs[e["request_id"]]["query"] for e in access] == ["q=red%20shoes&n=1", None, ""]
    assert p.stop() == 0
    # off (the default): no query anywhere
    (tmp_path / "off").mkdir()
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path / "off")
    assert get(p, "/api/search?q=red").status == 200
    harness.wait_for(lambda: len(diff_lines(p)) == 1, what="a diff line")
    assert "query" not in diff_lines(p)[0] and "query" not in p.wait_access(1)[0]


def test_a_diff_log_added_by_a_reload_needs_a_restart(start_proxy, backend_factory, tmp_path):
    """docs/migration.md step 3 on an instance started without a diff log: a
    reload that adds the shadow and shadow_defaults.diff_log mirrors and counts,
    but the diff log is opened at start only, and the reload's answer says so
    (its warnings were empty); after a restart the file is written."""
    legacy = backend_factory("legacy", lambda req, conn: Response(200, b'{"v": 1}'))
    modern = backend_factory("modern", lambda req, conn: Response(200, b'{"v": 2}'))
    plain = dict(shadow_route("modern"))
    del plain["shadow"]
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=[plain],
                    admin={"state_file": str(tmp_path / "state.json")})
    log = tmp_path / "diffs.jsonl"
    conf = harness.make_config(p.port, {"legacy": legacy, "modern": modern}, None,
                               [shadow_route("modern")], 1, p.access_log_path,
                               admin={"address": "127.0.0.1:%d" % p.admin_port,
                                      "state_file": str(tmp_path / "state.json")},
                               shadow_defaults={"diff_log": str(log)})
    open(p.conf_path, "w").write(conf)
    st, body = p.admin("POST", "/api/reload")
    assert st == 200 and any(w.endswith("warning: shadow_defaults.diff_log changed: applies "
                                        "after a restart") for w in body["warnings"]), body
    with p.client() as c:
        assert c.request("GET", "/x").status == 200
    harness.wait_for(lambda: p.admin("GET", "/api/diffs/summary")[1]["routes"]["r"]
                     ["different"] == 1, what="the difference counted")
    assert not log.exists()  # a differing exchange is written at once, where there is a log
    # the restart the runbook asks for opens it
    assert p.stop() == 0
    again = subprocess.Popen([harness.BINARY, "-c", p.conf_path], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        harness.wait_for(lambda: harness.accepts(p.port), 5, what="the restarted proxy")
        with p.client() as c:
            assert c.request("GET", "/y").status == 200
        harness.wait_for(lambda: log.exists() and '"/y"' in log.read_text(), 5,
                         what="the difference in the diff log")
    finally:
        again.terminate()
        assert again.wait(timeout=5) == 0


def test_a_comparison_is_never_counted_before_its_outcome(start_proxy, backend_factory,
                                                         tmp_path):
    """Read while exchanges are being compared, the route's counters never
    show an exchange compared without its outcome (identical, different or
    noise): the API, the metrics and the guard may divide different by
    compared at any moment."""
    n = 300
    big = lambda side: json_backend(lambda r: {"items": [{"id": i, "v": side}
                                                         for i in range(1000)]})
    legacy, modern = backend_factory("legacy", big(0)), backend_factory("modern", big(1))
    # a noise sample makes each comparison two (the window the test looks into)
    p = start_proxy({"legacy": legacy, "modern": modern},
                    routes=[shadow_route(noise={"samples": 1})], admin={},
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl"),
                                     "timeout_ms": 2000})
    reads, ahead, done = [], [], threading.Event()

    def poll():
        while not done.is_set():
            sc = p.admin("GET", "/api/routes/r")[1]["shadow_counters"]
            reads.append((sc["compared"], sc["compared"] + sc["skipped"]))
            if sc["identical"] + sc["different"] + sc["noise"] < sc["compared"]:
                ahead.append(sc)
    pollers = [threading.Thread(target=poll) for _ in range(2)]
    for t in pollers:
        t.start()
    try:
        with p.client() as c:
            for i in range(n):
                assert c.request("GET", "/i/%d" % i).status == 200
        # answers of 20 KB are compared on the comparer thread, which may lag
        # (under ASan) and then skip some for its budget: every one counted
        harness.wait_for(lambda: reads and reads[-1][1] >= n, timeout=60,
                         what="%d comparisons or skips" % n)
    finally:
        done.set()
        for t in pollers:
            t.join()
    compared = set(r[0] for r in reads)
    assert len(compared) > 10, "the counters were read only at %d points" % len(compared)
    assert ahead == [], "%d of %d reads counted a comparison without its outcome: %s" % (
        len(ahead), len(reads), ahead[:3])


# --------------------------------------------------------------------------
# found by review (session 18): counting, limits and what reaches the logs


def test_a_shadow_skipped_for_its_body_is_counted_once(start_proxy, backend_factory, tmp_path):
    """A mirrored POST whose body passes max_body_bytes is counted as a
    request_body_too_large skip; when the client then left before the
    primary answered, it was counted again as primary_incomplete."""
    legacy = backend_factory("legacy", harness.delayed(1.0))  # the client leaves before this
    modern = backend_factory("modern")
    p = start(start_proxy, legacy, modern, [shadow_route(methods=["POST"])], tmp_path,
              timeout_ms=3000, max_body_bytes=1000)
    s = socket.create_connection((harness.HOST, p.port), timeout=5)
    s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + b"z" * 3000)
    time.sleep(0.3)
    s.close()
    time.sleep(1.5)
    summ = summary(p)
    skipped = summ["skipped"]
    outcomes = (summ["compared"] + summ["shadow_errors"] + summ["shadow_timeouts"] +
                sum(skipped.values()))
    assert summ["mirrored"] == 1 and skipped["request_body_too_large"] == 1
    assert outcomes == 1, summ


def test_max_body_bytes_counts_a_chunked_body_not_its_framing(start_proxy, backend_factory,
                                                               tmp_path):
    """500 body bytes sent as 1-byte chunks were about 3,000 bytes with the
    chunk lines, and skipped as past max_body_bytes = 1000."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    p = start(start_proxy, legacy, modern, [shadow_route(methods=["POST"])], tmp_path,
              max_body_bytes=1000)
    with p.client() as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(500):
            c.send(b"1\r\nx\r\n")
            if i % 50 == 0:
                time.sleep(0.01)  # separate reads: separate chunks to the backend
        c.send(b"0\r\n\r\n")
        assert c.read_response().status == 200
    assert legacy.last.body_len == 500
    wait_shadow(modern)
    time.sleep(0.3)
    summ = summary(p)
    assert summ["compared"] == 1 and sum(summ["skipped"].values()) == 0, summ


def test_a_primary_that_gave_no_answer_is_not_compared(start_proxy, backend_factory, tmp_path):
    """A primary whose backend gave no answer (no connection, a timeout):
    the client's 502 or 504 is strangler's own. It was compared with the
    mirror's answer as if the backend had said it (a diff line with body "0
    bytes: ", counted `different`, read by a guard's max_diff_rate: the old
    side failing pulled the new one back). It is counted primary_incomplete."""
    modern = backend_factory("modern")
    slow = backend_factory("legacy", harness.delayed(1.0))
    dead = "http://unix:%s" % (tmp_path / "gone.sock")  # connect(2) fails at once
    for legacy, status in ((dead, 502), ({"url": slow.url, "response_timeout_ms": 200}, 504)):
        p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
        for i in range(3):
            assert get(p, "/x%d" % i).status == status
        s = summary(p)
        assert (s["compared"], s["skipped"]["primary_incomplete"]) == (0, 3), s
        assert diff_lines(p) == []


def test_the_diff_log_is_ascii(start_proxy, backend_factory, tmp_path):
    """security.md: every byte outside printable ASCII is escaped in the
    logs. Header values and JSON values went through jansson as raw UTF-8:
    C1 controls (U+009B, a terminal's CSI), bidi overrides and U+2028 reached
    the file as bytes; the route's name "café" was escaped byte by byte
    (caf\u00c3\u00a9), so diff-report --route café found nothing."""
    def backend(value, doc):
        def h(req, conn):
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Name: " + value +
                      b"\r\nContent-Length: %d\r\n\r\n" % len(doc) + doc)
            return harness.KEEP
        return h
    legacy = backend_factory("legacy", backend(b"plain", b'{"name":"plain"}'))
    modern = backend_factory("modern", backend(b"x\xc2\x9b31mred\xe2\x80\xae",
                                               b'{"name":"x\\u009b31m\\u202e\\u2028\\u007f"}'))
    route = shadow_route(compare={"headers": ["X-Name"]})
    route["name"] = "café"
    p = start(start_proxy, legacy, modern, [route], tmp_path)
    assert get(p, "/x").status == 200
    harness.wait_for(lambda: diff_lines(p), what="the diff line")
    data = open(p.diff_log, "rb").read()
    assert not [b for b in data if b >= 0x7f], data
    d = diff_lines(p)[0]
    assert d["route"] == "café"
    got = {x["where"]: x["shadow"] for x in d["differences"]}
    assert got["/name"] == "x\u009b31m\u202e\u2028\x7f", got
    assert p.stop() == 0
    out = subprocess.run([harness.BINARY, "diff-report", p.diff_log, "--route", "café"],
                         capture_output=True, timeout=30, text=True).stdout
    assert out.startswith("route café: 1 compared"), out
    assert not [c for c in out if ord(c) < 0x20 and c != "\n"], out


def test_a_diff_line_is_bounded(start_proxy, backend_factory, tmp_path):
    """Values were cut to 200 bytes but not pointers: 50 differing keys of
    20,000 bytes made a 1 MB diff line (and 20 of them in the API's ring)."""
    key = "k" * 20000

    def doc(v):
        return json.dumps({key + str(i): v for i in range(50)}).encode()
    hs = [("Content-Type", "application/json")]
    a, b = doc(1), doc(2)
    legacy = backend_factory("legacy", lambda req, conn: Response(200, a, headers=hs))
    modern = backend_factory("modern", lambda req, conn: Response(200, b, headers=hs))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    assert get(p, "/x").status == 200
    harness.wait_for(lambda: diff_lines(p), what="the diff line")
    line = [x for x in open(p.diff_log, "rb").read().split(b"\n") if b'"diff"' in x][0]
    assert len(line) < 64 * 1024, len(line)
    d = json.loads(line)
    assert len(d["differences"]) == 50
    assert all(x["where"].endswith("…") and len(x["where"].encode()) <= 512 + 3
               for x in d["differences"])


def test_diff_report_counts_do_not_wrap_and_control_bytes_are_shown(start_proxy,
                                                                    backend_factory, tmp_path):
    """A summary count past 2^63 - 1 (a damaged or foreign line) overflowed
    the sums (UBSan stopped the command; a release build printed a negative
    count); an ESC in a JSON key from a backend reached the terminal through
    the pointer diff-report prints."""
    f = tmp_path / "big.jsonl"
    f.write_text('{"type":"summary","route":"a","compared":1,"different":9223372036854775807}\n'
                 '{"type":"summary","route":"a","compared":1e30,"different":-5,'
                 '"skipped":{"budget":9223372036854775807}}\n'
                 '{"type":"summary","route":"a","compared":2,"different":9223372036854775807,'
                 '"skipped":{"budget":9223372036854775807}}\n')
    r = subprocess.run([harness.BINARY, "diff-report", str(f)], capture_output=True,
                       timeout=30, text=True)
    assert r.returncode == 0 and "runtime error" not in r.stderr, r.stderr
    assert "-9223372036854775808" not in r.stdout and "9223372036854775807 different" in \
        r.stdout, r.stdout
    esc = b'{"\\u001b[2J\\u001b[31mk":%d}'
    hs = [("Content-Type", "application/json")]
    legacy = backend_factory("legacy", lambda req, conn: Response(200, esc % 1, headers=hs))
    modern = backend_factory("modern", lambda req, conn: Response(200, esc % 2, headers=hs))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    assert get(p, "/x").status == 200
    harness.wait_for(lambda: diff_lines(p), what="the diff line")
    out = subprocess.run([harness.BINARY, "diff-report", p.diff_log], capture_output=True,
                         timeout=30).stdout
    assert b"\x1b" not in out and b"\\x1b[2J\\x1b[31mk" in out, out


def test_an_answer_that_does_not_decode_is_not_identical(start_proxy, backend_factory, tmp_path):
    """The mirror says Content-Encoding: gzip and sends the document plain:
    no client could read it, yet it counted identical to the primary's
    properly gzipped answer (both compared as received)."""
    doc = b'{"id":7,"name":"red shoes"}'
    hs = [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]
    legacy = backend_factory("legacy", lambda req, conn: Response(200, gzip.compress(doc),
                                                                  headers=hs))
    modern = backend_factory("modern", lambda req, conn: Response(200, doc, headers=hs))
    p = start(start_proxy, legacy, modern, [shadow_route()], tmp_path)
    assert gzip.decompress(get(p, "/item/7").body) == doc
    harness.wait_for(lambda: diff_lines(p), what="the difference logged")
    d = diff_lines(p)[0]
    assert [(x["kind"], x["where"]) for x in d["differences"]] == [("body", "encoding")], d
    assert d["differences"][0]["shadow"] == "does not decode as its Content-Encoding says"
    assert "shadow body could not be decoded" in d["note"]
    s = summary(p)
    assert (s["identical"], s["different"]) == (0, 1), s


def test_max_in_flight_holds_for_the_process(start_proxy, backend_factory, tmp_path):
    """max_in_flight is the process's: split between the workers with the
    remainder to the first, so the sum is the setting. With 1 and 2 workers,
    each worker rounded its share up to 1 and 2 mirrors were in flight; -t
    now warns that a worker never mirrors."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern", harness.delayed(3.0))  # holds each mirror
    log = str(tmp_path / "diffs.jsonl")
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=[shadow_route()], workers=2,
                    shadow_defaults={"diff_log": log, "timeout_ms": 4000, "max_in_flight": 1})
    for i in range(40):  # new connections: both workers get some
        with p.client() as c:
            assert c.request("GET", "/x%d" % i).status == 200
    time.sleep(0.5)
    assert len(modern.requests) == 1, len(modern.requests)
    out = harness.run_strangler("-t", "-c", p.conf_path)
    assert "shadow_defaults.max_in_flight: 1 is less than workers (2): the budget is split " \
        "between them, and 1 of them never mirror" in out.stdout + out.stderr


def test_a_mirror_is_not_blamed_for_a_body_it_never_got(start_proxy, backend_factory, tmp_path):
    """The primary answered an upload from its head (an early 413): the rest
    of the body never reached the mirror, which waited for it; the shadow
    timed out, was blamed on the mirror, and after three such uploads a
    mirror that answers everything was paused. It is a primary_incomplete
    skip now, and the mirror is still mirrored to."""
    legacy = backend_factory("legacy", lambda req, conn: Response(413, b"too large\n",
                                                                  close=True))
    legacy.read_bodies = False  # answers from the head
    modern = backend_factory("modern")
    p = start(start_proxy, legacy, modern, [shadow_route(methods=["GET", "POST"])], tmp_path,
              timeout_ms=500)
    body = b"b" * 20000
    for _ in range(3):
        s = socket.create_connection((harness.HOST, p.port), timeout=5)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body[:2000])
        assert s.recv(65536).startswith(b"HTTP/1.1 413")
        try:  # the client goes on with its body, as curl does
            s.sendall(body[2000:])
        except OSError:
            pass
        time.sleep(0.05)
        s.close()
    time.sleep(0.8)  # every mirror's timeout would have passed
    assert get(p, "/after").status == 413
    wait_shadow(modern, 1)  # the GET is mirrored: the mirror was not paused
    assert [r.path for r in modern.requests] == ["/after"]  # the uploads' were cut short
    time.sleep(0.3)
    assert "does not answer shadows" not in p.stderr_text()
    s = summary(p)
    assert s["shadow_timeouts"] == 0 and s["skipped"]["primary_incomplete"] == 3, s


def test_a_slow_upload_starts_no_shadow_clock(start_proxy, backend_factory, tmp_path):
    """The shadow's timeout ran from the request's head: three clients
    uploading for longer than timeout_ms timed out their shadows, blamed the
    mirror, and paused it. It runs from the end of the request now: the
    uploads are compared."""
    legacy, modern = backend_factory("legacy"), backend_factory("modern")
    p = start(start_proxy, legacy, modern, [shadow_route(methods=["GET", "POST"])], tmp_path,
              timeout_ms=500)
    for _ in range(3):
        with p.client() as c:
            c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(10):  # 1000 bytes over 0.7 s
                c.send(b"u" * 100)
                time.sleep(0.07)
            assert c.read_response().status == 200
    wait_shadow(modern, 3)
    time.sleep(0.2)
    assert "does not answer shadows" not in p.stderr_text()
    s = summary(p)
    assert (s["compared"], s["shadow_timeouts"]) == (3, 0), s


def test_noise_in_a_text_answer_does_not_hide_a_changed_value(start_proxy, backend_factory,
                                                              tmp_path):
    """Compared as bytes, any difference between the primary's two answers
    (a counter) made every body difference of the mirror noise: value=A
    against value=B counted as noise, never as different. Only the counter
    is noise now, however its digits roll between the three answers; with
    the same value everywhere the exchanges are noise."""
    import itertools
    tick = itertools.count(95)  # its digits roll, and it grows a digit (99 -> 100)

    def page(value):
        def h(req, conn):
            body = b"generated=%d\nvalue=%s\n" % (next(tick), value)
            return Response(200, body, headers=[("Content-Type", "text/plain")])
        return h
    for run, (mirror_value, want) in enumerate([(b"B", (5, 0)), (b"A", (0, 5))]):
        legacy = backend_factory("legacy%d" % run, page(b"A"))
        modern = backend_factory("modern%d" % run, page(mirror_value))
        p = start(start_proxy, legacy, modern, [shadow_route(noise={"samples": 1})], tmp_path)
        for i in range(5):
            assert get(p, "/p%d" % i).status == 200
        wait_shadow(modern, 5)
        time.sleep(0.3)
        s = summary(p)
        assert (s["different"], s["noise"]) == want, (s, diff_lines(p))


def test_a_shadow_whose_primary_failed_mid_upload_ends(start_proxy, backend_factory, tmp_path):
    """The primary closed while the request body was still coming (a 502):
    the shadow was handed on as done though its request never completed, so
    its clock, which starts with the whole request, never started; with a
    mirror patient for the rest of the body it kept its max_in_flight slot,
    and every later request was a budget skip. It is a primary_incomplete
    skip now."""
    def close_after_head(req, conn):
        if req.method == "GET":
            return Response(200, b"ok")
        time.sleep(0.2)
        return harness.CLOSE

    def patient(req, conn):  # waits for the whole body, as nginx does
        return Response(200, b"ok")
    legacy = backend_factory("legacy", close_after_head)
    legacy.read_bodies = False
    modern = backend_factory("modern", patient)
    p = start(start_proxy, legacy, modern, [shadow_route(methods=["GET", "POST"])], tmp_path,
              timeout_ms=500, max_in_flight=1)
    with p.client(timeout=10) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        assert c.read_response("POST").status == 502
    time.sleep(1.0)
    assert get(p, "/later").status == 200
    wait_shadow(modern, 1)
    time.sleep(0.3)
    s = summary(p)
    assert s["skipped"]["budget"] == 0 and s["skipped"]["primary_incomplete"] == 1, s
    assert s["compared"] == 1 and s["mirrored"] == 2, s


def test_the_last_summary_counts_comparisons_a_drain_timeout_left_out(start_proxy,
                                                                      backend_factory, tmp_path):
    """A stop whose drain timed out (a client that never finishes its head)
    ended the worker while large comparisons were out on the comparer: they
    were counted and logged after the final summary, which counted fewer
    comparisons than the log had difference lines."""
    legacy = backend_factory("legacy", big_array(b"1"))
    modern = backend_factory("modern", big_array(b"2"))
    log = str(tmp_path / "diffs.jsonl")
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=[shadow_route()],
                    drain_timeout_ms=200,
                    shadow_defaults={"diff_log": log, "timeout_ms": 60000, "max_in_flight": 8})
    p.diff_log = log
    ts = [threading.Thread(target=get, args=(p, "/api")) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    wait_shadow(modern, 4)
    time.sleep(0.2)  # the mirrors' answers are in: their comparisons are out
    slow = p.client(timeout=10)
    slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # holds the drain until it times out
    time.sleep(0.1)
    assert p.stop(timeout=60) == 0
    lines = [json.loads(x) for x in open(log) if x.strip()]
    kinds = [x["type"] for x in lines]
    last = max(i for i, k in enumerate(kinds) if k == "summary")
    assert kinds.count("diff") == 4 and "diff" not in kinds[last + 1:], kinds
    assert lines[last]["compared"] == 4, lines[last]


def test_slow_mirrors_leave_a_quarter_of_max_conns_to_requests(start_proxy, backend_factory,
                                                               tmp_path):
    """Route /b is mirrored to legacy, which serves route /a and takes 4
    connections at a time (max_conns). Mirrors that legacy answers slowly
    take 3 of them, never the 4th: a client of /a gets legacy's answer, as
    it would with shadowing off, not `503 every server at max_conns`. With
    max_conns = 1 nothing is mirrored to legacy at all."""
    release = threading.Event()

    def legacy_h(req, conn):
        if req.header("X-Strangler-Shadow"):
            release.wait(10)  # slow for mirrors only
        return Response(200, b"legacy")
    legacy = backend_factory("legacy", legacy_h)
    modern = backend_factory("modern", lambda req, conn: Response(200, b"modern"))
    routes = [{"name": "a", "match": {"path_prefix": "/a"}, "backend": "legacy"},
              {"name": "b", "match": {"path_prefix": "/b"}, "backend": "modern",
               "shadow": {"backend": "legacy"}}]
    for max_conns, mirrored in ((4, 3), (1, 0)):
        release.clear()
        p = start_proxy({"legacy": {"url": legacy.url, "max_conns": max_conns},
                         "modern": modern}, routes=routes, admin={},
                        shadow_defaults={"timeout_ms": 5000})
        try:
            for i in range(5):
                assert get(p, "/b/%d" % i).body == b"modern"
            harness.wait_for(lambda: p.admin("GET", "/api/routes/b")[1]["shadow_counters"]
                             ["skipped"] == 5 - mirrored, what="the mirrors past the share skipped")
            for i in range(max_conns):
                r = get(p, "/a/%d" % i)
                assert (r.status, r.body) == (200, b"legacy"), (max_conns, i, r.status, r.body)
            sc = p.admin("GET", "/api/routes/b")[1]["shadow_counters"]
            assert sc["mirrored"] == mirrored, sc
        finally:
            release.set()
        assert p.admin("GET", "/metrics")[1].count(
            'strangler_shadow_skipped_total{route="b",reason="backend_busy"} %d'
            % (5 - mirrored)) == 1
        p.stop()


def test_the_latest_differences_of_every_route_come_newest_first(start_proxy, backend_factory):
    """GET /api/diffs without route= (operations.md: newest first): the
    routes' rings merged by age, so limit=N gives the N newest. They came
    route by route, and limit=1 gave /b/1 where /a/2 was newer."""
    legacy = backend_factory("legacy")
    modern = backend_factory("modern")  # answers with its own name: every shadow differs
    routes = [{"name": n, "match": {"path_prefix": "/" + n}, "backend": "legacy",
               "shadow": {"backend": "modern"}} for n in ("a", "b")]
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=routes, admin={})
    order = ["/a/1", "/b/1", "/a/2", "/a/3", "/b/2"]
    for i, path in enumerate(order):
        assert get(p, path).status == 200
        harness.wait_for(lambda: len(p.admin("GET", "/api/diffs")[1]["diffs"]) == i + 1,
                         timeout=5, what="diff %d" % (i + 1))
    newest = order[::-1]
    for limit in (1, 2, 3, 5):
        got = p.admin("GET", "/api/diffs?limit=%d" % limit)[1]["diffs"]
        assert [d["path"] for d in got] == newest[:limit], (limit, got)
    got = p.admin("GET", "/api/diffs?route=a&limit=2")[1]["diffs"]
    assert [d["path"] for d in got] == ["/a/3", "/a/2"]


def test_a_shadow_that_fails_after_connecting_is_a_failed_outcome(start_proxy, backend_factory):
    """operations.md: the server outcomes count each request and shadow
    sent to it, a timeout and a bad answer as failed. A shadow that timed
    out, got a malformed answer or a connection closed mid-answer was
    counted neither ok nor failed (GET /api/backends, the dashboard's %
    failed). None of them marks the server down for its requests."""
    cases = {"timeout": harness.delayed(0.8),
             "bad": harness.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                                b"Content-Length: 2\r\n\r\nxx"),
             "cut": harness.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)}
    for name, handler in cases.items():
        legacy, sh = backend_factory("legacy"), backend_factory("sh", handler)
        p = start_proxy({"legacy": legacy, "sh": sh}, routes=[shadow_route("sh")], admin={},
                        shadow_defaults={"timeout_ms": 300})
        for i in range(2):  # below health.unhealthy (3): every shadow is sent
            assert get(p, "/r/%d" % i).status == 200
        harness.wait_for(lambda: p.admin("GET", "/api/routes/r")[1]["shadow_counters"][
            "timeouts" if name == "timeout" else "errors"] == 2, timeout=5, what=name)
        doc = p.admin("GET", "/api/backends/sh")[1]
        # the cut answer's head counted ok when it came, as a request's does
        ok = 2 if name == "cut" else 0
        assert (doc["ok"], doc["failed"], doc["servers"][0]["up"]) == (ok, 2, True), (name, doc)
        p.stop()
