"""The command line and the process: -t, -V, -h, start-up failures, graceful
stop on SIGTERM, several workers."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import harness
from harness import (BINARY, HOST, build_request, by_path, delayed, free_port, make_config,
                     run_strangler, wait_for)

GOOD = """\
listen = ( { address = "127.0.0.1:18080"; } );
workers = 1;
backends = {
  legacy = { url = "http://127.0.0.1:9001"; };
  modern = { url = "http://127.0.0.1:9002"; response_timeout_ms = 5000; };
};
default_backend = "legacy";
routes = (
  { name = "users"; match = { path_prefix = "/api/users"; methods = ["GET"]; }; backend = "modern"; },
  { name = "orders"; match = { path_prefix = "/api/orders"; }; backend = "legacy";
    rollout = { backend = "modern"; percent = 12.5; sticky = "cookie:uid"; }; }
);
"""

# Each line ending in "#! path" must be reported as FILE:LINE: path: ...
BAD = """\
# several independent errors, each on its own line
listen = ( { address = "127.0.0.1:18080"; } );
workers = 1;
bogus = 1;                                              #! bogus
log_level = "loud";                                     #! log_level
backends = {
  legacy = { url = "http://127.0.0.1:9001"; };
  ftp = { url = "ftp://127.0.0.1:21"; };                #! backends.ftp.url
  slow = { url = "http://127.0.0.1:9003";
           response_timeout_ms = 0; };                  #! backends.slow.response_timeout_ms
};
default_backend = "nowhere";                            #! default_backend
routes = (
  { name = "r1";
    match = { path_prefix = "/x/../y"; };               #! routes.[0].match.path_prefix
    backend = "legacy"; },
  { name = "r2"; match = { path_regex = "(["; };        #! routes.[1].match.path_regex
    backend = "legacy";
    rollout = { backend = "modern";                     #! routes.[1].rollout.backend
                percent = 150.0;                        #! routes.[1].rollout.percent
                sticky = "bogus:x"; }; },               #! routes.[1].rollout.sticky
  { name = "r3"; backend = "legacy";
    match = { methods = ["GET"]; path = "/a"; colour = "red"; }; }  #! routes.[2].match.colour
);
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_check_ok(tmp_path):
    conf = write(tmp_path, "good.conf", GOOD)
    out = run_strangler("-t", "-c", conf)
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout + out.stderr
    assert conf in out.stdout + out.stderr


def test_check_reports_every_error_with_its_line(tmp_path):
    conf = write(tmp_path, "bad.conf", BAD)
    out = run_strangler("-t", "-c", conf)
    assert out.returncode == 1
    expected = []
    for lineno, line in enumerate(BAD.splitlines(), 1):
        if "#!" in line:
            expected.append((lineno, line.split("#!")[1].strip()))
    lines = out.stderr.splitlines()
    for lineno, path in expected:
        prefix = "%s:%d: %s: " % (conf, lineno, path)
        assert any(l.startswith(prefix) and len(l) > len(prefix) for l in lines), \
            "missing %r in:\n%s" % (prefix, out.stderr)
    errors = [l for l in lines if re.match(re.escape(conf) + r":\d+: ", l)]
    assert len(errors) == len(expected), out.stderr
    assert "configuration OK" not in out.stdout


def test_check_reports_the_files_the_start_could_not_write(tmp_path):
    """-t opens what the start opens for writing, as nginx -t does: a log in a
    directory that does not exist, a directory given as a file, a pid file in
    a missing directory each fail -t with FILE:LINE: key: reason (the start
    failed on them with a message naming no line), and the start stops on them
    the same way, before it binds anything. -t creates nothing."""
    conf = tmp_path / "outputs.conf"
    conf.write_text(GOOD + (
        'access_log = "%s/missing/access.log";\n'
        'pid_file = "%s/missing/strangler.pid";\n'
        'shadow_defaults = { diff_log = "%s"; };\n') % (tmp_path, tmp_path, tmp_path))
    expected = [
        (13, "access_log: cannot open %s/missing/access.log: No such file or directory"
         % tmp_path),
        (14, "pid_file: cannot open %s/missing/strangler.pid: No such file or directory"
         % tmp_path),
        (15, "shadow_defaults.diff_log: cannot open %s: Is a directory" % tmp_path),
    ]
    harness.assert_check_reports(conf, expected)
    out = run_strangler("-c", str(conf), timeout=5)
    assert out.returncode == 1
    for lineno, message in expected:
        assert "%s:%d: %s" % (conf, lineno, message) in out.stderr.splitlines(), out.stderr
    assert "listening on" not in out.stderr
    # where the directories exist, the files need not: -t passes and creates none
    (tmp_path / "missing").mkdir()
    conf.write_text(conf.read_text().replace('diff_log = "%s"' % tmp_path,
                                             'diff_log = "%s/diffs.jsonl"' % tmp_path))
    out = run_strangler("-t", "-c", str(conf))
    assert out.returncode == 0 and "configuration OK" in out.stdout, out.stderr
    assert sorted(os.listdir(tmp_path / "missing")) == []
    assert not (tmp_path / "diffs.jsonl").exists()


def test_check_syntax_error_has_line(tmp_path):
    conf = write(tmp_path, "syntax.conf", 'workers = 1;\nlisten = ( { address = "x"; } );\n'
                                          'backends = { = };\nrouted = 1;\n')
    out = run_strangler("-t", "-c", conf)
    assert out.returncode == 1
    assert re.search(re.escape(conf) + r":3: .*syntax error", out.stderr), out.stderr


def test_included_files_are_found_and_named_from_the_main_files_directory(tmp_path):
    """Relative @include paths resolve against the main file's directory
    (they resolved against the current one, so `-t` from elsewhere said
    "cannot open include file"), each error names the file it is in (an
    included file's errors named the main file with the include's line
    numbers), and a missing include names the file it looked for."""
    conf_dir = tmp_path / "conf"
    (conf_dir / "routes.d").mkdir(parents=True)
    (tmp_path / "shared.inc").write_text('# shared\nlog_level = "loud";\n')
    (conf_dir / "routes.d" / "backends.inc").write_text(
        'backends = { legacy = { url = "http://127.0.0.1:9001"; }; };\n\nworkers = 5000;\n')
    main = conf_dir / "main.conf"
    main.write_text('listen = ( { address = "127.0.0.1:18080"; } );\n'
                    '@include "routes.d/backends.inc"\n'
                    '@include "%s"\n'
                    'default_backend = "legacy";\n' % (tmp_path / "shared.inc"))
    out = subprocess.run([BINARY, "-t", "-c", "conf/main.conf"], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert "conf/routes.d/backends.inc:3: workers: must be between 0 and 1024" in out.stderr, \
        out.stderr
    assert '%s:2: log_level: "loud"' % (tmp_path / "shared.inc") in out.stderr, out.stderr
    out = run_strangler("-t", "-c", str(main))  # from another directory
    assert "%s:3: workers" % (conf_dir / "routes.d" / "backends.inc") in out.stderr, out.stderr
    main.write_text(main.read_text().replace("routes.d/backends.inc", "nope.inc"))
    out = run_strangler("-t", "-c", str(main))
    assert out.returncode == 1
    assert '%s:2: cannot open include file "%s": No such file or directory' % (
        main, conf_dir / "nope.inc") in out.stderr, out.stderr


def test_a_wide_integer_in_an_included_file_is_an_error_not_wrapped(tmp_path):
    """libconfig reads an included file itself, where strangler cannot add
    the L suffix a literal past 32 bits needs: max_body_bytes = 4294967297
    there read as 1, and -t said OK. It is an error at its line; with the L
    it loads."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    inc = conf_dir / "limits.inc"
    inc.write_text('# limits\nlimits = { max_body_bytes = 4294967297; max_headers = 50; };\n')
    main = conf_dir / "main.conf"
    main.write_text(GOOD + '@include "limits.inc"\n')
    out = run_strangler("-t", "-c", str(main))
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.splitlines()[0] == (
        "%s:2: an integer past 32 bits in an included file needs the L suffix (libconfig reads "
        "4294967297 there as 1): write 4294967297L" % inc), out.stderr
    inc.write_text(inc.read_text().replace("4294967297", "4294967297L"))
    out = run_strangler("-t", "-c", str(main))
    assert out.returncode == 0 and "configuration OK" in out.stdout, out.stderr


def test_an_include_that_is_no_file_and_a_nul_byte_are_errors(tmp_path, backend_factory):
    """@include of a directory (nginx users write `include routes.d/*.conf`)
    made libconfig's scanner exit the process with "input in flex scanner
    failed", exit 2, and a reload with it killed the running proxy; a FIFO
    blocked -t and a reload (the admin API and SIGTERM with it). A NUL byte
    ended the file there: what followed, unknown settings included, was
    silently dropped and -t said OK."""
    (tmp_path / "routes.d").mkdir()
    os.mkfifo(str(tmp_path / "routes.fifo"))
    (tmp_path / "nested.inc").write_text('# nested\n@include "routes.d"\n')
    main = tmp_path / "main.conf"
    at = "%s:%d" % (main, GOOD.count("\n") + 1)
    cases = [('@include "routes.d"', "%s: @include \"routes.d\": not a regular file (a "
              "directory: include each file by name)" % at),
             ('@include "routes.fifo"', "%s: @include \"routes.fifo\": not a regular file (a "
              "FIFO)" % at),
             ('@include "nested.inc"', "%s:2: @include \"routes.d\": not a regular file" %
              (tmp_path / "nested.inc"))]
    for line, want in cases:
        main.write_text(GOOD + line + "\n")
        out = run_strangler("-t", "-c", str(main))
        assert out.returncode == 1 and want in out.stderr, (line, out.returncode, out.stderr)
    # what libconfig reads alike stays fine: an include in a block comment,
    # a device (/dev/null, an empty include)
    main.write_text(GOOD + '/* not now:\n@include "routes.d"\n*/\n@include "/dev/null"\n')
    out = run_strangler("-t", "-c", str(main))
    assert out.returncode == 0 and "configuration OK" in out.stdout, out.stderr
    main.write_bytes(GOOD.encode() + b'log_level = "info";\0\nunknown_setting = 1;\n')
    out = run_strangler("-t", "-c", str(main))
    assert out.returncode == 1 and "%s: a NUL byte" % at in out.stderr, out.stderr
    # a running proxy keeps running, on its configuration
    (tmp_path / "run").mkdir()
    p = harness.Proxy(tmp_path / "run", {"legacy": backend_factory("legacy")})
    try:
        with open(p.conf_path, "a") as f:
            f.write('@include "%s"\n' % (tmp_path / "routes.d"))
        harness.reload_and_wait(p, 1)
        assert "keeping the running configuration" in p.stderr_text()
        assert 'not a regular file (a directory' in p.stderr_text()
        with p.client() as c:
            assert c.request("GET", "/").status == 200
        # a reload of a file with a NUL byte is refused too (-t alone said so;
        # a reload ran what came before the byte)
        text = open(p.conf_path).read().replace('@include "%s"\n' % (tmp_path / "routes.d"), "")
        with open(p.conf_path, "wb") as f:
            f.write(b"# \0\n" + text.encode())
        harness.reload_and_wait(p, 2)
        assert p.stderr_text().count("keeping the running configuration") == 2, p.stderr_text()
        assert ":1: a NUL byte" in p.stderr_text()
        with p.client() as c:
            assert c.request("GET", "/").status == 200
    finally:
        assert p.stop() == 0


def test_routes_in_an_included_file_are_named_by_it(tmp_path):
    """A route written in an included file is shown with that file, not the
    main one's, wherever strangler points at it: the unreachable-route
    warning and the duplicate name error (also when they name a route in the
    other file), and `explain`. (They all named the main file with the
    included file's line numbers.)"""
    conf_dir = tmp_path / "conf"
    (conf_dir / "routes.d").mkdir(parents=True)
    (conf_dir / "routes.d" / "more.inc").write_text(
        '  { name = "api"; match = { path_prefix = "/api"; }; backend = "legacy"; },\n'
        '  { name = "orders"; match = { path_prefix = "/orders"; }; backend = "legacy"; }\n')
    main = conf_dir / "main.conf"
    main.write_text('listen = ( { address = "127.0.0.1:18080"; } );\n'
                    'backends = { legacy = { url = "http://127.0.0.1:9001"; }; };\n'
                    'default_backend = "legacy";\n'
                    'routes = (\n'
                    '  { name = "all"; match = { path_prefix = "/"; }; backend = "legacy"; },\n'
                    '@include "routes.d/more.inc"\n'
                    ');\n')
    run = lambda *a: subprocess.run([BINARY, *a], cwd=str(tmp_path), capture_output=True,
                                    text=True, timeout=10)
    out = run("-t", "-c", "conf/main.conf")
    assert out.returncode == 0, out.stderr
    assert ('conf/routes.d/more.inc:1: warning: routes.[1]: route "api" can never match: '
            'route "all" (conf/main.conf:5) catches every request it would') in out.stderr, \
        out.stderr
    out = run("explain", "-c", "conf/main.conf", "GET", "/orders/1")
    assert "route:    all (conf/main.conf:5)" in out.stdout, out.stdout
    # the other way round: the main file's route is shadowed by an included one
    main.write_text(main.read_text().replace('"all"; match = { path_prefix = "/"; }',
                                             '"all"; match = { path_prefix = "/api/x"; }'))
    out = run("explain", "-c", "conf/main.conf", "GET", "/orders/1")
    assert "route:    orders (conf/routes.d/more.inc:2)" in out.stdout, out.stdout
    (conf_dir / "routes.d" / "more.inc").write_text(
        '  { name = "api"; match = { path_prefix = "/api"; }; backend = "legacy"; },\n'
        '  { name = "all"; match = { path_prefix = "/all"; }; backend = "legacy"; },\n'
        '  { name = "api"; match = { path_prefix = "/v2"; }; backend = "legacy"; }\n')
    out = run("-t", "-c", "conf/main.conf")
    assert out.returncode == 1
    assert ('conf/routes.d/more.inc:2: routes.[2].name: duplicate route name "all" '
            '(first at conf/main.conf:5)') in out.stderr, out.stderr
    assert ('conf/routes.d/more.inc:3: routes.[3].name: duplicate route name "api" '
            '(first at line 1)') in out.stderr, out.stderr


def test_check_missing_file(tmp_path):
    out = run_strangler("-t", "-c", str(tmp_path / "absent.conf"))
    assert out.returncode == 1
    assert "absent.conf" in out.stderr


def test_check_unreachable_route_is_a_warning(tmp_path):
    text = GOOD.replace(
        "routes = (\n",
        'routes = (\n  { name = "api"; match = { path_prefix = "/api/users"; }; backend = "legacy"; },\n')
    conf = write(tmp_path, "warn.conf", text)
    out = run_strangler("-t", "-c", conf)
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout
    users_line = next(i for i, l in enumerate(text.splitlines(), 1) if '"users"' in l)
    warn = [l for l in out.stderr.splitlines() if "warning" in l]
    assert len(warn) == 1, out.stderr
    assert warn[0].startswith("%s:%d: warning: routes.[1]" % (conf, users_line)), warn
    assert '"users"' in warn[0] and '"api"' in warn[0]
    # the warning is no error: the proxy starts with this file
    assert "1 warnings" in out.stdout or "1 warning" in out.stdout


def test_admin_without_a_state_file_is_a_warning(tmp_path, start_proxy, backend_factory):
    """An admin API without admin.state_file loses every runtime change (a
    PATCH, a guard's trip) at restart: -t counts a warning at the admin block,
    and start-up says it once. With a state file there is nothing to say."""
    text = GOOD + 'admin = { address = "127.0.0.1:19901"; };\n'
    conf = write(tmp_path, "admin.conf", text)
    out = run_strangler("-t", "-c", conf)
    assert out.returncode == 0 and "(2 backends, 2 routes, 1 warnings)" in out.stdout, out
    assert out.stderr == ("%s:%d: warning: admin: no state_file: runtime changes (PATCH, guard "
                          "trips) are lost at restart\n" % (conf, len(text.splitlines()))), out
    kept = write(tmp_path, "kept.conf", text.replace(
        "19901\";", "19901\"; state_file = \"%s\";" % (tmp_path / "state.json")))
    out = run_strangler("-t", "-c", kept)
    assert out.returncode == 0 and "0 warnings" in out.stdout and out.stderr == "", out
    p = start_proxy({"legacy": backend_factory("legacy")}, admin={})
    wait_for(lambda: "started" in p.stderr_text(), what="start-up")
    assert p.stderr_text().count("warning: admin: no state_file: runtime changes") == 1


def test_the_shipped_configs_have_no_warnings(tmp_path):
    """conf/*.conf check clean: the demo's admin API keeps its runtime changes
    in a state file, as docs/migration.md says ("persisted in
    admin.state_file")."""
    where = os.path.join(harness.SRC_DIR, "conf")
    confs = sorted(f for f in os.listdir(where) if f.endswith(".conf"))
    assert "demo.conf" in confs
    (tmp_path / "build" / "demo").mkdir(parents=True)  # the demo's logs and state, from its cwd
    for name in confs:
        out = subprocess.run([BINARY, "-t", "-c", os.path.join(where, name)], cwd=str(tmp_path),
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        assert out.returncode == 0 and "0 warnings" in out.stdout, (name, out)


def test_version():
    out = run_strangler("-V")
    assert out.returncode == 0
    text = out.stdout
    for pattern in [r"^strangler \d+\.\d+", r"^libevent \d", r"^llhttp \d+\.\d+\.\d+",
                    r"^OpenSSL \d", r"^libconfig \d+\.\d+", r"^jansson \d"]:
        assert re.search(pattern, text, re.M), (pattern, text)


def test_help():
    out = run_strangler("-h")
    assert out.returncode == 0
    for word in ["-c", "-t", "-V", "explain"]:
        assert word in out.stdout, word


def test_unknown_option_is_usage_error():
    out = run_strangler("--frobnicate")
    assert out.returncode not in (0, None)
    assert "usage" in out.stderr


def test_explain_usage_error():
    out = run_strangler("explain", "GET")
    assert out.returncode != 0
    assert "usage" in out.stderr


# -- start-up failures


def test_start_with_bad_config_exits_1(tmp_path):
    conf = write(tmp_path, "bad.conf", BAD)
    out = run_strangler("-c", conf, timeout=5)
    assert out.returncode == 1
    assert "%s:4: bogus" % conf in out.stderr


def test_start_with_unparseable_listen_address(tmp_path):
    conf = write(tmp_path, "l.conf", GOOD.replace('"127.0.0.1:18080"', '"127.0.0.1:http-ish"'))
    out = run_strangler("-c", conf, timeout=5)
    assert out.returncode == 1
    assert re.search(re.escape(conf) + r":1: listen\.\[0\]\.address: ", out.stderr), out.stderr


def test_start_with_address_in_use(tmp_path):
    holder = socket.socket()
    holder.bind((HOST, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        conf = write(tmp_path, "busy.conf", GOOD.replace("18080", str(port)))
        out = run_strangler("-c", conf, timeout=5)
    finally:
        holder.close()
    assert out.returncode == 1
    assert "cannot listen" in out.stderr and "127.0.0.1:%d" % port in out.stderr, out.stderr


def test_start_with_address_not_local(tmp_path):
    conf = write(tmp_path, "far.conf", GOOD.replace("127.0.0.1:18080", "192.0.2.1:18080"))
    out = run_strangler("-c", conf, timeout=5)
    assert out.returncode == 1
    assert "192.0.2.1:18080" in out.stderr


# -- running process


def test_sigterm_finishes_request_in_flight(backend_factory, start_proxy):
    b = backend_factory("legacy", delayed(1.0))
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        c.send(build_request("GET", "/slow"))
        b.wait_requests(1)
        t0 = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)

        def refused():
            try:
                socket.create_connection((HOST, proxy.port), timeout=0.5).close()
                return False
            except OSError:
                return True

        wait_for(refused, 2, what="listener closed after SIGTERM")
        r = c.read_response()
        assert r.status == 200
        assert r.json()["target"] == "/slow"
        assert r.header("Connection") == "close"
    assert proxy.proc.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 3
    assert "stopping" in proxy.stderr_text()


def test_sigterm_with_idle_keepalive_connection_exits_promptly(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        assert c.request("GET", "/").status == 200
        t0 = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=5) == 0
        assert time.monotonic() - t0 < 1.5  # did not wait for the 3 s drain timeout
        assert c.is_closed()


def test_sigterm_lets_answers_already_read_be_written_whole(backend_factory, start_proxy):
    """Slow readers ask for answers of 2.0-3.9 MB; the backend has sent each
    whole (the proxy parsed it all) when SIGTERM comes. The stop freed every
    session with no request active, whatever it still had to write: those
    whose tail waited in the proxy (answers a little larger than the kernel
    buffers take) were cut, while the access log said 200."""
    sizes = [2_000_000 + i * 128_000 for i in range(16)]
    done = []

    def handler(req, conn):  # chunked: parsed and buffered (a length would be spliced)
        n = int(req.path.rsplit("/", 1)[1])
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for k in range(0, n, 65536):
            conn.send(b"%x\r\n%s\r\n" % (min(65536, n - k), b"z" * min(65536, n - k)))
        conn.send(b"0\r\n\r\n")
        done.append(n)
        return harness.KEEP
    proxy = start_proxy({"legacy": backend_factory("legacy", handler)}, drain_timeout_ms=5000)
    clients = []
    for n in sizes:
        c = harness.RawClient(proxy.port, timeout=10, rcvbuf=4096)
        c.send(b"GET /big/%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
        clients.append(c)
    time.sleep(1.5)  # the backend sends what it can; the clients read nothing yet
    os.kill(proxy.pid, signal.SIGTERM)
    time.sleep(0.2)
    got = {}
    for n, c in zip(sizes, clients):
        try:
            got[n] = len(c.read_response().body)
        except (harness.Closed, OSError) as e:
            got[n] = "cut: %s" % type(e).__name__
        c.close()
    cut = {n: v for n, v in got.items() if v != n and n in done}
    assert not cut, "answers the backend had sent whole, cut by the stop: %s" % cut


def test_drain_timeout_bounds_shutdown(backend_factory, start_proxy):
    """Past drain_timeout_ms the exchange is cut: a client still waiting for
    its answer gets a 503 (it got a bare close), and the access log has the
    exchange (it had nothing)."""
    b = backend_factory("legacy", delayed(1.5))
    proxy = start_proxy({"legacy": b}, drain_timeout_ms=400)
    with proxy.client() as c:
        c.send(build_request("GET", "/very-slow"))
        b.wait_requests(1)
        t0 = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=5) == 0
        took = time.monotonic() - t0
        assert 0.3 <= took < 2.0, took
        r = c.read_response()
        assert r.status == 503 and r.body == b"shutting down\n"
        assert r.header("Connection") == "close"
    e = proxy.wait_access(1)[0]
    assert (e["path"], e["status"], e["error"]) == ("/very-slow", 503, "drain timeout")


def test_the_drain_timeout_accounts_for_tunnels_and_mirrors(backend_factory, start_proxy,
                                                            tmp_path):
    """A WebSocket cut by drain_timeout_ms has its access-log line (it had
    none), and a mirrored exchange whose answer was still streaming is
    counted primary_incomplete (it was mirrored, with no outcome)."""
    import json
    from harness import upgrade_echo

    def streaming(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(3)
        return harness.CLOSE
    legacy = backend_factory("legacy", by_path({"/ws": upgrade_echo()}, streaming))
    modern = backend_factory("modern")
    diffs = tmp_path / "diffs.jsonl"
    routes = [{"name": "s", "match": {"path_prefix": "/s"}, "backend": "legacy",
               "shadow": {"backend": "modern"}}]
    proxy = start_proxy({"legacy": legacy, "modern": modern}, routes=routes,
                        drain_timeout_ms=400, shadow_defaults={"diff_log": str(diffs)})
    with proxy.client() as ws, proxy.client() as c:
        ws.send(build_request("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "x")]))
        assert ws.read_response().status == 101
        c.send(build_request("GET", "/s/1"))
        legacy.wait_requests(2)
        time.sleep(0.2)
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=5) == 0
    lines = {e["path"]: e for e in proxy.access_lines()}
    assert (lines["/ws"]["status"], lines["/ws"]["error"]) == (101, "drain timeout")
    assert lines["/s/1"]["error"] == "drain timeout"
    last = [json.loads(x) for x in diffs.read_text().splitlines() if '"summary"' in x][-1]
    assert last["mirrored"] == 1 and last["skipped"]["primary_incomplete"] == 1, last


def test_a_replacement_starts_while_the_old_process_drains(backend_factory, start_proxy,
                                                           tmp_path):
    """The restart and upgrade of operations.md and migration.md: the old
    process drains, the new one starts on the same file. The admin listener
    made the new one exit ("address already in use") and the old one deleted
    the new one's pid file on its way out. While draining, the old process
    refuses changes (they would die with it) and says where to send them."""
    b = backend_factory("legacy", delayed(1.0))
    pid_file = str(tmp_path / "strangler.pid")
    old = start_proxy({"legacy": b}, admin={}, pid_file=pid_file)
    err = open(tmp_path / "new.stderr", "w")
    new = None
    try:
        with old.client() as c:
            c.send(build_request("GET", "/slow"))
            b.wait_requests(1)
            old.proc.send_signal(signal.SIGTERM)
            new = subprocess.Popen([BINARY, "-c", old.conf_path], stdout=err, stderr=err)
            wait_for(lambda: "started" in (tmp_path / "new.stderr").read_text(), 5,
                     what="the new process up")
            assert new.poll() is None
            statuses = set()
            wait_for(lambda: statuses.add(old.admin("PATCH", "/api/routes/nope", {})[0]) or
                     404 in statuses, 5, what="a change reaching the new process")
            assert statuses <= {404, 503}, statuses
            r = c.read_response()
            assert r.status == 200 and r.header("Connection") == "close"
        assert old.proc.wait(timeout=5) == 0
        assert open(pid_file).read().strip() == str(new.pid)
        with old.client() as c2:  # same port: the new process serves it
            assert c2.request("GET", "/next").status == 200
    finally:
        if new:
            new.terminate()
            new.wait(timeout=10)
        err.close()


def test_a_sighup_during_start_up_is_a_reload_once_running(backend_factory, tmp_path):
    """`systemctl reload` right after `start` (a Type=simple unit is started
    at fork): a SIGHUP while the configuration is still being read waited
    for no handler and killed the process (default action)."""
    b = backend_factory("legacy")
    port = free_port()
    routes = [{"name": "r%d" % i, "match": {"path_prefix": "/p%d" % i}, "backend": "legacy"}
              for i in range(3000)]  # a start of 0.1 s (0.5 s under ASan; twice that when the
    # machine runs slow): far longer than the 0.02 s the SIGHUP comes after
    conf = write(tmp_path, "big.conf", make_config(port, {"legacy": b}, routes=routes))
    def hup_held(pid):
        """main() runs and holds SIGHUP until its handler exists. Before
        main() (a sanitizer's own start, slow on a loaded machine) a SIGHUP
        can only kill, as for any program: the test waits for this."""
        with open("/proc/%d/status" % pid) as f:
            masks = dict(line.split(":", 1) for line in f if line.startswith("Sig"))
        return int(masks["SigBlk"], 16) & 1

    for delay in (0.01, 0.02):
        err = open(tmp_path / "err", "wb")
        proc = subprocess.Popen([BINARY, "-c", conf], stdout=err, stderr=err)
        try:
            wait_for(lambda: hup_held(proc.pid), 5, 0.002, what="SIGHUP held during the start")
            time.sleep(delay)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload: %s: 1 backends" % conf in (tmp_path / "err").read_text()
                     or proc.poll() is not None, 20, what="the reload or the end")
            assert proc.poll() is None, "killed by signal %d" % -proc.returncode
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
            err.close()


def test_sigint_stops_too(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b})
    with proxy.client() as c:
        assert c.request("GET", "/").status == 200
    proxy.proc.send_signal(signal.SIGINT)
    assert proxy.proc.wait(timeout=5) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT])
def test_a_connection_accepted_before_the_stop_gets_its_first_request_answered(
        backend_factory, start_proxy, sig):
    """A client that connected just before the stop (between its connect
    and its first write, mid-TLS handshake) is no idle keep-alive
    connection: it was closed with its request unanswered, which clients
    retry only on a reused connection; nginx answers it. SIGQUIT, nginx's
    graceful stop, is one too (it killed the process with its requests)."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b}, workers=2, drain_timeout_ms=5000)
    used = p.client()
    assert used.request("GET", "/used").status == 200
    fresh = [p.client(timeout=5) for _ in range(4)]
    time.sleep(0.2)  # accepted by the proxy
    p.proc.send_signal(sig)
    wait_for(lambda: "stopping" in p.stderr_text(), what="the stop")
    assert used.is_closed()  # an idle keep-alive connection closes at once
    for i, c in enumerate(fresh):
        r = c.request("GET", "/first/%d" % i)
        assert (r.status, r.header("Connection")) == (200, "close")
        assert c.is_closed()
        c.close()
    used.close()
    assert p.proc.wait(timeout=5) == 0


def test_connections_queued_for_a_stopping_instance_are_served(backend_factory, start_proxy,
                                                                tmp_path):
    """The upgrade: a new instance shares the port, the old one gets
    SIGTERM. Connections the kernel had queued for the old one's listener
    (it was at max_connections) were reset as it closed it, although their
    clients had sent their requests: it serves them before it goes."""
    b = backend_factory("legacy")
    old = start_proxy({"legacy": b}, max_connections=1)
    conf = write(tmp_path, "new.conf", make_config(old.port, {"legacy": b}))
    err = open(tmp_path / "new.stderr", "w")
    new = subprocess.Popen([BINARY, "-c", conf], stdout=err, stderr=err)
    try:
        wait_for(lambda: "started" in (tmp_path / "new.stderr").read_text(), 10,
                 what="the new instance")
        holder = old.client()  # the old instance's one connection
        assert holder.request("GET", "/hold").status == 200
        clients = []
        for i in range(24):  # half or so go to the old one's queue
            c = socket.create_connection((HOST, old.port), timeout=10)
            c.sendall(build_request("GET", "/q/%d" % i))
            clients.append(c)
        time.sleep(0.3)
        old.proc.send_signal(signal.SIGTERM)
        assert old.proc.wait(timeout=10) == 0
        for i, c in enumerate(clients):
            with c:
                assert c.recv(4096).startswith(b"HTTP/1.1 200"), "request %d" % i
        holder.close()
    finally:
        new.send_signal(signal.SIGTERM)
        assert new.wait(timeout=10) == 0
        err.close()


def test_a_reload_cannot_take_a_port_another_process_shares(backend_factory, start_proxy):
    """A reload's new address is test-bound first, and one another process
    holds is an error: one held with SO_REUSEPORT (nginx's reuseport, a Go
    server, another strangler) passed the test, and the new listener shared
    that process's connections without a word."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b})
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind((HOST, 0))
    other.listen(16)
    port = other.getsockname()[1]
    with other:
        text = open(p.conf_path).read().replace(
            'listen = ( { address = "127.0.0.1:%d"; } );' % p.port,
            'listen = ( { address = "127.0.0.1:%d"; }, { address = "127.0.0.1:%d"; } );'
            % (p.port, port))
        open(p.conf_path, "w").write(text)
        p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "cannot listen on 127.0.0.1:%d: Address already in use" % port
                 in p.stderr_text(), what="the reload refused")
        with p.client() as c:
            assert c.request("GET", "/still").status == 200


WILDCARD_RELOAD = r"""
import os, signal, subprocess, sys, tempfile, time
sys.path.insert(0, %r)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
from harness import Backend, make_config, BINARY, wait_for, free_port
b = Backend("legacy")
d = tempfile.mkdtemp()
port = free_port()
conf = os.path.join(d, "s.conf")
for here, there in (("127.0.0.1", "0.0.0.0"), ("0.0.0.0", "127.0.0.1")):
    open(conf, "w").write(make_config(port, {"legacy": b}).replace("127.0.0.1:%%d" %% port,
                                                                   "%%s:%%d" %% (here, port)))
    err = open(os.path.join(d, "err"), "w+")
    p = subprocess.Popen([BINARY, "-c", conf], stdout=err, stderr=err)
    wait_for(lambda: "started" in open(os.path.join(d, "err")).read(), 10, what="start")
    text = open(conf).read()
    open(conf, "w").write(text.replace("%%s:%%d" %% (here, port), "%%s:%%d" %% (there, port)))
    p.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload: " in open(os.path.join(d, "err")).read(), 10, what="reload")
    time.sleep(0.2)
    log = open(os.path.join(d, "err")).read()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    if "reload: %%s: 1 backends" %% conf not in log or "keeping the running" in log:
        print(log)
        sys.exit(1)
b.stop()
"""


def test_a_reload_may_move_a_listener_to_the_wildcard_of_its_port():
    """127.0.0.1:P to 0.0.0.0:P (and back) by a reload: the new address's
    test bind met the process's own listener, which closes once the new one
    is open, and the reload was refused. Run in a network namespace of its
    own (only its loopback), so that nothing listens on the machine's
    addresses."""
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("no network namespace for this user (unshare -rn)")
    script = WILDCARD_RELOAD % os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run(["unshare", "-rn", sys.executable, "-c", script], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, STRANGLER=BINARY))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_two_workers_serve_requests(backend_factory, start_proxy):
    b = backend_factory("legacy")
    proxy = start_proxy({"legacy": b}, workers=2)
    for i in range(20):
        with proxy.client() as c:
            r = c.request("GET", "/w/%d" % i)
            assert r.status == 200 and r.json()["target"] == "/w/%d" % i
    with proxy.client() as c:  # and keep-alive on one of them
        for i in range(5):
            assert c.request("GET", "/k/%d" % i).status == 200
    assert len(proxy.wait_access(25)) == 25
    assert "2 workers" in proxy.stderr_text()
    # one backend pool per worker: never more connections than workers
    assert 1 <= b.connections <= 2


def test_access_log_to_stderr(backend_factory, tmp_path):
    """access_log = "-" writes JSON lines to stderr."""
    b = backend_factory("legacy")
    port = free_port()
    conf = write(tmp_path, "stderr.conf", make_config(port, {"legacy": b}, access_log="-"))
    errf = open(tmp_path / "err", "wb")
    proc = subprocess.Popen([BINARY, "-c", conf], stdout=errf, stderr=errf)
    try:
        def up():
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                return True
            except OSError:
                return proc.poll() is not None
        wait_for(up, 5, what="proxy listening")
        assert proc.poll() is None, (tmp_path / "err").read_text()
        from harness import RawClient
        with RawClient(port) as c:
            assert c.request("GET", "/to-stderr").status == 200
        wait_for(lambda: '"path":"/to-stderr"' in (tmp_path / "err").read_text(), 3,
                 what="access line on stderr")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            rc = None
        errf.close()
    assert rc == 0


def test_the_logs_become_the_users_and_reopen_as_it(backend_factory):
    """Started as root with user = "nobody": the logs, opened as root, become
    nobody's, so SIGUSR1 can reopen them (it failed: Permission denied), and
    a log directory nobody cannot write to is pointed out at start (a reopen
    there cannot create a rotated file)."""
    import pwd
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    logs = tempfile.mkdtemp(prefix="strangler-logs-")
    try:
        os.chmod(logs, 0o755)  # like /var/log/strangler made by root
        b = backend_factory("legacy")
        p = harness.Proxy(logs, {"legacy": b}, user="nobody")  # its access.log in logs/
        try:
            log = p.access_log_path
            # the port answers as soon as it is bound: the rest follows
            wait_for(lambda: "directory %s is not writable by user nobody" % logs
                     in p.stderr_text(), what="the warning")
            # logrotate's create line names nobody's own group (Debian's
            # nogroup: a group "nobody" does not exist there)
            import grp
            group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
            assert "(logrotate: create 0640 nobody %s)" % group in p.stderr_text()
            assert os.stat(log).st_uid == pwd.getpwnam("nobody").pw_uid
            os.kill(p.pid, signal.SIGUSR1)
            wait_for(lambda: "SIGUSR1" in p.stderr_text(), what="the reopen")
            with p.client() as c:
                assert c.request("GET", "/after").status == 200
            wait_for(lambda: "/after" in open(log).read(), what="the line")
            assert "cannot reopen" not in p.stderr_text()
        finally:
            p.stop()
    finally:
        shutil.rmtree(logs)


def test_a_state_directory_the_user_cannot_write_is_pointed_out_at_start(backend_factory):
    """Started as root with user = "nobody" and admin.state_file in a
    directory only root may write: the start says so (the first PATCH was the
    first to know, with a 500); a writable one gets no such line."""
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    top = tempfile.mkdtemp(prefix="strangler-state-")
    try:
        os.chmod(top, 0o755)
        b = backend_factory("legacy")
        for writable in (False, True):
            d = os.path.join(top, "w" if writable else "ro")
            os.mkdir(d)
            os.chmod(d, 0o777 if writable else 0o755)
            routes = [{"name": "r", "match": {"path_prefix": "/"}, "backend": "legacy"}]
            p = harness.Proxy(d, {"legacy": b}, routes=routes, user="nobody",
                              admin={"state_file": os.path.join(d, "state.json")})
            try:
                st, _ = p.admin("PATCH", "/api/routes/r", {"backend": "legacy"})
                line = ("admin.state_file: directory %s is not writable by user nobody "
                        "(Permission denied)" % d)
                if writable:
                    assert st == 200 and "state_file: directory" not in p.stderr_text()
                else:
                    assert st == 500 and line in p.stderr_text(), p.stderr_text()
            finally:
                p.stop()
    finally:
        shutil.rmtree(top)


def test_user_setting_drops_privileges_after_binding(backend_factory, start_proxy):
    """Started as root with user = "nobody": the port is bound, then the process
    runs as nobody and still serves."""
    import pwd
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b}, user="nobody")
    with p.client() as c:
        assert c.request("GET", "/x").status == 200
    with open("/proc/%d/status" % p.pid) as f:
        uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
    assert set(uids) == {str(pwd.getpwnam("nobody").pw_uid)}
    assert "running as user nobody" in p.stderr_text()


# -- diff-report


def test_diff_report_reads_several_files_as_one(tmp_path):
    """operations.md: the diff logs of several instances are read together,
    in any order. Several FILE arguments (and -) are one stream; they were a
    usage error (exit 2), only `cat a b | strangler diff-report -` worked. A
    file that cannot be read is named, and no report is printed."""
    line = ('{"type":"summary","route":"search","instance":"%s","counters_since":'
            '"2026-11-27T09:00:00.000Z","mirrored":4,"compared":4,"identical":1,'
            '"different":3,"noise":0,"skipped":{},"shadow_errors":0,"shadow_timeouts":0,'
            '"primary_ms":{"p50":0.1,"p99":0.2},"shadow_ms":{"p50":0.1,"p99":0.2}}\n')
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(line % "a:1:1")
    b.write_text(line % "b:2:2" + "not json\n")
    want = "route search: 8 compared, 2 identical (25.0 %), 6 different (75.0 %)"
    for args in ([str(a), str(b)], [str(b), str(a), "--route", "search"]):
        out = run_strangler("diff-report", *args)
        assert out.returncode == 0, out.stderr
        assert want in out.stdout
        assert "1 line skipped: not JSON (%s:2)" % b in out.stdout
    out = subprocess.run([BINARY, "diff-report", str(a), "-"], input=line % "c:3:3",
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "route search: 8 compared" in out.stdout
    out = run_strangler("diff-report", str(a), str(tmp_path / "missing.jsonl"), str(b))
    assert out.returncode == 1 and out.stdout == ""
    assert "cannot open %s: No such file or directory" % (tmp_path / "missing.jsonl") in out.stderr
    out = run_strangler("diff-report")
    assert out.returncode == 2 and "usage: strangler diff-report FILE..." in out.stderr
    assert "no diff log named" in out.stderr
    # an unknown option is named; after "--" a name starting with "-" is a file
    out = run_strangler("diff-report", "-x", str(a))
    assert out.returncode == 2 and "strangler diff-report: -x: unknown option" in out.stderr
    out = run_strangler("diff-report", "--routes", "x", str(a))
    assert out.returncode == 2 and "--routes: unknown option" in out.stderr, out.stderr
    dashed = tmp_path / "-x"
    dashed.write_text(a.read_text())
    out = subprocess.run([BINARY, "diff-report", "--", "-x"], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "route search:" in out.stdout, out.stderr


def test_threads_are_named_for_top_and_ps(backend_factory, start_proxy):
    """top -H and ps -L name each thread: the workers, the shadows' comparer,
    and the main thread (admin API, reloads, health checks)."""
    b = backend_factory("legacy")
    p = start_proxy({"legacy": b}, workers=2)
    # the listener answers before the worker threads have started (slow under ASan)
    want = ["comparer", "worker 0", "worker 1"]
    harness.wait_for(lambda: sorted(n for t, n in harness.thread_names(p.pid).items()
                                    if t != p.pid) == want, what="the named threads")
    assert harness.thread_names(p.pid)[p.pid] == "strangler"
