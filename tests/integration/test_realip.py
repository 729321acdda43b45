"""The client's address behind a load balancer: `trusted_proxies` (whose
X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host are believed) and
`listen.[i].proxy_protocol` (the PROXY header an L4 balancer sends, v1 and
v2). What a user checks: the access log's `client`, the `client_ip` rollout
key, and what the backend receives; a missing or malformed PROXY header
closes the connection and is counted."""
import json
import re
import socket
import struct
import time

import pytest

import harness
from harness import HOST, build_request, echo, rollout_bucket, run_strangler, wait_for

ROUTES = [{"name": "byip", "match": {"path_prefix": "/byip"}, "backend": "legacy",
           "rollout": {"backend": "modern", "percent": 50.0, "sticky": "client_ip"}}]


def sent(backend, n=1):
    """The last request the backend received."""
    return backend.wait_requests(n)[n - 1]


def two_sides(cohort="byip"):
    """Two addresses whose client_ip buckets fall on either side of 50 %."""
    below = above = None
    for i in range(1, 250):
        ip = "198.51.100.%d" % i
        b = rollout_bucket(cohort, ip)
        if b < 5000 and not below:
            below = ip
        if b >= 5000 and not above:
            above = ip
    return below, above


def v1(src, dst="127.0.0.1", sport=40000, dport=80):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src=None, cmd=1, tlv=b""):
    """A v2 header: PROXY TCP4 from src (LOCAL with cmd=0), TLVs appended."""
    if src is None:
        body, fam = b"", 0x00
    elif ":" in src:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(
            socket.AF_INET6, "::1") + struct.pack("!HH", 40000, 80)
        fam = 0x21
    else:
        body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, 80)
        fam = 0x11
    body += tlv
    return SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def raw_exchange(p, data, pieces=1, pause=0.05):
    """Sends data (in pieces, with pauses between) on a new connection and
    returns the response read, or None when the proxy closed without one."""
    c = p.client()
    try:
        step = max(1, -(-len(data) // pieces))
        for i in range(0, len(data), step):
            c.send(data[i:i + step])
            if pieces > 1:
                time.sleep(pause)
        try:
            return c.read_response()
        except harness.Closed as e:
            assert not e.partial, "bytes before the close: %r" % e.partial[:200]
            return None
    finally:
        c.close()


def metric(p, name):
    st, text = p.admin("GET", "/metrics")
    assert st == 200
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, name
    return int(m.group(1))


# --------------------------------------------------------------------------
# X-Forwarded-For from trusted proxies


def test_trusted_peer_gives_the_client_address(two_backends, start_proxy):
    legacy, modern = two_backends
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=ROUTES,
                    trusted_proxies=["127.0.0.0/8"])
    below, above = two_sides()
    with p.client() as c:
        # the balancer in front appended the client; a client-written entry
        # at the left is not believed (the walk stops at the first untrusted)
        for ip, side in ((below, "modern"), (above, "legacy")):
            for _ in range(3):
                r = c.request("GET", "/byip", [("X-Forwarded-For", "6.6.6.6, %s" % ip)])
                assert r.status == 200 and r.header("X-Backend") == side, ip
    log = p.wait_access(6)
    assert [e["client"] for e in log] == [below] * 3 + [above] * 3
    assert {e["peer"] for e in log} == {"127.0.0.1"}  # who said so
    assert [e["bucket"] for e in log] == [rollout_bucket("byip", below)] * 3 + \
        [rollout_bucket("byip", above)] * 3
    # the chain goes on with the peer that sent it: nothing is lost or rewritten
    assert sent(modern).header("X-Forwarded-For") == "6.6.6.6, %s, 127.0.0.1" % below


def test_untrusted_peer_is_the_client(two_backends, start_proxy):
    legacy, modern = two_backends
    p = start_proxy({"legacy": legacy, "modern": modern}, routes=ROUTES,
                    trusted_proxies=["10.0.0.0/8", "::1"])
    below, above = two_sides()
    want = "modern" if rollout_bucket("byip", "127.0.0.1") < 5000 else "legacy"
    with p.client() as c:
        for ip in (below, above):
            r = c.request("GET", "/byip", [("X-Forwarded-For", ip),
                                           ("X-Forwarded-Proto", "https"),
                                           ("X-Forwarded-Host", "evil.example")])
            assert r.header("X-Backend") == want
    assert {e["client"] for e in p.wait_access(2)} == {"127.0.0.1"}
    assert all("peer" not in e for e in p.wait_access(2))  # nothing read from the headers
    got = sent(legacy if want == "legacy" else modern, 2)
    assert got.header("X-Forwarded-For") == "%s, 127.0.0.1" % above
    # a client may not say it came over https, nor name another site
    assert got.header("X-Forwarded-Proto") == "http"
    assert got.header("X-Forwarded-Host") == "test.local"


def test_without_trusted_proxies_x_forwarded_for_is_not_believed(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy})
    with p.client() as c:
        assert c.request("GET", "/", [("X-Forwarded-For", "198.51.100.1")]).status == 200
    assert p.wait_access(1)[0]["client"] == "127.0.0.1"


def test_trusted_proxy_forwarded_proto_and_host_are_kept(backend_factory, start_proxy):
    """Behind a balancer that ends TLS, the backend must see https (its
    redirects and cookies depend on it) and the site the client asked for:
    passed on with trusted_headers, from a trusted peer, one field each."""
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, trusted_proxies=["127.0.0.1"],
                    trusted_headers=["X-Forwarded-Proto", "x-forwarded-host"])
    with p.client() as c:
        c.request("GET", "/a", [("X-Forwarded-For", "198.51.100.1"),
                                ("X-Forwarded-Proto", "HTTPS"),
                                ("X-Forwarded-Host", "shop.example:8443")], host="10.1.2.3")
        # values no balancer means are replaced as for any client
        c.request("GET", "/b", [("X-Forwarded-Proto", "ftp"),
                                ("X-Forwarded-Host", "a b")], host="10.1.2.3")
        # two fields: one may be the client's, passed on by a balancer that
        # added its own after it; neither is believed
        c.request("GET", "/c", [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example"),
                                ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "shop.example")],
                  host="10.1.2.3")
    a, b, dup = legacy.wait_requests(3)
    assert a.header("X-Forwarded-Proto") == "https"
    assert a.header("X-Forwarded-Host") == "shop.example:8443"
    assert a.header("Host") == "10.1.2.3"
    assert a.header_all("X-Forwarded-For") == ["198.51.100.1, 127.0.0.1"]
    assert b.header("X-Forwarded-Proto") == "http"
    assert b.header("X-Forwarded-Host") == "10.1.2.3"
    assert b.header("X-Forwarded-For") == "127.0.0.1"
    assert dup.header_all("X-Forwarded-Proto") == ["http"]
    assert dup.header_all("X-Forwarded-Host") == ["10.1.2.3"]


def test_trusted_proxy_headers_are_replaced_unless_asked_for(backend_factory, start_proxy):
    """trusted_proxies alone believes the address only: a balancer that
    only appends X-Forwarded-For passes the client's own X-Forwarded-Host
    and -Proto through, and those must not reach the backend."""
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, trusted_proxies=["127.0.0.1"],
                    trusted_headers=["X-Forwarded-Proto"])
    with p.client() as c:
        c.request("GET", "/", [("X-Forwarded-For", "198.51.100.1"),
                               ("X-Forwarded-Proto", "https"),
                               ("X-Forwarded-Host", "evil.example")], host="shop.example")
    got = sent(legacy)
    assert got.header("X-Forwarded-Proto") == "https"  # asked for
    assert got.header("X-Forwarded-Host") == "shop.example"  # not asked for
    assert p.wait_access(1)[0]["client"] == "198.51.100.1"
    p2 = start_proxy({"legacy": legacy}, trusted_proxies=["127.0.0.1"])
    with p2.client() as c:
        c.request("GET", "/", [("X-Forwarded-Proto", "https"),
                               ("X-Forwarded-Host", "evil.example")], host="shop.example")
    got = sent(legacy, 2)
    assert (got.header("X-Forwarded-Proto"), got.header("X-Forwarded-Host")) == \
        ("http", "shop.example")


def test_xff_garbage_and_ports(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"])
    cases = [("unknown", "127.0.0.1"),
             ("198.51.100.7:4711", "198.51.100.7"),
             ("[2001:DB8::7]:443, 10.1.1.1", "2001:db8::7"),
             ("198.51.100.8, , 10.9.9.9:80", "198.51.100.8"),
             ("198.51.100.9, not-an-ip, 10.1.1.1", "10.1.1.1"),
             ("::ffff:198.51.100.10", "198.51.100.10")]
    with p.client() as c:
        for xff, _ in cases:
            assert c.request("GET", "/", [("X-Forwarded-For", xff)]).status == 200
    assert [e["client"] for e in p.wait_access(len(cases))] == [want for _, want in cases]


def test_reload_turns_trust_on(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy})
    with p.client() as c:
        c.request("GET", "/", [("X-Forwarded-For", "198.51.100.1")])
        text = open(p.conf_path).read() + 'trusted_proxies = ["127.0.0.1"];\n'
        open(p.conf_path, "w").write(text)
        harness.reload_and_wait(p, 1)
        c.request("GET", "/", [("X-Forwarded-For", "198.51.100.1")])  # same connection
    assert [e["client"] for e in p.wait_access(2)] == ["127.0.0.1", "198.51.100.1"]


# --------------------------------------------------------------------------
# PROXY protocol


REQ = build_request("GET", "/pp")


@pytest.mark.parametrize("header,client", [
    (v1("203.0.113.7"), "203.0.113.7"),
    (v1("2001:db8::7", "2001:db8::1"), "2001:db8::7"),
    (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
    (v2("203.0.113.8"), "203.0.113.8"),
    (v2("203.0.113.9", tlv=b"\x03\x00\x04abcd" + b"\xea" * 40), "203.0.113.9"),
    (v2("2001:db8::9"), "2001:db8::9"),
    (v2("203.0.113.10", cmd=0), "127.0.0.1"),  # LOCAL: the balancer's own check
    (v2(None), "127.0.0.1"),
], ids=["v1-tcp4", "v1-tcp6", "v1-unknown", "v2-tcp4", "v2-tlv", "v2-tcp6", "v2-local",
        "v2-unspec"])
def test_proxy_protocol_gives_the_client_address(backend_factory, start_proxy, header, client):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, listen_settings={"proxy_protocol": True},
                    trusted_proxies=["127.0.0.1"])
    # the header and the request in one segment, as balancers send them
    r = raw_exchange(p, header + REQ)
    assert r is not None and r.status == 200
    assert p.wait_access(1)[0]["client"] == client
    assert "peer" not in p.wait_access(1)[0]  # the connection's own address
    assert sent(legacy).header("X-Forwarded-For") == client
    assert sent(legacy).path == "/pp"


def test_proxy_header_in_pieces_then_keep_alive(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, listen_settings={"proxy_protocol": True},
                    trusted_proxies=["127.0.0.1"])
    # the port may take connections a moment before the line is written
    wait_for(lambda: "listening on 127.0.0.1:%d (PROXY protocol)" % p.port in p.stderr_text(),
             what="the listener's start line")
    with p.client() as c:
        hdr = v2("203.0.113.11", tlv=b"\xea" * 20)
        for i in range(0, len(hdr), 7):  # a byte at a time would take long
            c.send(hdr[i:i + 7])
            time.sleep(0.02)
        for _ in range(3):  # one header per connection, then requests as usual
            assert c.request("GET", "/k").status == 200
    assert [e["client"] for e in p.wait_access(3)] == ["203.0.113.11"] * 3
    with p.client() as c:
        line = v1("203.0.113.12")
        for ch in range(len(line)):
            c.send(line[ch:ch + 1])
        assert c.request("GET", "/k").status == 200
    assert p.wait_access(4)[3]["client"] == "203.0.113.12"


@pytest.mark.parametrize("data", [
    REQ,                                               # the balancer sends none
    b"PROXY TCP4 203.0.113.7 127.0.0.1 1 80\n" + REQ,  # LF alone
    b"PROXY TCP4 203.0.113.7 127.0.0.1 1\r\n" + REQ,   # a field short
    b"PROXY TCP4 " + b"9" * 120 + b"\r\n" + REQ,       # past 107 bytes
    SIG + b"\x21\x11\x00\x04abcd" + REQ,               # too short for TCP4
    SIG + b"\x21\x11\x10\x00" + b"\x00" * 64,          # longer than 4096
], ids=["none", "lf", "short", "long", "v2-short", "v2-long"])
def test_bad_proxy_header_closes_and_counts(backend_factory, start_proxy, data):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, listen_settings={"proxy_protocol": True},
                    trusted_proxies=["127.0.0.1"], admin={}, log_level="debug")
    assert metric(p, "strangler_proxy_protocol_failures_total") == 0
    assert raw_exchange(p, data) is None
    wait_for(lambda: metric(p, "strangler_proxy_protocol_failures_total") == 1,
             what="the failure counted")
    assert legacy.requests == []
    assert "PROXY" in p.stderr_text()
    # the proxy still serves good ones
    r = raw_exchange(p, v1("203.0.113.7") + REQ)
    assert r.status == 200


def test_proxy_header_from_untrusted_peer_is_read_not_believed(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, listen_settings={"proxy_protocol": True},
                    trusted_proxies=["10.0.0.0/8"])
    r = raw_exchange(p, v1("203.0.113.7") + REQ)
    assert r.status == 200
    assert p.wait_access(1)[0]["client"] == "127.0.0.1"
    assert sent(legacy).header("X-Forwarded-For") == "127.0.0.1"


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", v2(None), v2("203.0.113.5", cmd=0)],
                         ids=["v1-unknown", "v2-unspec", "v2-local"])
def test_a_proxy_header_without_an_address_trusts_no_header(backend_factory, start_proxy,
                                                             header):
    """The balancer passed the connection on without saying from whom: the
    bytes that follow are the client's, not the balancer's, so the client's
    X-Forwarded-* are not believed, though the balancer is trusted."""
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, listen_settings={"proxy_protocol": True},
                    trusted_proxies=["127.0.0.1"], trusted_headers=["X-Forwarded-Host"])
    r = raw_exchange(p, header + build_request(
        "GET", "/", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Host", "evil.example")]))
    assert r.status == 200
    assert p.wait_access(1)[0]["client"] == "127.0.0.1"
    got = sent(legacy)
    assert got.header("X-Forwarded-For") == "6.6.6.6, 127.0.0.1"
    assert got.header("X-Forwarded-Host") == "test.local"


INTERNAL = [{"name": "internal", "match": {"client_ip": ["127.0.0.0/8", "10.0.0.0/8"]},
             "return": {"status": 200, "body": "internal"}},
            {"name": "closed", "return": 403}]


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", v2(cmd=0)], ids=["v1-unknown", "v2-local"])
def test_a_proxy_header_without_an_address_matches_no_client_ip(backend_factory, start_proxy,
                                                                header):
    """No address from the balancer: the client is unknown, and the
    balancer's own address (logged, as the connection's) must not pass for
    it on an allow list (configuration.md, Behind a load balancer)."""
    p = start_proxy({"legacy": backend_factory("legacy")}, routes=INTERNAL,
                    listen_settings={"proxy_protocol": True}, trusted_proxies=["127.0.0.1"])
    r = raw_exchange(p, header + REQ)
    assert r.status == 403
    a = p.wait_access(1)[0]
    assert (a["route"], a["client"]) == ("closed", "127.0.0.1")
    # with the client's address, the same balancer's request is let in
    r = raw_exchange(p, v1("10.9.8.7") + REQ)
    assert r.status == 200 and r.body == b"internal"


@pytest.mark.parametrize("entry", ["[::ffff:203.0.113.7]:4711", "[::ffff:203.0.113.7]",
                                   "::ffff:203.0.113.7"])
def test_an_ipv4_mapped_forwarded_for_entry_is_the_ipv4_client(backend_factory, start_proxy,
                                                               entry):
    """An L7 balancer listening dual-stack writes an IPv4 client as an
    IPv4-mapped address, bracketed or not: it is that IPv4 client, outside
    10.0.0.0/8, not the balancer (whose address is inside)."""
    p = start_proxy({"legacy": backend_factory("legacy")}, routes=INTERNAL,
                    listen_settings={"proxy_protocol": True},
                    trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    r = raw_exchange(p, v1("10.0.0.5") + build_request("GET", "/admin",
                                                       [("X-Forwarded-For", entry)]))
    assert r.status == 403
    assert p.wait_access(1)[0]["client"] == "203.0.113.7"


def test_proxy_then_forwarded_for(backend_factory, start_proxy):
    """An L4 balancer in front of an L7 one: the PROXY header names the L7
    proxy, trusted too, whose X-Forwarded-For names the client."""
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, listen_settings={"proxy_protocol": True},
                    trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    r = raw_exchange(p, v1("10.2.3.4") + build_request(
        "GET", "/", [("X-Forwarded-For", "198.51.100.20")]))
    assert r.status == 200
    e = p.wait_access(1)[0]
    assert (e["client"], e["peer"]) == ("198.51.100.20", "10.2.3.4")
    assert sent(legacy).header("X-Forwarded-For") == "198.51.100.20, 10.2.3.4"


def test_a_reload_turns_proxy_protocol_on_for_new_connections(backend_factory, start_proxy):
    """The listening socket stays; connections accepted after the reload
    must start with the header, one already open goes on without."""
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, trusted_proxies=["127.0.0.1"])
    old = p.client()
    assert old.request("GET", "/before").status == 200
    text = open(p.conf_path).read()
    addr = 'address = "127.0.0.1:%d";' % p.port
    assert addr in text
    open(p.conf_path, "w").write(text.replace(addr, addr + " proxy_protocol = true;"))
    harness.reload_and_wait(p, 1)
    assert "reload: " in p.stderr_text() and "keeping the running" not in p.stderr_text()
    assert old.request("GET", "/kept").status == 200
    old.close()
    assert raw_exchange(p, REQ) is None  # no header: refused
    r = raw_exchange(p, v1("203.0.113.30") + REQ)
    assert r.status == 200
    assert [e["client"] for e in p.wait_access(3)] == ["127.0.0.1", "127.0.0.1", "203.0.113.30"]


def test_silent_connection_closes_at_the_header_timeout(backend_factory, start_proxy):
    legacy = backend_factory("legacy")
    p = start_proxy({"legacy": legacy}, listen_settings={"proxy_protocol": True},
                    trusted_proxies=["127.0.0.1"], timeouts={"client_header_ms": 300}, admin={})
    with p.client() as c:
        t0 = time.monotonic()
        assert c.is_closed(timeout=3)
        assert 0.2 < time.monotonic() - t0 < 2.5
    with p.client() as c:  # a header without a request: the same timeout
        c.send(v1("203.0.113.7"))
        assert c.is_closed(timeout=3)
    assert metric(p, "strangler_proxy_protocol_failures_total") == 0
    with p.client() as c:  # a part of a header: a failure, counted
        c.send(v1("203.0.113.7")[:20])
        assert c.is_closed(timeout=3)
    wait_for(lambda: metric(p, "strangler_proxy_protocol_failures_total") == 1,
             what="the cut header counted")


# --------------------------------------------------------------------------
# configuration


def check(tmp_path, extra):
    conf = tmp_path / "s.conf"
    conf.write_text(harness.make_config(18080, {"legacy": "http://127.0.0.1:9"}) + extra)
    return run_strangler("-t", "-c", str(conf)), str(conf)


@pytest.mark.parametrize("extra,line,message", [
    ('trusted_proxies = ["10.0.0.1/8"];', 'trusted_proxies.[0]: "10.0.0.1/8": bits set past the '
     "/8 prefix: write 10.0.0.0/8 (the block) or 10.0.0.1 (the address)", None),
    ('trusted_proxies = ["10.0.0.0/8", "lb.internal"];', 'trusted_proxies.[1]: "lb.internal": not '
     "an IP address or an address block (10.0.0.0/8, 2001:db8::/32); host names are not "
     "resolved here", None),
    ('trusted_proxies = ["::/129"];', 'trusted_proxies.[0]: "::/129": the prefix length after / '
     "must be 0-128 for an IPv6 address", None),
    ("trusted_proxies = [];", "trusted_proxies: at least one entry (remove the setting for "
     "none)", None),
    ('trusted_proxies = "10.0.0.0/8";', 'trusted_proxies: must be a list of addresses or '
     'blocks: ["10.0.0.0/8", "192.0.2.7"]', None),
], ids=["host-bits", "name", "prefix", "empty", "not-a-list"])
def test_trusted_proxies_errors(tmp_path, extra, line, message):
    r, conf = check(tmp_path, extra + "\n")
    assert r.returncode == 1
    lineno = len(open(conf).read().splitlines())
    assert "%s:%d: %s" % (conf, lineno, line) in r.stderr, r.stderr


def test_trusted_headers_checks(tmp_path):
    r, conf = check(tmp_path, 'trusted_proxies = ["10.0.0.0/8"];\n'
                    'trusted_headers = ["X-Forwarded-Proto", "X-Forwarded-For"];\n')
    assert r.returncode == 1
    lineno = len(open(conf).read().splitlines())
    assert ('%s:%d: trusted_headers.[1]: "X-Forwarded-For": must be X-Forwarded-Proto or '
            "X-Forwarded-Host (X-Forwarded-For is always read from trusted peers)"
            % (conf, lineno)) in r.stderr, r.stderr
    r, conf = check(tmp_path, 'trusted_headers = ["X-Forwarded-Proto"];\n')
    assert r.returncode == 0
    assert "%s:%d: warning: trusted_headers: has no effect without trusted_proxies" % (
        conf, len(open(conf).read().splitlines())) in r.stderr, r.stderr


def test_proxy_protocol_checks(tmp_path):
    conf = tmp_path / "s.conf"
    text = harness.make_config(18080, {"legacy": "http://127.0.0.1:9"},
                               listen_settings={"proxy_protocol": "yes"})
    conf.write_text(text)
    r = run_strangler("-t", "-c", str(conf))
    assert r.returncode == 1
    assert "%s:2: listen.[0].proxy_protocol: must be true or false" % conf in r.stderr
    conf.write_text(text.replace('"yes"', "true"))
    r = run_strangler("-t", "-c", str(conf))
    assert r.returncode == 0
    assert ("%s:2: warning: listen.[0].proxy_protocol: any peer that reaches 127.0.0.1:18080 can "
            "give itself any client address; list the load balancers in trusted_proxies"
            % conf) in r.stderr
    conf.write_text(text.replace('"yes"', "true") + 'trusted_proxies = ["10.0.0.0/8"];\n')
    r = run_strangler("-t", "-c", str(conf))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_a_connection_closed_inside_its_proxy_header_is_counted(backend_factory, start_proxy):
    """configuration.md: a connection closed before any byte is not counted
    as a PROXY protocol failure, one that sent part of a header is. Part of
    a header, then a close, went uncounted (and the debug line said closed
    before its PROXY header)."""
    p = start_proxy({"legacy": backend_factory("legacy")},
                    listen_settings={"proxy_protocol": True}, admin={}, log_level="debug")
    for part in (b"PROXY TCP4 203.0.113.7 12", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x01\x02", b""):
        c = p.client()
        c.send(part)
        time.sleep(0.2)
        c.close()
    wait_for(lambda: p.stderr_text().count("closed in the middle of its PROXY header") == 2,
             what="two partial headers logged")
    assert metric(p, "strangler_proxy_protocol_failures_total") == 2
