"""Interop fixtures: the real Go and Rust demo services behind strangler."""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

SRC = os.environ.get("STRANGLER_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("STRANGLER_BUILD", os.path.join(SRC, "build"))
STRANGLER = os.environ.get("STRANGLER", os.path.join(BUILD, "proxy", "strangler"))
BACKENDS = os.environ.get("STRANGLER_BACKENDS", os.path.join(BUILD, "backends"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_service(name, log_dir):
    """Starts a demo service on a free port; returns (process, port)."""
    port = free_port()
    log = open(os.path.join(log_dir, f"{name}.log"), "wb")
    proc = subprocess.Popen([os.path.join(BACKENDS, name), "--listen", f"127.0.0.1:{port}"],
                            stdout=log, stderr=log)
    wait_port(port, proc)
    return proc, port


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


CONFIG = """
listen = ( {{ address = "127.0.0.1:{port}"; }} );
workers = 2;
access_log = "{log}";
log_level = "warn";
backends = {{
  legacy = {{ url = "http://127.0.0.1:{legacy}"; }};
  modern = {{ url = "http://127.0.0.1:{modern}"; response_timeout_ms = 1000; }};
}};
default_backend = "legacy";
routes = (
  {{ name = "users"; match = {{ path_prefix = "/api/users"; methods = ["GET", "HEAD"]; }};
     backend = "modern"; }},
  {{ name = "orders"; match = {{ path_prefix = "/api/orders"; }}; backend = "legacy";
     rollout = {{ backend = "modern"; percent = 50.0; sticky = "header:X-User-Id"; }}; }},
  {{ name = "to-modern"; match = {{ headers = {{ X-Side = "modern"; }}; }}; backend = "modern"; }},
  {{ name = "to-legacy"; match = {{ headers = {{ X-Side = "legacy"; }}; }}; backend = "legacy"; }}
);
"""


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """Builds (if needed) and starts both services and strangler in front."""
    subprocess.run(["bash", os.path.join(SRC, "tests", "backends", "build.sh"), BACKENDS],
                   check=True)
    tmp = tmp_path_factory.mktemp("interop")
    legacy, lport = start_service("legacy-go", tmp)
    modern, mport = start_service("modern-rust", tmp)
    port = free_port()
    conf = tmp / "interop.conf"
    conf.write_text(CONFIG.format(port=port, legacy=lport, modern=mport,
                                  log=tmp / "access.log"))
    err = open(tmp / "strangler.log", "wb")
    proxy = subprocess.Popen([STRANGLER, "-c", str(conf)], stderr=err)
    try:
        wait_port(port, proxy)
        yield {"port": port, "conf": str(conf), "access_log": tmp / "access.log",
               "proxy": proxy}
    finally:
        rc = stop(proxy)
        stop(legacy)
        stop(modern)
        assert rc == 0, (tmp / "strangler.log").read_text()


def fnv_bucket(cohort, key):
    h = 2166136261
    for b in (cohort + ":" + key).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % 10000


def read_response(f):
    """Reads one HTTP/1.1 response from a buffered socket file: (status, headers, body)."""
    status_line = f.readline()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
    assert m, status_line
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                f.readline()
                break
            body += f.read(size)
            f.readline()
    return int(m.group(1)), headers, body
