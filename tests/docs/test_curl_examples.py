"""The admin API calls shown in the docs work as written: every `curl` line of
docs/operations.md runs against a proxy started from conf/demo.conf (the
address 127.0.0.1:9901 swapped for a free port, a `| jq` filter dropped when jq
is not installed), and must succeed and change what it says it changes."""
import json
import os
import re
import shutil
import socket
import subprocess
import time

SRC = os.environ.get("STRANGLER_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("STRANGLER", os.path.join(SRC, "build", "proxy", "strangler"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl_lines(path):
    text = open(path).read()
    return [l.strip() for l in re.findall(r"^curl .*$", text, re.M)]


def test_operations_curl_examples_run(tmp_path):
    lines = curl_lines(os.path.join(SRC, "docs", "operations.md"))
    assert len(lines) >= 4, "the admin examples moved: update this test"
    admin, port = free_port(), free_port()
    conf = open(os.path.join(SRC, "conf", "demo.conf")).read()
    conf = conf.replace("127.0.0.1:9901", "127.0.0.1:%d" % admin)
    conf = conf.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
    conf = conf.replace('"build/demo/diffs.jsonl"', '"%s"' % (tmp_path / "diffs.jsonl"))
    conf = conf.replace('"build/demo/state.json"', '"%s"' % (tmp_path / "state.json"))
    assert "build/demo/" not in conf, "a demo path this test would write into the tree"
    (tmp_path / "demo.conf").write_text(conf)
    err = open(tmp_path / "err", "wb")
    proc = subprocess.Popen([BINARY, "-c", str(tmp_path / "demo.conf")], stderr=err)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", admin), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "err").read_text()
                time.sleep(0.05)
        outputs = []
        for line in lines:
            cmd = line.replace("127.0.0.1:9901", "127.0.0.1:%d" % admin)
            if "| jq" in cmd and not shutil.which("jq"):
                cmd = cmd.split("| jq")[0]
            cmd = cmd.replace("curl -s", "curl -s --fail", 1)  # an HTTP error fails the step
            r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True,
                               text=True, timeout=10)
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
            outputs.append(r.stdout)
        patched = json.loads(outputs[0])
        assert patched["rollout"]["percent"] == 50 and patched["override"] is not None
        deleted = json.loads(outputs[2])
        assert deleted["rollout"]["percent"] == 25 and deleted["override"] is None
        # the drain of a server, and its end (the answer's .servers[0].drained)
        drains = [o for l, o in zip(lines, outputs) if '"drain":' in l]
        assert [json.loads(o) if shutil.which("jq") else json.loads(o)["servers"][0]["drained"]
                for o in drains] == [True, False], drains
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
