"""A backend with several servers (`backends.NAME.servers`): the checks of the
list, round-robin, health per server, the retry of a refused request on the
next server, https servers (each checked against its own host), the access
log's `server`, the per-server metrics, explain, reload, the keep-alive pool
and shadows. workers = 1 throughout, so that the round-robin is one
sequence."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

import harness
from harness import HOST, Response, refused_port, rollout_bucket, run_strangler, wait_for

# --------------------------------------------------------------------------
# helpers


def hostport(b):
    """A Backend's "host:port", as the proxy names a server."""
    return "%s:%d" % (HOST, b.port)


def dead_urls(n):
    """n distinct URLs whose ports refuse connections."""
    ports = set()
    while len(ports) < n:
        ports.add(refused_port())
    return ["http://%s:%d" % (HOST, p) for p in sorted(ports)]


def servers(*members, **settings):
    """A backend definition with servers = [...] (Backends or URL strings)."""
    d = {"servers": [m.url if isinstance(m, harness.Backend) else m for m in members]}
    d.update(settings)
    return d


def who(p, path="/x", method="GET"):
    """(status, X-Backend) of one request on a new client connection."""
    with p.client() as c:
        r = c.request(method, path)
        return r.status, r.header("X-Backend")


def answering(status, name):
    """A handler answering `status` with X-Backend: name."""
    return lambda req, conn: Response(status, b"s%d" % status, headers=[("X-Backend", name)])


class Flaky:
    """A handler whose status the test flips (500 while failing)."""

    def __init__(self, name, health=None):
        self.name = name
        self.failing = False
        self.health_ok = True if health is None else health

    def handler(self, req, conn):
        if req.path == "/health":
            return Response(200 if self.health_ok else 500, b"health")
        return answering(500 if self.failing else 200, self.name)(req, conn)


def metrics(p):
    """(text, {sample: value}) of GET /metrics."""
    st, text = p.admin("GET", "/metrics")
    assert st == 200, text
    return text, dict(line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")


def compared(p, route, n, timeout=5):
    """The route's shadow counters once n exchanges are compared (each with
    its outcome: shadow.c counts `compared` after it)."""
    def settled():
        sc = p.admin("GET", "/api/routes/" + route)[1]["shadow_counters"]
        done = sc["identical"] + sc["different"] + sc["noise"]
        return sc if sc["compared"] >= n and done == sc["compared"] else None
    return wait_for(settled, timeout=timeout, what="%d comparisons and their outcomes" % n)


def server_up(backend, server):
    return 'strangler_backend_server_up{backend="%s",server="%s"}' % (backend, server)


def backend_up(backend):
    return 'strangler_backend_up{backend="%s"}' % backend


def down_line(backend, server, why):
    return "backend %s (%s) is down: %s" % (backend, server, why)


def rollout_route(percent=100.0):
    return [{"name": "orders", "match": {"path_prefix": "/api"}, "backend": "legacy",
             "rollout": {"backend": "modern", "percent": percent}}]


def rewrite(p, backends, routes=(), **extra):
    with open(p.conf_path, "w") as f:
        f.write(harness.make_config(p.port, backends, None, routes, 1, p.access_log_path,
                                    **extra))


# --------------------------------------------------------------------------
# the configuration

MANY = ", ".join('"http://127.0.0.1:%d"' % (10000 + i) for i in range(65))
SIXTY_FOUR = ", ".join('"http://127.0.0.1:%d"' % (20000 + i) for i in range(64))

# line N of this text is line N of the file
BAD = """\
listen = ( { address = "127.0.0.1:18080"; } );
backends = {
  both = { url = "http://127.0.0.1:9001"; servers = ["http://127.0.0.1:9002"]; };
  neither = { max_idle = 1; };
  text = { servers = "http://127.0.0.1:9001"; };
  numbers = { servers = [9001, 9002]; };
  empty = { servers = []; };
  many = { servers = [%s]; };
  ftp = { servers = ["http://127.0.0.1:9001", "ftp://127.0.0.1:21"]; };
  nohost = { servers = ["http://:9001"]; };
  mixed = { servers = ["http://127.0.0.1:9001", "https://127.0.0.1:9443"]; };
  twice = { servers = ["http://127.0.0.1", "http://127.0.0.1:80"]; };
  slash = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9001/"]; };
  ok = { servers = [%s]; };
};
default_backend = "ok";
""" % (MANY, SIXTY_FOUR)

LIST = ('["http://10.0.0.1:9001", "http://10.0.0.2:9001"] or ( { url = "http://10.0.0.1:9001"; '
        'weight = 3; }, "http://10.0.0.2:9001" )')
BAD_EXPECTED = [
    (3, 'backends.both: url and servers: give one or the other'),
    (4, 'backends.neither.url: required (or servers, a list of URLs)'),
    (5, 'backends.text.servers: must be a list of URLs, or of groups for servers with settings: '
     + LIST),
    (6, 'backends.numbers.servers: must be a list of URLs, or of groups for servers with '
     'settings: ' + LIST),
    (7, 'backends.empty.servers: at least one URL'),
    (8, 'backends.many.servers: at most 64 servers'),
    (9, 'backends.ftp.servers.[1]: "ftp://127.0.0.1:21": must start with http:// or https://'),
    (10, 'backends.nohost.servers.[0]: "http://:9001": missing host'),
    (11, 'backends.mixed.servers.[1]: "https://127.0.0.1:9443": '
         'http:// and https:// servers mixed in one backend'),
    (12, 'backends.twice.servers.[1]: "http://127.0.0.1:80": the same server as servers.[0]'),
    (13, 'backends.slash.servers.[2]: "http://127.0.0.1:9001/": the same server as servers.[0]'),
]


def test_check_reports_each_servers_error_with_its_line(tmp_path):
    """Every rule of the list, one backend each: `-t` names the backend, the
    entry (0-based) and the line, and exits 1; 64 servers are fine."""
    conf = tmp_path / "servers.conf"
    conf.write_text(BAD)
    harness.assert_check_reports(conf, BAD_EXPECTED)


NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"


@pytest.mark.skipif(not os.path.exists(NSS_WRAPPER),
                    reason="needs libnss-wrapper (tests/check.sh installs it)")
def test_a_name_with_several_addresses_is_said_to_use_the_first(tmp_path, backend_factory):
    """nginx balances over every address a server's name has; strangler
    connects to the first only, and says so (with the way out: servers).
    The name comes from a hosts file of our own (nss_wrapper)."""
    b = backend_factory("first")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 multi.test\n127.0.0.2 multi.test\n127.0.0.3 single.test\n")
    # DEEPBIND off: ASan builds refuse a dlopen with it
    env = dict(os.environ, LD_PRELOAD=NSS_WRAPPER, NSS_WRAPPER_HOSTS=str(hosts),
               NSS_WRAPPER_DISABLE_DEEPBIND="1",
               ASAN_OPTIONS="verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", ""))
    conf = tmp_path / "multi.conf"
    port = harness.free_port()
    conf.write_text('listen = ( { address = "127.0.0.1:%d"; } );\n'
                    'backends = {\n'
                    '  legacy = { url = "http://multi.test:%d"; };\n'
                    '  other = { servers = ["http://single.test:%d", "http://127.0.0.2:%d"]; };\n'
                    '};\n'
                    'default_backend = "legacy";\n' % (port, b.port, b.port, b.port))
    out = subprocess.run([harness.BINARY, "-t", "-c", str(conf)], env=env, capture_output=True,
                         text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    warning = ('%s:3: warning: backends.legacy.url: "http://multi.test:%d": multi.test has 2 '
               'addresses; connections go to the first, 127.0.0.1, only (list the others in '
               'servers to use them)' % (conf, b.port))
    assert out.stderr.splitlines() == [warning], out.stderr
    assert "1 warning" in out.stdout, out.stdout
    # and it runs that way: every request reaches the backend on the first address
    proc = subprocess.Popen([harness.BINARY, "-c", str(conf)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: harness.accepts(port), timeout=5, what="the proxy's port")
        for _ in range(3):
            c = harness.RawClient(port)
            try:
                assert c.request("GET", "/m").header("X-Backend") == "first"
            finally:
                c.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()
    assert len(b.requests) == 3


def check_legacy(tmp_path, legacy):
    """`strangler -t` on a file whose backend legacy (line 3 on) is `legacy`:
    (the file's path, the completed process)."""
    conf = tmp_path / "check.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:18080"; } );\n'
                    'backends = {\n'
                    '  legacy = { %s };\n'
                    '};\n'
                    'default_backend = "legacy";\n' % legacy)
    return conf, run_strangler("-t", "-c", str(conf))


def test_a_bad_server_is_reported_at_its_own_line(tmp_path):
    """A list written over several lines: the error points at the entry."""
    conf, out = check_legacy(tmp_path, 'servers = [\n'
                                       '    "http://127.0.0.1:9001",\n'
                                       '    "http://127.0.0.1:9002/api",\n'
                                       '    "http://127.0.0.1:9003"\n'
                                       '  ];')
    assert out.returncode == 1
    assert ('%s:5: backends.legacy.servers.[1]: "http://127.0.0.1:9002/api": must not carry a '
            'path, query or fragment (the request path is forwarded as is)' % conf) \
        in out.stderr.splitlines(), out.stderr


def test_explain_names_every_server_and_check_accepts_the_list(tmp_path):
    conf = tmp_path / "explain.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:18080"; } );\n'
                    'backends = {\n'
                    '  legacy = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];\n'
                    '             health = { path = "/health"; }; };\n'
                    '  modern = { url = "http://127.0.0.1:9003"; };\n'
                    '};\n'
                    'default_backend = "legacy";\n'
                    'routes = ( { name = "api"; match = { path_prefix = "/api"; };'
                    ' backend = "modern"; } );\n')
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 0 and "configuration OK" in out.stdout, out.stdout + out.stderr
    out = run_strangler("explain", "-c", str(conf), "GET", "/x")
    assert out.returncode == 0, out.stderr
    assert "backend:  legacy (http://127.0.0.1:9001, http://127.0.0.1:9002)" in \
        out.stdout.splitlines(), out.stdout
    out = run_strangler("explain", "-c", str(conf), "GET", "/api/1")
    assert "backend:  modern (http://127.0.0.1:9003)" in out.stdout.splitlines(), out.stdout


# --------------------------------------------------------------------------
# round-robin


def test_requests_alternate_between_the_servers(backend_factory, start_proxy):
    """Per request, not per client connection: ten requests on one keep-alive
    connection go five and five, one after the other, and new connections
    carry on the same sequence."""
    a, b = backend_factory("a"), backend_factory("b")
    p = start_proxy({"legacy": servers(a, b)})
    with p.client() as c:
        got = [c.request("GET", "/rr/%d" % i).header("X-Backend") for i in range(10)]
    assert sorted(got) == ["a"] * 5 + ["b"] * 5, got
    assert all(x != y for x, y in zip(got, got[1:])), got
    more = [who(p)[1] for _ in range(4)]
    assert all(x != y for x, y in zip([got[-1]] + more, more)), (got, more)
    assert (len(a.requests), len(b.requests)) == (7, 7)


def test_an_http10_request_without_host_gets_the_first_servers(backend_factory, start_proxy):
    """Host is mandatory upstream: a Host-less HTTP/1.0 request is given the
    first server's host:port, whichever server it goes to."""
    a, b = backend_factory("a"), backend_factory("b")
    p = start_proxy({"legacy": servers(a, b)})
    for _ in range(2):
        with p.client() as c:
            c.send(b"GET /nohost HTTP/1.0\r\n\r\n")
            assert c.read_response().status == 200
    assert a.wait_requests(1)[0].header("Host") == hostport(a)
    assert b.wait_requests(1)[0].header("Host") == hostport(a)


# --------------------------------------------------------------------------
# https servers


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a certificate for the name localhost only and one for the address
    127.0.0.1 only."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True,
                       timeout=60)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=strangler servers test CA")

    def leaf(name, san):
        (d / (name + ".ext")).write_text("subjectAltName=%s\n" % san)
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")
        return str(d / (name + ".pem")), str(d / (name + ".key"))

    return {"ca": str(d / "ca.pem"), "name": leaf("byname", "DNS:localhost"),
            "ip": leaf("byip", "IP:127.0.0.1")}


def test_each_https_server_is_checked_against_its_own_host(start_proxy, pki):
    """One server named by a host name whose certificate holds only that name,
    one by an address whose certificate holds only that address: both are
    served, so each handshake checked (and named, SNI) its own server's host."""
    byname, byip = harness.TLSBackend("byname", pki["name"]), harness.TLSBackend("byip", pki["ip"])
    try:
        p = start_proxy({"legacy": servers("https://localhost:%d" % byname.port,
                                           "https://127.0.0.1:%d" % byip.port,
                                           ca_file=pki["ca"])})
        got = [who(p) for _ in range(4)]
        assert sorted(got) == [(200, "byip")] * 2 + [(200, "byname")] * 2, \
            (got, p.stderr_text()[-2000:])
        assert byname.sni and set(byname.sni) == {"localhost"}, byname.sni
        assert "localhost" not in byip.sni, byip.sni
        # the access log names each server as its URL does
        assert sorted(e["server"] for e in p.wait_access(4)) == \
            ["127.0.0.1:%d" % byip.port] * 2 + ["localhost:%d" % byname.port] * 2
    finally:
        byname.stop()
        byip.stop()


def test_a_failed_handshake_tries_the_next_server(start_proxy, pki):
    """A server whose certificate does not name it (the handshake fails, and
    nothing was sent): a GET goes on to the next server, as after a refused
    connection (nginx's proxy_next_upstream error); the log names the server."""
    wrong, right = harness.TLSBackend("wrong", pki["name"]), harness.TLSBackend("right", pki["ip"])
    try:
        p = start_proxy({"legacy": servers("https://127.0.0.1:%d" % wrong.port,
                                           "https://127.0.0.1:%d" % right.port,
                                           ca_file=pki["ca"], health={"unhealthy": 100})})
        got = [who(p) for _ in range(4)]
        assert got == [(200, "right")] * 4, (got, p.stderr_text()[-2000:])
        assert "backend legacy (127.0.0.1:%d): TLS: certificate verify failed" % wrong.port \
            in p.stderr_text()
        assert [e["server"] for e in p.wait_access(4)] == ["127.0.0.1:%d" % right.port] * 4
    finally:
        wrong.stop()
        right.stop()


# --------------------------------------------------------------------------
# refused connections


def test_a_retry_whose_connect_fails_at_once_sends_the_request_once(backend_factory,
                                                                   start_proxy):
    """Servers [refusing, one whose connect() fails at once (127.255.255.255:
    ENETUNREACH), live]: the GET moves on twice, the second time from inside
    the first retry, and reaches the live server once, as do the requests
    pipelined behind it."""
    live = backend_factory("live")
    (dead,) = dead_urls(1)
    p = start_proxy({"legacy": servers(dead, "http://127.255.255.255:80", live,
                                       health={"unhealthy": 100})})
    with p.client() as c:
        c.send(b"".join(harness.build_request("GET", "/p%d" % i) for i in range(4)))
        got = [c.read_response() for _ in range(4)]
    assert [(r.status, r.header("X-Backend")) for r in got] == [(200, "live")] * 4
    time.sleep(0.2)
    assert [q.path for q in live.requests] == ["/p0", "/p1", "/p2", "/p3"]


def test_a_refusing_server_is_skipped_and_marked_down(backend_factory, start_proxy):
    """One of two servers refuses connections: every idempotent request
    without a body is answered by the other (tried next, not a 502), sent to
    it once; after `unhealthy` (3) refusals the refusing server is down, and
    the backend is not."""
    a = backend_factory("a")
    (dead,) = dead_urls(1)
    dead_hp = dead.split("//")[1]
    p = start_proxy({"legacy": servers(a, dead, health={"interval_ms": 10000})}, admin={})
    _, before = metrics(p)
    assert before[server_up("legacy", dead_hp)] == "1"
    methods = ["GET", "HEAD", "DELETE", "OPTIONS"] * 3
    with p.client() as c:
        for i, m in enumerate(methods):
            r = c.request(m, "/r/%d" % i)
            assert (r.status, r.header("X-Backend")) == (200, "a"), (m, r)
    assert [(r.method, r.path) for r in a.requests] == \
        [(m, "/r/%d" % i) for i, m in enumerate(methods)]
    assert down_line("legacy", dead_hp, "consecutive failed requests") in p.stderr_text()
    assert "(%s) is down" % hostport(a) not in p.stderr_text()
    text, after = metrics(p)
    assert "# TYPE strangler_backend_server_up gauge" in text
    assert after[server_up("legacy", dead_hp)] == "0"
    assert after[server_up("legacy", hostport(a))] == "1"
    assert after[backend_up("legacy")] == "1"
    assert after['strangler_backend_health_transitions_total{backend="legacy"}'] == "1"
    for e in p.wait_access(len(methods)):
        assert (e["status"], e["backend"], e["server"]) == (200, "legacy", hostport(a)), e
        assert e.get("fallback_from") is None and "error" not in e, e


def test_a_request_every_server_refuses_gets_502(backend_factory, start_proxy):
    """Without a route's other side, a GET that every server refused is a
    502, after one try of each: it does not loop."""
    dead = dead_urls(2)
    p = start_proxy({"legacy": servers(*dead, health={"unhealthy": 10})})
    t0 = time.monotonic()
    with p.client() as c:
        r = c.request("GET", "/gone")
    assert r.status == 502 and b"connect refused" in r.body
    assert time.monotonic() - t0 < 2
    e = p.wait_access(1)[0]
    assert (e["status"], e["error"], e["backend"]) == (502, "connect refused", "legacy")
    assert e["server"] in [u.split("//")[1] for u in dead], e


def test_a_post_a_server_refused_goes_to_the_next_with_its_body(backend_factory, start_proxy):
    """A refused connection carried no byte of the request: a POST and its
    body go to the next server, as nginx and Envoy send any method on after
    a connect failure; the access log says which server it left."""
    a = backend_factory("a")
    (dead,) = dead_urls(1)
    p = start_proxy({"legacy": servers(a, dead, health={"unhealthy": 10})})
    for i in range(4):  # two turns each
        with p.client() as c:
            r = c.request("POST", "/pay/%d" % i, body=b"amount=%d" % i)
            assert r.status == 200, r
    assert sorted((r.method, r.path, r.body) for r in a.requests) == \
        [("POST", "/pay/%d" % i, b"amount=%d" % i) for i in range(4)]
    log = p.wait_access(4)
    left = [e["retried_from"] for e in log if "retried_from" in e]
    assert left == [[{"server": dead[len("http://"):], "error": "connect refused"}]] * 2, log


def test_uploads_a_server_refused_reach_the_next_whole(backend_factory, start_proxy):
    """Bodies larger than what strangler buffers before it pauses the
    client (a 3 MiB Content-Length, and a chunked one) go to the next
    server byte for byte, though the refusal comes while they arrive."""
    import hashlib
    a = backend_factory("a")
    (dead,) = dead_urls(1)
    p = start_proxy({"legacy": servers(dead, a, health={"unhealthy": 10})})
    big = bytes(range(256)) * (3 * 4096)
    for i in range(2):
        with p.client() as c:
            r = c.request("PUT", "/up/%d" % i, headers=[("Content-Type", "x/y")],
                          body=big + b"%d" % i)
            assert r.status == 200, r
    chunks = [b"a" * 70000, b"b" * 5, b"c" * 300000]
    for i in range(2):
        with p.client() as c:
            c.send("POST /chunked/%d HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   % i)
            for ch in chunks:
                c.send(b"%x\r\n%s\r\n" % (len(ch), ch))
            c.send(b"0\r\n\r\n")
            assert c.read_response("POST").status == 200
    got = {r.path: (r.body_len, r.body_sha256) for r in a.requests}
    for i in range(2):
        body = big + b"%d" % i
        assert got["/up/%d" % i] == (len(body), hashlib.sha256(body).hexdigest())
        whole = b"".join(chunks)
        assert got["/chunked/%d" % i] == (len(whole), hashlib.sha256(whole).hexdigest())
    assert len(a.requests) == 4
    assert "connect refused; request" in p.stderr_text()


def test_a_refused_get_tries_the_other_servers_before_the_routes_other_side(backend_factory,
                                                                             start_proxy):
    """On a rollout, a refused GET goes to the backend's next server first:
    the route's other side is not used while one of them answers."""
    legacy = backend_factory("legacy")
    m = backend_factory("m")
    (dead,) = dead_urls(1)
    p = start_proxy({"legacy": legacy, "modern": servers(dead, m, health={"unhealthy": 10})},
                    routes=rollout_route())
    assert [who(p, "/api/x") for _ in range(4)] == [(200, "m")] * 4
    assert legacy.requests == []
    for e in p.wait_access(4):
        assert (e["backend"], e["server"]) == ("modern", hostport(m)), e
        assert e.get("fallback_from") is None, e


def test_a_refused_get_goes_where_least_conn_would_send_it(backend_factory, start_proxy):
    """least_conn: the dead first server refuses; the retry goes to the
    untried server with the fewest connections in use (c, idle), not to the
    next in the list (b, which holds a request)."""
    hb, rb = holding("b")
    b, c = backend_factory("b", hb), backend_factory("c", answering(200, "c"))
    (dead,) = dead_urls(1)
    p = start_proxy({"legacy": {"servers": [{"url": dead, "weight": 5}, b.url, c.url],
                                "balance": "least_conn", "health": {"unhealthy": 10}}})
    held = hold(p, "/hold")  # the smooth sequence's first turn is the dead a: b's
    b.wait_requests(1)
    try:
        assert [who(p, "/q/%d" % i) for i in range(3)] == [(200, "c")] * 3
    finally:
        rb.set()
    assert held.read_response().header("X-Backend") == "b"
    held.close()
    assert len(b.requests) == 1
    assert "connect refused; request" in p.stderr_text()
    assert "retried on %s" % hostport(b) in p.stderr_text()  # the held one's retry only


def test_a_get_a_server_drops_unanswered_goes_to_the_next(backend_factory, start_proxy):
    """A server that takes the request and closes (or resets) without a word,
    as one being restarted does: an idempotent request goes to the next
    server (nginx's proxy_next_upstream error); a POST, which reached the
    server and may have acted, gets its 502, and the next server never sees
    it."""
    dropping = backend_factory("dropping", lambda req, conn: harness.CLOSE)
    good = backend_factory("good")
    p = start_proxy({"legacy": servers(dropping, good, health={"unhealthy": 100})})
    with p.client() as c:
        got = [c.request("GET", "/g/%d" % i) for i in range(4)]
    assert [(r.status, r.header("X-Backend")) for r in got] == [(200, "good")] * 4
    assert len(dropping.requests) == 2  # its turns, each retried on good
    assert "upstream closed connection; request" in p.stderr_text()
    with p.client() as c:
        posts = [c.request("POST", "/p/%d" % i, body=b"x") for i in range(2)]
        c.close()
    assert sorted(r.status for r in posts) == [200, 502], posts
    assert any(b"upstream closed connection" in r.body for r in posts if r.status == 502)
    assert [r.method for r in good.requests].count("POST") == 1
    assert [r.method for r in dropping.requests].count("POST") == 1


@pytest.mark.parametrize("how", ["partial head", "interim", "reset"])
def test_what_a_server_said_before_it_closed_decides_the_retry(backend_factory, start_proxy, how):
    """A server that began its answer (part of a head, or a 1xx) and then
    closed has answered something: the client gets the 502, no other server
    is asked. One that reset the connection without a word is passed over."""
    import struct

    def first(req, conn):
        if how == "partial head":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-")
        elif how == "interim":
            conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        else:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return harness.CLOSE
    a, b = backend_factory("a", first), backend_factory("b")
    p = start_proxy({"legacy": servers(a, b, health={"unhealthy": 100})}, admin={})
    with p.client() as c:
        r = c.request("GET", "/x")
        if how == "interim":
            assert r.status == 103  # passed on to the client as it came
            r = c.read_response()
    if how == "reset":
        assert (r.status, r.header("X-Backend")) == (200, "b")
        assert metrics(p)[1]['strangler_backend_server_retries_total{backend="legacy",'
                             'server="%s"}' % hostport(a)] == "1"
    else:
        assert r.status == 502, r
        assert b.requests == []
        assert metrics(p)[1]['strangler_backend_server_retries_total{backend="legacy",'
                             'server="%s"}' % hostport(a)] == "0"


def test_a_noise_sample_of_a_server_the_primary_left_is_dropped(backend_factory, start_proxy,
                                                                 tmp_path):
    """The noise sample asks the primary's server as soon as it is
    connected; when that server then drops the request and another answers
    it, that sample tells nothing of the answer compared: the comparison goes
    on without it (it counted a real difference as noise)."""
    import json

    def answer(name, doc):
        return lambda req, conn: Response(200, json.dumps(doc).encode(), headers=[
            ("Content-Type", "application/json"), ("X-Backend", name)])

    def a_handler(req, conn):  # drops the primary, answers its noise sample
        if req.header("X-Strangler-Shadow") != "1":
            return harness.CLOSE
        return answer("a", {"server": "m"})(req, conn)
    a = backend_factory("a", a_handler)
    b = backend_factory("b", answer("b", {"server": "b"}))
    modern = backend_factory("modern", answer("modern", {"server": "m"}))
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "shadow": {"backend": "modern", "noise": {"samples": 1}}}]
    p = start_proxy({"legacy": servers(a, b, health={"unhealthy": 100}), "modern": modern},
                    routes=routes, admin={}, shadow_defaults={
                        "diff_log": str(tmp_path / "d.jsonl"), "timeout_ms": 2000})
    assert who(p, "/x") == (200, "b")
    sc = compared(p, "r", 1)
    assert (sc["different"], sc["noise"]) == (1, 0), sc


def test_when_every_server_refuses_the_routes_other_side_answers(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy, "modern": servers(*dead_urls(2))},
                    routes=rollout_route())
    assert who(p, "/api/x") == (200, "legacy")
    e = p.wait_access(1)[0]
    assert (e["backend"], e["fallback_from"], e["server"]) == \
        ("legacy", "modern", hostport(legacy)), e


# --------------------------------------------------------------------------
# health per server


def test_passive_failures_take_one_server_out(backend_factory, start_proxy):
    """A server answering 5xx is marked down after `unhealthy` failures; the
    other serves alone; after interval_ms one trial request goes to the
    failed one."""
    a = backend_factory("a")
    b = backend_factory("b", answering(500, "b"))
    p = start_proxy({"legacy": servers(a, b, health={"unhealthy": 2, "interval_ms": 600})})
    first = [who(p) for _ in range(4)]
    assert sorted(first) == [(200, "a"), (200, "a"), (500, "b"), (500, "b")], first
    err = p.stderr_text()
    assert down_line("legacy", hostport(b), "consecutive failed requests") in err
    assert "(%s) is down" % hostport(a) not in err
    assert [who(p) for _ in range(5)] == [(200, "a")] * 5
    assert len(b.requests) == 2
    wait_for(lambda: who(p) == (500, "b"), timeout=3, interval=0.05, what="a trial request to b")
    assert who(p) == (200, "a")
    assert len(b.requests) == 3


def test_active_checks_run_on_each_server(backend_factory, start_proxy):
    """health.path is checked on every server; the one whose check fails gets
    no request while it is down, and requests alternate again once it
    passes."""
    fa, fb = Flaky("a"), Flaky("b", health=False)
    a = backend_factory("a", fa.handler)
    b = backend_factory("b", fb.handler)
    health = {"path": "/health", "interval_ms": 100, "timeout_ms": 500, "healthy": 1,
              "unhealthy": 1}
    p = start_proxy({"legacy": servers(a, b, health=health)}, admin={})
    wait_for(lambda: down_line("legacy", hostport(b), "health check: bad status")
             in p.stderr_text(), what="b marked down by its check")
    assert [who(p) for _ in range(10)] == [(200, "a")] * 10
    assert [r.path for r in b.requests if r.path != "/health"] == []
    assert "(%s) is down" % hostport(a) not in p.stderr_text()
    for srv in (a, b):
        checks = [r for r in srv.requests if r.path == "/health"]
        assert checks and checks[0].header("User-Agent") == "strangler-health-check"
    _, m = metrics(p)
    assert (m[server_up("legacy", hostport(a))], m[server_up("legacy", hostport(b))],
            m[backend_up("legacy")]) == ("1", "0", "1")
    fb.health_ok = True
    wait_for(lambda: "backend legacy (%s) is up again: health check passed" % hostport(b)
             in p.stderr_text(), what="b back")
    got = [who(p)[1] for _ in range(4)]
    assert sorted(got) == ["a", "a", "b", "b"], got


def test_a_backend_whose_servers_are_all_down_falls_back(backend_factory, start_proxy):
    """The rollout side's two servers fail, one after the other: the backend
    is down once both are, and its requests go to the route's other side."""
    legacy = backend_factory("legacy")
    m1 = backend_factory("m1", answering(500, "m1"))
    m2 = backend_factory("m2", answering(500, "m2"))
    p = start_proxy({"legacy": legacy,
                     "modern": servers(m1, m2, health={"unhealthy": 1, "interval_ms": 10000})},
                    routes=rollout_route(), admin={})
    assert sorted(who(p, "/api/x") for _ in range(2)) == [(500, "m1"), (500, "m2")]
    _, m = metrics(p)
    assert m[backend_up("modern")] == "0"
    assert (m[server_up("modern", hostport(m1))], m[server_up("modern", hostport(m2))]) == \
        ("0", "0")
    assert m['strangler_backend_health_transitions_total{backend="modern"}'] == "2"
    assert [who(p, "/api/x") for _ in range(3)] == [(200, "legacy")] * 3
    assert (len(m1.requests), len(m2.requests)) == (1, 1)
    for e in p.wait_access(5)[2:]:
        assert (e["backend"], e["fallback_from"], e["server"]) == \
            ("legacy", "modern", hostport(legacy)), e


def test_with_nowhere_else_to_go_down_servers_still_take_turns(backend_factory, start_proxy):
    """A backend without another side keeps sending requests to its servers
    when all are down, still round-robin."""
    a, b = backend_factory("a", answering(500, "a")), backend_factory("b", answering(500, "b"))
    p = start_proxy({"legacy": servers(a, b, health={"unhealthy": 1, "interval_ms": 10000})},
                    admin={})
    assert sorted(who(p) for _ in range(2)) == [(500, "a"), (500, "b")]
    assert metrics(p)[1][backend_up("legacy")] == "0"
    got = [who(p)[1] for _ in range(4)]
    assert sorted(got) == ["a", "a", "b", "b"] and got[0] != got[1], got


# --------------------------------------------------------------------------
# access log and metrics


def test_the_access_log_names_the_server(backend_factory, start_proxy):
    a, b, modern = backend_factory("a"), backend_factory("b"), backend_factory("modern")
    p = start_proxy({"legacy": servers(a, b), "modern": modern},
                    routes=[{"name": "m", "match": {"path_prefix": "/m"}, "backend": "modern"}])
    with p.client() as c:
        got = [c.request("GET", "/x/%d" % i).header("X-Backend") for i in range(4)]
        assert c.request("GET", "/m").status == 200
    with p.client() as c:
        c.send(harness.build_request("GET", "/nohost", host=None))
        assert c.read_response().status == 400
    entries = p.wait_access(6)
    by_name = {"a": hostport(a), "b": hostport(b)}
    assert [e["server"] for e in entries[:4]] == [by_name[n] for n in got]
    assert (entries[4]["backend"], entries[4]["server"]) == ("modern", hostport(modern))
    assert entries[5]["status"] == 400
    assert "server" in entries[5] and entries[5]["server"] is None, entries[5]


def test_metrics_per_server(backend_factory, start_proxy):
    """strangler_backend_server_up per server (a `url` backend has one), in
    one group; strangler_backend_up stays 1 while one server is up; the
    transitions of all servers add up."""
    fa, fb = Flaky("a"), Flaky("b")
    a, b = backend_factory("a", fa.handler), backend_factory("b", fb.handler)
    modern = backend_factory("modern")
    p = start_proxy({"legacy": servers(a, b, health={"unhealthy": 1, "interval_ms": 10000}),
                     "modern": modern}, admin={})
    text, m = metrics(p)
    assert (m[server_up("legacy", hostport(a))], m[server_up("legacy", hostport(b))],
            m[server_up("modern", hostport(modern))], m[backend_up("legacy")]) == \
        ("1", "1", "1", "1")
    samples = [l for l in text.splitlines() if l.startswith("strangler_backend_server_up")]
    assert len(samples) == 3
    block = text.split("# TYPE strangler_backend_server_up gauge\n", 1)[1].splitlines()
    assert block[:3] == samples, "the family's samples are not together after its TYPE"
    fa.failing = True
    wait_for(lambda: who(p) == (500, "a"), timeout=2, what="a request to a")
    _, m = metrics(p)
    assert (m[server_up("legacy", hostport(a))], m[server_up("legacy", hostport(b))],
            m[backend_up("legacy")]) == ("0", "1", "1")
    assert m['strangler_backend_health_transitions_total{backend="legacy"}'] == "1"
    fb.failing = True
    assert who(p) == (500, "b")  # the only server up
    _, m = metrics(p)
    assert (m[server_up("legacy", hostport(b))], m[backend_up("legacy")]) == ("0", "0")
    assert m['strangler_backend_health_transitions_total{backend="legacy"}'] == "2"
    assert (m[backend_up("modern")], m[server_up("modern", hostport(modern))]) == ("1", "1")


# --------------------------------------------------------------------------
# reload


def test_a_reload_keeps_the_rotation_and_applies_a_new_list(backend_factory, start_proxy):
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    p = start_proxy({"legacy": servers(a, b)})
    got = [who(p)[1] for _ in range(4)]
    assert sorted(got) == ["a", "a", "b", "b"], got
    rewrite(p, {"legacy": servers(a, b)})
    harness.reload_and_wait(p, 1)
    got = [who(p)[1] for _ in range(4)]
    assert sorted(got) == ["a", "a", "b", "b"], got
    # the same list: the pooled connections were kept and reused
    assert (a.connections, b.connections) == (1, 1)
    rewrite(p, {"legacy": servers(a, b, c)})
    harness.reload_and_wait(p, 2)
    got = [who(p)[1] for _ in range(6)]
    assert sorted(got) == ["a", "a", "b", "b", "c", "c"], got
    rewrite(p, {"legacy": servers(c)})
    harness.reload_and_wait(p, 3)
    assert [who(p)[1] for _ in range(3)] == ["c"] * 3
    assert (len(a.requests), len(b.requests)) == (6, 6)


def test_a_reload_keeps_each_backends_own_rotation(backend_factory, start_proxy):
    """Two backends with the same servers, listed the other way round after
    a reload: each goes on with its own rotation (and retry budget), not the
    other's, which took its place in the file."""
    a, b = backend_factory("a"), backend_factory("b")
    routes = [{"name": "one", "match": {"path_prefix": "/one"}, "backend": "one"}]
    p = start_proxy({"one": servers(a, b), "two": servers(a, b)}, routes=routes,
                    default_backend="two")
    assert who(p, "/one") == (200, "a")
    rewrite(p, {"two": servers(a, b), "one": servers(a, b)}, routes)
    harness.reload_and_wait(p, 1)
    assert [who(p, "/one")[1] for _ in range(3)] == ["b", "a", "b"]
    assert [who(p, "/two")[1] for _ in range(2)] == ["a", "b"]


def test_a_reload_keeps_each_servers_health(backend_factory, start_proxy):
    """Health belongs to the server's URL: a server down before a reload that
    adds another server is still down after it."""
    a, b, c = backend_factory("a"), backend_factory("b", answering(500, "b")), backend_factory("c")
    health = {"unhealthy": 1, "interval_ms": 10000}
    p = start_proxy({"legacy": servers(a, b, health=health)}, admin={})
    assert sorted(who(p) for _ in range(2)) == [(200, "a"), (500, "b")]
    rewrite(p, {"legacy": servers(a, b, c, health=health)}, admin={"address": "%s:%d" % (
        HOST, p.admin_port)})
    harness.reload_and_wait(p, 1)
    got = [who(p)[1] for _ in range(6)]
    assert sorted(got) == ["a"] * 3 + ["c"] * 3, got
    assert len(b.requests) == 1
    _, m = metrics(p)
    assert (m[server_up("legacy", hostport(b))], m[server_up("legacy", hostport(c))]) == \
        ("0", "1")
    assert "is up again" not in p.stderr_text()


# --------------------------------------------------------------------------
# keep-alive pool


def test_an_idle_connection_is_reused_for_its_own_server(backend_factory, start_proxy):
    """Ten requests one after the other: one connection to each server, each
    reused for that server only."""
    a, b = backend_factory("a"), backend_factory("b")
    p = start_proxy({"legacy": servers(a, b, max_idle=2)})
    for i in range(10):
        with p.client() as c:
            assert c.request("GET", "/pool/%d" % i).status == 200
    assert (a.connections, b.connections) == (1, 1)
    assert [r.seq for r in a.requests] == list(range(5))
    assert [r.seq for r in b.requests] == list(range(5))


def test_max_idle_counts_all_servers_of_a_backend(backend_factory, start_proxy):
    """max_idle = 1 is one idle connection for the whole backend: with two
    servers taking turns, at most one of them finds its connection waiting,
    so at least half of the requests open a new one."""
    a, b = backend_factory("a"), backend_factory("b")
    p = start_proxy({"legacy": servers(a, b, max_idle=1)})
    for i in range(10):
        with p.client() as c:
            assert c.request("GET", "/pool/%d" % i).status == 200
    assert len(a.requests) == len(b.requests) == 5
    assert a.connections + b.connections >= 6, (a.connections, b.connections)


# --------------------------------------------------------------------------
# shadows


def shadow_to(backend):
    return [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
             "shadow": {"backend": backend}}]


def test_shadows_take_turns_on_the_mirrors_servers(backend_factory, start_proxy, tmp_path):
    legacy = backend_factory("legacy")
    m1, m2 = backend_factory("m1"), backend_factory("m2")
    p = start_proxy({"legacy": legacy, "mirror": servers(m1, m2)}, routes=shadow_to("mirror"),
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl"),
                                     "timeout_ms": 2000})
    for i in range(10):
        assert who(p, "/s/%d" % i) == (200, "legacy")
    wait_for(lambda: len(m1.requests) + len(m2.requests) >= 10, what="ten shadows")
    time.sleep(0.1)
    assert (len(m1.requests), len(m2.requests)) == (5, 5)
    for r in m1.requests + m2.requests:
        assert r.header("X-Strangler-Shadow") == "1"
    assert sorted(r.path for r in m1.requests + m2.requests) == \
        sorted("/s/%d" % i for i in range(10))


def test_a_noise_sample_asks_the_primarys_own_server(backend_factory, start_proxy, tmp_path):
    """With noise samples on, the second ask goes to the server that served
    the primary, and does not take a turn: clients are still served by both
    servers in turn (the noise sample once took every other turn)."""
    a, b = backend_factory("a"), backend_factory("b")
    mirror = backend_factory("mirror")
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "shadow": {"backend": "mirror", "noise": {"samples": 1}}}]
    p = start_proxy({"legacy": servers(a, b), "mirror": mirror}, routes=routes,
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl"),
                                     "timeout_ms": 2000})
    served = [who(p, "/n/%d" % i)[1] for i in range(8)]
    assert served == ["a", "b"] * 4, served
    wait_for(lambda: len(a.requests) + len(b.requests) >= 16, what="the noise samples")
    time.sleep(0.1)
    # each server was asked each of its paths twice: the primary and its sample
    assert sorted(q.path for q in a.requests) == sorted(["/n/%d" % i for i in (0, 2, 4, 6)] * 2)
    assert sorted(q.path for q in b.requests) == sorted(["/n/%d" % i for i in (1, 3, 5, 7)] * 2)


def test_a_noise_sample_follows_the_primary_to_the_next_server(backend_factory, start_proxy,
                                                                tmp_path):
    """The primary's first server refuses and the request moves on: the noise
    sample asks the server that answered (once it has), so an answer that
    differs each time is noise, not a difference."""
    counter = iter(range(1000))

    def fresh(name):
        return lambda req, conn: Response(200, b'{"id": %d}' % next(counter), headers=[
            ("X-Backend", name), ("Content-Type", "application/json")])
    live, mirror = backend_factory("live", fresh("live")), backend_factory("mirror", fresh("m"))
    (dead,) = dead_urls(1)
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "shadow": {"backend": "mirror", "noise": {"samples": 1}}}]
    p = start_proxy({"legacy": servers(dead, live, health={"unhealthy": 100}),
                     "mirror": mirror}, routes=routes, admin={},
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl"),
                                     "timeout_ms": 2000})
    assert who(p, "/n1") == (200, "live")  # its turn was the refusing server
    wait_for(lambda: len(live.requests) >= 2, what="the noise sample on the live server")
    assert [q.path for q in live.requests] == ["/n1", "/n1"]

    sc = compared(p, "r", 1)
    assert (sc["noise"], sc["different"]) == (1, 0), sc


def test_a_slow_primarys_noise_sample_has_its_time(backend_factory, start_proxy, tmp_path):
    """The primary takes 0.6 s of a 1 s shadow timeout: the noise sample goes
    out as the primary's connection comes up, not after its answer, so it is
    back in time and the changing field is noise; the primary's server is not
    taken for one that does not answer shadows."""
    counter = iter(range(1000))

    def slow(req, conn):
        time.sleep(0.6)
        return Response(200, b'{"nonce": %d}' % next(counter),
                        headers=[("Content-Type", "application/json")])
    legacy = backend_factory("legacy", slow)
    mirror = backend_factory("mirror", lambda req, conn: Response(
        200, b'{"nonce": -1}', headers=[("Content-Type", "application/json")]))
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "shadow": {"backend": "mirror", "noise": {"samples": 1}}}]
    p = start_proxy({"legacy": legacy, "mirror": mirror}, routes=routes, admin={},
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl"),
                                     "timeout_ms": 1000})
    for i in range(3):
        assert who(p, "/s/%d" % i)[0] == 200

    sc = compared(p, "r", 3)
    assert (sc["noise"], sc["different"], sc["timeouts"]) == (3, 0, 0), sc
    assert "does not answer shadows" not in p.stderr_text()


def test_a_noise_sample_answered_500_counts_against_its_server(backend_factory, start_proxy,
                                                               tmp_path):
    """The noise sample asks the primary's server, so its answer counts as a
    request's would: a server answering 500 to everything goes down, its
    noise samples notwithstanding."""
    bad = backend_factory("bad", answering(500, "bad"))
    good = backend_factory("good")
    mirror = backend_factory("mirror")
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "shadow": {"backend": "mirror", "noise": {"samples": 1}}}]
    p = start_proxy({"legacy": servers(bad, good, health={"unhealthy": 3}), "mirror": mirror},
                    routes=routes, shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl")})
    for i in range(8):
        who(p, "/n/%d" % i)
        time.sleep(0.02)
    wait_for(lambda: down_line("legacy", hostport(bad), "") in p.stderr_text(), timeout=3,
             what="the failing server marked down")


def test_shadows_skip_a_mirror_server_that_is_down(backend_factory, start_proxy, tmp_path):
    """A refusing server of the mirror is marked down by its shadows; later
    shadows all go to the server that is up."""
    legacy = backend_factory("legacy")
    m = backend_factory("m")
    (dead,) = dead_urls(1)
    p = start_proxy({"legacy": legacy, "mirror": servers(m, dead)}, routes=shadow_to("mirror"),
                    shadow_defaults={"diff_log": str(tmp_path / "diffs.jsonl"),
                                     "timeout_ms": 2000})
    deadline = time.monotonic() + 3
    while down_line("mirror", dead.split("//")[1], "") not in p.stderr_text():
        assert time.monotonic() < deadline, "the refusing mirror server never went down"
        assert who(p) == (200, "legacy")
        time.sleep(0.02)
    time.sleep(0.1)
    n = len(m.requests)
    for _ in range(6):
        assert who(p) == (200, "legacy")
    m.wait_requests(n + 6)
    time.sleep(0.1)
    assert len(m.requests) == n + 6


def silent_listener():
    """A port where the kernel completes connections and nobody answers."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, 0))
    s.listen(64)
    return s


def test_shadows_paused_only_when_every_mirror_server_is(backend_factory, start_proxy,
                                                         tmp_path):
    """strangler_backend_shadows_paused is 1 only once every server of the
    mirror stopped answering shadows; one silent server of two is not
    enough, and the backend stays up for primaries either way."""
    legacy = backend_factory("legacy")
    m = backend_factory("m")
    s1, s2 = silent_listener(), silent_listener()
    try:
        url = lambda s: "http://%s:%d" % (HOST, s.getsockname()[1])
        sd = {"diff_log": str(tmp_path / "diffs.jsonl"), "timeout_ms": 200}
        half = start_proxy({"legacy": legacy, "mirror": servers(m, url(s1))},
                           routes=shadow_to("mirror"), shadow_defaults=sd, admin={})
        silent = "backend mirror (%s:%d) does not answer shadows" % (HOST, s1.getsockname()[1])
        deadline = time.monotonic() + 4
        while silent not in half.stderr_text():
            assert time.monotonic() < deadline, "the silent server's shadows never paused"
            assert who(half) == (200, "legacy")
            time.sleep(0.05)
        _, got = metrics(half)
        assert got['strangler_backend_shadows_paused{backend="mirror"}'] == "0"
        n = len(m.requests)
        for _ in range(4):
            assert who(half) == (200, "legacy")
        m.wait_requests(n + 2)  # the answering server still gets its shadows

        full = start_proxy({"legacy": legacy, "mirror": servers(url(s1), url(s2))},
                           routes=shadow_to("mirror"), shadow_defaults=sd, admin={})
        deadline = time.monotonic() + 4
        while metrics(full)[1]['strangler_backend_shadows_paused{backend="mirror"}'] != "1":
            assert time.monotonic() < deadline, "shadows to the mirror never paused"
            assert who(full) == (200, "legacy")
            time.sleep(0.05)
        assert metrics(full)[1][backend_up("mirror")] == "1"
    finally:
        s1.close()
        s2.close()


# --------------------------------------------------------------------------
# host_header


def test_host_header_is_the_host_a_backend_gets(backend_factory, start_proxy, tmp_path):
    """host_header: the backend (behind an ingress that routes on Host, say)
    gets that Host, first of the fields; X-Forwarded-Host keeps the client's.
    A backend without it gets the client's Host, as before."""
    modern, legacy = backend_factory("modern"), backend_factory("legacy")
    routes = [{"name": "m", "match": {"path_prefix": "/m"}, "backend": "modern"}]
    p = start_proxy({"legacy": legacy,
                     "modern": {"url": modern.url, "host_header": "modern.internal:8443"}},
                    routes=routes)
    with p.client() as c:
        assert c.request("GET", "/m/1", host="shop.example").status == 200
        assert c.request("GET", "/l/1", host="shop.example").status == 200
    (m,) = modern.requests
    assert m.headers[0] == ("Host", "modern.internal:8443"), m.headers
    assert m.header_all("Host") == ["modern.internal:8443"]
    assert m.header("X-Forwarded-Host") == "shop.example"
    (l,) = legacy.requests
    assert l.header_all("Host") == ["shop.example"] and l.headers[0][0] == "Host"
    # an HTTP/1.0 request without Host gets it too
    c = harness.RawClient(p.port)
    try:
        c.send(b"GET /m/2 HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200
    finally:
        c.close()
    wait_for(lambda: len(modern.requests) == 2, what="the HTTP/1.0 request")
    assert modern.requests[1].header_all("Host") == ["modern.internal:8443"]


def moved_and_mirrored(primary):
    """Routes r (legacy at 100 %, its rollout's base modern: a refusal moves
    a request there) and s (primary, mirrored to the backend mirror)."""
    return [{"name": "r", "match": {"path_prefix": "/r"}, "backend": "modern",
             "rollout": {"backend": "legacy", "percent": 100.0}},
            {"name": "s", "match": {"path_prefix": "/s"}, "backend": primary,
             "shadow": {"backend": "mirror"}}]


def test_host_header_follows_a_request_to_the_other_side_and_to_a_mirror(backend_factory,
                                                                        start_proxy, tmp_path):
    """A refusal on a rollout's side with host_header moves the request to
    the other side with that side's Host (the client's, put back); a mirror
    with host_header gets its own Host while the primary keeps the client's."""
    modern = backend_factory("modern")
    mirror = backend_factory("mirror")
    (dead,) = dead_urls(1)
    routes = moved_and_mirrored("modern")
    p = start_proxy({"legacy": {"url": dead, "host_header": "legacy.internal"},
                     "modern": modern,
                     "mirror": {"url": mirror.url, "host_header": "mirror.internal"}},
                    routes=routes, shadow_defaults={"diff_log": str(tmp_path / "d.jsonl")})
    with p.client() as c:
        r = c.request("GET", "/r/1", host="shop.example")
        assert r.status == 200 and r.header("X-Backend") == "modern"
        assert c.request("GET", "/s/1", host="shop.example").status == 200
    assert [q.header_all("Host") for q in modern.requests] == [["shop.example"]] * 2
    wait_for(lambda: mirror.requests, what="the shadow")
    assert mirror.requests[0].header_all("Host") == ["mirror.internal"]
    assert mirror.requests[0].header("X-Forwarded-Host") == "shop.example"


@pytest.mark.parametrize("host", ["", "h" * 300], ids=["empty", "300 bytes"])
def test_any_client_host_is_put_back_for_the_other_side_and_a_mirror(backend_factory,
                                                                     start_proxy, tmp_path,
                                                                     host):
    """An empty Host (RFC 9112 allows it) or a long one, from a client whose
    request first went to a backend with host_header: the rollout's other
    side and a mirror, without host_header, get it back as it was."""
    modern, mirror, prim = (backend_factory("modern"), backend_factory("mirror"),
                            backend_factory("prim"))
    (dead,) = dead_urls(1)
    routes = moved_and_mirrored("prim")
    p = start_proxy({"legacy": {"url": dead, "host_header": "legacy.internal"},
                     "modern": modern,
                     "prim": {"url": prim.url, "host_header": "prim.internal"},
                     "mirror": mirror},
                    routes=routes, shadow_defaults={"diff_log": str(tmp_path / "d.jsonl")})
    with p.client() as c:
        c.send(("GET /r/1 HTTP/1.1\r\nHost: %s\r\n\r\nGET /s/1 HTTP/1.1\r\nHost: %s\r\n\r\n"
                % (host, host)).encode())
        assert [c.read_response().status for _ in range(2)] == [200, 200]
    assert [q.header_all("Host") for q in modern.requests] == [[host]]
    assert prim.requests[0].header_all("Host") == ["prim.internal"]
    wait_for(lambda: mirror.requests, what="the shadow")
    assert mirror.requests[0].header_all("Host") == [host]


def test_host_header_in_health_checks_and_its_check(backend_factory, start_proxy, tmp_path):
    """Active health checks carry host_header too; -t refuses one that is not
    a host[:port]."""
    seen = []

    def handler(req, conn):
        seen.append(req.header("Host"))
        return Response(200, b"ok")
    b = backend_factory("b", handler)
    start_proxy({"legacy": {"url": b.url, "host_header": "b.internal",
                            "health": {"path": "/health", "interval_ms": 100}}})
    wait_for(lambda: seen, what="a health check")
    assert seen[0] == "b.internal"
    conf, out = check_legacy(tmp_path, 'url = "http://127.0.0.1:9001"; host_header = "a b";')
    assert out.returncode == 1
    assert out.stderr.splitlines()[0] == (
        '%s:3: backends.legacy.host_header: "a b": must be a host name or address, with an '
        'optional port (at most 255 characters)' % conf)


def test_outcomes_per_server_in_metrics_and_api(backend_factory, start_proxy):
    """One server answers 500, the other 200: the outcome counters tell them
    apart (the one instance of several that fails), in /metrics and in
    GET /api/backends."""
    bad = backend_factory("bad", answering(500, "bad"))
    good = backend_factory("good")
    p = start_proxy({"legacy": servers(bad, good, health={"unhealthy": 100})}, admin={})
    assert sorted(who(p)[0] for _ in range(6)) == [200] * 3 + [500] * 3
    _, m = metrics(p)
    name = "strangler_backend_server_outcomes_total"
    key = '%s{backend="legacy",server="%s",result="%s"}'
    assert (m[key % (name, hostport(bad), "ok")], m[key % (name, hostport(bad), "failed")]) \
        == ("0", "3")
    assert (m[key % (name, hostport(good), "ok")], m[key % (name, hostport(good), "failed")]) \
        == ("3", "0")
    st, got = p.admin("GET", "/api/backends")
    (legacy,) = got["backends"]
    assert [(s["ok"], s["failed"]) for s in legacy["servers"]] == [(0, 3), (3, 0)]
    assert (legacy["ok"], legacy["failed"]) == (3, 3)


# --------------------------------------------------------------------------
# weights and backup servers


def heavy(b, weight):
    return {"url": b.url if isinstance(b, harness.Backend) else b, "weight": weight}


def backup(b):
    return {"url": b.url if isinstance(b, harness.Backend) else b, "backup": True}


def test_weights_split_the_requests(backend_factory, start_proxy):
    """Weights 3 and 1: three requests of four to the heavy server, spread
    out (a a b a, nginx's smooth order), on one connection or many."""
    a, b = backend_factory("a"), backend_factory("b")
    p = start_proxy({"legacy": {"servers": [heavy(a, 3), b.url]}})
    with p.client() as c:
        got = "".join(c.request("GET", "/w/%d" % i).header("X-Backend") for i in range(8))
    assert got == "aabaaaba"
    got = "".join(who(p)[1] for _ in range(4))
    assert got == "aaba"
    assert (len(a.requests), len(b.requests)) == (9, 3)


def test_a_down_servers_share_goes_to_the_others_by_weight(backend_factory, start_proxy):
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    (dead,) = dead_urls(1)
    p = start_proxy({"legacy": {"servers": [heavy(dead, 4), heavy(a, 2), b.url, c.url],
                                "health": {"unhealthy": 1, "interval_ms": 60000}}})
    with p.client() as cl:
        got = "".join(cl.request("GET", "/d/%d" % i).header("X-Backend") for i in range(12))
    # the dead one, first in turn, refused: its request went on to the next
    # server (a), and it is down; then 2:1:1 over the rest, two whole rounds
    # in every eight requests
    assert got[0] == "a", got
    assert sorted(got[1:9]) == sorted("aaaabbcc"), got
    assert down_line("legacy", dead.split("//")[1], "consecutive failed requests") in \
        p.stderr_text()


def test_a_backup_server_takes_requests_only_when_no_other_can(backend_factory, start_proxy):
    a, spare = backend_factory("a"), backend_factory("spare")
    dead = dead_urls(2)
    p = start_proxy({"legacy": {"servers": [a.url, backup(spare)],
                                "health": {"unhealthy": 1, "interval_ms": 60000}}}, admin={})
    assert [who(p)[1] for _ in range(4)] == ["a"] * 4
    assert spare.requests == []
    st, got = p.admin("GET", "/api/backends")
    assert [(s["address"], s["weight"], s["backup"]) for s in got["backends"][0]["servers"]] == \
        [(hostport(a), 1, False), (hostport(spare), 1, True)]

    # both primaries refuse: a GET tries each, then the backup; then they
    # are down and requests go to the backup at once
    p2 = start_proxy({"legacy": {"servers": dead + [backup(spare)],
                                 "health": {"unhealthy": 1, "interval_ms": 60000}}})
    with p2.client() as c:
        for i in range(3):
            r = c.request("GET", "/b/%d" % i)
            assert (r.status, r.header("X-Backend")) == (200, "spare"), r
        # not a POST with a body: it may not be safe to send twice
    e = p2.wait_access(3)
    assert [x["server"] for x in e] == [hostport(spare)] * 3
    text = p2.stderr_text()
    assert text.count("retried on %s" % hostport(spare)) == 1, text
    for u in dead:
        assert down_line("legacy", u.split("//")[1], "consecutive failed requests") in text
    assert "(%s) is down" % hostport(spare) not in text


def test_least_conn_sends_requests_past_a_server_busy_with_slow_ones(backend_factory,
                                                                     start_proxy):
    """balance = "least_conn": while a's connection is held by a slow request,
    the quick ones go to b (round-robin would send every other one to a,
    to wait behind nothing but still to the slow server); once a is free,
    the turns are even again."""
    release = threading.Event()

    def slow_a(req, conn):
        if req.path == "/slow":
            release.wait(10)
        return answering(200, "a")(req, conn)
    a, b = backend_factory("a", slow_a), backend_factory("b")
    p = start_proxy({"legacy": {"servers": [a.url, b.url], "balance": "least_conn"}},
                    admin={})
    assert p.admin("GET", "/api/backends")[1]["backends"][0]["balance"] == "least_conn"
    out = run_strangler("explain", "-c", p.conf_path, "GET", "/")
    assert "backend:  legacy (%s, %s) least_conn" % (a.url, b.url) in out.stdout, out.stdout
    slow = p.client(timeout=15)
    slow.send(harness.build_request("GET", "/slow"))  # all idle: a, first in turn
    a.wait_requests(1)
    try:
        got = "".join(who(p, "/q/%d" % i)[1] for i in range(6))
        assert got == "bbbbbb", got
    finally:
        release.set()
    assert slow.read_response().header("X-Backend") == "a"
    slow.close()
    got = [who(p, "/r/%d" % i)[1] for i in range(4)]
    assert sorted(got) == ["a", "a", "b", "b"], got


def test_all_servers_down_are_tried_by_weight_and_not_the_backup(backend_factory, start_proxy):
    """Every server marked down and nowhere else to go: requests still go to
    the servers, by weight (3:1), and not to the backup, which stands in only
    for servers that could take requests."""
    def sick(name):
        return lambda req, conn: Response(500 if req.path == "/health" else 200, name.encode(),
                                          headers=[("X-Backend", name)])
    a, b, spare = (backend_factory(n, sick(n)) for n in ("a", "b", "spare"))
    p = start_proxy({"legacy": {"servers": [heavy(a, 3), b.url, backup(spare)],
                                "health": {"path": "/health", "interval_ms": 100,
                                           "unhealthy": 1}}}, admin={})
    wait_for(lambda: metrics(p)[1].get(backend_up("legacy")) == "0", what="all three down")
    got = "".join(who(p, "/w/%d" % i)[1][0] for i in range(8))
    assert sorted(got) == sorted("aaaaaabb"), got
    assert not [q for q in spare.requests if q.path != "/health"]


def holding(name):
    """A handler that holds /hold/... until its event is set; (handler, event)."""
    release = threading.Event()

    def handler(req, conn):
        if req.path.startswith("/hold"):
            release.wait(10)
        return answering(200, name)(req, conn)
    return handler, release


def hold(p, path="/hold"):
    """A client whose request is sent and not yet answered."""
    c = p.client(timeout=15)
    c.send(harness.build_request("GET", path))
    return c


def test_max_conns_passes_a_full_server_over_then_answers_503(backend_factory, start_proxy):
    """max_conns = 1: a server with a request in flight takes no other; the
    next goes to the other server; with both busy the proxy answers 503
    (counted as the backend's 5xx: it is its capacity); once one is free,
    requests go through again."""
    ha, ra = holding("a")
    hb, rb = holding("b")
    a, b = backend_factory("a", ha), backend_factory("b", hb)
    p = start_proxy({"legacy": {"servers": [a.url, b.url], "max_conns": 1}}, admin={})
    held = [hold(p, "/hold/1")]
    a.wait_requests(1)
    try:
        assert who(p, "/q")[1] == "b"  # a is busy; b is free again after it
        held.append(hold(p, "/hold/2"))
        b.wait_requests(2)
        with p.client() as c:
            r = c.request("GET", "/q2")
        assert r.status == 503 and b"every server at max_conns" in r.body, r
    finally:
        ra.set()
        rb.set()
    assert [h.read_response().header("X-Backend") for h in held] == ["a", "b"]
    for h in held:
        h.close()
    assert who(p, "/q3")[0] == 200
    e = p.wait_access(5)
    refused = [x for x in e if x["status"] == 503]
    assert [(x["backend"], x["server"], x["error"]) for x in refused] == [
        ("legacy", None, "every server at max_conns")]
    assert metrics(p)[1]['strangler_requests_total{route="(default)",backend="legacy",class="5xx"}'] == "1"


@pytest.mark.parametrize("queue, rc, said", [
    ('max_conns = 2; queue = { max = 50; timeout_ms = 2000; };', 0, None),
    ('queue = { max = 50; };', 0, "3: warning: backends.legacy.queue: has no effect without "
     "max_conns (requests wait only for a server at max_conns)"),
    ('max_conns = 2; queue = { timeout_ms = 2000; };', 1,
     "3: backends.legacy.queue.max: required (how many requests may wait, per worker)"),
    ('max_conns = 2; queue = { max = 0; };', 1, "3: backends.legacy.queue.max: must be between "
     "1 and 100000"),
    ('max_conns = 2; queue = { max = 5; timeout_ms = 0; };', 1,
     "3: backends.legacy.queue.timeout_ms: must be between 1 and 3600000"),
    ('max_conns = 2; queue = { max = 5; size = 3; };', 1,
     "3: backends.legacy.queue.size: unknown setting"),
    ('max_conns = 2; queue = 5;', 1, "3: backends.legacy.queue: must be a group"),
])
def test_check_of_a_backends_queue(tmp_path, queue, rc, said):
    conf, r = check_legacy(tmp_path, 'url = "http://127.0.0.1:9001"; ' + queue)
    assert r.returncode == rc, r.stderr
    if said:
        assert "%s:%s" % (conf, said) in r.stderr, r.stderr
    if rc == 0 and not said:
        out = run_strangler("explain", "-c", str(conf), "GET", "/x")
        assert "backend:  legacy (http://127.0.0.1:9001) max_conns=2 queue=50/2000ms" in \
            out.stdout.splitlines(), out.stdout


def test_a_queue_holds_requests_until_a_connection_is_given_back(backend_factory,
                                                                start_proxy):
    """backends.NAME.queue: with the only server at max_conns, requests wait
    in turn (FIFO) for its connection instead of a 503; a POST's body waits
    with it and arrives whole; the access log gives each its queue_ms. Past
    queue.max a request gets its 503 at once."""
    ha, ra = holding("a")
    a = backend_factory("a", ha)
    p = start_proxy({"legacy": {"url": a.url, "max_conns": 1,
                                "queue": {"max": 2, "timeout_ms": 5000}}}, admin={})
    assert p.admin("GET", "/api/backends/legacy")[1]["queue"] == {"max": 2, "timeout_ms": 5000}
    held = hold(p, "/hold/0")
    a.wait_requests(1)
    waiting = [hold(p, "/q/1")]
    time.sleep(0.1)  # the order they came in
    w2 = p.client(timeout=15)
    w2.send(harness.build_request("POST", "/q/2", body=b"x" * 200000))
    waiting.append(w2)
    time.sleep(0.2)
    assert len(a.requests) == 1  # both wait
    assert metrics(p)[1]['strangler_queue_waiting{route="(default)",backend="legacy"}'] == "2"
    with p.client() as c:  # the queue is full: at once
        r = c.request("GET", "/full")
        assert r.status == 503 and b"every server at max_conns" in r.body, r
    ra.set()
    assert held.read_response().status == 200
    got = [w.read_response() for w in waiting]
    assert [(r.status, r.header("X-Backend")) for r in got] == [(200, "a")] * 2
    for c in [held] + waiting:
        c.close()
    assert [r.path for r in a.requests] == ["/hold/0", "/q/1", "/q/2"]
    assert a.requests[2].body == b"x" * 200000
    log = {e["path"]: e for e in p.wait_access(4)}
    assert "queue_ms" not in log["/hold/0"] and "queue_ms" not in log["/full"]
    assert log["/q/1"]["queue_ms"] >= 150 and log["/q/2"]["queue_ms"] >= 150, log
    assert log["/full"]["error"] == "every server at max_conns"
    m = metrics(p)[1]
    assert m['strangler_queue_waiting{route="(default)",backend="legacy"}'] == "0"
    assert m['strangler_queued_total{route="(default)",backend="legacy",result="served"}'] == "2"
    assert m['strangler_queued_total{route="(default)",backend="legacy",result="timeout"}'] == "0"


def test_a_newcomer_does_not_jump_a_full_queue(backend_factory, start_proxy):
    """With queue.max requests waiting and a server that has room (here one
    given back from a drain; also a connection given back in the loop pass
    of a new request's head), a new request was sent to that server ahead of
    the waiting one, which then got 503 queue timeout. It gets the 503 of a
    full queue at once, and the waiting one the room."""
    ha, ra = holding("a")
    hb, rb = holding("b")
    a, b = backend_factory("a", ha), backend_factory("b", hb)
    p = start_proxy({"legacy": {"servers": [a.url, b.url], "max_conns": 1,
                                "queue": {"max": 1, "timeout_ms": 1500}}}, admin={})
    server_b = "%s:%d" % (HOST, b.port)
    assert p.admin("PATCH", "/api/backends/legacy", {"server": server_b, "drain": True})[0] == 200
    clients = []
    try:
        clients.append(hold(p, "/hold/first"))
        a.wait_requests(1)
        clients.append(hold(p, "/hold/waiting"))  # a at max_conns, b drained: it waits
        time.sleep(0.3)
        assert len(a.requests) + len(b.requests) == 1
        late = p.client(timeout=15)
        clients.append(late)
        assert p.admin("PATCH", "/api/backends/legacy",
                       {"server": server_b, "drain": False})[0] == 200  # room at b
        late.send(harness.build_request("GET", "/hold/late"))
        r = late.read_response()
        assert r.status == 503, r
        b.wait_requests(1)
        assert [q.path for q in b.requests] == ["/hold/waiting"]
    finally:
        ra.set()
        rb.set()
    assert clients[1].read_response().status == 200
    for c in clients:
        c.close()


def test_a_request_that_waits_past_queue_timeout_gets_503(backend_factory, start_proxy):
    ha, ra = holding("a")
    a = backend_factory("a", ha)
    p = start_proxy({"legacy": {"url": a.url, "max_conns": 1,
                                "queue": {"max": 10, "timeout_ms": 300}}}, admin={})
    held = hold(p, "/hold")
    a.wait_requests(1)
    try:
        with p.client() as c:
            t0 = time.monotonic()
            r = c.request("GET", "/late")
            took = time.monotonic() - t0
            assert (r.status, r.body) == (503, b"queue timeout\n"), r
            assert 0.25 <= took < 2, took
            assert r.header("Connection") is None  # the connection goes on
    finally:
        ra.set()
    assert held.read_response().status == 200
    held.close()
    e = p.wait_access(2)[0]
    assert (e["path"], e["status"], e["error"], e["server"]) == ("/late", 503, "queue timeout",
                                                                None), e
    assert 250 <= e["queue_ms"] < 2000, e
    assert [r.path for r in a.requests] == ["/hold"]
    assert who(p, "/after") == (200, "a")
    assert metrics(p)[1]['strangler_queued_total{route="(default)",backend="legacy",'
                         'result="timeout"}'] == "1"


def test_a_waiting_client_that_leaves_frees_its_place(backend_factory, start_proxy):
    """A client that resets its connection while its request waits leaves
    the queue: the place goes to the next, and nothing is sent for the one
    that left. (A client that only closes its side, a FIN, is answered as
    any half-closed client is, once its turn comes.)"""
    import struct
    ha, ra = holding("a")
    a = backend_factory("a", ha)
    p = start_proxy({"legacy": {"url": a.url, "max_conns": 1,
                                "queue": {"max": 1, "timeout_ms": 5000}}}, admin={})
    held = hold(p, "/hold")
    a.wait_requests(1)
    gone = hold(p, "/gone")
    time.sleep(0.2)
    gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.close()
    time.sleep(0.2)
    nxt = hold(p, "/next")  # the queue's one place is free again
    time.sleep(0.2)
    ra.set()
    assert held.read_response().status == 200
    assert nxt.read_response().status == 200
    held.close()
    nxt.close()
    assert [r.path for r in a.requests] == ["/hold", "/next"]
    m = metrics(p)[1]
    assert [m['strangler_queued_total{route="(default)",backend="legacy",result="%s"}' % r]
            for r in ("served", "timeout", "gave_up")] == ["1", "0", "1"]
    gone_log = [e for e in p.wait_access(3) if e["path"] == "/gone"][0]
    assert gone_log["error"] == "client closed connection" and gone_log["queue_ms"] > 100


class Counting:
    """A handler that holds /hold... until release, and records the most
    requests it had in flight at once."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.now = self.peak = 0
        self.release = threading.Event()

    def handler(self, req, conn):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            if req.path.startswith("/hold"):
                self.release.wait(10)
            return answering(200, self.name)(req, conn)
        finally:
            with self.lock:
                self.now -= 1


@pytest.mark.parametrize("after", ["more servers", "backend removed"])
def test_waiting_requests_keep_max_conns_across_a_reload(backend_factory, start_proxy, after):
    """A reload that changes the backend's servers, or removes it, while
    requests wait: they wait for the connections of the list they came in
    with, as requests in flight finish on it, so that server never has more
    than max_conns at once; all are served. (Review reproducers R1, R9.)"""
    ca = Counting("a")
    a, b = backend_factory("a", ca.handler), backend_factory("b", answering(200, "b"))
    q = {"max": 5, "timeout_ms": 8000}
    p = start_proxy({"legacy": {"url": a.url, "max_conns": 1, "queue": q}}, admin={})
    held = hold(p, "/hold/0")
    a.wait_requests(1)
    waiting = [hold(p, "/hold/w%d" % i) for i in range(3)]
    time.sleep(0.3)
    backends = {"legacy": {"servers": [a.url, b.url], "max_conns": 1, "queue": q}} \
        if after == "more servers" else {"other": {"url": b.url}}
    rewrite(p, backends, admin={"address": "%s:%d" % (HOST, p.admin_port)})
    harness.reload_and_wait(p, 1)
    time.sleep(0.5)
    assert ca.peak == 1 and len(a.requests) == 1, [r.path for r in a.requests]
    ca.release.set()
    got = [c.read_response() for c in [held] + waiting]
    for c in [held] + waiting:
        c.close()
    assert [(r.status, r.header("X-Backend")) for r in got] == [(200, "a")] * 4
    assert ca.peak == 1


def test_queue_waiting_counts_a_routes_requests_across_its_removal(backend_factory,
                                                                  start_proxy):
    """strangler_queue_waiting by route: the requests waiting now; a reload
    that drops the route while they wait keeps their counters until they
    are served (then the route's series goes)."""
    ca = Counting("a")
    a = backend_factory("a", ca.handler)
    q = {"max": 5, "timeout_ms": 8000}
    legacy = {"url": a.url, "max_conns": 1, "queue": q}
    r = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy"}]
    p = start_proxy({"legacy": legacy}, routes=r, admin={})
    held = hold(p, "/hold/0")
    a.wait_requests(1)
    waiting = [hold(p, "/hold/w%d" % i) for i in range(2)]
    key = 'strangler_queue_waiting{route="r",backend="legacy"}'
    wait_for(lambda: metrics(p)[1].get(key) == "2", what="two requests waiting")
    rewrite(p, {"legacy": legacy}, admin={"address": "%s:%d" % (HOST, p.admin_port)})
    harness.reload_and_wait(p, 1)
    ca.release.set()
    got = [c.read_response() for c in [held] + waiting]
    for c in [held] + waiting:
        c.close()
    assert [g.status for g in got] == [200] * 3
    assert ca.peak == 1
    assert key not in metrics(p)[1]


def test_a_reload_raising_max_conns_serves_the_waiting_first(backend_factory, start_proxy):
    """max_conns 1 -> 3 with the servers kept: the waiting requests take the
    new room at once, before a request that came after them. (R2)"""
    ca = Counting("a")
    a = backend_factory("a", ca.handler)
    q = {"max": 5, "timeout_ms": 3000}
    p = start_proxy({"legacy": {"url": a.url, "max_conns": 1, "queue": q}}, admin={})
    held = hold(p, "/hold/0")
    a.wait_requests(1)
    w = [hold(p, "/w%d" % i) for i in range(2)]
    time.sleep(0.2)
    rewrite(p, {"legacy": {"url": a.url, "max_conns": 3, "queue": q}},
            admin={"address": "%s:%d" % (HOST, p.admin_port)})
    harness.reload_and_wait(p, 1)
    t0 = time.monotonic()
    got = [c.read_response() for c in w]
    assert time.monotonic() - t0 < 1
    with p.client() as c:
        assert c.request("GET", "/newcomer").status == 200
    ca.release.set()
    assert held.read_response().status == 200
    for c in [held] + w:
        c.close()
    assert [g.status for g in got] == [200, 200]
    paths = [x.path for x in a.requests]  # w0 and w1 go together: either may land first
    assert paths[0] == "/hold/0" and sorted(paths[1:3]) == ["/w0", "/w1"], paths
    assert paths[3:] == ["/newcomer"], paths


def test_a_server_given_back_its_requests_takes_the_waiting_ones(backend_factory, start_proxy):
    """Room that comes without a connection given back (a drain ended)
    reaches the queue within a tick (SP_QUEUE_TICK_MS). (R3)"""
    ca = Counting("a")
    a, b = backend_factory("a", ca.handler), backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": {"servers": [a.url, b.url], "max_conns": 1,
                                "queue": {"max": 5, "timeout_ms": 3000}}}, admin={})
    assert drain(p, "legacy", hostport(b))[0] == 200
    held = hold(p, "/hold/0")
    a.wait_requests(1)
    w = hold(p, "/w")
    time.sleep(0.2)
    assert drain(p, "legacy", hostport(b), False)[0] == 200
    t0 = time.monotonic()
    r = w.read_response()
    took = time.monotonic() - t0
    ca.release.set()
    assert held.read_response().status == 200
    held.close()
    w.close()
    assert (r.status, r.header("X-Backend")) == (200, "b") and took < 1, (r, took)
    # every server drained: no queue, the 503 at once
    assert drain(p, "legacy", hostport(a))[0] == 200
    assert drain(p, "legacy", hostport(b))[0] == 200
    with p.client() as c:
        r = c.request("GET", "/none")
        assert (r.status, r.body) == (503, b"every server drained or at max_conns\n")


def test_a_waiting_upload_stays_with_the_client(backend_factory, start_proxy):
    """A request with a 200 MiB body that waits: strangler reads a buffer's
    worth of it, no more, until its turn; then the body arrives whole. (R4)"""
    ca = Counting("a")
    a = backend_factory("a", ca.handler)
    p = start_proxy({"legacy": {"url": a.url, "max_conns": 1,
                                "queue": {"max": 5, "timeout_ms": 8000}}}, admin={})
    held = hold(p, "/hold/0")
    a.wait_requests(1)
    total = 200 << 20
    s = socket.create_connection((HOST, p.port))
    s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    s.setblocking(False)
    sent, block, t0 = 0, b"x" * 65536, time.monotonic()
    while sent < total and time.monotonic() - t0 < 3:
        try:
            sent += s.send(block[:min(len(block), total - sent)])
        except BlockingIOError:
            time.sleep(0.01)
    assert sent < 32 << 20, "the client sent %d MiB while its request waited" % (sent >> 20)
    ca.release.set()
    assert held.read_response().status == 200
    held.close()
    s.setblocking(True)
    while sent < total:
        sent += s.send(block[:min(len(block), total - sent)])
    s.settimeout(10)
    assert s.recv(12) == b"HTTP/1.1 200"
    s.close()
    assert a.requests[1].body_len == total


def test_a_503_at_max_conns_keeps_the_connection(backend_factory, start_proxy):
    """Pipelined GETs while the only server is full: each gets its 503 on the
    same connection (a reconnect is the last thing a saturated service
    needs), which serves the next request once there is room."""
    ha, ra = holding("a")
    a = backend_factory("a", ha)
    p = start_proxy({"legacy": {"url": a.url, "max_conns": 1}})
    held = hold(p, "/hold")
    a.wait_requests(1)
    c = p.client(timeout=15)
    try:
        c.send(harness.build_request("GET", "/p1") + harness.build_request("GET", "/p2"))
        got = [c.read_response() for _ in range(2)]
        assert [(r.status, r.header("Connection")) for r in got] == [(503, None)] * 2
    finally:
        ra.set()
    assert held.read_response().status == 200
    held.close()
    r = c.request("GET", "/p3")
    assert (r.status, r.header("X-Backend")) == (200, "a")
    c.close()


def test_a_503_at_max_conns_drops_a_small_body_and_keeps_the_connection(backend_factory,
                                                                       start_proxy):
    """A POST of a few KiB while the only server is full: its body is read
    and dropped, the 503 comes, the connection goes on. A larger body, or
    one chunked, is not taken in for nothing: the 503 closes."""
    ha, ra = holding("a")
    a = backend_factory("a", ha)
    p = start_proxy({"legacy": {"url": a.url, "max_conns": 1}})
    held = hold(p, "/hold")
    a.wait_requests(1)
    c = p.client(timeout=15)
    big = p.client(timeout=15)
    try:
        r = c.request("POST", "/p1", body=b"j" * 4000)
        assert (r.status, r.header("Connection")) == (503, None)
        r = c.request("POST", "/p2", body=b"j" * 65536)
        assert (r.status, r.header("Connection")) == (503, None)
        r = big.request("POST", "/p3", body=b"j" * 65537)
        assert (r.status, r.header("Connection")) == (503, "close")
    finally:
        ra.set()
    assert held.read_response().status == 200
    held.close()
    r = c.request("GET", "/p4")
    assert (r.status, r.header("X-Backend")) == (200, "a")
    c.close()
    big.close()
    assert [q.path for q in a.requests] == ["/hold", "/p4"]


def test_a_noise_sample_waits_for_room_on_its_server(backend_factory, start_proxy, tmp_path):
    """max_conns = 1: the primary holds the server's only slot, so its noise
    sample is not sent (it would be a second exchange); the comparison goes
    on without it."""
    legacy, mirror = backend_factory("legacy"), backend_factory("mirror")
    routes = [{"name": "s", "match": {"path_prefix": "/"}, "backend": "legacy",
               "shadow": {"backend": "mirror", "noise": {"samples": 1}}}]
    p = start_proxy({"legacy": {"url": legacy.url, "max_conns": 1}, "mirror": mirror},
                    routes=routes, admin={}, shadow_defaults={
                        "diff_log": str(tmp_path / "d.jsonl"), "timeout_ms": 2000})
    assert who(p, "/n")[0] == 200
    sc = compared(p, "s", 1)
    assert (sc["compared"], sc["different"]) == (1, 1), sc  # legacy against mirror
    assert [q.path for q in legacy.requests] == ["/n"]


def test_a_rollout_side_at_max_conns_sends_its_requests_to_the_other(backend_factory,
                                                                       start_proxy, tmp_path):
    """The new backend at its limit: its users are served by the base side
    meanwhile, and shadows to a mirror at its limit are skipped
    (backend_busy), never queued."""
    hm, rm = holding("modern")
    legacy, modern = backend_factory("legacy"), backend_factory("modern", hm)
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 100, "sticky": "header:X-User"}}]
    p = start_proxy({"legacy": legacy, "modern": {"url": modern.url, "max_conns": 1}},
                    routes=routes, admin={})
    held = hold(p, "/hold")
    modern.wait_requests(1)
    try:
        got = [who(p, "/q/%d" % i)[1] for i in range(3)]
        assert got == ["legacy"] * 3, got
    finally:
        rm.set()
    assert held.read_response().header("X-Backend") == "modern"
    held.close()
    assert who(p, "/after")[1] == "modern"
    # counted where an SRE (and the guard) looks: requests routed to modern
    # that legacy served
    assert metrics(p)[1]['strangler_fallbacks_total{route="r",backend="modern"}'] == "3"
    assert [x.get("fallback_from") for x in p.wait_access(5)].count("modern") == 3

    hs, rs = holding("mirror")
    mirror = backend_factory("mirror", hs)
    routes = [{"name": "s", "match": {"path_prefix": "/"}, "backend": "legacy",
               "shadow": {"backend": "mirror"}}]
    p2 = start_proxy({"legacy": legacy, "mirror": {"url": mirror.url, "max_conns": 2}},
                     routes=routes, admin={}, shadow_defaults={
                         "diff_log": str(tmp_path / "d.jsonl"), "timeout_ms": 5000})
    try:
        assert who(p2, "/hold")[0] == 200  # its mirror is held: 1 of 2, all shadows may take
        mirror.wait_requests(1)
        for i in range(3):
            assert who(p2, "/m/%d" % i)[0] == 200
        sc = p2.admin("GET", "/api/routes/s")[1]["shadow_counters"]
        assert (sc["mirrored"], sc["skipped"]) == (1, 3), sc
    finally:
        rs.set()
    assert p2.admin("GET", "/metrics")[1].count(
        'strangler_shadow_skipped_total{route="s",reason="backend_busy"} 3') == 1


def test_a_rollout_at_0_percent_takes_none_of_the_base_sides_overflow(backend_factory,
                                                                     start_proxy):
    """A rollout at 0 % (not started, pulled back, a guard's trip) serves no
    user: the base side full gives 503, a refused base side 502, instead of
    the rollout backend; once the rollout has a share, it takes both."""
    hl, rl = holding("legacy")
    legacy, modern = backend_factory("legacy", hl), backend_factory("modern")
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 0, "sticky": "header:X-User"}}]
    p = start_proxy({"legacy": {"url": legacy.url, "max_conns": 1}, "modern": modern},
                    routes=routes, admin={})
    held = hold(p, "/hold")
    legacy.wait_requests(1)
    try:
        assert who(p, "/q/0") == (503, None)
        assert p.admin("PATCH", "/api/routes/r", {"rollout": {"percent": 1}})[0] == 200
        # a key whose bucket is legacy's: its overflow now goes to modern
        key = next("u%d" % i for i in range(1000) if rollout_bucket("r", "u%d" % i) >= 100)
        with p.client() as c:
            r = c.request("GET", "/q/1", [("X-User", key)])
        assert (r.status, r.header("X-Backend")) == (200, "modern")
    finally:
        rl.set()
    assert held.read_response().status == 200
    held.close()
    assert len(modern.requests) == 1
    # logged as they end: the 503, the request modern served, the held one
    assert [x.get("fallback_from") for x in p.wait_access(3)] == [None, "legacy", None]

    # the base side refusing connections: a 502 at 0 %, modern at 1 %
    p2 = start_proxy({"legacy": {"url": dead_urls(1)[0]}, "modern": modern},
                     routes=rollout_route(percent=0.0), admin={})
    assert who(p2, "/api/x")[0] == 502
    assert len(modern.requests) == 1
    assert p2.admin("PATCH", "/api/routes/orders", {"rollout": {"percent": 1}})[0] == 200
    assert who(p2, "/api/x") == (200, "modern")


def test_a_request_in_flight_follows_a_pull_back_to_0_percent(backend_factory, start_proxy):
    """A GET on legacy's side is in flight when the rollout is pulled back to
    0 % (an admin change, as a guard's trip): when legacy then fails it, it
    does not go to modern, as no request started after the change would."""
    release = threading.Event()

    def drop_when_released(req, conn):
        release.wait(10)
        return harness.CLOSE
    dropping = backend_factory("dropping", drop_when_released)
    modern = backend_factory("modern")
    (dead,) = dead_urls(1)
    routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 5.0, "sticky": "header:X-User"}}]
    p = start_proxy({"legacy": servers(dropping, dead, health={"unhealthy": 10}),
                     "modern": modern}, routes=routes, admin={})
    key = next("u%d" % i for i in range(1000) if rollout_bucket("r", "u%d" % i) >= 500)
    c = p.client(timeout=15)
    c.send(harness.build_request("GET", "/x", [("X-User", key)]))
    dropping.wait_requests(1)
    try:
        assert p.admin("PATCH", "/api/routes/r", {"rollout": {"percent": 0}})[0] == 200
    finally:
        release.set()
    r = c.read_response()
    c.close()
    # dropped by the first server, refused by the second: nowhere left
    assert (r.status, r.header("X-Backend")) == (502, None), r
    assert modern.requests == []
    assert p.wait_access(1)[0].get("fallback_from") is None


def test_a_rollout_to_the_routes_own_backend_is_no_fallback(backend_factory, start_proxy):
    """A route whose rollout names its own backend (a warning in the file; a
    PATCH of its backend can make one): a failed request is not sent to the
    same servers again as a "fallback", nor counted as one."""
    p = start_proxy({"legacy": servers(*dead_urls(2), health={"unhealthy": 10})},
                    routes=[{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy",
                             "rollout": {"backend": "legacy", "percent": 50.0}}], admin={})
    assert who(p, "/x")[0] == 502
    assert p.wait_access(1)[0].get("fallback_from") is None
    assert p.stderr_text().count("retried on") == 1  # the second server, once
    assert "strangler_fallbacks_total{" not in metrics(p)[0]


def test_explain_and_check_show_weights_and_backups(tmp_path):
    conf = tmp_path / "w.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:18080"; } );\n'
                    'backends = { legacy = { servers = (\n'
                    '  { url = "http://127.0.0.1:9001"; weight = 3; },\n'
                    '  "http://127.0.0.1:9002",\n'
                    '  { url = "http://127.0.0.1:9003"; weight = 2; backup = true; } ); }; };\n'
                    'default_backend = "legacy";\n')
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 0 and "configuration OK" in out.stdout, out.stdout + out.stderr
    out = run_strangler("explain", "-c", str(conf), "GET", "/x")
    assert "backend:  legacy (http://127.0.0.1:9001 weight=3, http://127.0.0.1:9002, " \
        "http://127.0.0.1:9003 weight=2 backup)" in out.stdout.splitlines(), out.stdout
    conf.write_text(conf.read_text().replace("weight = 3;", "weight = 3; weigth = 1;"))
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 1
    assert "%s:3: backends.legacy.servers.[0].weigth: unknown setting" % conf in out.stderr


# --------------------------------------------------------------------------
# retry_on_status


def test_retry_on_status_sends_a_get_on_to_the_next_server(backend_factory, start_proxy):
    """A server answering one of retry_on_status: an idempotent request
    without a body goes to the next server, and the client gets that one's
    answer, whole (nothing of the first answer's long body leaks into it),
    on a connection that goes on; it counts as the first server's retry. A
    status not listed, and a POST with a body, get the answer as it is."""
    big = b"busy " * 20000

    def a_handler(req, conn):
        if req.path == "/five-hundred":
            return Response(500, b"s500", headers=[("X-Backend", "a")])
        return Response(503, big, headers=[("X-Backend", "a")])
    a = backend_factory("a", a_handler)
    b = backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(a, b, retry_on_status=[502, 503],
                                       health={"unhealthy": 100})}, admin={})
    with p.client() as c:
        got = [c.request("GET", "/g/%d" % i) for i in range(4)]
        assert [(r.status, r.header("X-Backend"), r.body) for r in got] == \
            [(200, "b", b"s200")] * 4, got
        assert len(a.requests) == 2  # its two turns, each sent on to b
        posts = [c.request("POST", "/p/%d" % i, body=b"x") for i in range(2)]
        assert sorted((r.status, r.header("X-Backend")) for r in posts) == \
            [(200, "b"), (503, "a")]
        assert [r.body for r in posts if r.status == 503] == [big]
        fives = [c.request("GET", "/five-hundred") for i in range(2)]
        assert sorted((r.status, r.header("X-Backend")) for r in fives) == \
            [(200, "b"), (500, "a")]
    assert "backend legacy: %s answered 503; request" % hostport(a) in p.stderr_text()
    assert metrics(p)[1]['strangler_backend_server_retries_total{backend="legacy",'
                         'server="%s"}' % hostport(a)] == "2"
    log = p.wait_access(8)
    assert [e["server"] for e in log[:4]] == [hostport(b)] * 4, log


def test_when_every_server_answers_a_retried_status_the_last_answer_stands(backend_factory,
                                                                           start_proxy):
    """Each server is asked once; the client gets the last one's answer,
    with its own body. Without retry_on_status the first 503 stands."""
    names = ["a", "b", "c"]
    backs = [backend_factory(n, answering(503, n)) for n in names]
    p = start_proxy({"legacy": servers(*backs, retry_on_status=[503],
                                       health={"unhealthy": 100})})
    st, name = who(p, "/x")
    assert st == 503 and name != "a", (st, name)
    assert [len(b.requests) for b in backs] == [1, 1, 1]
    p.stop()
    backs = [backend_factory(n + "2", answering(503, n)) for n in names]
    p = start_proxy({"legacy": servers(*backs, health={"unhealthy": 100})})
    assert who(p, "/x") == (503, "a")
    assert [len(b.requests) for b in backs] == [1, 0, 0]


def test_an_answer_after_an_interim_one_is_not_retried(backend_factory, start_proxy):
    """A 103 went to the client before the 503: the 503 is its answer."""
    def a_handler(req, conn):
        conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        return Response(503, b"no", headers=[("X-Backend", "a")])
    a, b = backend_factory("a", a_handler), backend_factory("b")
    p = start_proxy({"legacy": servers(a, b, retry_on_status=[503],
                                       health={"unhealthy": 100})})
    with p.client() as c:
        r = c.request("GET", "/x")
        assert r.status == 103
        r = c.read_response()
    assert (r.status, r.header("X-Backend")) == (503, "a")
    assert b.requests == []


def test_a_request_a_server_answered_stays_on_its_backend(backend_factory, start_proxy):
    """After a retried answer (a's 503), the next server refusing the
    connection ends the exchange there (502): the request does not move to
    the route's other side, which a refusal alone would allow."""
    a = backend_factory("a", answering(503, "a"))
    modern = backend_factory("modern")
    dead = dead_urls(1)[0]
    routes = [{"name": "orders", "match": {"path_prefix": "/api"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 0.01, "sticky": "header:X-U"}}]
    key = next(k for k in ("u%d" % i for i in range(100)) if rollout_bucket("orders", k) >= 1)
    p = start_proxy({"legacy": servers(a, dead, retry_on_status=[503],
                                       health={"unhealthy": 100}), "modern": modern},
                    routes=routes)
    got = []
    for _ in range(2):
        with p.client() as c:
            got.append(c.request("GET", "/api/x", [("X-U", key)]).status)
    # a first (503, retried on the dead one: 502); the dead one first (refused,
    # retried on a: its 503, the last server's answer)
    assert got == [502, 503], got
    assert modern.requests == []
    assert [e.get("fallback_from") for e in p.wait_access(2)] == [None, None]


def test_a_retry_after_an_answer_may_resend_on_a_stale_pooled_connection(backend_factory,
                                                                          start_proxy):
    """Each server's pooled connection may have been closed by it just as
    it is reused: the request is sent again on a new one, for the second
    server too (the first one's resend did not use up the second's)."""
    import harness as h

    def a_handler(req, conn):
        if req.seq > 0:  # a pooled connection the server has closed
            return h.CLOSE
        return Response(200 if req.path == "/warm" else 503, b"a", headers=[("X-Backend", "a")])

    def b_handler(req, conn):
        if req.seq > 0:
            return h.CLOSE
        return Response(200, b"b", headers=[("X-Backend", "b")])
    a, b = backend_factory("a", a_handler), backend_factory("b", b_handler)
    p = start_proxy({"legacy": servers(a, b, retry_on_status=[503],
                                       health={"unhealthy": 100})})
    with p.client() as c:
        assert [c.request("GET", "/warm").header("X-Backend") for _ in range(2)] == ["a", "b"]
        r = c.request("GET", "/x")  # a's stale one, a's 503, b's stale one, b
    assert (r.status, r.header("X-Backend")) == (200, "b"), r


def test_the_retry_budget_bounds_retries_after_answers(backend_factory, start_proxy):
    """A server answering 503 to everything: without a bound, every one of
    its answers would be asked again elsewhere, doubling the load on a
    backend in trouble. retry_budget lets a share through (here the floor
    alone: percent 0, 1 a second); the rest of its 503s go to the clients,
    counted as denied retries."""
    a = backend_factory("a", answering(503, "a"))
    b = backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(a, b, retry_on_status=[503],
                                       retry_budget={"percent": 0, "min_per_s": 1},
                                       health={"unhealthy": 100})}, admin={})
    with p.client() as c:
        got = [c.request("GET", "/x/%d" % i) for i in range(20)]
    fives = sum(r.status == 503 for r in got)
    m = metrics(p)[1]
    key = '{backend="legacy",server="%s"}' % hostport(a)
    retried = int(m["strangler_backend_server_retries_total" + key])
    denied = int(m["strangler_backend_server_retries_denied_total" + key])
    assert 1 <= retried <= 3, (retried, denied)  # 1 a second, in the run's 1-3 seconds
    assert denied == fives and fives >= 5, (fives, denied, got)
    assert retried + denied == len(a.requests)
    st, doc = p.admin("GET", "/api/backends")
    be = doc["backends"][0]
    assert be["retry_budget"] == {"percent": 0, "min_per_s": 1}
    assert be["servers"][0]["retries_denied"] == denied


def test_a_busy_backend_is_not_sent_to_a_dead_server(backend_factory, start_proxy):
    """One server up but at max_conns, the other down (its checks fail):
    503 every server at max_conns, not the dead server's 502. With every
    server down (the health may be wrong), a refusal goes on to the next
    server, whose check failed but which answers."""
    def a_handler(req, conn):
        if req.path == "/health":
            return Response(500 if sick else 200, b"h")
        time.sleep(0.4)
        return answering(200, "a")(req, conn)
    sick = False
    a = backend_factory("a", a_handler)
    dead = dead_urls(1)[0]
    health = {"path": "/health", "interval_ms": 100, "unhealthy": 1, "healthy": 1}
    p = start_proxy({"legacy": servers(a, dead, balance="least_conn", max_conns=1,
                                       health=health)}, admin={})
    down = 'strangler_backend_server_up{backend="legacy",server="%s"}' % dead[len("http://"):]
    wait_for(lambda: metrics(p)[1][down] == "0", what="the dead server down")
    got = []
    ts = [threading.Thread(target=lambda: got.append(who(p, "/x"))) for _ in range(3)]
    for t in ts:
        t.start()
        time.sleep(0.05)
    for t in ts:
        t.join()
    assert sorted(got) == [(200, "a"), (503, None), (503, None)], got
    sick = True
    up = 'strangler_backend_server_up{backend="legacy",server="%s"}' % hostport(a)
    wait_for(lambda: metrics(p)[1][up] == "0", what="a's checks failing")
    assert [who(p, "/y/%d" % i) for i in range(3)] == [(200, "a")] * 3


# --------------------------------------------------------------------------
# draining a server (PATCH /api/backends/NAME)


def drain(p, backend, server, on=True):
    return p.admin("PATCH", "/api/backends/" + backend, {"server": server, "drain": on})


def test_a_drained_server_takes_no_new_requests(backend_factory, start_proxy, tmp_path):
    """Draining a server for a deploy: the request it is serving finishes;
    no new request or shadow goes to it until it is given back; the API,
    the metrics and the audit trail say so; the state file keeps it across
    a restart, a reload keeps it, and a reload without the server forgets
    it."""
    def a_handler(req, conn):
        if req.path == "/slow":
            time.sleep(0.5)
        return answering(200, "a")(req, conn)
    a, b = backend_factory("a", a_handler), backend_factory("b", answering(200, "b"))
    state = str(tmp_path / "state.json")
    defs = {"legacy": servers(a, b)}
    p = start_proxy(defs, admin={"state_file": state})
    slow = {}
    t = threading.Thread(target=lambda: slow.update(r=who(p, "/slow")))
    t.start()
    a.wait_requests(1)
    st, doc = drain(p, "legacy", hostport(a))
    assert st == 200, doc
    assert [sv["drained"] for sv in doc["servers"]] == [True, False]
    assert [who(p, "/x/%d" % i) for i in range(6)] == [(200, "b")] * 6
    # the request it serves is in flight until it ends: then it may be stopped
    doc = p.admin("GET", "/api/backends/legacy")[1]
    assert [sv["in_flight"] for sv in doc["servers"]] == [1, 0], doc
    assert metrics(p)[1]['strangler_backend_server_in_flight{backend="legacy",server="%s"}'
                         % hostport(a)] == "1"
    t.join()
    assert slow["r"] == (200, "a")  # in flight: it finished
    assert len(a.requests) == 1
    wait_for(lambda: p.admin("GET", "/api/backends/legacy")[1]["servers"][0]["in_flight"] == 0,
             what="nothing in flight on the drained server")
    _, m = metrics(p)
    assert m['strangler_backend_server_drained{backend="legacy",server="%s"}' % hostport(a)] \
        == "1"
    assert m['strangler_backend_server_drained{backend="legacy",server="%s"}' % hostport(b)] \
        == "0"
    change = p.admin("GET", "/api/audit")[1]["changes"][-1]
    assert (change["backend"], change["server"], change["action"]) == \
        ("legacy", hostport(a), "drain")
    assert "admin: backend legacy: server %s drained by" % hostport(a) in p.stderr_text()
    assert json.load(open(state))["drained"] == [a.url]
    # a reload keeps it; a restart with the state file too
    harness.reload_and_wait(p, 1)
    assert {who(p, "/y/%d" % i)[1] for i in range(4)} == {"b"}
    p.stop()
    p = start_proxy(defs, admin={"state_file": state})
    assert {who(p, "/z/%d" % i)[1] for i in range(4)} == {"b"}
    assert "1 drained servers restored" in p.stderr_text()
    st, doc = drain(p, "legacy", hostport(a), False)
    assert st == 200 and not doc["servers"][0]["drained"], doc
    assert sorted(who(p, "/w/%d" % i)[1] for i in range(4)) == ["a", "a", "b", "b"]
    assert json.load(open(state))["drained"] == []
    # a reload without the server forgets its drain
    drain(p, "legacy", hostport(a))
    rewrite(p, {"legacy": servers(b)}, admin={"address": "%s:%d" % (HOST, p.admin_port),
                                                "state_file": state})
    harness.reload_and_wait(p, 1)
    assert json.load(open(state))["drained"] == []


def test_in_flight_counts_requests_and_shadows_of_every_worker(backend_factory, start_proxy,
                                                              tmp_path):
    """in_flight, per server, is what holds a connection to it now in any
    worker: requests and shadows; the backend's is their sum; 0 again once
    they end."""
    def slow(name):
        def handler(req, conn):
            time.sleep(0.8)
            return answering(200, name)(req, conn)
        return handler
    a, b = backend_factory("a", slow("a")), backend_factory("b", slow("b"))
    mirror = backend_factory("mirror", slow("mirror"))
    p = start_proxy({"legacy": servers(a, b), "mirror": mirror}, routes=shadow_to("mirror"),
                    workers=2, admin={},
                    shadow_defaults={"diff_log": str(tmp_path / "d.jsonl"), "timeout_ms": 3000})
    got = []
    ts = [threading.Thread(target=lambda i=i: got.append(who(p, "/s/%d" % i))) for i in range(4)]
    for t in ts:
        t.start()
    wait_for(lambda: len(a.requests) + len(b.requests) == 4 and len(mirror.requests) == 4,
             what="four requests and their shadows in the servers' hands")
    doc = p.admin("GET", "/api/backends")[1]["backends"]
    # each worker takes turns of its own: how they fall on a and b varies
    assert [sv["in_flight"] for sv in doc[0]["servers"]] == \
        [len(a.requests), len(b.requests)], doc
    assert (doc[0]["in_flight"], doc[1]["in_flight"]) == (4, 4), doc
    _, m = metrics(p)
    assert m['strangler_backend_server_in_flight{backend="mirror",server="%s"}'
             % hostport(mirror)] == "4"
    for t in ts:
        t.join()
    assert sorted(got) == [(200, "a")] * len(a.requests) + [(200, "b")] * len(b.requests)
    wait_for(lambda: [b["in_flight"] for b in p.admin("GET", "/api/backends")[1]["backends"]]
             == [0, 0], what="nothing in flight")


def test_with_every_server_drained(backend_factory, start_proxy):
    """Every server of the backend drained: the route's other side serves
    (a rollout above 0 %), else 503, as at max_conns; a shadow to it is
    skipped as backend_busy."""
    a, modern = backend_factory("a"), backend_factory("modern")
    routes = [{"name": "r", "match": {"path_prefix": "/r"}, "backend": "legacy",
               "rollout": {"backend": "modern", "percent": 1}},
              {"name": "s", "match": {"path_prefix": "/s"}, "backend": "modern",
               "shadow": {"backend": "legacy"}}]
    p = start_proxy({"legacy": a, "modern": modern}, routes=routes, admin={})
    assert drain(p, "legacy", hostport(a))[0] == 200
    with p.client() as c:
        r = c.request("GET", "/other")  # the default backend: nowhere else to go
        assert (r.status, r.body) == (503, b"every server drained or at max_conns\n"), r.body
        assert c.request("GET", "/r/1").status == 200  # keep-alive: the body was read
    log = p.wait_access(2)
    assert log[1]["backend"] == "modern" and log[1]["fallback_from"] == "legacy", log[1]
    assert who(p, "/s/1")[0] == 200
    wait_for(lambda: p.admin("GET", "/api/routes/s")[1]["shadow_counters"]["skipped"] == 1,
             what="the shadow skipped")
    assert a.requests == []


def test_a_server_given_back_its_requests_starts_slowly(backend_factory, start_proxy, tmp_path):
    """slow_start_ms: after a drain ends (a deploy), the server takes a small
    share of its weight at first, growing to all of it; the API shows the
    share. A server a reload adds starts slowly too; those there at the
    start do not."""
    a, b = backend_factory("a", answering(200, "a")), backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(a, b, slow_start_ms=3000)}, admin={})
    time.sleep(0.2)
    assert drain(p, "legacy", hostport(a))[0] == 200
    st, doc = drain(p, "legacy", hostport(a), False)
    assert doc["slow_start_ms"] == 3000
    assert doc["servers"][0]["weight_percent"] < 10 and doc["servers"][1]["weight_percent"] == 100
    got = [who(p, "/x/%d" % i)[1] for i in range(20)]
    assert got.count("a") <= 3, got
    time.sleep(3.1)
    got = [who(p, "/y/%d" % i)[1] for i in range(20)]
    assert got.count("a") == 10, got
    assert p.admin("GET", "/api/backends/legacy")[1]["servers"][0]["weight_percent"] == 100
    c = backend_factory("c", answering(200, "c"))
    rewrite(p, {"legacy": servers(a, b, c, slow_start_ms=3000)},
            admin={"address": "%s:%d" % (HOST, p.admin_port)})
    harness.reload_and_wait(p, 1)
    shares = [sv["weight_percent"] for sv in p.admin("GET", "/api/backends/legacy")[1]["servers"]]
    assert shares[:2] == [100, 100] and shares[2] < 30, shares
    # one taken out by a reload (its redeploy) and listed again by the next is
    # as cold as a new one (it came back at its whole weight: the clock ran
    # from the first time the process saw its URL)
    time.sleep(3.1)
    admin = {"address": "%s:%d" % (HOST, p.admin_port)}
    rewrite(p, {"legacy": servers(a, c, slow_start_ms=3000)}, admin=admin)
    harness.reload_and_wait(p, 2)
    rewrite(p, {"legacy": servers(a, b, c, slow_start_ms=3000)}, admin=admin)
    harness.reload_and_wait(p, 3)
    shares = [sv["weight_percent"] for sv in p.admin("GET", "/api/backends/legacy")[1]["servers"]]
    assert shares[0] == 100 and shares[1] < 30 and shares[2] == 100, shares


def test_check_of_a_drain_call(backend_factory, start_proxy):
    a = backend_factory("a")
    p = start_proxy({"legacy": a}, admin={})
    for body, st, want in [
            ({"server": hostport(a)}, 400, "give server (its address) and drain (true or false)"),
            ({"server": hostport(a), "drain": "yes"}, 400, "drain: must be true or false"),
            ({"server": 7, "drain": True}, 400, "server: must be a string: the server's address"),
            ({"server": hostport(a), "drain": True, "x": 1}, 400,
             "x: unknown (server and drain only)"),
            ([1], 400, 'body must be an object: {"server": "%s", "drain": true}' % hostport(a)),
            ({"server": "127.0.0.1:1", "drain": True}, 404,
             "backend legacy has no server at 127.0.0.1:1 (see its servers' address in GET "
             "/api/backends/legacy)")]:
        got = p.admin("PATCH", "/api/backends/legacy", body)
        assert got == (st, {"error": want}), (body, got)
    assert p.admin("PATCH", "/api/backends/nope", {"server": "x", "drain": True}) == \
        (404, {"error": "no such backend"})
    assert p.admin("GET", "/api/backends/legacy")[1]["servers"][0]["drained"] is False
    assert p.admin("GET", "/api/audit")[1]["changes"] == []
    # the same state twice: one change
    assert drain(p, "legacy", hostport(a))[0] == 200
    assert drain(p, "legacy", hostport(a))[0] == 200
    assert len(p.admin("GET", "/api/audit")[1]["changes"]) == 1


# --------------------------------------------------------------------------
# unix sockets


def sent_host(r):
    """The Host the echo backend received."""
    return next(v for k, v in r.json()["headers"] if k.lower() == "host")


def test_a_server_on_a_unix_socket(backend_factory, start_proxy, tmp_path):
    """http://unix:/path: requests reach the server through its socket on
    kept-alive connections, with the client's Host; an HTTP/1.0 request
    without one carries Host: localhost (as nginx sends); a large answer
    comes whole; the access log, the metrics and the API name the server
    unix:/path."""
    path = str(tmp_path / "app.sock")
    big = bytes(range(256)) * 8192  # 2 MiB: relayed in bulk

    def handler(req, conn):
        if req.path == "/big":
            return Response(200, big)
        return harness.echo(req, conn)
    u = backend_factory("u", handler, unix_path=path)
    p = start_proxy({"legacy": {"url": u.url, "health": {"path": "/health", "interval_ms": 200}}},
                    admin={})
    with p.client() as c:
        got = [c.request("GET", "/x/%d" % i, host="shop.example") for i in range(3)]
        assert [r.status for r in got] == [200] * 3
        assert sent_host(got[0]) == "shop.example"
        post = c.request("POST", "/p", body=b"y" * 70000)
        assert (post.status, post.json()["body_len"]) == (200, 70000)
        r = c.request("GET", "/big")
        assert (r.status, r.body == big) == (200, True)
    with p.client() as c:
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and sent_host(r) == "localhost", r.body
    wait_for(lambda: any(q.path == "/health" for q in u.requests), what="a health check")
    assert [q.header("Host") for q in u.requests if q.path == "/health"][0] == "localhost"
    name = "unix:" + path
    assert {e["server"] for e in p.wait_access(6)} == {name}
    st, doc = p.admin("GET", "/api/backends")
    assert doc["backends"][0]["servers"][0]["address"] == name
    assert metrics(p)[1]['strangler_backend_server_up{backend="legacy",server="%s"}' % name] == "1"
    assert len({q.conn_id for q in u.requests if q.path != "/health"}) <= 2


def test_a_missing_unix_socket_is_a_refusal(backend_factory, start_proxy, tmp_path):
    """No file at the socket's path (the service is restarting): as a refused
    connection, the request goes to the next server; alone, 502."""
    gone = "http://unix:%s:" % (tmp_path / "gone.sock")  # nginx's form, colon-ended
    b = backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(gone, b, health={"unhealthy": 100})})
    assert [who(p, "/x/%d" % i) for i in range(2)] == [(200, "b")] * 2
    log = p.wait_access(2)
    assert {"server": "unix:%s" % (tmp_path / "gone.sock"), "error": "connect refused"} in \
        [t for e in log for t in e.get("retried_from", [])], log
    p.stop()
    p = start_proxy({"legacy": {"url": gone}})
    assert who(p, "/x")[0] == 502
    assert p.wait_access(1)[0]["error"] == "connect refused"


def test_a_full_unix_socket_is_a_refusal(backend_factory, start_proxy, tmp_path):
    """A unix socket whose listen queue is full (a service that stopped
    accepting) refuses at once (EAGAIN): the request goes to the next
    server, without waiting for the connect timeout."""
    path = str(tmp_path / "full.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(0)  # never accepts
    fill = []
    try:
        while len(fill) < 8:  # fill its queue
            f = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            f.setblocking(False)
            try:
                f.connect(path)
            except BlockingIOError:
                f.close()
                break
            fill.append(f)
        b = backend_factory("b", answering(200, "b"))
        p = start_proxy({"legacy": servers("http://unix:" + path, b, connect_timeout_ms=3000,
                                           health={"unhealthy": 100})})
        t0 = time.monotonic()
        assert who(p, "/x") == (200, "b")  # the full one's turn first
        assert time.monotonic() - t0 < 1.0
        assert p.wait_access(1)[0]["retried_from"] == [
            {"server": "unix:" + path, "error": "connect refused"}]
    finally:
        for f in fill:
            f.close()
        ls.close()


UNIX_BAD = """listen = ( { address = "127.0.0.1:18080"; } );
backends = {
  rel = { url = "http://unix:run/app.sock"; };
  tls = { url = "https://unix:/run/app.sock"; };
  long = { url = "http://unix:/%s"; };
  blank = { url = "http://unix:/run/my app.sock"; };
  twice = { servers = ["http://unix:/run/a.sock", "http://unix:/run/a.sock:"]; };
  uri = { url = "http://unix:/run/app.sock:/api"; };
  query = { url = "http://unix:/run/app.sock?x"; };
};
default_backend = "rel";
""" % ("x" * 107)


def test_check_of_unix_socket_urls(tmp_path):
    conf = tmp_path / "u.conf"
    conf.write_text(UNIX_BAD)
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 1, out.stdout + out.stderr
    for want in [
            '3: backends.rel.url: "http://unix:run/app.sock": a unix socket\'s path must be '
            'absolute: http://unix:/run/app.sock',
            '4: backends.tls.url: "https://unix:/run/app.sock": https:// over a unix socket is '
            'not supported (write http://unix:/path)',
            '5: backends.long.url: "http://unix:/%s": a unix socket\'s path is at most 107 bytes'
            % ("x" * 107),
            '6: backends.blank.url: "http://unix:/run/my app.sock": a unix socket\'s path is '
            'visible ASCII, without spaces',
            '7: backends.twice.servers.[1]: "http://unix:/run/a.sock:": the same server as '
            'servers.[0]',
            '8: backends.uri.url: "http://unix:/run/app.sock:/api": must not carry a path, '
            'query or fragment (the request path is forwarded as is)',
            '9: backends.query.url: "http://unix:/run/app.sock?x": must not carry a path, '
            'query or fragment (the request path is forwarded as is)']:
        assert "%s:%s" % (conf, want) in out.stderr.splitlines(), (want, out.stderr)
    for url in ["http://unix:/run/app.sock", "http://unix:/run/app.sock/",
                "http://unix:/run/app.sock:/"]:
        conf.write_text('listen = ( { address = "127.0.0.1:18080"; } );\n'
                        'backends = { u = { url = "%s"; }; };\n'
                        'default_backend = "u";\n' % url)
        out = run_strangler("-t", "-c", str(conf))
        assert out.returncode == 0 and "0 warnings" in out.stdout, out.stdout + out.stderr
        out = run_strangler("explain", "-c", str(conf), "GET", "/x")
        assert "backend:  u (%s)" % url in out.stdout, out.stdout


# --------------------------------------------------------------------------
# per_try_timeout_ms


def slow(delay, name, first_byte_at_once=False):
    """A handler answering 200 after `delay` seconds; with first_byte_at_once
    the head goes at once and the body after the delay."""
    import harness as h

    def handler(req, conn):
        if first_byte_at_once:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Backend: %s\r\n\r\n"
                      % name.encode())
            time.sleep(delay)
            conn.send(b"slow")
            return h.KEEP
        time.sleep(delay)
        return Response(200, b"s200", headers=[("X-Backend", name)])
    return handler


def test_per_try_timeout_sends_a_silent_get_on_to_the_next_server(backend_factory,
                                                                   start_proxy):
    """A server that has not begun its answer within per_try_timeout_ms: a
    GET goes on to the next server and the client gets that one's answer,
    long before the slow one's; the slow server counts a retry and a failed
    request. A POST with a body waits for its own server's answer."""
    a = backend_factory("a", slow(1.5, "a"))
    b = backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(a, b, per_try_timeout_ms=200, response_timeout_ms=5000,
                                       health={"unhealthy": 100})}, admin={})
    t0 = time.monotonic()
    with p.client() as c:
        got = [c.request("GET", "/g/%d" % i) for i in range(2)]  # a's turn, then b's
    took = time.monotonic() - t0
    assert [(r.status, r.header("X-Backend"), r.body) for r in got] == \
        [(200, "b", b"s200")] * 2, got
    assert 0.2 <= took < 1.2, took
    assert len(a.requests) == 1
    assert "backend legacy: %s: no answer within per_try_timeout_ms; request" % hostport(a) \
        in p.stderr_text()
    _, m = metrics(p)
    key = '{backend="legacy",server="%s"' % hostport(a)
    assert m["strangler_backend_server_retries_total" + key + "}"] == "1"
    assert m["strangler_backend_server_outcomes_total" + key + ',result="failed"}'] == "1"
    t0 = time.monotonic()
    with p.client() as c:
        posts = [c.request("POST", "/p/%d" % i, body=b"x") for i in range(2)]
    assert sorted((r.status, r.header("X-Backend")) for r in posts) == [(200, "a"), (200, "b")]
    assert time.monotonic() - t0 >= 1.4
    log = p.wait_access(4)
    assert [e["server"] for e in log[:2]] == [hostport(b)] * 2, log
    assert p.admin("GET", "/api/backends")[1]["backends"][0]["per_try_timeout_ms"] == 200


def test_per_try_timeout_waits_on_for_an_answer_begun(backend_factory, start_proxy):
    """The head came within per_try_timeout_ms, the body later: the answer
    is the client's, whole; nothing goes to the next server."""
    a = backend_factory("a", slow(0.6, "a", first_byte_at_once=True))
    b = backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(a, b, per_try_timeout_ms=150,
                                       health={"unhealthy": 100})})
    with p.client() as c:
        r = c.request("GET", "/x")
    assert (r.status, r.header("X-Backend"), r.body) == (200, "a", b"slow")
    assert b.requests == []


def test_per_try_timeout_leaves_the_last_server_the_response_timeout(backend_factory,
                                                                     start_proxy):
    """Every server slow: each is asked once, and the last one has the
    whole response timeout: its late answer is the client's, not a 504.
    Servers that never answer: a 504 once the last one's response timeout
    has passed."""
    backs = [backend_factory(n, slow(0.5, n)) for n in "abc"]
    p = start_proxy({"legacy": servers(*backs, per_try_timeout_ms=100, response_timeout_ms=3000,
                                       health={"unhealthy": 100})})
    t0 = time.monotonic()
    st, name = who(p, "/x")
    assert (st, name) == (200, "c"), (st, name)
    assert 0.65 <= time.monotonic() - t0 < 1.5
    assert [len(b.requests) for b in backs] == [1, 1, 1]
    p.stop()
    backs = [backend_factory(n + "2", slow(5, n)) for n in "ab"]
    p = start_proxy({"legacy": servers(*backs, per_try_timeout_ms=100, response_timeout_ms=600,
                                       health={"unhealthy": 100})})
    t0 = time.monotonic()
    assert who(p, "/x")[0] == 504
    assert 0.65 <= time.monotonic() - t0 < 1.5
    assert [len(b.requests) for b in backs] == [1, 1]


def test_per_try_timeout_retries_stay_within_the_retry_budget(backend_factory, start_proxy):
    """With the budget spent, a silent server's request is not sent on: it
    waits for that server's own answer, counted as a denied retry."""
    a = backend_factory("a", slow(0.4, "a"))
    b = backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(a, b, per_try_timeout_ms=100,
                                       retry_budget={"percent": 0, "min_per_s": 0},
                                       health={"unhealthy": 100})}, admin={})
    assert who(p, "/x") == (200, "a")
    assert b.requests == []
    key = '{backend="legacy",server="%s"}' % hostport(a)
    assert metrics(p)[1]["strangler_backend_server_retries_denied_total" + key] == "1"


def test_per_try_timeout_does_not_end_an_upgraded_connection(backend_factory, start_proxy):
    """A WebSocket answered at once lives on past per_try_timeout_ms: the
    limit is for the answer's start, not for the tunnel after it."""
    a, b = backend_factory("a", harness.upgrade_echo()), backend_factory("b", harness.upgrade_echo())
    p = start_proxy({"legacy": servers(a, b, per_try_timeout_ms=200, response_timeout_ms=5000)})
    with p.client() as c:
        c.send(harness.build_request("GET", "/ws", [("Connection", "Upgrade"),
                                                    ("Upgrade", "websocket")]))
        assert c.read_response().status == 101
        c.send(b"ping")
        assert c.stream.read_exact(4) == b"ping"
        time.sleep(0.5)
        c.send(b"pong")
        assert c.stream.read_exact(4) == b"pong"
    assert len(a.requests) + len(b.requests) == 1


def test_a_request_denied_a_retry_twice_counts_once(backend_factory, start_proxy):
    """A slow server's try times out and its late answer is a retried
    status, both past the budget: one request, one denied retry."""
    def late_503(req, conn):
        time.sleep(0.4)
        return Response(503, b"no", headers=[("X-Backend", "a")])
    a, b = backend_factory("a", late_503), backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(a, b, per_try_timeout_ms=100, retry_on_status=[503],
                                       retry_budget={"percent": 0, "min_per_s": 0},
                                       health={"unhealthy": 100})}, admin={})
    assert who(p, "/x") == (503, "a")
    key = '{backend="legacy",server="%s"}' % hostport(a)
    assert metrics(p)[1]["strangler_backend_server_retries_denied_total" + key] == "1"


def test_the_last_servers_answer_is_no_denied_retry(backend_factory, start_proxy):
    """With every server tried, the last one's retried status has no server
    to go to: not a retry the budget denied (it was counted as one when the
    budget happened to be spent)."""
    a, b = backend_factory("a", answering(503, "a")), backend_factory("b", answering(503, "b"))
    p = start_proxy({"legacy": servers(a, b, retry_on_status=[503],
                                       retry_budget={"percent": 0, "min_per_s": 1},
                                       health={"unhealthy": 100})}, admin={})
    assert who(p, "/x")[0] == 503  # a's 503 retried on b (the budget's one a second): 503
    assert len(a.requests) + len(b.requests) == 2
    m = metrics(p)[1]
    assert [m['strangler_backend_server_retries_denied_total{backend="legacy",server="%s"}'
              % hostport(x)] for x in (a, b)] == ["0", "0"]


def test_the_access_log_names_the_servers_a_request_left(backend_factory, start_proxy):
    """retried_from lists each server left for another, in order, with its
    answer's status or its failure; a request served by its first server
    has no such field."""
    dead = dead_urls(1)[0]
    a = backend_factory("a", answering(503, "a"))
    s = backend_factory("s", slow(1.0, "s"))
    b = backend_factory("b", answering(200, "b"))
    p = start_proxy({"legacy": servers(dead, a, s, b, retry_on_status=[503],
                                       per_try_timeout_ms=150, health={"unhealthy": 100},
                                       retry_budget={"percent": 100, "min_per_s": 100})})
    assert who(p, "/x") == (200, "b")
    assert who(p, "/y") == (200, "b")  # a's turn: its 503, then s, then b
    log = p.wait_access(2)
    d = dead[len("http://"):]
    assert log[0]["retried_from"] == [
        {"server": d, "error": "connect refused"}, {"server": hostport(a), "status": 503},
        {"server": hostport(s), "error": "per try timeout"}], log[0]
    assert log[0]["server"] == hostport(b)
    assert log[1]["retried_from"] == [
        {"server": hostport(a), "status": 503},
        {"server": hostport(s), "error": "per try timeout"}], log[1]
    assert [who(p, "/z") for _ in range(2)] == [(200, "b")] * 2  # s's turn, then b's
    log = p.wait_access(4)
    assert log[2]["retried_from"] == [{"server": hostport(s), "error": "per try timeout"}]
    assert "retried_from" not in log[3], log[3]


RETRY_BAD = """listen = ( { address = "127.0.0.1:18080"; } );
backends = {
  one = { url = "http://127.0.0.1:9001"; retry_on_status = [503]; };
  low = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
          retry_on_status = [302, 503]; };
  twice = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
            retry_on_status = [503, 503]; };
  word = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
           retry_on_status = "503"; };
  empty = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
            retry_on_status = []; };
  budget = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
             retry_budget = { percent = 101; }; };
  lone = { url = "http://127.0.0.1:9001"; per_try_timeout_ms = 500; };
  long = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
           per_try_timeout_ms = 5000; response_timeout_ms = 5000; };
  neg = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
          per_try_timeout_ms = -1; };
  pt = { servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
         per_try_timeout_ms = 500; };
  ss = { url = "http://127.0.0.1:9001"; slow_start_ms = 1000; };
};
default_backend = "one";
routes = ( { name = "r"; backend = "pt"; response_timeout_ms = 500; } );
"""


def test_check_of_retry_on_status(tmp_path):
    conf = tmp_path / "r.conf"
    conf.write_text(RETRY_BAD)
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    for want in [
            "3: warning: backends.one.retry_on_status: has no effect with one server "
            "(the retry goes to another server of the backend)",
            "5: backends.low.retry_on_status.[0]: must be a status from 400 to 599",
            "7: backends.twice.retry_on_status.[1]: 503 is listed twice",
            "9: backends.word.retry_on_status: must be a list of statuses: [502, 503, 504]",
            "11: backends.empty.retry_on_status: must be a list of statuses: [502, 503, 504]",
            "13: backends.budget.retry_budget.percent: must be between 0 and 100",
            "13: warning: backends.budget.retry_budget: has no effect without retry_on_status "
            "or per_try_timeout_ms",
            "14: warning: backends.lone.per_try_timeout_ms: has no effect with one server "
            "(the retry goes to another server of the backend)",
            "16: warning: backends.long.per_try_timeout_ms: 5000 is not below "
            "response_timeout_ms (5000): the response timeout comes first (a route's own "
            "response_timeout_ms may be longer)",
            "18: backends.neg.per_try_timeout_ms: must be between 0 and 86400000",
            "21: warning: backends.ss.slow_start_ms: has no effect with one server (it shares "
            "the requests among the backend's servers)",
            "24: warning: routes.[0].response_timeout_ms: 500 is not above "
            "backends.pt.per_try_timeout_ms (500): no request of this route is sent on for a "
            "slow server"]:
        assert "%s:%s" % (conf, want) in lines, (want, out.stderr)
    good = RETRY_BAD.split("  low")[0].replace("one = { url = \"http://127.0.0.1:9001\";",
                                              "one = { servers = [\"http://127.0.0.1:9001\", "
                                              "\"http://127.0.0.1:9002\"];") + "};\n" \
        'default_backend = "one";\n'
    conf.write_text(good.replace("[503]", "[504, 502]; per_try_timeout_ms = 700; "
                                          "slow_start_ms = 9000"))
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 0 and "0 warnings" in out.stdout, out.stdout + out.stderr
    out = run_strangler("explain", "-c", str(conf), "GET", "/x")
    assert "backend:  one (http://127.0.0.1:9001, http://127.0.0.1:9002) " \
        "retry_on_status=502,504 per_try_timeout_ms=700 slow_start_ms=9000" in \
        out.stdout.splitlines(), out.stdout


def test_api_backends_gives_retry_on_status(backend_factory, start_proxy):
    a, b = backend_factory("a"), backend_factory("b")
    p = start_proxy({"legacy": servers(a, b, retry_on_status=[503, 429])}, admin={})
    st, doc = p.admin("GET", "/api/backends")
    assert st == 200
    assert doc["backends"][0]["retry_on_status"] == [429, 503]


def test_a_refused_drain_changes_nothing(start_proxy, backend_factory, tmp_path):
    """A drain refused because admin.state_file cannot be written leaves
    the server as it was: in service at its full weight, not sent into its
    slow start as if it came back from a drain."""
    a, b = backend_factory("a"), backend_factory("b")
    state = tmp_path / "state.json"
    p = start_proxy({"legacy": {"servers": [a.url, b.url], "slow_start_ms": 60000}},
                    admin={"state_file": str(state)})
    st, be = p.admin("GET", "/api/backends/legacy")
    assert [s["weight_percent"] for s in be["servers"]] == [100, 100]
    state.unlink()  # written at start
    os.mkdir(state)  # the state file cannot be replaced now (rename: EISDIR)
    st, body = p.admin("PATCH", "/api/backends/legacy",
                       {"server": "127.0.0.1:%d" % a.port, "drain": True})
    assert st == 500 and "stays in service" in body["error"], body
    st, be = p.admin("GET", "/api/backends/legacy")
    assert [s["drained"] for s in be["servers"]] == [False, False]
    assert [s["weight_percent"] for s in be["servers"]] == [100, 100], be["servers"]


def test_pooled_connection_closed_after_interim_is_not_sent_again(backend_factory, start_proxy):
    """A server that answered a 103 on a pooled keep-alive connection and then
    closed has begun answering: the request must not be sent again (docs:
    configuration.md "Several servers": not "a request whose server answered
    ... an interim 1xx, before closing"), and the client must not get the 103
    twice (may_retry once sent it again on a new connection)."""
    def handler(req, conn):
        if req.path == "/hints":
            conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            time.sleep(0.1)
            return harness.CLOSE
        return harness.echo(req, conn)

    b = backend_factory("legacy", handler)
    p = start_proxy({"legacy": b})
    with p.client() as c:
        assert c.request("GET", "/warm").status == 200  # leaves a pooled connection
    with p.client() as c:
        c.send(harness.build_request("GET", "/hints"))
        seen = []
        while True:
            r = c.read_response()
            seen.append(r.status)
            if r.status != 103:
                break
    time.sleep(0.3)
    hints = [r for r in b.requests if r.path == "/hints"]
    assert len(hints) == 1, "GET /hints reached the backend %d times" % len(hints)
    assert seen == [103, 502], seen


def test_a_reload_dropping_a_server_does_not_lower_the_backends_counter(start_proxy,
                                                                       backend_factory):
    """A counter never goes down (Prometheus reads that as a reset): the
    backend's transitions count every server it has listed, so a reload
    retiring one does not lower it."""
    state = {"fail": False}

    def a_handler(req, conn):
        if state["fail"]:
            return Response(500, b"down", headers=[("X-Backend", "a")])
        return harness.echo(req, conn)

    a, b = backend_factory("a", a_handler), backend_factory("b")
    legacy = {"servers": [a.url, b.url], "health": {"unhealthy": 1, "interval_ms": 10000}}
    p = start_proxy({"legacy": legacy}, admin={})
    state["fail"] = True
    with p.client() as c:
        for i in range(4):  # the turn reaches a: marked down
            c.request("GET", "/x%d" % i)
    key = 'strangler_backend_health_transitions_total{backend="legacy"}'
    before = int(metrics(p)[1][key])
    assert before >= 1
    # a is retired from the backend
    text = open(p.conf_path).read()
    open(p.conf_path, "w").write(text.replace('"%s", ' % a.url, ""))
    harness.reload_and_wait(p, 1)
    _, m = metrics(p)
    assert 'server="127.0.0.1:%d"' % a.port not in "".join(m), "a still listed"
    after = int(m[key])
    assert after >= before, "counter %s went down: %d -> %d" % (key, before, after)
