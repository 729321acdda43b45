"""TLS on both sides, with certificates generated at test time by the openssl
command line: a listener (SNI, ALPN, minimum version, reload of a bad
certificate) and https backends (verified, expired, wrong name, unverified)."""
import errno
import os
import pty
import re
import select
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

import harness


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and leaf certificates: localhost (valid), a.test, b.test, *.x.test,
    a.x.test and b.x.test (for SNI), an expired localhost, and a valid one for
    the wrong name."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=strangler test CA", cwd=d)

    def leaf(name, san, days="2"):
        (d / (name + ".ext")).write_text("subjectAltName=%s\n" % san)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
                name + ".csr", "-subj", "/CN=" + name, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", days, "-extfile", name + ".ext",
                cwd=d)
        return str(d / (name + ".pem")), str(d / (name + ".key"))

    return {
        "dir": d,
        "ca": str(d / "ca.pem"),
        "localhost": leaf("localhost", "DNS:localhost,IP:127.0.0.1"),
        "a": leaf("a.test", "DNS:a.test"),
        "b": leaf("b.test", "DNS:b.test"),
        # a wildcard needs two labels below it (OpenSSL ignores "*.test")
        "wild": leaf("wild.x.test", "DNS:*.x.test"),
        "ax": leaf("a.x.test", "DNS:a.x.test"),
        "bx": leaf("b.x.test", "DNS:b.x.test"),
        "expired": leaf("expired", "DNS:localhost,IP:127.0.0.1", days="-1"),
        "wrongname": leaf("wrongname", "DNS:elsewhere.test"),
        "client": leaf("client", "DNS:strangler.client"),
    }


@pytest.fixture
def tls_backends(pki):
    made = {}
    for name in ("localhost", "expired", "wrongname"):
        made[name] = harness.TLSBackend(name, pki[name])
    yield made
    for b in made.values():
        b.stop()


def read_to_eof(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def https_get(port, path, ca, server_hostname="localhost", **ctx_opts):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    for k, v in ctx_opts.items():
        setattr(ctx, k, v)
    with socket.create_connection((harness.HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                      % (path.encode(), server_hostname.encode()))
            return s.selected_alpn_protocol(), read_to_eof(s)


def tls_listen(port, pki, certs, tls_extra="", listen_extra=""):
    if len(certs) == 1:
        tls = "certificate = %s; private_key = %s;" % tuple(harness.cfg_value(x) for x in certs[0])
    else:
        tls = "certificates = ( %s );" % ", ".join(
            "{ certificate = %s; private_key = %s; }" % tuple(harness.cfg_value(x) for x in c)
            for c in certs)
    return 'listen = ( { address = "127.0.0.1:%d"; %s tls = { %s %s }; } );' % (
        port, listen_extra, tls, tls_extra)


def start_tls_proxy(start_proxy, backend, pki, certs, tls_extra="", listen_extra="", **extra):
    p = start_proxy({"legacy": backend}, **extra)
    text = open(p.conf_path).read()
    text = text.replace('listen = ( { address = "127.0.0.1:%d"; } );' % p.port,
                        tls_listen(p.port, pki, certs, tls_extra, listen_extra))
    # restart with TLS: on the same port, or on another when something else
    # took it meanwhile (a client's ephemeral port)
    assert p.stop() == 0
    for _attempt in range(5):
        open(p.conf_path, "w").write(text)
        p._stderr = open(p.stderr_path, "ab")
        p.proc = subprocess.Popen([harness.BINARY, "-c", p.conf_path], stdout=p._stderr,
                                  stderr=p._stderr)
        harness.wait_for(lambda: "listening on" in p.stderr_text().split("stopped")[-1] or
                         p.proc.poll() is not None, what="TLS proxy up")
        time.sleep(0.1)  # every listener bound, or the start failed
        if p.proc.poll() is None or "Address already in use" not in p.stderr_text():
            break
        old, p.port = p.port, harness.free_port()
        text = text.replace("127.0.0.1:%d" % old, "127.0.0.1:%d" % p.port)
        if p.admin_port:
            new_admin = harness.free_port()
            text = text.replace("127.0.0.1:%d" % p.admin_port, "127.0.0.1:%d" % new_admin)
            p.admin_port = new_admin
    return p


def test_tls_listener_serves_https(start_proxy, backend_factory, pki):
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]])
    alpn, data = https_get(p.port, "/hello", pki["ca"])
    assert data.startswith(b"HTTP/1.1 200")
    assert alpn == "http/1.1"
    got = b.wait_requests(1)[0]
    assert got.header("X-Forwarded-Proto") == "https" and got.path == "/hello"


@pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS", "PATCH", "get"])
def test_plain_http_to_a_tls_listener_gets_a_plain_400(start_proxy, backend_factory, pki,
                                                       method):
    """As nginx does, instead of a bare reset: the client learns what it did
    wrong, whatever its method (OpenSSL recognises only GET, POST, HEAD and
    PUT: the others were closed without a word, and counted as failed
    handshakes). The listener then serves TLS as before."""
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]])
    with socket.create_connection((harness.HOST, p.port), timeout=5) as c:
        c.sendall(method.encode() + b" /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = harness.Stream(c).read_to_eof()
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got
    assert got.endswith(b"\r\n\r\nThe plain HTTP request was sent to HTTPS port\r\n"), got
    assert b.requests == []
    alpn, data = https_get(p.port, "/hello", pki["ca"])
    assert data.startswith(b"HTTP/1.1 200")


def test_tls_listener_refuses_old_versions(start_proxy, backend_factory, pki):
    """TLS 1.1 is refused; the failure is counted and said at debug level (it
    left no trace at all), and the proxy is fine afterwards."""
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]], admin={}, log_level="debug")
    harness.wait_for(lambda: "admin API on" in p.stderr_text().split("stopped")[-1],
                     what="admin listener")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        https_get(p.port, "/", pki["ca"], maximum_version=ssl.TLSVersion.TLSv1_1,
                  minimum_version=ssl.TLSVersion.TLSv1)
    assert https_get(p.port, "/", pki["ca"])[1].startswith(b"HTTP/1.1 200")
    assert "client 127.0.0.1: TLS handshake failed: unsupported protocol" in p.stderr_text()
    assert "strangler_tls_handshake_failures_total 1\n" in p.admin("GET", "/metrics")[1]
    # a connection closed before its first byte (a balancer's TCP check) is
    # no failed handshake: it was counted, with a "TLS failure" line
    for _ in range(3):
        socket.create_connection((harness.HOST, p.port)).close()
    assert https_get(p.port, "/", pki["ca"])[1].startswith(b"HTTP/1.1 200")
    assert "strangler_tls_handshake_failures_total 1\n" in p.admin("GET", "/metrics")[1]
    assert "TLS failure" not in p.stderr_text()


def test_alpn_without_http11_sni_with_a_final_dot_and_a_stalled_handshake(
        start_proxy, backend_factory, pki):
    """A client offering h2 alone was let in without ALPN and answered 505
    to its HTTP/2 preface: it gets no_application_protocol (RFC 7301, as from
    nginx). "b.test." got the default certificate (nginx strips the dot). A
    handshake begun and left unfinished past client_header_ms was dropped
    uncounted and unsaid; a connection that sends nothing is still no
    failed handshake (a balancer's check)."""
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["a"], pki["b"]], admin={},
                        log_level="debug", timeouts={"client_header_ms": 400})
    harness.wait_for(lambda: "admin API on" in p.stderr_text().split("stopped")[-1],
                     what="admin listener")

    def failures():
        text = p.admin("GET", "/metrics")[1]
        return int(re.search(r"^strangler_tls_handshake_failures_total (\d+)$", text,
                             re.M).group(1))

    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.check_hostname = False
    for name, cn in (("b.test.", "b.test"), ("B.Test.", "b.test"), ("a.test.", "a.test")):
        with socket.create_connection((harness.HOST, p.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as s:
                assert dict(x[0] for x in s.getpeercert()["subject"])["commonName"] == cn, name
    h2 = ssl.create_default_context(cafile=pki["ca"])
    h2.set_alpn_protocols(["h2"])
    with socket.create_connection((harness.HOST, p.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
            h2.wrap_socket(raw, server_hostname="a.test")
    harness.wait_for(lambda: failures() == 1, what="the ALPN failure counted")
    # an HTTP/1.0 client offering http/1.0 alone (curl --http1.0) is served
    h10 = ssl.create_default_context(cafile=pki["ca"])
    h10.set_alpn_protocols(["http/1.0"])
    with socket.create_connection((harness.HOST, p.port), timeout=5) as raw:
        with h10.wrap_socket(raw, server_hostname="a.test") as s:
            assert s.selected_alpn_protocol() == "http/1.0"
            s.sendall(b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n")
            assert read_to_eof(s).startswith(b"HTTP/1.0 200")
    # a silent connection, then a ClientHello's first bytes only
    silent = socket.create_connection((harness.HOST, p.port), timeout=5)
    partial = socket.create_connection((harness.HOST, p.port), timeout=5)
    partial.sendall(b"\x16\x03\x01\x00\xc8\x01\x00\x00")
    for s in (silent, partial):
        assert s.recv(100) == b""  # closed at client_header_ms
        s.close()
    harness.wait_for(lambda: failures() == 2, what="the stalled handshake counted")
    assert "TLS handshake not done within timeouts.client_header_ms" in p.stderr_text()
    alpn, data = https_get(p.port, "/", pki["ca"], server_hostname="a.test")
    assert alpn == "http/1.1" and data.startswith(b"HTTP/1.1 200")
    assert failures() == 2


def test_min_version_tls13_refuses_tls12(start_proxy, backend_factory, pki, tmp_path):
    """min_version = "TLSv1.3" refuses a TLS 1.2 client; any other value than
    the two documented ones is a config error."""
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]],
                        tls_extra='min_version = "TLSv1.3";')
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        https_get(p.port, "/", pki["ca"], maximum_version=ssl.TLSVersion.TLSv1_2)
    assert https_get(p.port, "/", pki["ca"])[1].startswith(b"HTTP/1.1 200")
    conf = tmp_path / "v.conf"
    conf.write_text(tls_listen(1, pki, [pki["localhost"]], 'min_version = "TLSv1.1";') + "\n"
                    'backends = { a = { url = "http://127.0.0.1:2"; }; };\n'
                    'default_backend = "a";\n')
    r = subprocess.run([harness.BINARY, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert ('%s:1: listen.[0].tls.min_version: "TLSv1.1": must be "TLSv1.2" or "TLSv1.3"'
            % conf) in r.stderr


def test_proxy_protocol_before_the_handshake(start_proxy, backend_factory, pki):
    """A balancer passing TLS through sends its PROXY header first, in the
    clear; the handshake follows on the same connection."""
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]],
                        listen_extra="proxy_protocol = true;", trusted_proxies=["127.0.0.1"])
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with socket.create_connection((harness.HOST, p.port), timeout=5) as raw:
        raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /pp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = read_to_eof(s)
    assert data.startswith(b"HTTP/1.1 200")
    got = b.wait_requests(1)[0]
    assert got.header("X-Forwarded-For") == "203.0.113.7"
    assert got.header("X-Forwarded-Proto") == "https"
    assert p.wait_access(1)[0]["client"] == "203.0.113.7"
    # without the header, the handshake's first bytes are no PROXY header
    with pytest.raises((ssl.SSLError, OSError)):
        https_get(p.port, "/", pki["ca"])
    assert b.requests == [b.wait_requests(1)[0]]


@pytest.mark.parametrize("listen_extra", ["", "proxy_protocol = true;"], ids=["tls", "proxy"])
def test_a_handshake_begun_before_a_reload_uses_its_certificates(start_proxy, backend_factory,
                                                                  pki, listen_extra):
    """A connection accepted before a reload whose ClientHello comes after
    it: the SNI choice reads the certificates of the generation it was
    accepted under, which the reload must not free meanwhile (the ASan run
    of this test read freed memory before they were held)."""
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["a"], pki["b"]], listen_extra=listen_extra,
                        trusted_proxies=["127.0.0.1"])
    raw = socket.create_connection((harness.HOST, p.port), timeout=5)
    time.sleep(0.2)  # accepted: waiting for its ClientHello (or PROXY header)
    with open(p.conf_path, "a") as f:
        f.write("\n# reloaded\n")
    harness.reload_and_wait(p, 1)
    if listen_extra:
        raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with ctx.wrap_socket(raw, server_hostname="b.test") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    assert "AddressSanitizer" not in p.stderr_text()


def test_sni_selects_the_certificate(start_proxy, backend_factory, pki):
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["a"], pki["b"]])
    for name in ("a.test", "b.test"):
        s, data = https_get(p.port, "/", pki["ca"], server_hostname=name)
        assert data.startswith(b"HTTP/1.1 200"), name
    # a name no certificate covers gets the first one, which the client rejects
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(p.port, "/", pki["ca"], server_hostname="c.test")


def served_certificate(port, ca, name):
    """The common name of the certificate the listener serves for SNI name."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((harness.HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]


def test_sni_prefers_an_exact_name_to_a_wildcard_in_any_order(start_proxy, backend_factory,
                                                              pki):
    """As nginx: every certificate takes part, the first one included (the
    search began at the second), and an exact name beats a wildcard listed
    before it (the first match won)."""
    p = start_tls_proxy(start_proxy, backend_factory("legacy"), pki,
                        [pki["ax"], pki["wild"], pki["bx"]])
    assert served_certificate(p.port, pki["ca"], "a.x.test") == "a.x.test"
    assert served_certificate(p.port, pki["ca"], "b.x.test") == "b.x.test"
    assert served_certificate(p.port, pki["ca"], "c.x.test") == "wild.x.test"


def test_bad_certificate_on_reload_keeps_the_running_one(start_proxy, backend_factory, pki):
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]])
    text = open(p.conf_path).read()
    open(p.conf_path, "w").write(text.replace(pki["localhost"][0], "/nonexistent/cert.pem"))
    os.kill(p.proc.pid, signal.SIGHUP)
    harness.wait_for(lambda: "keeping the running configuration" in p.stderr_text(),
                     what="reload refused")
    assert 'tls.certificate: "/nonexistent/cert.pem": No such file' in p.stderr_text()
    assert https_get(p.port, "/", pki["ca"])[1].startswith(b"HTTP/1.1 200")


def backend_route(name):
    return {"name": name, "match": {"path_prefix": "/" + name}, "backend": name}


def test_https_backends_verified(start_proxy, backend_factory, pki, tls_backends):
    plain = backend_factory("legacy")
    url = lambda name, host="127.0.0.1": "https://%s:%d" % (host, tls_backends[name].port)
    backends = {
        "legacy": plain,
        "good": {"url": url("localhost"), "ca_file": pki["ca"]},
        "byname": {"url": url("localhost", "localhost"), "ca_file": pki["ca"]},
        "expired": {"url": url("expired"), "ca_file": pki["ca"]},
        "wrongname": {"url": url("wrongname"), "ca_file": pki["ca"]},
        "systemstore": {"url": url("localhost")},
        "unverified": {"url": url("wrongname"), "tls_verify": False},
    }
    names = [n for n in backends if n != "legacy"]
    p = start_proxy(backends, default_backend="legacy", routes=[backend_route(n) for n in names])
    expect = {"good": 200, "byname": 200, "expired": 502, "wrongname": 502, "systemstore": 502,
              "unverified": 200}
    with p.client() as c:
        for name, status in expect.items():
            r = c.request("GET", "/" + name)
            assert r.status == status, (name, r.status, r.body)
            if status == 502:
                assert b"upstream TLS handshake failed" in r.body
                c.close()
                c = p.client()
    assert "certificate verify failed" in p.stderr_text()
    r = harness.RawClient(p.port).request("GET", "/good/again")
    assert r.body == b"localhost http"


def test_a_pooled_tls_connection_is_checked_before_a_post(start_proxy, backend_factory, pki,
                                                          tls_backends):
    """A request that cannot be sent twice takes a pooled connection only
    once checked alive (SSL_peek): a live one is reused, and one the backend
    closed right after a keep-alive answer is found out (a new connection,
    not a 502). (Records with no data arriving while idle, which the check
    also passes, cannot be made to come late by Python's ssl.)"""
    url = "https://127.0.0.1:%d" % tls_backends["localhost"].port
    p = start_proxy({"legacy": backend_factory("legacy"),
                     "good": {"url": url, "ca_file": pki["ca"]}},
                    default_backend="legacy", routes=[backend_route("good")])
    post = b"POST /good HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    with p.client() as c:
        first = c.request("GET", "/good")
        c.send(post)
        again = c.read_response()
        assert (again.status, again.header("X-Peer-Port")) == (200, first.header("X-Peer-Port"))
        for _ in range(3):
            c.send(b"GET /good/close HTTP/1.1\r\nHost: t\r\n\r\n" + post)
            closing, then = c.read_response(), c.read_response()
            assert closing.status == 200
            assert then.status == 200, then
            assert then.header("X-Peer-Port") != closing.header("X-Peer-Port")


def test_a_tls_handshake_is_bounded_by_the_connect_timeout(start_proxy, backend_factory, pki):
    """A backend whose TCP accepts (the kernel's backlog) but whose TLS never
    answers: 504 "connect timeout" after connect_timeout_ms, as in nginx and
    Envoy (it took response_timeout_ms, while saying "connect timeout")."""
    silent = socket.socket()
    silent.bind((harness.HOST, 0))
    silent.listen(8)
    try:
        hung = {"url": "https://127.0.0.1:%d" % silent.getsockname()[1], "ca_file": pki["ca"],
                "connect_timeout_ms": 300, "response_timeout_ms": 5000}
        p = start_proxy({"legacy": backend_factory("legacy"), "hung": hung},
                        default_backend="legacy", routes=[backend_route("hung")])
        with p.client() as c:
            started = time.monotonic()
            r = c.request("GET", "/hung")
            took = time.monotonic() - started
        assert r.status == 504 and r.body == b"connect timeout\n"
        assert 0.25 <= took < 2.0, took
    finally:
        silent.close()


def test_tls_settings_checked_by_t(tmp_path, pki):
    conf = tmp_path / "t.conf"
    conf.write_text(
        'listen = ( { address = "127.0.0.1:1"; tls = { certificate = "%s"; private_key = "%s"; }; } );\n'
        'backends = {\n'
        '  a = { url = "https://127.0.0.1:2"; tls_verify = false; };\n'
        '  b = { url = "http://127.0.0.1:3"; ca_file = "%s"; };\n'
        '  c = { url = "https://127.0.0.1:4"; ca_file = "/nonexistent.pem"; };\n'
        '  d = { url = "https://127.0.0.1:5"; ca_file = "%s";\n'
        '        client_certificate = "%s";\n'
        '        client_private_key = "%s"; };\n'
        '  e = { url = "https://127.0.0.1:6"; client_certificate = "%s"; };\n'
        '  f = { url = "https://127.0.0.1:7"; ca_file = "%s";\n'
        '        client_private_key = "%s";\n'
        '        client_certificate = "/nonexistent.crt"; };\n'
        '};\n'
        'default_backend = "a";\n' % (pki["localhost"][0], pki["a"][1], pki["ca"],
                                      pki["ca"], pki["client"][0], pki["a"][1],
                                      pki["client"][0], pki["ca"], pki["client"][1]))
    r = subprocess.run([harness.BINARY, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert ('%s:1: listen.[0].tls.private_key: "%s" does not match certificate "%s"'
            % (conf, pki["a"][1], pki["localhost"][0])) in r.stderr
    assert "%s:3: warning: backends.a.tls_verify: false" % conf in r.stderr
    assert "%s:4: backends.b: TLS settings need an https:// url" % conf in r.stderr
    assert '%s:5: backends.c.ca_file: "/nonexistent.pem": ' % conf in r.stderr
    # the client certificate and key are checked as a pair, by their setting names
    assert ('%s:8: backends.d.client_private_key: "%s" does not match client_certificate "%s"'
            % (conf, pki["a"][1], pki["client"][0])) in r.stderr
    assert "%s:9: backends.e: client_certificate and client_private_key go together" % conf \
        in r.stderr
    assert ('%s:12: backends.f.client_certificate: "/nonexistent.crt": No such file or directory'
            % conf) in r.stderr
    assert "(null)" not in r.stderr


def test_client_certificate_for_mutual_tls(start_proxy, backend_factory, pki):
    """A backend that requires a client certificate gets strangler's
    client_certificate; without it the handshake fails and the client gets 502."""
    mtls = harness.TLSBackend("mtls", pki["localhost"], client_ca=pki["ca"])
    try:
        url = "https://127.0.0.1:%d" % mtls.port
        backends = {
            "legacy": backend_factory("legacy"),
            "withcert": {"url": url, "ca_file": pki["ca"], "client_certificate": pki["client"][0],
                         "client_private_key": pki["client"][1]},
            "nocert": {"url": url, "ca_file": pki["ca"]},
        }
        p = start_proxy(backends, default_backend="legacy",
                        routes=[backend_route("withcert"), backend_route("nocert")])
        with p.client() as c:
            r = c.request("GET", "/withcert")
            assert (r.status, r.body) == (200, b"mtls http")
        with p.client() as c:
            r = c.request("GET", "/nocert")
            assert r.status == 502
    finally:
        mtls.stop()


def test_a_reload_that_changes_backend_tls_settings_drops_pooled_connections(
        start_proxy, backend_factory, pki, tls_backends, tmp_path):
    """Pooled connections carry the TLS settings they were made with: a reload
    that turns tls_verify on, or finds another authority in the same ca_file,
    must not go on reusing them (the impostor kept answering 200). A reload
    that changes nothing keeps them."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(open(pki["ca"], "rb").read())
    other = tmp_path / "other"
    other.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
            "/CN=another CA", cwd=other)
    url = lambda name: "https://127.0.0.1:%d" % tls_backends[name].port
    impostor = {"url": url("wrongname"), "tls_verify": False}
    good = {"url": url("localhost"), "ca_file": str(ca)}
    routes = [backend_route("impostor"), backend_route("good")]
    p = start_proxy({"legacy": backend_factory("legacy"), "impostor": impostor, "good": good},
                    default_backend="legacy", routes=routes)

    def rewrite(backends):
        open(p.conf_path, "w").write(harness.make_config(
            p.port, dict(legacy=backend_factory("legacy"), **backends), "legacy", routes, 1,
            p.access_log_path))

    def get(path):
        r = harness.RawClient(p.port).request("GET", path)
        return r.status, r.header("X-Peer-Port")

    status, _ = get("/impostor")
    assert status == 200
    _, peer = get("/good")
    assert get("/good") == (200, peer)  # pooled
    rewrite({"impostor": dict(impostor, tls_verify=True, ca_file=str(ca)), "good": good})
    harness.reload_and_wait(p, 1)
    assert get("/impostor")[0] == 502
    assert get("/good") == (200, peer)  # unchanged: still pooled
    ca.write_bytes((other / "ca.pem").read_bytes())
    harness.reload_and_wait(p, 2)
    assert get("/good")[0] == 502
    assert get("/impostor")[0] == 502


def run_on_a_terminal(argv, timeout=5.0):
    """(exit status, output) of argv run with a pseudo-terminal as its
    controlling terminal, where OpenSSL would prompt for a pass phrase; None
    as the status when it had not finished within timeout (then killed)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            try:
                if select.select([fd], [], [], 0.05)[0]:
                    out += os.read(fd, 4096)
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: the child closed the terminal
                    raise
            if done:
                return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None, out.decode(errors="replace")
    finally:
        os.close(fd)


def test_encrypted_private_keys_are_refused_without_a_prompt(tmp_path, pki):
    """An encrypted key made OpenSSL ask "Enter PEM pass phrase:" on the
    terminal: -t waited for it, and a reload blocked the main thread."""
    enc = str(tmp_path / "enc.key")
    openssl("pkey", "-in", pki["localhost"][1], "-aes256", "-passout", "pass:secret", "-out", enc,
            cwd=tmp_path)
    conf = tmp_path / "t.conf"
    conf.write_text(
        'listen = ( { address = "127.0.0.1:1"; tls = { certificate = "%s"; private_key = "%s"; }; } );\n'
        'backends = {\n'
        '  a = { url = "https://127.0.0.1:2"; ca_file = "%s";\n'
        '        client_certificate = "%s"; client_private_key = "%s"; };\n'
        '};\n'
        'default_backend = "a";\n' % (pki["localhost"][0], enc, pki["ca"], pki["localhost"][0], enc))
    status, out = run_on_a_terminal([harness.BINARY, "-t", "-c", str(conf)])
    assert status == 1, (status, out)
    assert "pass phrase" not in out
    assert '%s:1: listen.[0].tls.private_key: "%s": encrypted private keys are not supported' \
        % (conf, enc) in out
    assert ('%s:4: backends.a.client_private_key: "%s": encrypted private keys are not supported'
            % (conf, enc) in out)


class BioTLS:
    """TLS over a plain socket through memory BIOs, so that nothing is sent
    that the test does not send: closing the socket ends TCP without a
    close_notify, and shutdown(SHUT_WR) is a bare FIN."""

    def __init__(self, sock, ctx, server_side, server_hostname=None):
        self.sock, self.inc, self.out = sock, ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=server_side,
                                server_hostname=server_hostname)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()
        return bool(data)

    @classmethod
    def client(cls, raw, pki):
        """A client of the test listener (localhost's certificate)."""
        return cls(raw, ssl.create_default_context(cafile=pki["ca"]), server_side=False,
                   server_hostname="localhost")

    def send(self, data):
        self.obj.write(data)
        self._flush()

    def queue(self, data):
        """Encrypts data without sending it (the next send or flush does)."""
        self.obj.write(data)

    def queue_close_notify(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass

    def flush(self):
        self._flush()

    def read_until_end(self, timeout, stop=None):
        """Plaintext until the peer's close_notify, its TCP FIN, stop(got) or
        the timeout: (plaintext, "close_notify" | "fin" | "stop" | "timeout")."""
        got, deadline = b"", time.monotonic() + timeout
        while True:
            try:
                while True:
                    x = self.obj.read(65536)
                    if not x:
                        return got, "close_notify"
                    got += x
                    if stop and stop(got):
                        return got, "stop"
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return got, "close_notify"
            left = deadline - time.monotonic()
            if left <= 0:
                return got, "timeout"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return got, "timeout"
            if not data:
                return got, "fin"
            self.inc.write(data)

    def read_until(self, delim):
        got = b""
        while delim not in got:
            try:
                got += self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    break
        return got

    def read_to_eof(self):
        """Everything until TCP EOF (a close_notify on the way is fine)."""
        got, open_ = b"", True
        while open_:
            open_ = self._fill()
            try:
                while True:
                    chunk = self.obj.read(65536)
                    if not chunk:
                        break
                    got += chunk
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                pass
        return got


def https_backend(pki, serve_one):
    """An https backend (localhost's certificate) that runs serve_one(BioTLS)
    for each connection, one at a time. Returns (url, listening socket)."""
    srv = socket.socket()
    srv.bind((harness.HOST, 0))
    srv.listen(8)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["localhost"])

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    serve_one(BioTLS(conn, ctx, server_side=True))
                except (OSError, ssl.SSLError):
                    pass
    threading.Thread(target=serve, daemon=True).start()
    return "https://127.0.0.1:%d" % srv.getsockname()[1], srv


def abrupt_https_backend(pki, response):
    """An https backend that answers every request with the bytes of response,
    then closes TCP without a close_notify."""
    def serve_one(t):
        t.read_until(b"\r\n\r\n")
        t.send(response)
        time.sleep(0.05)
    return https_backend(pki, serve_one)


@pytest.mark.parametrize("response, complete, error", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000, True, None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 2000, False,
     "upstream response truncated"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + b"x" * 2000, False,
     "upstream response truncated"),
])
def test_an_https_backend_closing_without_close_notify(start_proxy, pki, response, complete,
                                                       error):
    """OpenSSL 3 took a TCP close without close_notify for a TLS error: a
    close-delimited response was cut ("upstream reset"). It is an end of
    stream now, and the HTTP framing tells a complete answer from a cut one."""
    url, srv = abrupt_https_backend(pki, response)
    try:
        p = start_proxy({"legacy": {"url": url, "ca_file": pki["ca"]}})
        with socket.create_connection((harness.HOST, p.port), timeout=5) as c:
            c.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got = harness.Stream(c).read_to_eof()
        e = p.wait_access(1)[0]
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        # relayed chunked: a complete answer ends with the last chunk
        assert got.endswith(b"\r\n0\r\n\r\n") == complete, got[-40:]
        assert e.get("error") == error, e
    finally:
        srv.close()


def test_a_tls_client_half_close_is_answered(start_proxy, backend_factory, pki):
    """A TLS client that sends its request and then a bare TCP FIN (no
    close_notify) gets its answer, as over plain HTTP (it got an alert and a
    499)."""
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]])
    with socket.create_connection((harness.HOST, p.port), timeout=5) as raw:
        t = BioTLS.client(raw, pki)
        t.send(b"GET /half HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw.shutdown(socket.SHUT_WR)
        got = t.read_to_eof()
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got
    assert b.wait_requests(1)[0].path == "/half"
    e = p.wait_access(1)[0]
    assert e["status"] == 200 and "error" not in e, e


def test_backend_certificate_failures_give_the_certificate_checks_reason(
        start_proxy, backend_factory, pki, tls_backends):
    """Each failure was logged as a bare "certificate verify failed"; the log
    (and a health check's verdict) now says which check failed, as nginx does."""
    url = lambda name: "https://127.0.0.1:%d" % tls_backends[name].port
    backends = {
        "legacy": backend_factory("legacy"),
        "expired": {"url": url("expired"), "ca_file": pki["ca"]},
        "wrongname": {"url": url("wrongname"), "ca_file": pki["ca"]},
        "checked": {"url": url("expired"), "ca_file": pki["ca"],
                    "health": {"path": "/health", "interval_ms": 100, "unhealthy": 1}},
    }
    p = start_proxy(backends, default_backend="legacy",
                    routes=[backend_route("expired"), backend_route("wrongname")])
    for name in ("expired", "wrongname"):
        assert harness.RawClient(p.port).request("GET", "/" + name).status == 502
    log = harness.wait_for(lambda: (lambda t: t if "backend checked" in t else None)(
        p.stderr_text()), what="health check verdict")
    assert ("backend expired (127.0.0.1:%d): TLS: certificate verify failed (certificate has "
            "expired)" % tls_backends["expired"].port) in log
    assert ("backend wrongname (127.0.0.1:%d): TLS: certificate verify failed (IP address "
            "mismatch)" % tls_backends["wrongname"].port) in log
    assert ("is down: health check: TLS: certificate verify failed (certificate has expired)"
            in log), log


def test_a_tls_error_names_the_entry_and_setting_at_its_line(tmp_path, pki):
    """An error in the third certificate was reported at the tls group's line
    as "listen.[0].tls"."""
    conf = tmp_path / "t.conf"
    conf.write_text(
        'listen = ( { address = "127.0.0.1:1";\n'
        '  tls = { certificates = (\n'
        '    { certificate = "%s"; private_key = "%s"; },\n'
        '    { certificate = "%s"; private_key = "%s"; },\n'
        '    { certificate = "%s";\n'
        '      private_key = "%s"; } ); }; } );\n'
        'backends = { a = { url = "http://127.0.0.1:9"; }; };\ndefault_backend = "a";\n'
        % (pki["a"] + pki["b"] + (pki["localhost"][0], pki["a"][1])))
    r = subprocess.run([harness.BINARY, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert ('%s:6: listen.[0].tls.certificates.[2].private_key: "%s" does not match certificate '
            '"%s"' % (conf, pki["a"][1], pki["localhost"][0])) in r.stderr, r.stderr


def test_unusable_certificate_files_get_the_specific_reason(tmp_path, pki):
    """Each of these was reported as OpenSSL's wrapper error, "PEM lib"."""
    (tmp_path / "empty.pem").write_text("")
    (tmp_path / "dir").mkdir()
    cert, key = pki["localhost"]
    cases = [(str(tmp_path / "empty.pem"), key), (key, key), (cert, cert),
             (cert, str(tmp_path / "dir"))]
    conf = tmp_path / "t.conf"
    conf.write_text(
        "listen = (\n%s\n);\n" % ",\n".join(
            '{ address = "127.0.0.1:%d"; tls = { certificate = "%s"; private_key = "%s"; }; }'
            % (i + 1, c, k) for i, (c, k) in enumerate(cases)) +
        'backends = { a = { url = "http://127.0.0.1:9"; }; };\ndefault_backend = "a";\n')
    r = subprocess.run([harness.BINARY, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert "PEM lib" not in r.stderr, r.stderr
    assert ('listen.[0].tls.certificate: "%s": no PEM certificate found (no start line)'
            % (tmp_path / "empty.pem")) in r.stderr, r.stderr
    assert 'listen.[1].tls.certificate: "%s": no PEM certificate found' % key in r.stderr
    assert 'listen.[2].tls.private_key: "%s": no PEM private key found' % cert in r.stderr
    assert ('listen.[3].tls.private_key: "%s": not a regular file (a directory)'
            % (tmp_path / "dir")) in r.stderr


def test_expired_certificates_are_warned_about(tmp_path, pki):
    """A certificate past its end date still loads (the operator may have no
    other), but every client refuses it: `-t` says so at the setting, for a
    listener's certificate and a backend's client certificate, and exits 0."""
    conf = tmp_path / "t.conf"
    conf.write_text(
        'listen = ( { address = "127.0.0.1:1";\n'
        '  tls = { certificates = (\n'
        '    { certificate = "%s"; private_key = "%s"; },\n'
        '    { certificate = "%s";\n'
        '      private_key = "%s"; } ); }; } );\n'
        'backends = { a = { url = "https://127.0.0.1:9";\n'
        '  client_certificate = "%s";\n'
        '  client_private_key = "%s"; }; };\ndefault_backend = "a";\n'
        % (pki["localhost"] + pki["expired"] + pki["expired"]))
    r = subprocess.run([harness.BINARY, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    day = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    cert = re.escape(pki["expired"][0])
    assert re.search(r'%s:4: warning: listen\.\[0\]\.tls\.certificates\.\[1\]\.certificate: '
                     r'"%s": expired on %s; peers will refuse it' % (re.escape(str(conf)), cert, day),
                     r.stderr), r.stderr
    assert re.search(r'%s:7: warning: backends\.a\.client_certificate: "%s": expired on %s; '
                     r'peers will refuse it' % (re.escape(str(conf)), cert, day), r.stderr), r.stderr
    assert r.stderr.count("expired on") == 2, r.stderr


def test_an_https_client_is_not_redirected_to_http(start_proxy, backend_factory, pki):
    """location_rewrite: a backend behind host_header writes an absolute
    Location from the Host it got, in the scheme it was spoken to (http).
    The client's Host went in, the backend's http stayed: an https client
    was redirected to plain http. Its scheme goes in too; a backend's https
    URL (a redirect to https) stays https."""
    def handler(req, conn):
        scheme = "https" if req.path.endswith("/secure") else "http"
        return harness.Response(201, b"", headers=[
            ("Location", "%s://%s/orders/8" % (scheme, req.header("Host")))])
    modern = backend_factory("modern", handler)
    p = start_tls_proxy(start_proxy, {"url": modern.url, "host_header": "modern.internal",
                                      "path_rewrite": [{"prefix": "/api/v1/orders",
                                                        "to": "/orders"}]},
                        pki, [pki["localhost"]])
    for path in ("/api/v1/orders", "/api/v1/orders/secure"):
        _, raw = https_get(p.port, path, pki["ca"])
        _, headers = harness.parse_head(raw.split(b"\r\n\r\n", 1)[0])
        assert harness.hget(headers, "Location") == "https://localhost/api/v1/orders/8", raw
    assert {r.header("Host") for r in modern.requests} == {"modern.internal"}
    # over plain HTTP the backend's http stays
    plain = start_proxy({"legacy": {"url": modern.url, "host_header": "modern.internal",
                                    "path_rewrite": [{"prefix": "/api/v1/orders",
                                                      "to": "/orders"}]}})
    with plain.client() as c:
        r = c.request("GET", "/api/v1/orders", host="shop.example")
        assert r.header("Location") == "http://shop.example/api/v1/orders/8"


def test_idle_tls_clients_hold_no_record_buffers(start_proxy, backend_factory, pki):
    """An idle keep-alive TLS client costs about 17 kB, not 26: OpenSSL
    releases a connection's record buffers (17 KiB each way) while they are
    empty (SSL_MODE_RELEASE_BUFFERS, as nginx sets), instead of keeping them
    for the connection's life."""
    if harness.sanitized():
        pytest.skip("memory figures of an ASan build")
    p = start_tls_proxy(start_proxy, backend_factory("legacy"), pki, [pki["localhost"]],
                        timeouts={"client_keepalive_ms": 60000})
    ctx = ssl.create_default_context(cafile=pki["ca"])

    def idle_clients(n):
        made = []
        for _ in range(n):
            s = ctx.wrap_socket(socket.create_connection((harness.HOST, p.port), timeout=5),
                                server_hostname="localhost")
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
            made.append(s)
        return made
    conns = idle_clients(50)  # the allocator's arenas and caches settle
    try:
        time.sleep(0.2)
        before = p.rss_kb()
        conns += idle_clients(300)
        time.sleep(0.2)
        per_conn = (p.rss_kb() - before) / 300
    finally:
        for s in conns:
            s.close()
    assert per_conn < 21, "%.1f kB per idle TLS connection" % per_conn


def test_a_drawn_sticky_cookie_is_secure_over_tls(start_proxy, backend_factory, pki):
    """rollout.set_cookie on a TLS listener: the cookie a browser is given
    carries `Secure`, so that it never goes out over plain HTTP."""
    b = backend_factory("legacy")
    routes = [{"name": "web", "match": {"path_prefix": "/"}, "backend": "legacy",
               "rollout": {"backend": "legacy", "percent": 50.0, "sticky": "cookie:uid",
                           "set_cookie": True}}]
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]], routes=routes)
    _alpn, data = https_get(p.port, "/page", pki["ca"])
    assert data.startswith(b"HTTP/1.1 200"), data
    assert re.search(rb"\r\nSet-Cookie: uid=[0-9a-f]{16}; Path=/; Max-Age=31536000; HttpOnly; "
                     rb"SameSite=Lax; Secure\r\n", data), data


# -- a close_notify in the same records as the last data (review s18b, 1):
# OpenSSL takes it off the socket with the data, so no socket event follows;
# it was seen only at the next one (a timeout, a FIN).


def close_notify_backend(pki, response):
    """An https backend that answers with response and its close_notify in one
    TCP write, then waits (up to 10 s) for the proxy's close_notify or close:
    a two-way TLS shutdown."""
    def serve_one(t):
        t.read_until(b"\r\n\r\n")
        t.queue(response)
        t.queue_close_notify()
        t.flush()
        t.read_until_end(10)
    return https_backend(pki, serve_one)


def test_a_close_delimited_answer_ended_by_close_notify_is_complete(start_proxy, pki):
    """The client waited for response_timeout_ms and then got the answer cut
    (no last chunk), logged as upstream timeout."""
    url, srv = close_notify_backend(
        pki, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe whole answer")
    try:
        p = start_proxy({"legacy": {"url": url, "ca_file": pki["ca"],
                                    "response_timeout_ms": 4000}})
        with socket.create_connection((harness.HOST, p.port), timeout=8) as c:
            started = time.monotonic()
            c.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got = harness.Stream(c, 8).read_to_eof()
            took = time.monotonic() - started
        e = p.wait_access(1)[0]
        assert got.endswith(b"the whole answer\r\n0\r\n\r\n"), got  # re-chunked, complete
        assert "error" not in e, e
        assert took < 2.0, took
    finally:
        srv.close()


def test_a_request_followed_by_close_notify_is_answered_and_closed(start_proxy, backend_factory,
                                                                  pki):
    """A client sends its request and its close_notify in one write: as for a
    half-close over TCP, it gets its answer with Connection: close and the
    end. The alert went unnoticed: no Connection: close, and the connection
    stayed open until client_keepalive_ms."""
    b = backend_factory("legacy")
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]])
    with socket.create_connection((harness.HOST, p.port), timeout=5) as raw:
        t = BioTLS.client(raw, pki)
        t.queue(b"GET /cn HTTP/1.1\r\nHost: localhost\r\n\r\n")
        t.queue_close_notify()
        t.flush()  # the request and the alert in one TCP write
        got, how = t.read_until_end(3.0)
    head = got.split(b"\r\n\r\n")[0] + b"\r\n"
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close\r\n" in head, got
    assert how in ("close_notify", "fin"), how


def test_a_tunnel_half_closed_by_close_notify_is_passed_on(start_proxy, backend_factory, pki):
    """The same in an upgraded connection: the client's last bytes and its
    close_notify in one write. The backend never learnt of the end (the
    tunnel hung until tunnel_idle_ms)."""
    def echo_then_bye(req, conn):
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        total = 0
        while True:
            data = conn.stream.read_some()
            if not data:
                conn.send(b"BYE %d" % total)
                return harness.CLOSE
            total += len(data)
            conn.send(data)
    b = backend_factory("legacy", echo_then_bye)
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]])
    with socket.create_connection((harness.HOST, p.port), timeout=5) as raw:
        t = BioTLS.client(raw, pki)
        t.send(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\n\r\n")
        head, _ = t.read_until_end(5, stop=lambda g: b"\r\n\r\n" in g)
        assert head.startswith(b"HTTP/1.1 101"), head
        t.queue(b"last words")
        t.queue_close_notify()
        t.flush()
        got, how = t.read_until_end(3.0, stop=lambda g: b"BYE" in g)
    assert got.endswith(b"last wordsBYE 10"), (got, how)


def test_with_user_a_file_it_cannot_read_is_pointed_out_at_start(tmp_path, pki):
    """Started as root with user = "nobody" and the usual 0600 root key: the
    start reads it as root, and every later reload, reading it as nobody, is
    refused (Permission denied), even one that only changes a route. Nothing
    said so until the first SIGHUP; the start now names the file."""
    import pwd
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    pwd.getpwnam("nobody")
    top = tempfile.mkdtemp(prefix="strangler-user-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        cert, key = os.path.join(top, "site.pem"), os.path.join(top, "site.key")
        shutil.copy(pki["localhost"][0], cert)
        shutil.copy(pki["localhost"][1], key)
        os.chmod(cert, 0o644)
        os.chmod(key, 0o600)
        port = harness.free_port()
        conf = os.path.join(top, "s.conf")
        with open(conf, "w") as f:
            f.write('listen = ( { address = "127.0.0.1:%d"; tls = { certificate = "%s"; '
                    'private_key = "%s"; }; } );\nuser = "nobody";\n'
                    'backends = { a = { url = "http://127.0.0.1:9"; }; };\n'
                    'default_backend = "a";\n' % (port, cert, key))
        os.chmod(conf, 0o644)
        log = os.path.join(top, "err.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen([harness.BINARY, "-c", conf], stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            harness.wait_for(lambda: "started" in open(log).read(), what="the start")
            text = open(log).read()
            assert ("%s is not readable by user nobody (Permission denied): a reload "
                    "(SIGHUP, POST /api/reload) reads it again and would be refused" % key) \
                in text, text
            assert "%s is not readable" % cert not in text
            assert "%s is not readable" % conf not in text
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
    finally:
        shutil.rmtree(top)


# -- a head taken back while OpenSSL holds part of it (review s18b, 2)

def set_listener_sndbuf(pid, port, size):
    """SO_SNDBUF on a running process's listening socket (inherited by the
    sockets it accepts, which then keep that size instead of growing to
    MBs): the send buffer of a slower network path. pidfd_getfd(2): root."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    inodes = set()
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":  # LISTEN
                inodes.add(f[9])
    pidfd, done = os.pidfd_open(pid), 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                mine = libc.syscall(438, pidfd, int(fd), 0)  # SYS_pidfd_getfd
                assert mine >= 0, os.strerror(ctypes.get_errno())
                s = socket.socket(fileno=mine)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
                s.close()  # our copy only
                done += 1
    finally:
        os.close(pidfd)
    assert done, "no listening socket on port %d" % port


def test_a_head_taken_back_over_tls_is_never_half_replaced(start_proxy, backend_factory, pki):
    """A client pipelines GET /a (60 kB) and GET /b and reads slowly; /b's
    head waits behind /a's tail when /b's backend sends a bad chunk, and the
    head, not sent yet, is taken back for a clean 502. Over TLS, OpenSSL
    could hold part of that head in a record it had not finished sending,
    which must be passed again as it was: the 502 in its place made
    SSL_write fail (the client got /a, then nothing, while the log said a
    502 went out), or, longer than the record, would have sent the old
    record's bytes under the 502's count. A head OpenSSL holds any of is on
    its way: the answer is aborted as one whose head went out."""
    if os.geteuid() != 0:
        pytest.skip("pidfd_getfd needs root")
    na = 60000
    go = threading.Event()

    def handler(req, conn):
        if req.path == "/a":
            return harness.Response(200, b"a" * na)
        pad = [("X-Pad-%d" % i, "p" * 1000) for i in range(30)]
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" +
                  b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in pad) + b"\r\n")
        go.wait(10)
        conn.send(b"zz\r\n")
        time.sleep(0.2)
        return harness.CLOSE
    b = backend_factory("legacy", handler)
    p = start_tls_proxy(start_proxy, b, pki, [pki["localhost"]])
    set_listener_sndbuf(p.pid, p.port, 4096)
    ctx = ssl.create_default_context(cafile=pki["ca"])
    for n, stop_at in enumerate((36000, 40000, 44000, 48000)):  # read of /a before a pause
        go.clear()
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(5)
        raw.connect((harness.HOST, p.port))
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        got = b""
        while len(got) < stop_at:
            got += s.recv(min(4096, stop_at - len(got)))
        time.sleep(0.3)  # strangler writes what fits, and waits
        go.set()  # the bad chunk: /b's head is taken back, or its answer aborted
        time.sleep(0.3)
        error = None
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except (OSError, ssl.SSLError) as e:
            error = e
        s.close()
        rest = got[got.index(b"\r\n\r\n") + 4 + na:]
        line = p.wait_access(2 * (n + 1))[-1]
        assert line["path"] == "/b"
        if rest.startswith(b"HTTP/1.1 502 "):  # taken back: the clean 502, whole
            assert rest.endswith(b"bad upstream response\n") and line["status"] == 502, rest
        else:  # on its way: the 200 head as far as it went, then the end
            assert b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n".startswith(rest[:47]), rest
            assert line["status"] == 200 and line["error"] == "bad upstream response", line
            assert error is None or isinstance(error, (ConnectionResetError, ssl.SSLEOFError)), \
                error


def test_a_cut_answer_to_an_http10_tls_client_ends_without_close_notify(start_proxy,
                                                                         backend_factory, pki):
    """An HTTP/1.0 client's answer has no length of its own: when the backend
    cuts it, the client's connection is reset, as a close would read as the
    end of a complete answer (security.md). Over TLS a close_notify went
    first and the client read a clean end of stream: 30,000 of 100,000
    bytes passed for the whole answer."""
    def cut(req, conn):  # chunked from the backend: close-delimited to HTTP/1.0
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % 100000
                  + b"x" * 30000)
        time.sleep(0.3)
        return harness.CLOSE
    p = start_tls_proxy(start_proxy, backend_factory("legacy", cut), pki, [pki["localhost"]])
    with socket.create_connection((harness.HOST, p.port), timeout=5) as raw:
        t = BioTLS.client(raw, pki)
        t.send(b"GET /cut HTTP/1.0\r\nHost: localhost\r\n\r\n")
        try:
            got, how = t.read_until_end(5.0)
        except (ConnectionResetError, ssl.SSLEOFError):
            got, how = b"", "reset"
    assert how in ("reset", "fin"), how
    assert p.wait_access(1)[0]["error"] == "upstream response truncated"


@pytest.mark.parametrize("when", ["head", "head-chunked", "after-1MiB"])
def test_an_https_backends_early_answer_to_an_upload_reaches_the_client(start_proxy, pki, when):
    """An https backend answers a large upload with 413 (from the head, or
    after reading 1 MiB of it) and closes, leaving the rest unread: the
    client gets that 413, as over plain HTTP, and the backend is not marked
    down for it. Over TLS the body's first records went out before the
    connection was reported up, and the backend's reset there read as
    `connect failed` (502); the answer's records before a reset were not
    read out of the socket either (502 `upstream reset`)."""
    def early(req, conn):
        if when == "after-1MiB":
            conn.stream.read_exact(1 << 20)
        conn.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n"
                  b"Connection: close\r\n\r\ntoo large")
        return harness.CLOSE
    b = harness.HTTPSBackend("legacy", pki["localhost"], early)
    b.read_bodies = False
    try:
        p = start_proxy({"legacy": {"url": b.url, "ca_file": pki["ca"]}}, admin={})
        if when == "head-chunked":
            piece = b"z" * 65536
            head = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(256)) + b"0\r\n\r\n"
        else:
            body = b"z" * (16 << 20)
            head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        got = []
        for _ in range(5):
            c = harness.RawClient(p.port, timeout=20)

            def upload():
                try:
                    c.sock.sendall(head + body)
                except OSError:
                    pass  # the proxy stops reading once the answer is in
            t = threading.Thread(target=upload, daemon=True)
            t.start()
            r = c.read_response("POST")
            got.append((r.status, r.body))
            c.close()
            t.join(5)
        assert got == [(413, b"too large")] * 5, got
        servers = p.admin("GET", "/api/backends/legacy")[1]["servers"]
        assert [s["up"] for s in servers] == [True], servers
    finally:
        b.stop()


def test_new_connections_to_an_https_backend_resume_its_tls_session(start_proxy, pki):
    """Each new connection to an https backend made a full handshake (nginx
    resumes the server's last session by default, proxy_ssl_session_reuse):
    now every one after the first resumes. A reload that changes what the
    backend is trusted for (here tls_verify off) starts a full handshake
    again: a session checked under other settings is not offered."""
    reused = []

    def answer(req, conn):
        reused.append(conn.sock.session_reused)
        return harness.Response(200, b"ok", close=True)  # a new connection each time
    b = harness.HTTPSBackend("legacy", pki["localhost"], answer)
    try:
        p = start_proxy({"legacy": {"url": b.url, "ca_file": pki["ca"]}})
        for _ in range(4):
            with p.client() as c:
                assert c.request("GET", "/").status == 200
        assert reused == [False, True, True, True], reused
        text = open(p.conf_path).read()
        with open(p.conf_path, "w") as f:
            f.write(text.replace('ca_file = ', 'tls_verify = false; ca_file = '))
        harness.reload_and_wait(p, 1)
        del reused[:]
        for _ in range(3):
            with p.client() as c:
                assert c.request("GET", "/").status == 200
        assert reused == [False, True, True], reused
    finally:
        b.stop()


def test_backend_tls_failures_are_logged_with_their_reason(start_proxy, backend_factory, pki,
                                                          tls_backends, tmp_path):
    """What an operator reads when an https backend fails: a TLS 1.3 backend
    that wants a client certificate refuses after the client's side of the
    handshake (the alert named, as nginx's SSL_read() failed line does); a
    backend that closes in the handshake (said so, not `TLS failure`); a
    shadow backend whose certificate fails its check (shadows logged no
    reason at all)."""
    mtls = harness.TLSBackend("mtls", pki["localhost"], client_ca=pki["ca"])
    closer = socket.socket()
    closer.bind((harness.HOST, 0))
    closer.listen(8)

    def close_all():
        while True:
            try:
                c, _ = closer.accept()
            except OSError:
                return
            c.recv(10)
            c.close()
    threading.Thread(target=close_all, daemon=True).start()
    try:
        routes = [{"name": "m", "match": {"path_prefix": "/m"}, "backend": "mtls"},
                  {"name": "c", "match": {"path_prefix": "/c"}, "backend": "closer"},
                  {"name": "s", "match": {"path_prefix": "/s"}, "backend": "legacy",
                   "shadow": {"backend": "wrongname"}}]
        p = start_proxy({"legacy": backend_factory("legacy"),
                         "mtls": {"url": "https://127.0.0.1:%d" % mtls.port,
                                  "ca_file": pki["ca"]},
                         "closer": {"url": "https://127.0.0.1:%d" % closer.getsockname()[1],
                                    "ca_file": pki["ca"]},
                         "wrongname": {"url": "https://127.0.0.1:%d" % tls_backends["wrongname"].port,
                                       "ca_file": pki["ca"]}},
                        routes=routes, shadow_defaults={"timeout_ms": 2000})
        with p.client() as c:
            assert c.request("GET", "/s/1").status == 200
        for path in ("/m/1", "/c/1"):
            with p.client() as c:
                assert c.request("GET", path).status == 502
        harness.wait_for(lambda: "shadow backend wrongname" in p.stderr_text(),
                         what="the shadow's failure logged")
        err = p.stderr_text()
        assert re.search(r"backend mtls \(127\.0\.0\.1:\d+\): TLS: .*certificate required", err), err
        assert re.search(r"backend closer \(127\.0\.0\.1:\d+\): TLS: connection closed during "
                         r"the handshake", err), err
        assert re.search(r"shadow backend wrongname \(127\.0\.0\.1:\d+\): TLS: certificate verify "
                         r"failed \(.*mismatch\)", err), err
    finally:
        closer.close()
        mtls.stop()
