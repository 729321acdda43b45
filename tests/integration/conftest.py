"""Fixtures: scriptable backends and a strangler process per test."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402


def pytest_configure(config):
    if not os.access(harness.BINARY, os.X_OK):
        raise pytest.UsageError("strangler binary not found at %s (set STRANGLER)" % harness.BINARY)


@pytest.fixture
def backend_factory():
    """make_backend(name, handler=None) → Backend; all stopped at teardown."""
    made = []

    def make(name, handler=None, **kw):
        b = harness.Backend(name, handler, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def start_proxy(tmp_path, backend_factory):
    """start_proxy(backends={...}, routes=[...], ...) → Proxy. Teardown sends
    SIGTERM and requires exit status 0 within 5 s."""
    started = []

    def start(backends, default_backend=None, routes=(), workers=1, **extra):
        d = tmp_path / ("proxy%d" % len(started))
        d.mkdir()
        p = harness.Proxy(d, backends, default_backend, routes, workers, **extra)
        started.append(p)
        return p

    yield start
    failures = []
    for p in started:
        rc = p.stop(timeout=5)
        if rc != 0:
            failures.append("proxy exited with %s:\n%s" % (rc, p.stderr_text()[-3000:]))
    assert not failures, "\n".join(failures)


@pytest.fixture
def two_backends(backend_factory):
    return backend_factory("legacy"), backend_factory("modern")
