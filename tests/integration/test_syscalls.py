"""What a keep-alive exchange costs in system calls (issue 6): the guard of the
connection layer's design. On loopback most of a proxy's CPU is the kernel work
behind its calls, so one call more per request (a read that finds nothing, an
epoll_ctl around every write, an ioctl to size a read) costs more than any
user-space change can win back. strace counts the worker thread's calls while
one client sends requests one after the other over one connection."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import raw

N = 200
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


def read_ok(sock):
    """Reads one RESPONSE off sock and checks it is a 200."""
    got = b""
    while not got.endswith(b"\r\n\r\nok\n"):
        chunk = sock.recv(4096)
        assert chunk, "the proxy closed the connection"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 ")


def strace_counts(path):
    """{syscall: calls} from strace -c's table."""
    counts = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            # % time, seconds, usecs/call, calls, [errors,] syscall
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                counts[fields[-1]] = int(fields[3])
    return counts


def traced(proxy, tmp_path, action, access_lines, options):
    """strace's output (with options) on the worker thread while action()
    runs, until the access log holds access_lines entries."""
    assert shutil.which("strace"), "strace is missing (tests/lib/common.sh installs it)"
    out = tmp_path / "strace.txt"
    tid = harness.worker_thread(proxy.pid)
    tracer = subprocess.Popen(["strace", "-q", *options, "-p", str(tid), "-o", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        harness.wait_traced(proxy.pid, tid, tracer)
        action()
        proxy.wait_access(access_lines, timeout=10)  # every access-log line is written
        time.sleep(0.05)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=10)
    return out.read_text()


def traced_calls(proxy, tmp_path, action, access_lines):
    """{syscall: calls} of the worker thread while action() runs (strace -c)."""
    text = traced(proxy, tmp_path, action, access_lines, ["-c"])
    (tmp_path / "counts.txt").write_text(text)
    return strace_counts(tmp_path / "counts.txt")


def test_a_keepalive_exchange_costs_two_receives_two_writes_and_its_log_line(
        backend_factory, start_proxy, tmp_path):
    b = backend_factory("legacy", raw(RESPONSE, close=False))
    proxy = start_proxy({"legacy": b})
    client = socket.create_connection((harness.HOST, proxy.port), timeout=5)

    def exchange():
        client.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        read_ok(client)

    for _ in range(3):  # both connections up, the buffers warm
        exchange()
    try:
        calls = traced_calls(proxy, tmp_path, lambda: [exchange() for _ in range(N)], 3 + N)
    finally:
        client.close()
    per_request = {name: n / N for name, n in calls.items()}
    # one receive of the request, one of the response; one write to each side,
    # a sendto: each message is one extent, and writev costs more in the kernel
    assert 2 * N <= calls.get("recvfrom", 0) <= 2 * N + 3, per_request
    assert 2 * N <= calls.get("sendto", 0) <= 2 * N + 3, per_request
    assert calls.get("writev", 0) <= 3, per_request
    assert N <= calls.get("write", 0) <= N + 3, per_request  # the access-log line
    # no re-arming of the event loop per request, no other reads or sizing calls
    assert calls.get("epoll_ctl", 0) <= 2, per_request
    expected = {"recvfrom", "sendto", "writev", "write", "epoll_ctl", "epoll_wait"}
    # the allocator's own calls (ASan's quarantine maps memory as it fills)
    memory = {"mmap", "munmap", "mprotect", "madvise", "mremap", "brk"}
    others = {name: n for name, n in calls.items() if name not in expected | memory}
    assert sum(others.values()) <= 6, others
    # one client, one request at a time: at most one wait per readiness event
    assert calls.get("epoll_wait", 0) <= 2 * N + 5, per_request


def proxy_socket_for(pid, client):
    """The proxy's own end of client's connection, duplicated into this
    process with pidfd_getfd(2) (the tests run as root): a socket option the
    proxy set can then be read back with getsockopt."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd_getfd = 438  # x86_64 and every other architecture's number since 5.6
    want = client.getsockname()
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except FileNotFoundError:
                continue
            fd = libc.syscall(pidfd_getfd, pidfd, int(name), 0)
            assert fd >= 0, "pidfd_getfd: %s" % os.strerror(ctypes.get_errno())
            s = socket.socket(fileno=fd)
            try:
                if s.type == socket.SOCK_STREAM and s.getpeername() == want:
                    return s
            except OSError:
                pass
            s.close()
    finally:
        os.close(pidfd)
    raise AssertionError("no socket of the proxy is connected to %r" % (want,))


def test_client_connections_have_nagle_off_without_a_call_per_connection(
        backend_factory, start_proxy, tmp_path):
    """Small answers must leave at once (TCP_NODELAY), and that must not cost
    a setsockopt per accepted connection: the listener's option is inherited."""
    b = backend_factory("legacy", raw(RESPONSE, close=False))
    proxy = start_proxy({"legacy": b})

    def one_connection():
        with socket.create_connection((harness.HOST, proxy.port), timeout=5) as c:
            c.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            got = harness.Stream(c).read_to_eof()
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"ok\n"), got

    one_connection()  # the backend connection up
    client = socket.create_connection((harness.HOST, proxy.port), timeout=5)
    try:
        client.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        assert harness.Stream(client).read_until(b"ok\n")
        with proxy_socket_for(proxy.pid, client) as mine:
            assert mine.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.close()

    n = 50
    calls = traced_calls(proxy, tmp_path, lambda: [one_connection() for _ in range(n)], 2 + n)
    per_connection = {name: c / n for name, c in calls.items()}
    assert calls.get("setsockopt", 0) == 0, per_connection
    assert calls.get("getsockopt", 0) == 0, per_connection
    assert calls.get("fcntl", 0) == 0, per_connection  # accept4 sets O_NONBLOCK
    # accepting: one call that succeeds, and at most one that finds the queue empty
    assert n <= calls.get("accept4", 0) <= 2 * n + 2, per_connection


def test_a_relay_held_up_by_its_destination_keeps_batching(backend_factory, start_proxy,
                                                          tmp_path):
    """A relayed upload wakes the proxy once per 256 KiB arrived (SO_RCVLOWAT)
    and falls back to every byte only for a source slower than that per
    10 ms tick. A backend that reads slowly fills the relay's pipe, and the
    proxy stops reading the client: that wait is the backend's, so the
    low-water mark stays up. The build before this test dropped it at the
    first pause and mostly left it down: the proxy woke for every segment."""
    b = backend_factory("legacy")
    b.store_body = False
    b.pause_every, b.pause = 256 << 10, 0.03  # 8.5 MB/s
    # a small receive buffer, inherited by the accepted connection: the
    # pauses reach back to the proxy instead of filling the backend's socket
    b.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 << 10)
    proxy = start_proxy({"legacy": b})
    total = 8 << 20
    client = socket.create_connection((harness.HOST, proxy.port), timeout=10)

    def upload():
        client.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"u" * (1 << 20)
        for _ in range(total >> 20):
            client.sendall(block)
        head = harness.Stream(client).read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head

    try:
        text = traced(proxy, tmp_path, upload, 1, ["-e", "trace=setsockopt"])
    finally:
        client.close()
    marks = re.findall(r"SO_RCVLOWAT, \[(\d+)\]", text)
    assert marks[:1] == ["262144"] and marks[-1:] == ["1"], text
    # up at the start, back to 1 byte at the end, never down in between
    # (near the end it may be lowered to the bytes still to come)
    assert "1" not in marks[:-1], marks


def test_idle_spin_us_polls_a_busy_worker_and_stops_with_it(backend_factory, start_proxy,
                                                          tmp_path):
    """idle_spin_us (off by default): a worker woken soon after it slept, with
    more than one client, polls (epoll_wait with a zero timeout) instead of
    sleeping; the answers are the same, a reload goes through, and SIGTERM
    still ends it at once while it polls."""
    b = backend_factory("legacy", raw(RESPONSE, close=False))
    proxy = start_proxy({"legacy": b}, idle_spin_us=1000)
    clients = [socket.create_connection((harness.HOST, proxy.port), timeout=5)
               for _ in range(2)]

    def round_trip():  # both clients in flight at once: wake-ups come close together
        for c in clients:
            c.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        for c in clients:
            read_ok(c)

    round_trip()
    text = traced(proxy, tmp_path, lambda: [round_trip() for _ in range(50)], 102, [])
    polls = re.findall(r"epoll_wait\(\d+, .*, \d+, 0\)", text)
    assert len(polls) >= 10, text[-2000:]
    harness.reload_and_wait(proxy, 1)
    assert "keeping the running configuration" not in proxy.stderr_text()
    round_trip()

    def busy():  # until the drain closes the connections
        try:
            for _ in range(2000):
                round_trip()
        except (AssertionError, OSError):
            pass

    stop = threading.Thread(target=busy)
    stop.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 2
    stop.join(timeout=10)
    for c in clients:
        c.close()
