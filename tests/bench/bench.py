#!/usr/bin/python3
"""Throughput/latency benchmark: strangler against nginx and HAProxy.

Starts a fast nginx backend, then for every scenario runs wrk through each
proxy in turn (plus `direct`, wrk straight to the backend, as the baseline),
starting a fresh proxy for every run. Prints one markdown table. Then, when
strangler is selected, the shadow section: strangler alone, without and with
shadowing to a fast, a slow and a silent mirror, in a second table. Then the
memory section (RSS per idle keep-alive client connection, 5,000 of them held
by bench_client.py) and the streaming section (a 1 GiB download and upload
through each proxy and direct, with the proxy's RSS sampled meanwhile; the
upload backend is upload_sink.py), a table each.

See README.md beside this file for what each column means and how the CPUs
are shared. Standard library only; needs nginx, haproxy, wrk and taskset.
"""

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent.parent
TEMPLATE_DIR = BENCH_DIR / "templates"
# What docs/operations.md tells operators to build and deploy; bench.py builds
# it when it is missing (see build_release).
RELEASE_DIR = REPO_ROOT / "build-release"
RELEASE_OPTIONS = ["-Dbuildtype=release", "-Db_lto=true"]
DEFAULT_STRANGLER = RELEASE_DIR / "proxy" / "strangler"
MIRROR_SCRIPT = BENCH_DIR / "shadow_mirror.py"
CLIENT_SCRIPT = BENCH_DIR / "bench_client.py"
SINK_SCRIPT = BENCH_DIR / "upload_sink.py"

PROXIES = ("direct", "nginx", "haproxy", "strangler")
RATIO_BASES = ("nginx", "haproxy", "direct")

BODY_16K_SIZE = 16384
QUICK_DURATION = 2
WARMUP_SECONDS = 1
# The shadow variants warm up past the shadow timeout (timeout_ms 5000 in
# proxy-strangler-shadow.conf), so that the measured run is the steady state:
# a silent mirror's first shadows have timed out by then.
SHADOW_WARMUP_SECONDS = 6
WRK_TIMEOUT = "5s"              # wrk's per-request timeout
WRK_SLACK_SECONDS = 30          # wrk gets duration + this before we kill it
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    connections: int
    close: bool = False         # send `Connection: close`: one TCP connection per request


SCENARIOS = (
    Scenario("small, keep-alive, c50", "/", 50),
    Scenario("small, keep-alive, c400", "/", 400),
    Scenario("16 KiB, keep-alive, c50", "/16k", 50),
    Scenario("small, conn/request, c50", "/", 50, close=True),
)


@dataclasses.dataclass(frozen=True)
class ShadowVariant:
    name: str
    mirror: str | None          # None (no shadow block), "nginx", "nginx-differs", "slow",
                                # "silent", "refused"
    target: str | None = None   # "rps": req/s ratio >= RPS_TARGET; "p99": p99 ratio <= P99_TARGET


# The shadow section: strangler only, one scenario, one fresh strangler (and
# mirror) per variant. Ratios are against the first variant.
SHADOW_SCENARIO = SCENARIOS[0]
SHADOW_VARIANTS = (
    ShadowVariant("shadow off", None),
    ShadowVariant("shadow → fast", "nginx", "rps"),
    ShadowVariant("shadow → fast, differs", "nginx-differs", "rps"),
    ShadowVariant("shadow → 500 ms", "slow", "p99"),
    ShadowVariant("shadow → never answers", "silent", "p99"),
    ShadowVariant("shadow → refused", "refused", "p99"),
)
SHADOW_RPS_TARGET = 0.6         # shadow → fast keeps at least this share of req/s
SHADOW_P99_TARGET = 1.10        # slow/silent/refused shadows raise p99 by at most this factor
SHADOW_ROUNDS = 5               # interleaved rounds of the shadow variants (1 with --quick)
SLOW_MIRROR_DELAY_MS = 500
# The fast mirror's body (nginx's escapes): the backend's, or one that differs
# from it in every answer (a diff record each, as a rewrite not done yet gives)
MIRROR_BODIES = {"nginx": "ok\\n", "nginx-differs": "ok, the rewrite\\n"}
MIRROR_STATUS_PATH = "/__bench_status"
MIRROR_COUNTER_TIMEOUT = 2.0    # seconds to wait for a helper's counters
SLOW_STOP_SECONDS = 2.0         # a proxy taking longer to stop gets a note
NOISY_OTHER_LOAD_PCT = 10.0     # a verdict from runs busier than this gets a note


# The memory section: idle keep-alive client connections held open at once.
IDLE_CONNECTIONS = 5000
IDLE_DEADLINE_SECONDS = 30      # the client stops opening connections after this
IDLE_SETTLE_SECONDS = 0.5       # pause before each RSS reading
IDLE_KIB_TARGET = 4.0           # strangler: KiB per idle connection, below this
IDLE_RSS_TARGET_MIB = 8.0       # strangler: RSS of a fresh process, below this

# The streaming section: one big download and upload per proxy.
STREAM_SIZE_MIB = 1024
QUICK_STREAM_SIZE_MIB = 256
STREAM_REPEATS = 3              # transfers per row (median rate); 1 with --quick
STREAM_TIMEOUT_SECONDS = 120    # one transfer, before the client is killed
RSS_SAMPLE_SECONDS = 0.1
STREAM_RATE_TARGET = 0.8        # strangler: MB/s ÷ direct, at least this
STREAM_RSS_GROWTH_MIB = 4.0     # strangler: peak RSS − RSS at start, at most this ("flat")
STREAM_DIRECTIONS = ("download", "upload")

# The targets table (issue 6), over every section that ran.
PEER_RPS_TARGET = 1.15          # strangler's req/s ÷ the better of nginx and HAProxy
PEER_CPU_TARGET = 0.8           # strangler's CPU µs/req ÷ nginx's
PEER_RPS_SCENARIOS = SCENARIOS[:3]   # small c50, small c400, 16 KiB: keep-alive rows
CONN_SCENARIO = SCENARIOS[3]
ROUTE_TARGET_NS = 1000.0


@dataclasses.dataclass(frozen=True)
class CpuPlan:
    """Which CPU runs what. None everywhere means no pinning."""
    load: int | None            # wrk and the backend
    proxy: int | None           # the proxy under test

    def describe(self):
        if self.proxy is None:
            return "no pinning (fewer than 2 usable CPUs)"
        return (f"proxy on CPU {self.proxy}; the load side (wrk or bench_client.py, "
                f"the backends, the mirrors) on CPU {self.load} (taskset)")


@dataclasses.dataclass
class WrkResult:
    requests: int
    rps: float                  # wrk's Requests/sec (all responses)
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: dict         # connect/read/write/timeout -> count

    @property
    def good_rps(self):
        """Responses per second that were 2xx/3xx (wrk counts >= 400 as non-2xx)."""
        if self.requests <= 0:
            return 0.0
        return self.rps * (self.requests - self.non_2xx) / self.requests


@dataclasses.dataclass
class Row:
    scenario: Scenario
    proxy: str
    wrk: WrkResult | None = None
    rss_mib: float | None = None
    cpu_us_per_req: float | None = None
    kernel_us_per_req: float | None = None  # the part of cpu_us_per_req in the kernel
    proxy_core_pct: float | None = None   # proxy CPU time / wall time
    other_load_pct: float | None = None   # CPU used by others on the machine
    problems: list = dataclasses.field(default_factory=list)
    failed: bool = False        # proxy did not start or died, or wrk failed
    variant: ShadowVariant | None = None  # set on the shadow section's rows
    mirrored: int | None = None           # requests the mirror received in the measured run
    mirror_core_pct: float | None = None  # the mirror's CPU time / wall time
    rps_runs: list = dataclasses.field(default_factory=list)  # req/s of each round (main table)


@dataclasses.dataclass
class MemoryRow:
    """One proxy in the memory section. RSS values in KiB, summed over the
    proxy's processes."""
    proxy: str
    connections: int            # asked for
    opened: int | None = None   # completed a request and kept open
    still_open: int | None = None   # not closed by the proxy when RSS was read
    open_seconds: float | None = None
    rss_idle: int | None = None     # VmRSS of the fresh proxy
    rss_open: int | None = None     # VmRSS with the connections open
    rss_peak: int | None = None     # VmHWM with the connections open
    rss_closed: int | None = None   # VmRSS after the client closed them
    fds: int | None = None          # descriptors the proxy had open meanwhile
    problems: list = dataclasses.field(default_factory=list)
    failed: bool = False

    @property
    def kib_per_conn(self):
        if self.rss_idle is None or self.rss_open is None or not self.opened:
            return None
        return (self.rss_open - self.rss_idle) / self.opened


@dataclasses.dataclass
class StreamRow:
    """One proxy and one direction in the streaming section."""
    direction: str              # "download" or "upload"
    proxy: str
    size: int                   # bytes per transfer
    rates: list = dataclasses.field(default_factory=list)   # MB/s of each transfer
    seconds: list = dataclasses.field(default_factory=list)
    stall_s: float | None = None    # longest single recv/send wait in the client
    rss_start: int | None = None    # KiB, VmRSS before the first transfer
    rss_peak: int | None = None     # KiB, highest VmRSS sample during the transfers
    rss_hwm: int | None = None      # KiB, VmHWM after the transfers
    samples: int = 0
    proxy_core_pct: float | None = None
    cpu_ticks: float = 0            # the proxy's, over the completed transfers
    moved: int = 0                  # bytes of the completed transfers
    problems: list = dataclasses.field(default_factory=list)
    failed: bool = False

    @property
    def cpu_ms_per_gib(self):
        if not self.moved or not self.rates or self.proxy == "direct":
            return None
        return self.cpu_ticks / CLK_TCK * 1000 / (self.moved / (1 << 30))

    @property
    def rate(self):
        """Median MB/s of the transfers that completed."""
        return median(self.rates)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every run shares."""
    tmp: Path
    backend: "Daemon"
    backend_port: int
    cpus: CpuPlan
    duration: int
    warmup: int
    strangler: Path


class StartError(Exception):
    """A daemon did not come up."""


# --------------------------------------------------------------------------
# Small helpers


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port():
    """A port the kernel considers free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --strangler-set KEY=VALUE: top-level settings added to every strangler
# configuration the bench writes (say idle_spin_us=25), as libconfig lines.
STRANGLER_SETTINGS = []


def render_template(name, dest, **values):
    text = string.Template((TEMPLATE_DIR / name).read_text()).substitute(**values)
    if name.startswith("proxy-strangler"):
        text += "".join(f"{line}\n" for line in STRANGLER_SETTINGS)
    dest.write_text(text)
    return dest


def pinned(argv, cpu):
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def raise_nofile_limit():
    """400 client + 400 backend connections need more than the usual 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def choose_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return CpuPlan(load=None, proxy=None)
    return CpuPlan(load=cpus[0], proxy=cpus[1])


def install_signal_handlers():
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so the same cleanup runs."""
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


# --------------------------------------------------------------------------
# Daemons


class Daemon:
    """A server run in the foreground in its own session, stopped by pid."""

    def __init__(self, name, argv, workdir, cpu):
        self.name = name
        self.argv = pinned(argv, cpu)
        self.workdir = workdir
        self.log_path = workdir / f"{name}.out"
        self.proc = None
        self.stop_seconds = None    # how long the last stop() took
        self.killed = False         # it had to be SIGKILLed after SIGTERM

    def start(self, port):
        with open(self.log_path, "wb") as out:
            # A new session: a Ctrl-C in the terminal reaches only us, and we
            # stop the daemon ourselves (its process group id is its pid).
            self.proc = subprocess.Popen(
                self.argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, self)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        started = time.monotonic()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    self.killed = True
                    log(f"{self.name} did not stop on SIGTERM; sending SIGKILL")
        finally:
            # Workers left behind (or a master that ignored SIGTERM) share the
            # process group we created for this daemon.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.stop_seconds = time.monotonic() - started

    def log_tail(self, lines=15):
        paths = [self.log_path, self.workdir / "error.log"]
        text = "".join(p.read_text(errors="replace") for p in paths if p.exists())
        return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def running(daemon, port):
    daemon.start(port)
    try:
        yield daemon
    finally:
        daemon.stop()


def wait_for_port(port, daemon):
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise StartError(f"{daemon.name} exited with status "
                             f"{daemon.proc.returncode} before accepting on "
                             f"port {port}")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        time.sleep(0.05)
    raise StartError(f"{daemon.name} did not accept on port {port} within "
                     f"{START_TIMEOUT_SECONDS:.0f} s")


def nginx_argv(workdir, conf):
    return ["nginx", "-p", f"{workdir}/", "-c", str(conf),
            "-e", str(workdir / "error.log"), "-g", "daemon off;"]


def make_backend(workdir, port, cpu):
    (workdir / "16k.bin").write_bytes(b"0123456789abcdef" * (BODY_16K_SIZE // 16))
    conf = render_template("backend-nginx.conf", workdir / "nginx.conf",
                           dir=workdir, port=port, body_16k_size=BODY_16K_SIZE)
    return Daemon("backend", nginx_argv(workdir, conf), workdir, cpu)


def make_proxy(name, workdir, port, backend_port, cpu, strangler, streaming=False):
    """The Daemon for one proxy, with its config written into workdir.
    streaming: nginx gets proxy-nginx-stream.conf (bodies streamed, not buffered)."""
    values = {"dir": workdir, "port": port, "backend_port": backend_port}
    if name == "nginx":
        template = "proxy-nginx-stream.conf" if streaming else "proxy-nginx.conf"
        conf = render_template(template, workdir / "nginx.conf", **values)
        argv = nginx_argv(workdir, conf)
    elif name == "haproxy":
        conf = render_template("proxy-haproxy.cfg", workdir / "haproxy.cfg", **values)
        argv = ["haproxy", "-db", "-f", str(conf)]
    elif name == "strangler":
        conf = render_template("proxy-strangler.conf", workdir / "strangler.conf", **values)
        argv = [str(strangler), "-c", str(conf)]
    else:
        raise ValueError(name)
    return Daemon(name, argv, workdir, cpu)


def smoke_check(port):
    """One request of each kind through the proxy. Returns a list of problems."""
    problems = []
    for path, expect in (("/", b"ok\n"), ("/16k", None)):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                problems.append(f"smoke GET {path}: status {resp.status}")
            elif expect is not None and body != expect:
                problems.append(f"smoke GET {path}: body {body[:20]!r}")
            elif expect is None and len(body) != BODY_16K_SIZE:
                problems.append(f"smoke GET {path}: {len(body)} bytes")
        except (OSError, http.client.HTTPException) as exc:
            problems.append(f"smoke GET {path}: {exc}")
        finally:
            conn.close()
    return problems


class Mirror:
    """The shadow backend of one shadow-section run, and a count of the
    mirrored requests that reached it.

    nginx: a second fast nginx (templates/mirror-nginx.conf), counted with
    stub_status. slow, silent: shadow_mirror.py, counted through the stats
    file it writes on SIGUSR1."""

    def __init__(self, kind, workdir, port, cpu):
        self.kind = kind
        self.port = port
        self.stats_path = workdir / "stats.json"
        self.status_reads = 0
        if kind in ("nginx", "nginx-differs"):
            conf = render_template("mirror-nginx.conf", workdir / "nginx.conf",
                                   dir=workdir, port=port, body=MIRROR_BODIES[kind])
            argv = nginx_argv(workdir, conf)
        elif kind in ("slow", "silent"):
            argv = [sys.executable, str(MIRROR_SCRIPT), kind, "--port", str(port),
                    "--stats", str(self.stats_path)]
            if kind == "slow":
                argv += ["--delay-ms", str(SLOW_MIRROR_DELAY_MS)]
        else:
            raise ValueError(kind)
        self.daemon = Daemon(f"mirror-{kind}", argv, workdir, cpu)

    def received(self):
        """Mirrored requests received so far, or None when unknown."""
        try:
            if self.kind.startswith("nginx"):
                return self._nginx_requests()
            stats = self.helper_stats(refresh=True)
        except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
            log(f"  {self.daemon.name}: cannot read its counters: {exc}")
            return None
        # The silent mirror never reads, so it counts connections; strangler
        # opens a fresh connection for every mirrored request.
        return stats["connections"] if self.kind == "silent" else stats["requests"]

    def _nginx_requests(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", MIRROR_STATUS_PATH)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        self.status_reads += 1
        # "server accepts handled requests\n A H R": R counts this read too.
        match = re.search(r"^\s*\d+\s+\d+\s+(\d+)\s*$", text, re.MULTILINE)
        if resp.status != 200 or not match:
            raise ValueError(f"unexpected stub_status answer {resp.status} {text[:80]!r}")
        return int(match.group(1)) - self.status_reads

    def helper_stats(self, refresh):
        """The counters of shadow_mirror.py; with refresh, asks it for fresh ones."""
        def read():
            with contextlib.suppress(FileNotFoundError, ValueError):
                return json.loads(self.stats_path.read_text())
            return None

        if not refresh:
            stats = read()
            if stats is None:
                raise ValueError(f"no counters in {self.stats_path}")
            return stats
        old = read()
        old_seq = old["seq"] if old else 0
        os.kill(self.daemon.pid, signal.SIGUSR1)
        deadline = time.monotonic() + MIRROR_COUNTER_TIMEOUT
        while time.monotonic() < deadline:
            stats = read()
            if stats and stats["seq"] > old_seq:
                return stats
            time.sleep(0.01)
        raise ValueError(f"no fresh counters within {MIRROR_COUNTER_TIMEOUT} s")

    def describe(self):
        """One line about what the mirror saw over its whole life (after stop)."""
        if self.kind.startswith("nginx"):
            return None
        with contextlib.suppress(OSError, ValueError, KeyError):
            stats = self.helper_stats(refresh=False)
            return (f"{stats['connections']} connections accepted (at most "
                    f"{stats['max_open']} open at once), {stats['requests']} "
                    f"requests read, {stats['responses']} answered")
        return "no counters"


# --------------------------------------------------------------------------
# /proc accounting


def read_stat(pid):
    """(ppid, utime+stime+cutime+cstime, stime+cstime) in ticks from
    /proc/PID/stat, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # comm may contain spaces
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    return (int(fields[1]), sum(int(f) for f in fields[11:15]),
            int(fields[12]) + int(fields[14]))


def process_tree(root):
    """root and all its descendants, as pids."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = read_stat(entry.name)
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_ticks(root):
    """(CPU ticks used by the tree, the part of them in the kernel), from one
    walk of /proc. Counting cutime/cstime too keeps the sums right when a
    child exits and is reaped during the run."""
    stats = [stat for stat in map(read_stat, process_tree(root)) if stat]
    return sum(stat[1] for stat in stats), sum(stat[2] for stat in stats)


def cpu_ticks(root):
    return tree_ticks(root)[0]


def busy_ticks_all_cpus():
    """user+nice+system+steal ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    return user + nice + system + steal


def own_children_ticks():
    """CPU ticks of this script and of its reaped children (wrk)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total * CLK_TCK


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    when: float
    machine: float              # busy ticks, all CPUs
    proxy: float                # ticks of the proxy's processes
    ours: float                 # ticks of proxy + backend + wrk + this script (+ helpers)
    helpers: float = 0          # ticks of the helpers (the shadow section's mirror)
    proxy_kernel: float = 0     # the proxy's ticks in the kernel

    @classmethod
    def take(cls, proxy, backend, helpers=()):
        """helpers: other daemons of ours (the shadow section's mirror)."""
        proxy_ticks, proxy_kernel = tree_ticks(proxy.pid) if proxy else (0, 0)
        helper_ticks = sum(cpu_ticks(helper.pid) for helper in helpers)
        ours = proxy_ticks + cpu_ticks(backend.pid) + own_children_ticks() + helper_ticks
        return cls(time.monotonic(), busy_ticks_all_cpus(), proxy_ticks, ours, helper_ticks,
                   proxy_kernel)


def peak_rss_by_process(root):
    """[(pid, name, VmHWM in KiB)] over the tree: each process's own peak RSS."""
    peaks = []
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            status = dict(line.split(":", 1) for line in
                          Path(f"/proc/{pid}/status").read_text().splitlines())
            peaks.append((pid, status["Name"].strip(), int(status["VmHWM"].split()[0])))
    return peaks


# --------------------------------------------------------------------------
# wrk

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def run_wrk(port, scenario, duration, cpu):
    argv = ["wrk", "-t1", f"-c{scenario.connections}", f"-d{duration}s",
            "--latency", "--timeout", WRK_TIMEOUT]
    if scenario.close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}{scenario.path}")
    done = subprocess.run(pinned(argv, cpu), capture_output=True, text=True,
                          timeout=duration + WRK_SLACK_SECONDS)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def parse_wrk(output):
    def number(pattern, default=None):
        match = re.search(pattern, output, re.MULTILINE)
        return match.group(1) if match else default

    def latency(percent):
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$",
                          output, re.MULTILINE)
        return float(match.group(1)) * UNIT_MS[match.group(2)] if match else None

    requests = number(r"^\s*(\d+) requests in ")
    rps = number(r"^Requests/sec:\s+([\d.]+)")
    if requests is None or rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), "
                       r"write (\d+), timeout (\d+)", output)
    kinds = ("connect", "read", "write", "timeout")
    return WrkResult(
        requests=int(requests),
        rps=float(rps),
        p50_ms=latency(50),
        p99_ms=latency(99),
        non_2xx=int(number(r"Non-2xx or 3xx responses: (\d+)", "0")),
        socket_errors=dict(zip(kinds, map(int, errors.groups()))) if errors else {},
    )


# --------------------------------------------------------------------------
# One run


def measure(row, port, proxy, settings, mirror=None):
    """Warm up, then load `port` with wrk, accounting the proxy's CPU and
    how busy the rest of the machine was meanwhile. With a `mirror` (shadow
    section), also count the requests it received during the measured run."""
    if settings.warmup:
        run_wrk(port, row.scenario, settings.warmup, settings.cpus.load)
    helpers = [mirror.daemon] if mirror else []
    mirrored_before = mirror.received() if mirror else None
    before = CpuSnapshot.take(proxy, settings.backend, helpers)
    row.wrk = run_wrk(port, row.scenario, settings.duration, settings.cpus.load)
    if proxy is not None and not proxy.alive():
        row.failed = True
        row.problems.append(f"{proxy.name} died during the run "
                            f"(status {proxy.proc.returncode})")
        return
    after = CpuSnapshot.take(proxy, settings.backend, helpers)
    if mirror:
        mirrored_after = mirror.received()
        if mirrored_before is not None and mirrored_after is not None:
            row.mirrored = mirrored_after - mirrored_before
        if not mirror.daemon.alive():
            row.problems.append(f"{mirror.daemon.name} died during the run")
    wall_ticks = (after.when - before.when) * CLK_TCK
    others = (after.machine - before.machine) - (after.ours - before.ours)
    row.other_load_pct = max(0.0, others) / (wall_ticks * os.cpu_count()) * 100
    if mirror:
        row.mirror_core_pct = (after.helpers - before.helpers) / wall_ticks * 100
    if proxy is None:
        return
    used = after.proxy - before.proxy
    row.proxy_core_pct = used / wall_ticks * 100
    peaks = peak_rss_by_process(proxy.pid)
    row.rss_mib = sum(kib for _, _, kib in peaks) / 1024
    log("  peak RSS (VmHWM): " + " + ".join(
        f"{name}[{pid}] {kib / 1024:.1f}" for pid, name, kib in peaks) + " MiB")
    if row.wrk.requests:
        row.cpu_us_per_req = used / CLK_TCK * 1e6 / row.wrk.requests
        row.kernel_us_per_req = ((after.proxy_kernel - before.proxy_kernel)
                                 / CLK_TCK * 1e6 / row.wrk.requests)


def run_one(row, settings):
    """Fill `row` for one proxy in one scenario."""
    log(f"{row.scenario.name}: {row.proxy}")
    if row.proxy == "direct":
        measure(row, settings.backend_port, None, settings)
        return
    workdir = Path(tempfile.mkdtemp(prefix=f"{row.proxy}-", dir=settings.tmp))
    port = free_port()
    daemon = make_proxy(row.proxy, workdir, port, settings.backend_port,
                        settings.cpus.proxy, settings.strangler)
    try:
        with running(daemon, port):
            row.problems += smoke_check(port)
            for problem in row.problems:
                log(f"  {row.proxy}: {problem}")
            measure(row, port, daemon, settings)
    except StartError as exc:
        row.failed = True
        row.problems.append("failed to start")
        log(f"  {row.proxy} FAILED TO START: {exc}\n{daemon.log_tail()}")


def strangler_shadow_conf(workdir, port, backend_port, mirror_port):
    """strangler's config for one shadow-section run; mirror_port None: no shadow."""
    values = {"dir": workdir, "port": port, "backend_port": backend_port,
              "mirror_backend": "", "shadow": ""}
    if mirror_port is not None:
        values["mirror_backend"] = f' mirror = {{ url = "http://127.0.0.1:{mirror_port}"; }};'
        values["shadow"] = ' shadow = { backend = "mirror"; percent = 100.0; };'
    return render_template("proxy-strangler-shadow.conf", workdir / "strangler.conf",
                           **values)


def run_shadow_one(row, settings):
    """Fill `row` for one shadow variant: a fresh mirror, then a fresh strangler."""
    variant = row.variant
    log(f"shadow, {row.scenario.name}: {variant.name}")
    workdir = Path(tempfile.mkdtemp(prefix="strangler-shadow-", dir=settings.tmp))
    mirror = None
    daemon = None
    try:
        with contextlib.ExitStack() as stack:
            mirror_port = None
            if variant.mirror == "refused":
                mirror_port = free_port()   # nothing listens there: connect is refused
            elif variant.mirror:
                mirror_dir = workdir / "mirror"
                mirror_dir.mkdir()
                mirror_dir.chmod(0o755)     # nginx workers may run as `nobody`
                mirror_port = free_port()
                mirror = Mirror(variant.mirror, mirror_dir, mirror_port,
                                settings.cpus.load)
                stack.enter_context(running(mirror.daemon, mirror_port))
            port = free_port()
            conf = strangler_shadow_conf(workdir, port, settings.backend_port, mirror_port)
            daemon = Daemon("strangler", [str(settings.strangler), "-c", str(conf)],
                            workdir, settings.cpus.proxy)
            stack.enter_context(running(daemon, port))
            row.problems += smoke_check(port)
            for problem in row.problems:
                log(f"  strangler: {problem}")
            measure(row, port, daemon, settings, mirror)
    except StartError as exc:
        row.failed = True
        row.problems.append("failed to start")
        tails = "\n".join(d.log_tail() for d in (mirror and mirror.daemon, daemon) if d)
        log(f"  FAILED TO START: {exc}\n{tails}")
        return
    if daemon.stop_seconds is not None and daemon.stop_seconds > SLOW_STOP_SECONDS:
        row.problems.append(f"took {daemon.stop_seconds:.1f} s to stop"
                            + (" (SIGKILLed)" if daemon.killed else ""))
    log(f"  strangler stopped in {daemon.stop_seconds:.2f} s")
    if row.mirrored is not None and row.wrk and row.wrk.requests:
        log(f"  mirror received {row.mirrored} requests during the measured run "
            f"({row.mirrored / row.wrk.requests:.1%} of {row.wrk.requests})")
    if mirror and mirror.describe():
        log(f"  {mirror.daemon.name}, whole run: {mirror.describe()}")
    # Anything strangler said besides the expected warning about diff_log.
    said = [line for line in daemon.log_tail(20).splitlines()
            if "no shadow_defaults.diff_log" not in line]
    if said:
        log("  strangler's output (last lines):\n" + "\n".join(said[-5:]))


def run_shadow(settings, rounds):
    """Every variant once per round, rounds one after the other (off, fast,
    slow, silent, off, fast, ...): each variant is compared with the `shadow
    off` of its own round, a minute apart at most, so slow drifts of a shared
    machine fall on both sides of a ratio. Returns one list of rows per round."""
    if settings.warmup:
        settings = dataclasses.replace(settings, warmup=SHADOW_WARMUP_SECONDS)
    by_round = []
    for k in range(rounds):
        if rounds > 1:
            log(f"shadow section: round {k + 1} of {rounds}")
        rows = [Row(SHADOW_SCENARIO, "strangler", variant=variant)
                for variant in SHADOW_VARIANTS]
        for row in rows:
            fill_row(row, run_shadow_one, settings)
        by_round.append(rows)
    return by_round


def fill_row(row, run, settings):
    """run(row, settings), unless strangler's binary is missing; a wrk failure
    marks the row failed instead of ending the benchmark."""
    if row.proxy == "strangler" and not settings.strangler.is_file():
        row.problems.append("skipped: binary not built")
        return
    try:
        run(row, settings)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        row.failed = True
        row.problems.append("wrk failed")
        log(f"  {row.proxy}: {exc}")


def run_all(proxies, settings, rounds=1):
    """Every scenario through every proxy, `rounds` times (round after round,
    the proxies of a scenario back to back); one row per scenario and proxy,
    the median of its rounds."""
    runs = {}
    for k in range(rounds):
        if rounds > 1:
            log(f"main table: round {k + 1} of {rounds}")
        for scenario in SCENARIOS:
            for proxy in proxies:
                row = Row(scenario, proxy)
                fill_row(row, run_one, settings)
                runs.setdefault((scenario, proxy), []).append(row)
    return [merge_rounds(rs) for rs in runs.values()]


def merge_rounds(rs):
    """One row from several runs of a scenario and proxy: medians of req/s,
    latency, CPU per request and core %; the highest peak RSS and other load;
    every problem. Runs that failed are left out (and said so)."""
    if len(rs) == 1:
        rs[0].rps_runs = [rs[0].wrk.good_rps] if rs[0].wrk else []
        return rs[0]
    ok = [r for r in rs if r.wrk and not r.failed]
    first = rs[0]
    row = Row(first.scenario, first.proxy)
    row.problems = sorted({p for r in rs for p in r.problems})
    if len(ok) < len(rs):
        row.problems.append(f"{len(rs) - len(ok)} of {len(rs)} runs failed")
    if not ok:
        row.failed = True
        return row
    pick = lambda f: median([v for v in map(f, ok) if v is not None])
    highest = lambda f: max((v for v in map(f, ok) if v is not None), default=None)
    errors = {}
    for r in ok:
        for k, v in r.wrk.socket_errors.items():
            errors[k] = errors.get(k, 0) + v
    row.rps_runs = [r.wrk.good_rps for r in ok]
    # non_2xx 0 and the median good req/s as rps keep good_rps the median
    row.wrk = WrkResult(requests=sum(r.wrk.requests for r in ok), rps=median(row.rps_runs),
                        p50_ms=pick(lambda r: r.wrk.p50_ms), p99_ms=pick(lambda r: r.wrk.p99_ms),
                        non_2xx=0, socket_errors=errors)
    non_2xx = sum(r.wrk.non_2xx for r in ok)
    if non_2xx:
        row.problems.append(f"{non_2xx} non-2xx")
    row.rss_mib = highest(lambda r: r.rss_mib)
    row.cpu_us_per_req = pick(lambda r: r.cpu_us_per_req)
    row.kernel_us_per_req = pick(lambda r: r.kernel_us_per_req)
    row.proxy_core_pct = pick(lambda r: r.proxy_core_pct)
    row.other_load_pct = highest(lambda r: r.other_load_pct)
    return row


# --------------------------------------------------------------------------
# Memory and streaming sections: helpers


def status_kib(pids, field):
    """Sum of one /proc/PID/status field (VmRSS, VmHWM), in KiB, over pids."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
                    break
    return total


def open_fds(pids):
    count = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            count += len(os.listdir(f"/proc/{pid}/fd"))
    return count


def nofile_limits(pids):
    """[(pid, name, soft open-files limit)] from /proc/PID/limits."""
    limits = []
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    limits.append((pid, name, -1 if soft == "unlimited" else int(soft)))
    return limits


class Client:
    """bench_client.py, pinned to the load CPU, in its own session (stopped by
    pid), answering with JSON lines on stdout; its stderr goes to a file."""

    def __init__(self, argv, workdir, cpu, name="client"):
        self.err_path = workdir / f"{name}.err"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                pinned([sys.executable, str(CLIENT_SCRIPT), *argv], cpu),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, bufsize=0)
        self._pending = b""

    def running(self):
        return self.proc.poll() is None

    def read_json(self, timeout):
        """The next JSON line; RuntimeError when none comes within timeout."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no answer from the client within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    raise RuntimeError(f"the client exited without answering"
                                       f"{self._stderr_tail()}")
                self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def send(self, command):
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def _stderr_tail(self):
        with contextlib.suppress(OSError):
            text = self.err_path.read_text(errors="replace").strip()
            if text:
                return ": " + text.splitlines()[-1]
        return ""

    def stop(self, grace=5.0):
        """Closes its stdin (the idle client then exits), waits `grace`
        seconds, then kills its process group."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc.stdout.close()


def http_get_status(port, path="/"):
    """A problem string, or None when `GET path` answered 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            return f"smoke GET {path}: status {resp.status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"smoke GET {path}: {exc}"
    finally:
        conn.close()
    return None


# --------------------------------------------------------------------------
# Memory per idle keep-alive connection


def run_memory_one(row, settings):
    """Fresh proxy; RSS; open row.connections keep-alive connections with one
    request each; RSS again; close them; RSS once more; stop the proxy."""
    log(f"memory, {row.connections} idle keep-alive connections: {row.proxy}")
    workdir = Path(tempfile.mkdtemp(prefix=f"memory-{row.proxy}-", dir=settings.tmp))
    port = free_port()
    daemon = make_proxy(row.proxy, workdir, port, settings.backend_port,
                        settings.cpus.proxy, settings.strangler)
    try:
        with running(daemon, port):
            time.sleep(IDLE_SETTLE_SECONDS)
            pids = process_tree(daemon.pid)
            limits = nofile_limits(pids)
            log("  open-files limit: " + ", ".join(
                f"{name}[{pid}] {'unlimited' if soft < 0 else soft}"
                for pid, name, soft in limits))
            if limits and all(0 <= soft < row.connections + 16 for _, _, soft in limits):
                row.problems.append(f"open-files limit {max(s for _, _, s in limits)} "
                                    f"< {row.connections} connections")
            row.rss_idle = status_kib(pids, "VmRSS")
            client = Client(["idle", "--port", str(port), "--count", str(row.connections),
                             "--deadline", str(IDLE_DEADLINE_SECONDS)],
                            workdir, settings.cpus.load, "idle-client")
            try:
                opened = client.read_json(IDLE_DEADLINE_SECONDS + 15)
                row.opened = opened["opened"]
                row.open_seconds = opened["seconds"]
                for error in opened["errors"][:3]:
                    log(f"  client: {error}")
                if opened["errors"]:
                    row.failed = True
                    row.problems.append(f"{len(opened['errors'])} client errors "
                                        f"(first: {opened['errors'][0]})")
                if not daemon.alive():
                    raise RuntimeError(f"{row.proxy} died while the connections were "
                                       f"opened (status {daemon.proc.returncode})")
                time.sleep(IDLE_SETTLE_SECONDS)
                pids = process_tree(daemon.pid)
                row.rss_open = status_kib(pids, "VmRSS")
                row.rss_peak = status_kib(pids, "VmHWM")
                row.fds = open_fds(pids)
                client.send("check")
                row.still_open = client.read_json(10)["still_open"]
                if row.still_open != row.opened:
                    row.failed = True
                    row.problems.append(f"{row.opened - row.still_open} connections "
                                        "closed by the proxy before the RSS reading")
                client.send("close")
            finally:
                client.stop()
            time.sleep(IDLE_SETTLE_SECONDS)
            if not daemon.alive():
                raise RuntimeError(f"{row.proxy} died (status {daemon.proc.returncode})")
            row.rss_closed = status_kib(process_tree(daemon.pid), "VmRSS")
            log(f"  {row.opened} connections opened in {row.open_seconds:.1f} s; RSS "
                f"{row.rss_idle / 1024:.1f} → {row.rss_open / 1024:.1f} MiB "
                f"({fmt(row.kib_per_conn, '.2f')} KiB/conn), peak {row.rss_peak / 1024:.1f}, "
                f"{row.rss_closed / 1024:.1f} MiB after closing; {row.fds} fds")
    except StartError as exc:
        row.failed = True
        row.problems.append("failed to start")
        log(f"  {row.proxy} FAILED TO START: {exc}\n{daemon.log_tail()}")
    except (RuntimeError, KeyError, ValueError) as exc:
        row.failed = True
        row.problems.append(str(exc))
        log(f"  {row.proxy}: {exc}\n{daemon.log_tail()}")


def run_memory(proxies, settings, connections):
    rows = []
    for proxy in proxies:
        if proxy == "direct":
            continue
        row = MemoryRow(proxy, connections)
        rows.append(row)
        if proxy == "strangler" and not settings.strangler.is_file():
            row.problems.append("skipped: binary not built")
            continue
        started = time.monotonic()
        run_memory_one(row, settings)
        log(f"  {proxy}: {time.monotonic() - started:.1f} s")
    return rows


# --------------------------------------------------------------------------
# Streaming: a big download and upload through each proxy


@dataclasses.dataclass(frozen=True)
class StreamBackends:
    download_port: int          # nginx serving /big
    upload_port: int            # upload_sink.py


def prime_page_cache(path):
    """Reads the (sparse) file once so every download is served from memory."""
    buf = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def transfer_once(row, port, workdir, settings, pids):
    """One transfer through `port`; samples the proxy's RSS (pids) every
    RSS_SAMPLE_SECONDS meanwhile. Returns the client's JSON result."""
    if row.direction == "download":
        argv = ["download", "--port", str(port), "--path", "/big", "--expect", str(row.size)]
    else:
        argv = ["upload", "--port", str(port), "--path", "/upload", "--size", str(row.size)]
    client = Client(argv, workdir, settings.cpus.load, f"{row.direction}-client")
    try:
        deadline = time.monotonic() + STREAM_TIMEOUT_SECONDS
        while client.running():
            if pids:
                rss = status_kib(pids, "VmRSS")
                row.rss_peak = max(row.rss_peak or 0, rss)
                row.samples += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"transfer not done within {STREAM_TIMEOUT_SECONDS} s")
            with contextlib.suppress(subprocess.TimeoutExpired):
                client.proc.wait(timeout=RSS_SAMPLE_SECONDS)
        return client.read_json(5)
    finally:
        client.stop(grace=0)


def run_stream_one(row, settings, backends, repeats):
    log(f"streaming, {row.direction} of {row.size >> 20} MiB: {row.proxy}")
    backend_port = (backends.download_port if row.direction == "download"
                    else backends.upload_port)
    workdir = Path(tempfile.mkdtemp(prefix=f"stream-{row.proxy}-", dir=settings.tmp))
    daemon = None
    try:
        with contextlib.ExitStack() as stack:
            if row.proxy == "direct":
                port = backend_port
            else:
                port = free_port()
                daemon = make_proxy(row.proxy, workdir, port, backend_port,
                                    settings.cpus.proxy, settings.strangler, streaming=True)
                stack.enter_context(running(daemon, port))
            problem = http_get_status(port)
            if problem:
                row.problems.append(problem)
                log(f"  {row.proxy}: {problem}")
            pids = process_tree(daemon.pid) if daemon else []
            if daemon:
                time.sleep(0.2)
                row.rss_start = status_kib(pids, "VmRSS")
            for i in range(repeats):
                ticks_before = cpu_ticks(daemon.pid) if daemon else 0
                result = transfer_once(row, port, workdir, settings, pids)
                ticks = (cpu_ticks(daemon.pid) if daemon else 0) - ticks_before
                if daemon and not daemon.alive():
                    raise RuntimeError(f"{row.proxy} died during the transfer "
                                       f"(status {daemon.proc.returncode})")
                row.stall_s = max(row.stall_s or 0.0, result["stall_s"] or 0.0)
                if result["error"]:
                    raise RuntimeError(f"transfer {i + 1}: {result['error']}")
                seconds = result["seconds"]
                row.seconds.append(seconds)
                row.rates.append(result["bytes"] / seconds / 1e6)
                row.cpu_ticks += ticks
                row.moved += result["bytes"]
                core = ticks / CLK_TCK / seconds * 100 if daemon else None
                if core is not None:
                    row.proxy_core_pct = max(row.proxy_core_pct or 0.0, core)
                log(f"  transfer {i + 1}: {row.rates[-1]:,.0f} MB/s, {seconds:.2f} s, "
                    f"longest stall {result['stall_s'] * 1000:.0f} ms"
                    + (f", proxy core {core:.0f} %, RSS peak so far "
                       f"{row.rss_peak / 1024:.1f} MiB" if daemon else ""))
            if daemon:
                row.rss_hwm = status_kib(pids, "VmHWM")
    except StartError as exc:
        row.failed = True
        row.problems.append("failed to start")
        log(f"  {row.proxy} FAILED TO START: {exc}\n{daemon.log_tail() if daemon else ''}")
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        row.failed = True
        row.problems.append(str(exc))
        log(f"  {row.proxy}: {exc}" + (f"\n{daemon.log_tail()}" if daemon else ""))


def run_streaming(proxies, settings, size, repeats):
    """Download then upload, each through `direct` and every proxy."""
    stream_dir = settings.tmp / "stream"
    stream_dir.mkdir()
    stream_dir.chmod(0o755)     # nginx workers may run as `nobody`
    big = stream_dir / "big.bin"
    rows = []
    try:
        with open(big, "wb") as f:
            f.truncate(size)    # sparse: no disk blocks, reads as zeros
        started = time.monotonic()
        prime_page_cache(big)
        log(f"streaming: {size >> 20} MiB file made and read once in "
            f"{time.monotonic() - started:.1f} s")
        download_port, upload_port = free_port(), free_port()
        conf = render_template("stream-backend-nginx.conf", stream_dir / "nginx.conf",
                               dir=stream_dir, port=download_port, size=size)
        download = Daemon("stream-backend", nginx_argv(stream_dir, conf), stream_dir,
                          settings.cpus.load)
        sink = Daemon("upload-sink", [sys.executable, str(SINK_SCRIPT), "--port",
                                      str(upload_port)], stream_dir, settings.cpus.load)
        order = ("direct", *(p for p in proxies if p != "direct"))
        try:
            with running(download, download_port), running(sink, upload_port):
                for port in (download_port, upload_port):
                    problem = http_get_status(port)
                    if problem:
                        raise StartError(f"streaming backend misbehaves: {problem}")
                backends = StreamBackends(download_port, upload_port)
                for direction in STREAM_DIRECTIONS:
                    for proxy in order:
                        row = StreamRow(direction, proxy, size)
                        rows.append(row)
                        if proxy == "strangler" and not settings.strangler.is_file():
                            row.problems.append("skipped: binary not built")
                            continue
                        run_stream_one(row, settings, backends, repeats)
        except StartError as exc:
            log(f"streaming backends FAILED TO START: {exc}\n"
                f"{download.log_tail()}\n{sink.log_tail()}")
            rows = [StreamRow(d, p, size, problems=["streaming backend failed to start"],
                              failed=True)
                    for d in STREAM_DIRECTIONS for p in order]
    finally:
        with contextlib.suppress(OSError):
            big.unlink()
    return rows


# --------------------------------------------------------------------------
# Report


def tool_versions():
    def first_line(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError as exc:
            return f"unavailable ({exc.strerror})"
        lines = (done.stdout + done.stderr).strip().splitlines()
        return lines[0] if lines else "?"

    nginx = first_line(["nginx", "-v"]).removeprefix("nginx version: ")
    haproxy = re.sub(r" - https?://\S+$", "", first_line(["haproxy", "-v"]))
    wrk = re.sub(r"\s+Copyright.*$", "", first_line(["wrk", "--version"]))
    return nginx, haproxy, wrk


def header_lines(args, cpus, duration, warmup):
    uname = os.uname()
    nginx, haproxy, wrk = tool_versions()
    strangler = (f"{args.strangler} (copied at start; every run uses the copy)"
                 if args.strangler.is_file() else f"{args.strangler} (not built: skipped)")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    lines = [
        "# strangler benchmark",
        "",
        f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z}",
        f"- host: {uname.sysname} {uname.release} {uname.machine}, nproc {os.cpu_count()}, "
        f"load average at start {load}",
        f"- versions: {nginx}; {haproxy}; {wrk}",
        f"- strangler: {strangler}"
        + (f", with {' '.join(STRANGLER_SETTINGS)}" if STRANGLER_SETTINGS else ""),
        f"- CPUs: {cpus.describe()}",
    ]
    if not (args.main_table or args.shadow_section):
        return lines + [""]     # the memory and streaming tables explain themselves
    return lines + [
        f"- each run: fresh proxy, {warmup} s warm-up, then wrk -t1 -d{duration}s "
        f"--latency --timeout {WRK_TIMEOUT}; backend nginx 1 worker",
        *([f"- main table: {args.rounds} rounds (each scenario through every proxy, "
           "round after round); each row is the median of its rounds (req/s, p50, p99, "
           "CPU µs/req, core %; peak RSS and other load: the highest); req/s range: "
           "its slowest and fastest round"] if args.main_table and args.rounds > 1 else []),
        "- req/s: 2xx/3xx responses per second (non-2xx are left out and "
        "listed under errors); ratios: this row's req/s ÷ that proxy's in the "
        "same scenario",
        "- peak RSS: sum of VmHWM over all the proxy's processes (nginx: master + "
        "worker; HAProxy: its one process); CPU µs/req: utime+stime of those "
        "processes over the measured run ÷ requests; proxy core %: the same "
        "time ÷ wall time (near 100 = the proxy was the bottleneck)",
        "- other load %: CPU used by anything but backend, proxy and wrk during "
        "the run, as % of all CPUs (includes steal and kernel threads; "
        "rerun if high)",
        "",
    ]


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def describe_problems(row):
    parts = list(row.problems)
    if row.wrk:
        if row.wrk.non_2xx:
            parts.append(f"{row.wrk.non_2xx} non-2xx/3xx")
        bad = {k: v for k, v in row.wrk.socket_errors.items() if v}
        if bad:
            parts.append("socket " + " ".join(f"{k} {v}" for k, v in bad.items()))
    return "; ".join(parts) or "0"


def table_lines(rows):
    good = {(r.scenario, r.proxy): r.wrk.good_rps for r in rows if r.wrk}
    multi = any(len(r.rps_runs) > 1 for r in rows)
    columns = ["scenario", "proxy", "req/s", *(["req/s range"] if multi else []), "p50 ms",
               "p99 ms", "peak RSS MiB", "CPU µs/req", "of which kernel", "proxy core %",
               "other load %", "errors"] + [f"÷{base}" for base in RATIO_BASES]
    text_columns = ("scenario", "proxy", "errors", "req/s range")
    align = ["---" if c in text_columns else "--:" for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        w = row.wrk
        span = (f"{min(row.rps_runs):,.0f}–{max(row.rps_runs):,.0f}" if row.rps_runs else "-")
        rps = w.good_rps if w else None
        ratios = []
        for base in RATIO_BASES:
            base_rps = good.get((row.scenario, base))
            ok = rps is not None and base_rps
            ratios.append(f"{rps / base_rps:.2f}" if ok else "-")
        cells = [row.scenario.name, row.proxy,
                 fmt(rps, ",.0f"), *([span] if multi else []),
                 fmt(w and w.p50_ms, ".3f"), fmt(w and w.p99_ms, ".3f"),
                 fmt(row.rss_mib, ".1f"), fmt(row.cpu_us_per_req, ".1f"),
                 fmt(row.kernel_us_per_req, ".1f"),
                 fmt(row.proxy_core_pct, ".0f"), fmt(row.other_load_pct, ".0f"),
                 describe_problems(row), *ratios]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def shadow_ratios(row, base):
    """(req/s ÷ off, p99 ÷ off) of a shadow row; None where a run has no numbers."""
    w, b = row.wrk, base.wrk if base else None
    rps_ratio = p99_ratio = None
    if w and b and not row.failed and not base.failed:
        if b.good_rps:
            rps_ratio = w.good_rps / b.good_rps
        if w.p99_ms is not None and b.p99_ms:
            p99_ratio = w.p99_ms / b.p99_ms
    return rps_ratio, p99_ratio


def shadow_target_met(variant, rps_ratio, p99_ratio):
    """(goal text, the ratio it judges, met) for a variant with a target."""
    if variant.target == "rps":
        return (f"req/s ÷ off ≥ {SHADOW_RPS_TARGET:.2f}", rps_ratio,
                rps_ratio is not None and rps_ratio >= SHADOW_RPS_TARGET)
    return (f"p99 ÷ off ≤ {SHADOW_P99_TARGET:.2f}", p99_ratio,
            p99_ratio is not None and p99_ratio <= SHADOW_P99_TARGET)


def shadow_verdict(row, base):
    """(ratio cells..., target, result) of a shadow row against `shadow off`."""
    rps_ratio, p99_ratio = shadow_ratios(row, base)
    if row.variant.target not in ("rps", "p99"):
        return fmt(rps_ratio, ".2f"), fmt(p99_ratio, ".2f"), "-", "-"
    goal, ratio, ok = shadow_target_met(row.variant, rps_ratio, p99_ratio)
    if ratio is None:
        # This run failed, or it (or `shadow off`) was skipped or has no numbers.
        return (fmt(rps_ratio, ".2f"), fmt(p99_ratio, ".2f"), goal,
                "FAIL (run failed)" if row.failed else "n/a (no data)")
    result = "PASS" if ok else "FAIL"
    busiest = max((r.other_load_pct for r in (row, base)
                   if r is not None and r.other_load_pct is not None), default=None)
    if busiest is not None and busiest > NOISY_OTHER_LOAD_PCT:
        result += f" (noisy: other load {busiest:.0f} %)"
    return fmt(rps_ratio, ".2f"), fmt(p99_ratio, ".2f"), goal, result


def shadow_table_lines(rows):
    base = next((r for r in rows if r.variant.mirror is None), None)
    columns = ["variant", "req/s", "p50 ms", "p99 ms", "peak RSS MiB", "CPU µs/req",
               "proxy core %", "mirror core %", "other load %", "mirrored %", "errors",
               "req/s ÷ off", "p99 ÷ off", "target", "result"]
    text_columns = ("variant", "errors", "target", "result")
    align = ["---" if c in text_columns else "--:" for c in columns]
    lines = [
        f"## Shadowing: strangler only, {SHADOW_SCENARIO.name}",
        "",
        "- one fresh strangler per variant, config templates/proxy-strangler-shadow.conf: "
        "one route `all` (path_prefix \"/\") to `fast`, shadow_defaults max_in_flight 256, "
        "timeout_ms 5000, no diff_log (differences only counted); the variants add "
        "`shadow = { backend = \"mirror\"; percent = 100.0; }`",
        f"- warm-up {SHADOW_WARMUP_SECONDS} s (none with --quick), longer than the shadow "
        "timeout, so the measured run is the steady state: by then a silent mirror's "
        "first shadows have timed out and shadows to it are paused "
        "(`backend_unresponsive` skips, one trial per 5 s)",
        f"- mirrors, on the load CPU: `shadow → fast` a second nginx (`return 200 \"ok\\n\"`, "
        "the backend's answer: every comparison identical); `shadow → fast, differs` the same "
        "nginx answering `ok, the rewrite\\n` (every comparison a difference, recorded in "
        "the admin API's ring as a migration's differences are); "
        f"`shadow → {SLOW_MIRROR_DELAY_MS} ms` shadow_mirror.py slow (answers every "
        f"request after {SLOW_MIRROR_DELAY_MS} ms); `shadow → never answers` shadow_mirror.py silent "
        "(accepts, never replies); `shadow → refused` a port nobody listens on (a mirror "
        "that is down: strangler marks it down and skips it as `backend_down`)",
        "- mirrored %: requests the mirror received during the measured run ÷ requests "
        "wrk completed (a little over 100 when every request is mirrored: the mirror "
        "also saw the ones still in flight when wrk stopped). Past 256 shadows in "
        "flight strangler skips the mirror (a `budget` skip), so a slow or silent "
        "mirror gets only a few % by design",
        "- mirror core %: the mirror's CPU time ÷ wall time. It shares the load CPU "
        "with wrk and the backend: what it uses there slows the load side too",
        f"- targets: `shadow → fast` (either) req/s ÷ off ≥ {SHADOW_RPS_TARGET:.2f}; the "
        f"slow, silent and refused mirrors p99 ÷ off ≤ {SHADOW_P99_TARGET:.2f} (the client "
        "must never wait for the shadow); this table is one round: with several, "
        "the summary after the rounds judges the median. `noisy`: this run or `shadow off` "
        "had more than "
        f"{NOISY_OTHER_LOAD_PCT:.0f} % other load",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join(align) + " |",
    ]
    for row in rows:
        w = row.wrk
        mirrored = None
        if row.mirrored is not None and w and w.requests:
            mirrored = row.mirrored / w.requests * 100
        cells = [row.variant.name,
                 fmt(w and w.good_rps, ",.0f"),
                 fmt(w and w.p50_ms, ".3f"), fmt(w and w.p99_ms, ".3f"),
                 fmt(row.rss_mib, ".1f"), fmt(row.cpu_us_per_req, ".1f"),
                 fmt(row.proxy_core_pct, ".0f"), fmt(row.mirror_core_pct, ".0f"),
                 fmt(row.other_load_pct, ".0f"),
                 fmt(mirrored, ".1f") if row.variant.mirror else "-",
                 describe_problems(row),
                 *shadow_verdict(row, base)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines



def median(values):
    values = sorted(values)
    n = len(values)
    return None if not n else (values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2)


def shadow_round_ratios(by_round, i):
    """Variant i's (req/s ÷ off, p99 ÷ off) of every round that has them."""
    rps, p99 = [], []
    for rows in by_round:
        base = next((r for r in rows if r.variant.mirror is None), None)
        a, b = shadow_ratios(rows[i], base)
        rps += [a] if a is not None else []
        p99 += [b] if b is not None else []
    return rps, p99


def shadow_summary_lines(by_round):
    """One line per variant over all rounds: the median of its per-round ratios
    (each against that round's `shadow off`) and the verdict on that median."""
    rounds = len(by_round)
    columns = ["variant", "rounds", "req/s ÷ off (median)", "req/s ÷ off (range)",
               "p99 ÷ off (median)", "p99 ÷ off (range)", "target", "result"]
    align = ["---", "--:", "--:", "---", "--:", "---", "---", "---"]
    lines = [
        f"### Shadowing over {rounds} rounds",
        "",
        f"- the {len(SHADOW_VARIANTS)} variants ran {rounds} times, interleaved ("
        + ", ".join(v.name for v in SHADOW_VARIANTS)
        + ", shadow off, ...); each ratio is against the `shadow off` of the same round, and the "
        "verdict is taken on the median over the rounds: p99 moves by ±20–30 % between "
        "identical runs on this kind of machine, so one run's p99 proves little",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join(align) + " |",
    ]
    for i, variant in enumerate(SHADOW_VARIANTS):
        if variant.mirror is None:
            continue
        rps, p99 = shadow_round_ratios(by_round, i)
        m_rps, m_p99 = median(rps), median(p99)
        goal, ratio, ok = shadow_target_met(variant, m_rps, m_p99)
        result = "n/a (no data)" if ratio is None else ("PASS" if ok else "FAIL")
        span = lambda v: f"{min(v):.2f}–{max(v):.2f}" if v else "-"
        lines.append("| " + " | ".join([variant.name, str(len(p99)), fmt(m_rps, ".2f"), span(rps),
                                        fmt(m_p99, ".2f"), span(p99), goal, result]) + " |")
    return lines

def plain_problems(row):
    return "; ".join(row.problems) or "0"


def mib(kib, spec=".1f"):
    return fmt(None if kib is None else kib / 1024, spec)


def memory_verdict(row):
    if row.proxy != "strangler":
        return "-", "-"
    goal = f"< {IDLE_KIB_TARGET:g} KiB/conn, idle < {IDLE_RSS_TARGET_MIB:g} MiB"
    per_conn = row.kib_per_conn
    if row.failed or per_conn is None or row.rss_idle is None:
        return goal, "FAIL (run failed)" if row.failed else "n/a (no data)"
    ok = per_conn < IDLE_KIB_TARGET and row.rss_idle / 1024 < IDLE_RSS_TARGET_MIB
    return goal, "PASS" if ok else "FAIL"


def memory_table_lines(rows):
    connections = rows[0].connections if rows else IDLE_CONNECTIONS
    columns = ["proxy", "connections", "idle RSS MiB", "RSS open MiB", "KiB/conn",
               "peak RSS MiB", "RSS closed MiB", "proxy fds", "open s", "errors",
               "target", "result"]
    text_columns = ("proxy", "errors", "target", "result")
    align = ["---" if c in text_columns else "--:" for c in columns]
    lines = [
        f"## Memory per idle keep-alive connection: {connections:,} connections",
        "",
        "- one fresh proxy each, with the main table's configuration (one worker, "
        "backend: the main backend nginx), on the proxy CPU; a Python client "
        "(bench_client.py) on the load CPU opens the connections one after the other, "
        "sends one `GET /` with Host on each and reads the whole response, then keeps "
        "them all open and idle",
        "- RSS: VmRSS summed over the proxy's processes (nginx: master + worker). idle: "
        "the fresh proxy, before any request; open: with every connection open and idle; "
        "KiB/conn: (open − idle) ÷ connections; peak: VmHWM summed, with the connections "
        "open; closed: after the client closed them all. Kernel socket buffers are not "
        "in RSS",
        "- connections: opened and answered, and still open when the RSS was read; "
        "proxy fds: descriptors open in the proxy's processes at that moment (clients, "
        "listener, backend connections, logs); open s: time to open them all",
        f"- target (strangler, issue 6): < {IDLE_KIB_TARGET:g} KiB per idle connection "
        f"and idle RSS < {IDLE_RSS_TARGET_MIB:g} MiB",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join(align) + " |",
    ]
    for row in rows:
        if row.opened is None:
            conns = "-"
        elif row.still_open is not None and row.still_open != row.opened:
            conns = f"{row.still_open:,} of {row.opened:,}"
        else:
            conns = f"{row.opened:,}"
        cells = [row.proxy, conns, mib(row.rss_idle), mib(row.rss_open),
                 fmt(row.kib_per_conn, ".2f"), mib(row.rss_peak), mib(row.rss_closed),
                 fmt(row.fds, ","), fmt(row.open_seconds, ".1f"), plain_problems(row),
                 *memory_verdict(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def size_label(size):
    if size % (1 << 30) == 0:
        return f"{size >> 30} GiB"
    if size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    return f"{size:,} bytes"


def stream_growth(row):
    if row.rss_peak is None or row.rss_start is None:
        return None
    return max(0, row.rss_peak - row.rss_start)


def stream_verdict(row, direct):
    if row.proxy != "strangler":
        return "-", "-"
    goal = (f"≥ {STREAM_RATE_TARGET:.2f}× direct, RSS growth ≤ "
            f"{STREAM_RSS_GROWTH_MIB:g} MiB")
    growth = stream_growth(row)
    if row.failed:
        return goal, "FAIL (run failed)"
    if row.rate is None or direct is None or not direct.rate or growth is None:
        return goal, "n/a (no data)"
    ok = (row.rate / direct.rate >= STREAM_RATE_TARGET
          and growth / 1024 <= STREAM_RSS_GROWTH_MIB)
    return goal, "PASS" if ok else "FAIL"


def stream_table_lines(rows, repeats):
    size = rows[0].size if rows else STREAM_SIZE_MIB << 20
    rates = {(r.direction, r.proxy): r.rate for r in rows if r.rate}
    bases = ("direct", "nginx", "haproxy")
    columns = ["transfer", "proxy", "MB/s", *(f"÷{b}" for b in bases), "MB/s range",
               "RSS at start MiB", "peak RSS MiB", "RSS growth MiB", "VmHWM MiB",
               "proxy core %", "CPU ms/GiB", "longest stall ms", "errors", "target",
               "result"]
    text_columns = ("transfer", "proxy", "MB/s range", "errors", "target", "result")
    align = ["---" if c in text_columns else "--:" for c in columns]
    lines = [
        f"## Streaming: {size_label(size)} download and upload",
        "",
        f"- {repeats} transfer{'s' if repeats > 1 else ''} per row, one after the other "
        "on one connection each, through one fresh proxy (on the proxy CPU); `direct`: "
        "the client straight to the backend. MB/s: 10^6 bytes per second from the "
        "request's first byte to the response's last"
        + (", median of the transfers; MB/s range: slowest–fastest" if repeats > 1 else ""),
        "- client bench_client.py and the backends on the load CPU. download: nginx "
        "(templates/stream-backend-nginx.conf, sendfile) serves a sparse file of that "
        "size from the page cache, the client reads it with 1 MiB recv_into(); upload: "
        "the client sends the body (Content-Length) with 1 MiB sendall(), "
        "upload_sink.py reads it with 1 MiB reads, discards it and answers with the byte "
        "count, which the client checks",
        "- proxies: nginx with templates/proxy-nginx-stream.conf (`proxy_buffering off`, "
        "`proxy_request_buffering off`, `client_max_body_size 0`: it streams instead of "
        "spooling to temp files); HAProxy and strangler with the main table's "
        "configuration (both stream by default)",
        f"- RSS: VmRSS summed over the proxy's processes. at start: after one `GET /`, "
        f"before the first transfer; peak: the highest of the samples taken every "
        f"{RSS_SAMPLE_SECONDS * 1000:.0f} ms during the transfers; growth: peak − start; "
        "VmHWM: the processes' own peak, read after the transfers (it also catches a "
        "spike between samples)",
        "- proxy core %: the proxy's CPU time ÷ transfer time (the highest of the "
        "transfers; near 100 = the proxy was the bottleneck); CPU ms/GiB: the proxy's "
        "CPU time per GiB moved, over all the transfers (does not depend on who was the "
        "bottleneck); longest stall: the longest "
        "single wait of the client for a recv() or send(), time to the first byte "
        "included",
        f"- target (strangler, issue 6): ≥ {STREAM_RATE_TARGET:.2f}× direct and a flat "
        f"RSS (growth ≤ {STREAM_RSS_GROWTH_MIB:g} MiB)",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join(align) + " |",
    ]
    for row in rows:
        ratios = []
        for base in bases:
            base_rate = rates.get((row.direction, base))
            ok = row.rate is not None and base_rate
            ratios.append(f"{row.rate / base_rate:.2f}" if ok else "-")
        spread = (f"{min(row.rates):,.0f}–{max(row.rates):,.0f}"
                  if len(row.rates) > 1 else "-")
        direct = next((r for r in rows if r.direction == row.direction
                       and r.proxy == "direct"), None)
        cells = [f"{row.direction} {size_label(row.size)}", row.proxy,
                 fmt(row.rate, ",.0f"), *ratios, spread,
                 mib(row.rss_start), mib(row.rss_peak), mib(stream_growth(row)),
                 mib(row.rss_hwm), fmt(row.proxy_core_pct, ".0f"),
                 fmt(row.cpu_ms_per_gib, ",.0f"),
                 fmt(None if row.stall_s is None else row.stall_s * 1000, ".0f"),
                 plain_problems(row), *stream_verdict(row, direct)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# --------------------------------------------------------------------------
# Main


def route_bench(strangler_path):
    """ns per routing decision from tests/bench/route_bench in the strangler
    binary's build directory, or (None, why)."""
    exe = Path(strangler_path).resolve().parent.parent / "tests" / "bench" / "route_bench"
    if not exe.is_file():
        return None, f"not built ({exe})"
    try:
        out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"failed: {exc}"
    m = re.search(r"([0-9.]+) ns per request", out)
    return (float(m.group(1)), None) if m else (None, "no result in its output")


def targets_lines(rows, shadow_rounds, memory_rows, stream_rows, route):
    """One line per target of issue 6 that the sections run can judge."""
    lines = ["## Targets (issue 6)", "",
             "- from the tables above; `n/a` where a section did not run or has no numbers",
             "", "| target | measured | result |", "| --- | --- | --- |"]

    def add(target, measured, ok):
        result = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"| {target} | {measured} | {result} |")

    by = {(r.scenario, r.proxy): r for r in rows if r.wrk and not r.failed}
    for sc in PEER_RPS_SCENARIOS:
        me = by.get((sc, "strangler"))
        peers = [by[(sc, p)] for p in ("nginx", "haproxy") if (sc, p) in by]
        if rows and me and peers:
            best = max(peers, key=lambda r: r.wrk.good_rps)
            ratio = me.wrk.good_rps / best.wrk.good_rps if best.wrk.good_rps else None
            add(f"req/s ≥ {PEER_RPS_TARGET:.2f}× the better peer, {sc.name}",
                f"{fmt(ratio, '.2f')}× {best.proxy}", ratio is not None and ratio >= PEER_RPS_TARGET)
            lowest = min(peers, key=lambda r: r.wrk.p99_ms or float("inf"))
            add(f"p99 no higher than the peers', {sc.name}",
                f"{fmt(me.wrk.p99_ms, '.3f')} ms against {fmt(lowest.wrk.p99_ms, '.3f')} "
                f"({lowest.proxy})",
                None if me.wrk.p99_ms is None or lowest.wrk.p99_ms is None
                else me.wrk.p99_ms <= lowest.wrk.p99_ms)
        elif rows:
            add(f"req/s and p99 against the peers, {sc.name}", "-", None)
    me, ng = by.get((SCENARIOS[0], "strangler")), by.get((SCENARIOS[0], "nginx"))
    if me and ng and me.cpu_us_per_req and ng.cpu_us_per_req:
        ratio = me.cpu_us_per_req / ng.cpu_us_per_req
        floor = ("" if ng.kernel_us_per_req is None else
                 f"; nginx's kernel part alone: {ng.kernel_us_per_req:.1f} µs = "
                 f"{ng.kernel_us_per_req / ng.cpu_us_per_req:.2f}× its total")
        add(f"CPU per request ≤ {PEER_CPU_TARGET:.1f}× nginx's, {SCENARIOS[0].name}",
            f"{me.cpu_us_per_req:.1f} against {ng.cpu_us_per_req:.1f} µs ({ratio:.2f}×){floor}",
            ratio <= PEER_CPU_TARGET)
    me, ng = by.get((SCENARIOS[1], "strangler")), by.get((SCENARIOS[1], "nginx"))
    if me and ng and me.rss_mib is not None and ng.rss_mib is not None:
        add(f"peak RSS ≤ nginx's, {SCENARIOS[1].name}",
            f"{me.rss_mib:.1f} against {ng.rss_mib:.1f} MiB", me.rss_mib <= ng.rss_mib)
    me, ng = by.get((CONN_SCENARIO, "strangler")), by.get((CONN_SCENARIO, "nginx"))
    if me and ng and ng.wrk.good_rps:
        ratio = me.wrk.good_rps / ng.wrk.good_rps
        add("a new connection per request: req/s ≥ nginx's", f"{ratio:.2f}× nginx", ratio >= 1.0)
    for row in memory_rows:
        if row.proxy == "strangler":
            goal, result = memory_verdict(row)
            add(f"memory: {goal}", f"{fmt(row.kib_per_conn, '.2f')} KiB/conn, idle "
                f"{mib(row.rss_idle)} MiB", None if result.startswith("n/a") else result == "PASS")
    for direction in STREAM_DIRECTIONS:
        direct = next((r for r in stream_rows if r.direction == direction and r.proxy == "direct"),
                      None)
        for row in stream_rows:
            if row.direction == direction and row.proxy == "strangler":
                goal, result = stream_verdict(row, direct)
                ratio = row.rate / direct.rate if row.rate and direct and direct.rate else None
                growth = stream_growth(row)
                add(f"{direction}: {goal}",
                    f"{fmt(ratio, '.2f')}× direct, RSS growth {mib(growth)} MiB",
                    None if result.startswith("n/a") else result == "PASS")
    if shadow_rounds:
        for i, variant in enumerate(SHADOW_VARIANTS):
            if variant.target is None:
                continue
            rps, p99 = shadow_round_ratios(shadow_rounds, i)
            goal, ratio, ok = shadow_target_met(variant, median(rps), median(p99))
            add(f"{variant.name}: {goal}",
                f"{fmt(ratio, '.2f')} (median of {len(shadow_rounds)} round"
                f"{'s' if len(shadow_rounds) > 1 else ''})", None if ratio is None else ok)
    if route is not None:
        ns, why = route
        add(f"route matching + rollout decision < {ROUTE_TARGET_NS:.0f} ns, 200 routes",
            f"{ns:.0f} ns" if ns is not None else why, None if ns is None else ns < ROUTE_TARGET_NS)
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strangler", type=Path, default=DEFAULT_STRANGLER,
                        help="strangler binary (default: %(default)s)")
    parser.add_argument("--strangler-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a top-level setting added to strangler's configurations, "
                             "e.g. idle_spin_us=25 (repeatable; default: none, its defaults)")
    parser.add_argument("--duration", type=int, default=10, metavar="SECONDS",
                        help="measured seconds per run (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_DURATION} s runs without warm-up, as a smoke check")
    parser.add_argument("--only", metavar="NAME,...",
                        help=f"proxies to run, from {','.join(PROXIES)} (default: all)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="also write the table(s), as markdown, to FILE")
    parser.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS,
                        metavar="N", help="memory section: idle keep-alive connections "
                                          "to hold open (default: %(default)s)")
    parser.add_argument("--stream-size", type=int, metavar="MIB",
                        help=f"streaming section: MiB per transfer (default: "
                             f"{STREAM_SIZE_MIB}, {QUICK_STREAM_SIZE_MIB} with --quick)")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="main table: run every scenario through every proxy N times, "
                             "round after round, and report each row's median "
                             "(default: %(default)s)")
    parser.add_argument("--shadow-rounds", type=int, metavar="N",
                        help=f"shadow section: interleaved rounds of its variants, verdicts "
                             f"on the median ratio (default: {SHADOW_ROUNDS}, 1 with --quick)")
    parser.add_argument("--stream-repeats", type=int, metavar="N",
                        help=f"streaming section: transfers per row, median reported "
                             f"(default: {STREAM_REPEATS}, 1 with --quick)")
    # --shadow, --memory, --streaming: run only the sections named. None of
    # them: the main table and every section, less the --no-* ones.
    for name, what in (("shadow", "the shadow section (strangler without and with "
                                  "shadowing to fast, slow and silent mirrors)"),
                       ("memory", "the memory section (RSS per idle keep-alive "
                                  "connection)"),
                       ("streaming", "the streaming section (big download and upload "
                                     "through each proxy and direct)")):
        section = parser.add_mutually_exclusive_group()
        section.add_argument(f"--{name}", action="store_true",
                             help=f"run {what}; with other section options, those "
                                  "sections only; no main table")
        section.add_argument(f"--no-{name}", action="store_true",
                             help=f"leave out the {name} section")
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1")
    for setting in args.strangler_set:
        key, eq, value = setting.partition("=")
        if not eq or not re.fullmatch(r"[a-z_]+", key.strip()) or not value.strip():
            parser.error(f"--strangler-set {setting!r}: KEY=VALUE, e.g. idle_spin_us=25")
        STRANGLER_SETTINGS.append(f"{key.strip()} = {value.strip()};")
    if args.idle_connections < 1:
        parser.error("--idle-connections must be at least 1")
    if args.stream_size is not None and args.stream_size < 1:
        parser.error("--stream-size must be at least 1")
    if args.stream_repeats is not None and args.stream_repeats < 1:
        parser.error("--stream-repeats must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.shadow_rounds is not None and args.shadow_rounds < 1:
        parser.error("--shadow-rounds must be at least 1")
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - set(PROXIES)
        if unknown or not wanted:
            parser.error(f"--only: unknown {', '.join(sorted(unknown)) or 'empty list'}; "
                         f"choose from {', '.join(PROXIES)}")
        args.proxies = [p for p in PROXIES if p in wanted]
    else:
        args.proxies = list(PROXIES)
    if args.shadow and "strangler" not in args.proxies:
        parser.error("--shadow runs strangler only: leave strangler in --only")
    proxies_only = [p for p in args.proxies if p != "direct"]
    if args.memory and not proxies_only:
        parser.error("--memory measures proxies: put nginx, haproxy or strangler in --only")
    # The main table unless a section was asked for by name; then the sections
    # (asked for, or all of them), less the --no-* ones.
    chosen = args.shadow or args.memory or args.streaming
    args.main_table = not chosen
    args.shadow_section = ("strangler" in args.proxies and not args.no_shadow
                           and (args.shadow or not chosen))
    args.memory_section = (bool(proxies_only) and not args.no_memory
                           and (args.memory or not chosen))
    args.streaming_section = not args.no_streaming and (args.streaming or not chosen)
    args.stream_bytes = (args.stream_size or
                         (QUICK_STREAM_SIZE_MIB if args.quick else STREAM_SIZE_MIB)) << 20
    args.stream_repeats = args.stream_repeats or (1 if args.quick else STREAM_REPEATS)
    args.shadow_rounds = args.shadow_rounds or (1 if args.quick else SHADOW_ROUNDS)
    args.strangler = args.strangler.resolve()
    return args


def check_tools(args):
    # wrk: the main table and the shadow section; haproxy: wherever it is compared.
    needed = ["nginx"]
    if args.main_table or args.shadow_section:
        needed.append("wrk")
    if "haproxy" in args.proxies and (args.main_table or args.memory_section
                                      or args.streaming_section):
        needed.append("haproxy")
    scripts = ([MIRROR_SCRIPT] if args.shadow_section else []) + (
        [CLIENT_SCRIPT] if args.memory_section or args.streaming_section else []) + (
        [SINK_SCRIPT] if args.streaming_section else [])
    for script in scripts:
        if not script.is_file():
            sys.exit(f"bench: missing {script}")
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench: missing tools: {', '.join(missing)} "
                 "(apt-get install nginx-light haproxy wrk)")


def build_release(args):
    """The default binary is the release build (-O3, link-time optimisation),
    as deployed; an older or missing one is brought up to date with meson."""
    if "strangler" not in args.proxies or args.strangler != DEFAULT_STRANGLER.resolve():
        return
    steps = [] if (RELEASE_DIR / "build.ninja").is_file() else [
        ["meson", "setup", str(RELEASE_DIR), *RELEASE_OPTIONS]]
    steps.append(["meson", "compile", "-C", str(RELEASE_DIR), "proxy/strangler",
                  "tests/bench/route_bench"])
    for cmd in steps:
        done = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"bench: {' '.join(cmd)} failed:\n{done.stderr}")


def snapshot_strangler(args, tmp):
    """A private copy of the strangler binary that every run uses, so that a
    rebuild during the benchmark (the binary is missing while it is relinked)
    neither skips runs nor mixes two builds in one report."""
    if "strangler" not in args.proxies or not args.strangler.is_file():
        return args.strangler
    copy = tmp / "bin" / "strangler"
    copy.parent.mkdir()
    try:
        shutil.copy2(args.strangler, copy)
    except OSError as exc:
        log(f"cannot copy {args.strangler}: {exc}; running it in place")
        return args.strangler
    return copy


def main(argv):
    args = parse_args(argv)
    check_tools(args)
    build_release(args)
    install_signal_handlers()
    raise_nofile_limit()
    cpus = choose_cpus()
    duration = QUICK_DURATION if args.quick else args.duration
    warmup = 0 if args.quick else WARMUP_SECONDS
    if "strangler" in args.proxies and not args.strangler.is_file():
        log(f"strangler binary not found at {args.strangler}: skipping strangler "
            "(build it, or pass --strangler PATH)")
    header = header_lines(args, cpus, duration, warmup)

    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as tmp:
        tmp = Path(tmp)
        # nginx workers run as `nobody` when started by root: let them in.
        tmp.chmod(0o755)
        backend_dir = tmp / "backend"
        backend_dir.mkdir()
        strangler = snapshot_strangler(args, tmp)
        backend_port = free_port()
        backend = make_backend(backend_dir, backend_port, cpus.load)
        try:
            with running(backend, backend_port):
                problems = smoke_check(backend_port)
                if problems:
                    raise StartError("backend misbehaves: " + "; ".join(problems))
                settings = Settings(tmp, backend, backend_port, cpus,
                                    duration, warmup, strangler)
                rows = run_all(args.proxies, settings, args.rounds) if args.main_table else []
                shadow_rounds = (run_shadow(settings, args.shadow_rounds)
                                 if args.shadow_section else [])
                memory_rows = (run_memory(args.proxies, settings, args.idle_connections)
                               if args.memory_section else [])
                stream_rows = (run_streaming(args.proxies, settings, args.stream_bytes,
                                             args.stream_repeats)
                               if args.streaming_section else [])
        except StartError as exc:
            log(f"backend FAILED TO START: {exc}\n{backend.log_tail()}")
            return 1

    lines = list(header)
    tables = []
    if args.main_table:
        tables.append(table_lines(rows))
    for k, rows_k in enumerate(shadow_rounds):
        table = shadow_table_lines(rows_k)
        if len(shadow_rounds) > 1:
            table[0] += f" (round {k + 1} of {len(shadow_rounds)})"
            if k:  # the notes once, on the first round's table
                cut = table.index("")
                table = table[:1] + table[table.index("", cut + 1):]
        tables.append(table)
    if len(shadow_rounds) > 1:
        tables.append(shadow_summary_lines(shadow_rounds))
    if memory_rows:
        tables.append(memory_table_lines(memory_rows))
    if stream_rows:
        tables.append(stream_table_lines(stream_rows, args.stream_repeats))
    if "strangler" in args.proxies:
        route = route_bench(args.strangler) if args.main_table else None
        tables.append(targets_lines(rows, shadow_rounds, memory_rows, stream_rows, route))
    for i, table in enumerate(tables):
        lines += ([""] if i else []) + table
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.out:
        args.out.write_text(report)
        log(f"report written to {args.out}")
    # The targets are reported (PASS/FAIL), not enforced: a measurement.
    every_row = rows + [r for rk in shadow_rounds for r in rk] + memory_rows + stream_rows
    return 1 if any(row.failed for row in every_row) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\n[bench] interrupted; daemons stopped, temp files removed",
              file=sys.stderr)
        sys.exit(130)
