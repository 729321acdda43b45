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
import time

import harness
from harness import raw

N = 200
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


def worker_thread(pid):
    tids = [int(t) for t in os.listdir("/proc/%d/task" % pid) if int(t) != pid]
    assert len(tids) == 1, "expected the main thread and one worker, got %r" % tids
    return tids[0]


def wait_traced(pid, tid, proc):
    deadline = time.monotonic() + 5
    status = "/proc/%d/task/%d/status" % (pid, tid)
    while time.monotonic() < deadline:
        assert proc.poll() is None, "strace exited: %s" % proc.stderr.read().decode()
        with open(status) as f:
            if re.search(r"^TracerPid:\s*[1-9]", f.read(), re.MULTILINE):
                return
        time.sleep(0.01)
    raise AssertionError("strace did not attach within 5 s")


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


def test_a_keepalive_exchange_costs_two_receives_two_writes_and_its_log_line(
        backend_factory, start_proxy, tmp_path):
    assert shutil.which("strace"), "strace is missing (tests/lib/common.sh installs it)"
    b = backend_factory("legacy", raw(RESPONSE, close=False))
    proxy = start_proxy({"legacy": b})
    client = socket.create_connection((harness.HOST, proxy.port), timeout=5)

    def exchange():
        client.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while not got.endswith(b"\r\n\r\nok\n"):
            chunk = client.recv(4096)
            assert chunk, "the proxy closed the connection"
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 ")

    for _ in range(3):  # both connections up, the buffers warm
        exchange()
    out = tmp_path / "strace.txt"
    tid = worker_thread(proxy.pid)
    tracer = subprocess.Popen(["strace", "-c", "-q", "-p", str(tid), "-o", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_traced(proxy.pid, tid, tracer)
        for _ in range(N):
            exchange()
        proxy.wait_access(3 + N, timeout=10)  # every access-log line is written
        time.sleep(0.05)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=10)
        client.close()
    calls = strace_counts(out)
    per_request = {name: n / N for name, n in calls.items()}
    # one receive of the request, one of the response; one write to each side
    assert 2 * N <= calls.get("recvfrom", 0) <= 2 * N + 3, per_request
    assert 2 * N <= calls.get("writev", 0) <= 2 * N + 3, per_request
    assert N <= calls.get("write", 0) <= N + 3, per_request  # the access-log line
    # no re-arming of the event loop per request, no other reads or sizing calls
    assert calls.get("epoll_ctl", 0) <= 2, per_request
    expected = {"recvfrom", "writev", "write", "epoll_ctl", "epoll_wait"}
    # the allocator's own calls (ASan's quarantine maps memory as it fills)
    memory = {"mmap", "munmap", "mprotect", "madvise", "mremap", "brk"}
    others = {name: n for name, n in calls.items() if name not in expected | memory}
    assert sum(others.values()) <= 6, others
    # one client, one request at a time: at most one wait per readiness event
    assert calls.get("epoll_wait", 0) <= 2 * N + 5, per_request
