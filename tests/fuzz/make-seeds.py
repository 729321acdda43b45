#!/usr/bin/env python3
"""Writes the hand-made seed inputs of tests/fuzz/corpus/<harness>/ (files
named seed-*). Inputs found by fuzzing sit next to them under their SHA-1
names (pick-new.py), and regress-* files reproduce bugs fixed since. Run from
anywhere; existing seed-* files are overwritten.

Layouts (see each harness's header comment):
  fuzz_request   flags, 4 piece sizes, client bytes
  fuzz_response  flags, 4 piece sizes, per-exchange bits, backend bytes
  fuzz_config    configuration text
  fuzz_compare   2 flag bytes, primary body, 0xFF, shadow body
  fuzz_router    ip byte + method, target, header lines
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

WHOLE = bytes(4)        # one piece
SMALL = bytes([1, 7, 3, 13])
ODD = bytes([5, 0, 2, 0])


def write(harness, name, data):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def crlf(s):
    return s.replace(b"\n", b"\r\n")


# --- requests ------------------------------------------------------------------

REQUESTS = {
    "get": crlf(b"GET /api/users/7?full=1 HTTP/1.1\nHost: example.test\nUser-Agent: t\n"
                b"Accept: */*\n\n"),
    "get-fragment": crlf(b"GET /a/b?x=1#frag HTTP/1.1\nHost: h\n\n"),
    "post-length": crlf(b"POST /api/orders HTTP/1.1\nHost: h\nContent-Type: application/json\n"
                        b"Content-Length: 13\n\n") + b'{"item": 42}\n',
    "post-chunked-trailers": crlf(b"POST /upload HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n"
                                  b"Trailer: X-Sum\n\n5;ext=1\nhello\n6\n world\n0\n"
                                  b"X-Sum: 42\n\n"),
    "pipelined": crlf(b"GET /one HTTP/1.1\nHost: h\n\nPOST /two HTTP/1.1\nHost: h\n"
                      b"Content-Length: 3\n\nabcGET /three HTTP/1.1\nHost: h\n"
                      b"Connection: close\n\n"),
    "pipelined-chunked": crlf(b"PUT /c HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n"
                              b"3\nabc\n0\n\nGET /next HTTP/1.1\nHost: h\n\n"),
    "http10-no-host": crlf(b"GET /old HTTP/1.0\nConnection: keep-alive\n\n"),
    "http10-length": crlf(b"POST /old HTTP/1.0\nContent-Length: 2\n\nhiGET / HTTP/1.0\n\n"),
    "absolute-form": crlf(b"GET http://example.test/p/../q?z=%41 HTTP/1.1\nHost: example.test\n\n"),
    "absolute-form-no-path": crlf(b"GET https://example.test?x HTTP/1.1\nHost: example.test\n\n"),
    "options-star": crlf(b"OPTIONS * HTTP/1.1\nHost: h\n\n"),
    "upgrade": crlf(b"GET /ws HTTP/1.1\nHost: h\nConnection: Upgrade\nUpgrade: websocket\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n\n") + b"\x81\x05hello",
    "connection-options": crlf(b"GET / HTTP/1.1\nHost: h\nConnection: keep-alive, X-Drop, Host\n"
                               b"X-Drop: secret\nKeep-Alive: timeout=5\nTE: trailers\n"
                               b"Proxy-Connection: x\nX-Keep: 1\n\n"),
    "forwarded": crlf(b"GET / HTTP/1.1\nHost: h\nX-Forwarded-For: 10.0.0.1\n"
                      b"X-Forwarded-For: 10.0.0.2, 10.0.0.3\nX-Forwarded-Proto: https\n"
                      b"X-Forwarded-Host: evil\nX-Strangler-Shadow: 1\nX-Request-Id: abc-123\n\n"),
    "path-dots": crlf(b"GET /a/./b/../%2e%2E/c//d%41%2f%7e/. HTTP/1.1\nHost: h\n\n"),
    "path-above-root": crlf(b"GET /a/../../etc/passwd HTTP/1.1\nHost: h\n\n"),
    "path-bad-escape": crlf(b"GET /%zz%4 HTTP/1.1\nHost: h\n\n"),
    "smuggle-cl-te": crlf(b"POST / HTTP/1.1\nHost: h\nContent-Length: 6\n"
                          b"Transfer-Encoding: chunked\n\n0\n\nX"),
    "smuggle-te-cl": crlf(b"POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n"
                          b"Content-Length: 4\n\n5c\nGPOST / HTTP/1.1\n\n0\n\n"),
    "smuggle-dup-cl": crlf(b"POST / HTTP/1.1\nHost: h\nContent-Length: 1\nContent-Length: 1\n\nx"),
    "smuggle-plus-cl": crlf(b"POST / HTTP/1.1\nHost: h\nContent-Length: +1\n\nx"),
    "smuggle-te-comma": crlf(b"POST / HTTP/1.1\nHost: h\nTransfer-Encoding: ,chunked\n\n0\n\n"),
    "smuggle-te-gzip": crlf(b"POST / HTTP/1.1\nHost: h\nTransfer-Encoding: gzip, chunked\n\n0\n\n"),
    "smuggle-te-http10": crlf(b"POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n0\n\n"),
    "smuggle-obs-fold": crlf(b"GET / HTTP/1.1\nHost: h\nX-A: a\n b\n\n"),
    "smuggle-fold-cl": crlf(b"POST / HTTP/1.1\nHost: h\nX-A: a\n Content-Length: 5\n\nhello"),
    "smuggle-bare-cr": b"GET / HTTP/1.1\r\nHost: h\r\nX:\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "smuggle-bare-lf": b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
    "smuggle-chunk-cr": crlf(b"POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n")
                        + b"3\rX\r\nabc\r\n0\r\n\r\n",
    "smuggle-trailer-cl": crlf(b"POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n"
                               b"0\nContent-Length: 5\nHost: other\n\nhello"),
    "empty-header-name": crlf(b"GET / HTTP/1.1\nHost: h\n: empty\n\n"),
    "space-in-name": crlf(b"GET / HTTP/1.1\nHost: h\nBad Name: y\n\n"),
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    "http2-line": crlf(b"GET / HTTP/2.0\nHost: h\n\n"),
    "http09": b"GET /\r\n\r\n",
    "connect": crlf(b"CONNECT example.test:443 HTTP/1.1\nHost: example.test:443\n\n"),
    "two-hosts": crlf(b"GET / HTTP/1.1\nHost: a\nHost: b\n\n"),
    "no-host": crlf(b"GET / HTTP/1.1\n\n"),
    "unknown-method": crlf(b"BREW /pot HTTP/1.1\nHost: h\n\n"),
    "chunk-ext-long": crlf(b"POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n1;")
                      + b"a" * 300 + b"=b\r\nx\r\n0\r\n\r\n",
}


def requests():
    splits = [WHOLE, SMALL, ODD]
    for i, (name, data) in enumerate(sorted(REQUESTS.items())):
        flags = bytes([i & 1])
        write("fuzz_request", name, flags + splits[i % 3] + data)


# --- responses -------------------------------------------------------------------

# flags: 1 HEAD, 2 upgrade asked, 4 HTTP/1.0 client, 8 keep-alive wanted
RESPONSES = {
    "200-length": (8, crlf(b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\n")
                   + b"hello"),
    "200-chunked-trailers": (8, crlf(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n"
                                     b"Trailer: X-Sum\n\n5\nhello\n0\nX-Sum: 1\n\n")),
    "100-continue-200": (8, crlf(b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\n"
                                 b"Content-Length: 2\n\nok")),
    "103-early-hints": (8, crlf(b"HTTP/1.1 103 Early Hints\nLink: </s.css>; rel=preload\n\n"
                                b"HTTP/1.1 201 Created\nContent-Length: 0\n\n")),
    "204-with-length": (8, crlf(b"HTTP/1.1 204 No Content\nContent-Length: 5\n\n"
                                b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok")),
    "304-with-length": (8, crlf(b"HTTP/1.1 304 Not Modified\nContent-Length: 1234\nETag: \"x\"\n\n")),
    "head-with-length": (9, crlf(b"HTTP/1.1 200 OK\nContent-Length: 1000\n\n")),
    "close-delimited": (8, crlf(b"HTTP/1.1 200 OK\nConnection: close\n\n") + b"until eof"),
    "close-delimited-http10": (12, crlf(b"HTTP/1.0 200 OK\n\n") + b"old body"),
    "http10-client-chunked": (4, crlf(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"
                                      b"3\nabc\n0\n\n")),
    "101-upgrade": (10, crlf(b"HTTP/1.1 101 Switching Protocols\nConnection: Upgrade\n"
                             b"Upgrade: websocket\n\n") + b"\x81\x02hi"),
    "101-unasked": (8, crlf(b"HTTP/1.1 101 Switching Protocols\nUpgrade: h2c\n\n")),
    "truncated": (8, crlf(b"HTTP/1.1 200 OK\nContent-Length: 10\n\n") + b"abc"),
    "dup-length": (8, crlf(b"HTTP/1.1 200 OK\nContent-Length: 2\nContent-Length: 2\n\nok")),
    "length-and-chunked": (8, crlf(b"HTTP/1.1 200 OK\nContent-Length: 3\n"
                                   b"Transfer-Encoding: chunked\n\n0\n\n")),
    "te-http10": (8, crlf(b"HTTP/1.0 200 OK\nTransfer-Encoding: chunked\n\n0\n\n")),
    "te-gzip": (8, crlf(b"HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\n0\n\n")),
    "status-2000": (8, crlf(b"HTTP/1.1 2000 OK\nContent-Length: 0\n\n")),
    "nul-in-header": (8, b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n"),
    "obs-fold": (8, crlf(b"HTTP/1.1 200 OK\nX-A: a\n Content-Length: 5\nContent-Length: 0\n\n")),
    "connection-options": (8, crlf(b"HTTP/1.1 200 OK\nConnection: keep-alive, X-Secret\n"
                                   b"X-Secret: s\nKeep-Alive: timeout=5\nX-Public: p\n"
                                   b"Content-Length: 0\n\n")),
    "keepalive-sequence": (8, crlf(b"HTTP/1.1 200 OK\nContent-Length: 1\n\nA"
                                   b"HTTP/1.1 404 Not Found\nContent-Length: 0\n\n"
                                   b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n1\nB\n0\n\n"
                                   b"HTTP/1.1 200 OK\nContent-Length: 3\n\nCCC")),
    "no-reason": (8, crlf(b"HTTP/1.1 200\nContent-Length: 0\n\n")),
    "odd-reason": (8, crlf(b"HTTP/1.1 418 I'm a teapot \t(short & stout)\nContent-Length: 0\n\n")),
    "http2-status": (8, crlf(b"HTTP/2.0 200 OK\nContent-Length: 0\n\n")),
    "chunk-ext-long": (8, crlf(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n1;")
                       + b"e" * 300 + b"\r\nx\r\n0\r\n\r\n"),
}


def responses():
    splits = [WHOLE, SMALL, ODD]
    for i, (name, (flags, data)) in enumerate(sorted(RESPONSES.items())):
        bits = 0b01100101 if i % 2 else 0
        write("fuzz_response", name, bytes([flags]) + splits[i % 3] + bytes([bits]) + data)


# --- configs -----------------------------------------------------------------------

BASE = b'''listen = ( { address = "127.0.0.1:8080"; } );
backends = { legacy = { url = "http://127.0.0.1:9001"; }; modern = { url = "http://[::1]:9002/"; }; };
default_backend = "legacy";
'''

CONFIGS = {
    "full": BASE + b'''workers = 2; log_level = "debug"; access_log = "-";
timeouts = { client_header_ms = 5000; client_keepalive_ms = 1000; client_body_ms = 100; };
limits = { max_request_line = 1024; max_header_bytes = 4096; max_headers = 20; max_body_bytes = 1048576L; };
drain_timeout_ms = 10;
shadow_defaults = { max_in_flight = 2; max_body_bytes = 10; timeout_ms = 10; diff_log = "-"; summary_interval_ms = 1000; };
routes = (
  { name = "a"; match = { path = "/a"; methods = ["GET"]; headers = { X-A = "*"; }; query = { q = "1"; }; };
    backend = "modern"; rollout = { backend = "legacy"; percent = 12.34; sticky = "query:q"; cohort = "c"; };
    shadow = { backend = "@other"; percent = 50; methods = ["GET", "POST"];
               compare = { headers = ["Content-Type"]; ignore_json = ["/x", "/*/y"]; redact_json = ["/p"]; body = "json"; };
               noise = { samples = 1; }; }; },
  { name = "b"; match = { path_regex = "/b/[a-z]+"; }; backend = "legacy";
    shadow = { backend = "modern"; compare = { body = "none"; }; }; }
);
''',
    "unreachable": BASE + b'''routes = (
  { name = "all"; match = { path_prefix = "/"; }; backend = "legacy"; },
  { name = "never"; match = { path_prefix = "/api"; methods = ["get"]; }; backend = "modern"; }
);
''',
    "syntax-error": b'listen = ( { address = "127.0.0.1:8080" } ;\nbackends = {\n',
    "unknown-keys": BASE + b'colour = "blue";\nroutes = ( { name = "r"; backend = "legacy"; mtach = {}; } );\n',
    "bad-values": BASE + b'''workers = 5000; log_level = "loud"; access_log = "";
limits = { max_headers = 1; };
routes = (
  { name = ""; backend = "nowhere"; match = { path = "/a/../b"; path_prefix = "a"; path_regex = "(";
    methods = [1, "G ET"]; headers = 3; }; rollout = { backend = "legacy"; percent = 100.001; sticky = "cookie:"; cohort = ""; }; },
  { name = "x"; backend = "legacy"; shadow = { backend = "@other"; percent = -1; compare = { body = "xml"; ignore_json = ["x"]; }; noise = { samples = 2; }; }; },
  { name = "x"; backend = "legacy"; rollout = 7; }
);
''',
    "bad-listen-backends": b'''listen = ( { address = "nohost"; }, { address = "[::1:80"; }, { address = "1.2.3.4:0"; }, 7 );
backends = { a = { url = "https://x"; }; b = { url = "http://h/p"; }; c = { url = "ftp://x"; };
  d = { url = "http://u@h:1"; }; e = { url = "http://:80"; }; f = { url = "http://name.invalid:80"; }; g = 1; };
default_backend = "zzz";
''',
    "empty": b"",
    "no-listen": b'backends = { a = { url = "http://127.0.0.1:1"; }; }; default_backend = "a";\n',
    "escapes-in-strings": BASE + b'access_log = "a\\tb\\x41"; log_level = "x\\fy";\n',
    "int64-and-floats": BASE + b'workers = 9999999999L; drain_timeout_ms = 1.5;\n'
                        b'routes = ( { name = "r"; backend = "legacy"; rollout = { backend = "modern"; percent = 1e400; }; } );\n',
    "arrays-vs-lists": BASE + b'routes = [ "a" ];\nlimits = ( 1 );\n',
    "path-rewrite": b'''listen = ( { address = "127.0.0.1:8080"; } );
backends = { legacy = { url = "http://127.0.0.1:9001"; };
  modern = { url = "http://127.0.0.1:9002";
    path_rewrite = ( { prefix = "/api/v1/orders"; to = "/orders"; }, { prefix = "/api/v1/"; to = "/"; },
                     { prefix = "/api/v1/x"; to = "/y"; }, { prefix = "/a//b"; to = "/c?d"; }, "/x", { to = 1; } ); }; };
default_backend = "legacy";
''',
    "header-rules": b'''listen = ( { address = "127.0.0.1:8080"; } );
backends = { legacy = { url = "http://127.0.0.1:9001";
    request_headers = { set = { X-Api-Key = "k"; x-api-key = "2"; Host = "h"; }; remove = ["X-Debug", "x-debug", "X_Forwarded_For", 1]; };
    response_headers = { set = { Date = "x"; Cache-Control = "no-store"; }; remove = ["Server"]; }; }; };
default_backend = "legacy";
''',
}


def configs():
    for name in ("strangler.conf", "demo.conf"):
        with open(os.path.join(ROOT, "conf", name), "rb") as f:
            write("fuzz_config", "conf-" + name.replace(".conf", ""), f.read())
    for name, text in sorted(CONFIGS.items()):
        write("fuzz_config", name, text)
    with open(os.path.join(HERE, "fuzz_router.c"), "rb") as f:
        src = f.read().decode()
    # the router harness's own configuration, as text
    start = src.index("conf_text[] =") + len("conf_text[] =")
    body = src[start:src.index(";\n", start)]
    text = "".join(eval(part) for part in body.split("\n") if part.strip().startswith('"'))
    write("fuzz_config", "router", text.encode())


# --- compare ----------------------------------------------------------------------

# f0: 0-1 mode (auto json bytes none), 4/8 json types, 16 status, 32 noise, 64 X-Test
# f1: 0-1 / 2-3 codings (none, gzip here, "gzip" raw, "deflate, identity" raw)
SEP = b"\xff"
PAIRS = {
    "json-objects": (0x0c, 0, b'{"a":{"k":{"b":1,"c":2}},"x":[1,2],"y":true,"n":null}',
                     b'{"y":false,"a":{"k":{"b":9,"c":3}},"x":[1,2,3],"z":"new"}'),
    "json-numbers": (0x0c, 0, b'[1, 1.0, 0.1, 1e400, 9007199254740993, -0, 123456789012345678901234567890]',
                     b'[1.0, 1, 0.10000000000000001, 2e400, 9007199254740992, 0, 123456789012345678901234567891]'),
    "json-unicode": (0x0d, 0, '{"s":"caf\u00e9 \u2603 \\ud83d\\ude00","k\\/~":1,"c":"a\\u0001b"}'.encode(),
                     '{"s":"cafe","k\\/~":2,"c":"a\\u0001c"}'.encode()),
    "json-long-values": (0x0d, 0, b'{"v":"' + b"\xc3\xa9" * 150 + b'"}', b'{"v":[' + b"1," * 120 + b'1]}'),
    "json-many-diffs": (0x0d, 0, b'[' + b",".join(b"%d" % i for i in range(80)) + b']',
                        b'[' + b",".join(b"%d" % (i + 1) for i in range(80)) + b']'),
    "json-vs-text": (0x0c, 0, b'{"a":1}', b"not json at all"),
    "json-deep": (0x0d, 0, b"[" * 40 + b"1" + b"]" * 40, b"[" * 40 + b"2" + b"]" * 40),
    "text-bytes": (0x02, 0, b"hello world, the same prefix", b"hello world, the same prefiX and more"),
    "binary-bytes": (0x02, 0, bytes(range(1, 0xff)), bytes(range(0xfe, 0, -1))),
    "gzip-both": (0x0c, 0x05, b'{"a":[1,{"b":2}]}', b'{"a":[1,{"b":3}]}'),
    "gzip-raw-undecodable": (0x0c, 0x0a, b'{"a":1}', b'{"a":2}'),
    # (no NUL bytes in what ends up in a diff: crashes/fuzz_compare/)
    "deflate-raw": (0x00, 0x0f, b"x\x9c\xcbH\xcd\xc9\xc9\x07\x00\x06,\x02\x15", b"\x1f\x8b\x08garbage"),
    "identical": (0x30, 0, b'{"same":true}', b'{"same":true}'),
    "headers-status": (0x53, 0, b"", b""),
    "no-separator": (0x0c, 0x01, b'{"only":"one body"}', None),
    "ignored": (0x0c, 0, b'{"x":{"deep":1},"a":{"p":{"b":1,"c":1},"q":{"b":2}}}',
                b'{"x":{"deep":2},"a":{"p":{"b":5,"c":1},"q":{"b":3}}}'),
    "escaped-keys": (0x0c, 0, b'{"a/b":1,"m~n":{"":2},"":3}', b'{"a/b":2,"m~n":{"":3},"":4}'),
}


def compares():
    for name, (f0, f1, a, b) in sorted(PAIRS.items()):
        data = bytes([f0, f1]) + a + (SEP + b if b is not None else b"")
        write("fuzz_compare", name, data)


# --- router -----------------------------------------------------------------------

ROUTES = {
    "users": b"\x00GET\n/api/users/7\nAccept: */*",
    "users-one": b"\x01GET\n/api/users/1\n",
    "orders-cookie": b"\x00POST\n/api/orders/9?x=1\nCookie: a=1; uid=\"abc\"; b=2",
    "orders-no-cookie": b"\x02DELETE\n/api/orders/\n",
    "items-regex": b"\x00GET\n/api/items/123/details\nX-User-Id: 42",
    "items-post": b"\x00POST\n/api/items/5\nX-Beta: yes",
    "items-short": b"\x00GET\n/api/i\n",
    "beta": b"\x00GET\n/app/home\nx-beta: 1\nX-ENV: prod",
    "beta-prefix-only": b"\x00GET\n/application\nX-Beta: 1\nX-Env: dev",
    "search": b"\x00GET\n/search?q=hello+world&lang=en&session=s%20x\n",
    "search-missing": b"\x00GET\n/search?lang=en&q\n",
    "ip-v6": b"\x01PUT\n/ip/x\n",
    "ip-empty": b"\x03POST\n/ip\n",
    "root": b"\x00GET\n/\n",
    "static": b"\x00HEAD\n/static/../static/a.css\n",
    "dots": b"\x00GET\n/api/users/../orders/%2e%2e/items/1\n",
    "encoded": b"\x00GET\n/%61pi/%75sers\n",
    "bad-path": b"\x00GET\nno-slash\n",
    "default": b"\x00OPTIONS\n/unknown\n",
    "files": b"\x00GET\n/files/cat.jpeg\n",
    # "~REGEX": a route of the input's own, checked against regexec
    "own-regex-optional": b"\x00GET\n/y\n~/x?y",
    "own-regex-star": b"\x00GET\n/ac\n~/ab*c",
    "own-regex-alternation": b"\x00GET\n/b\n~/a|/b",
    "own-regex-group": b"\x00GET\n/c\n~/(ab)?c",
    "own-regex-brace": b"\x00GET\n/a\n~/ab{0}",
    "own-regex-escape": b"\x00GET\n/a.b\n~/a\\.b",
    "own-regex-class": b"\x00GET\n/api\n~[/]api",
}


def routers():
    for name, data in sorted(ROUTES.items()):
        write("fuzz_router", name, data)


def main():
    requests()
    responses()
    configs()
    compares()
    routers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
