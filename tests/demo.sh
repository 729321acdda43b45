#!/usr/bin/env bash
# The demo, in one command: installs what is missing, builds strangler and the
# two demo services (legacy Go, modern Rust), starts all three with
# conf/demo.conf, sends a short burst of sample traffic, prints which backend
# served what per route, and keeps running until Ctrl-C, which stops
# everything it started.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$(sp_root)"

sp_install_packages
sp_toolchain_env "$PWD/build"
echo "==> building strangler"
sp_build build
echo "==> building the demo services"
bash tests/backends/build.sh "$PWD/build/backends"

for port in 8080 9001 9002 9901; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "port $port is already in use on 127.0.0.1; stop what uses it and run again" >&2
		exit 1
	fi
done

logs="$PWD/build/demo"
mkdir -p "$logs"
pids=()
stop_all() {
	trap - INT TERM EXIT
	echo
	echo "==> stopping"
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all INT TERM EXIT

wait_port() {
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "nothing listens on port $1; see $logs/*.log" >&2
	return 1
}

build/backends/legacy-go --listen 127.0.0.1:9001 2>"$logs/legacy-go.log" &
pids+=($!)
build/backends/modern-rust --listen 127.0.0.1:9002 2>"$logs/modern-rust.log" &
pids+=($!)
wait_port 9001
wait_port 9002
build/proxy/strangler -t -c conf/demo.conf
rm -f "$logs/diffs.jsonl" # the shadow diff log (shadow_defaults.diff_log)
# The access log (JSON lines) goes to the log file; other lines also to the terminal.
build/proxy/strangler -c conf/demo.conf 2> >(tee -a "$logs/strangler.log" | grep --line-buffered -v '^{' >&2) &
pids+=($!)
wait_port 8080

echo "==> sample traffic through http://127.0.0.1:8080"
/usr/bin/python3 tests/demo/traffic.py --proxy 127.0.0.1:8080
sleep 2.5 # one summary interval (conf/demo.conf), so the report knows the identical share
echo
echo "==> shadow comparison (strangler diff-report $logs/diffs.jsonl)"
build/proxy/strangler diff-report "$logs/diffs.jsonl"
cat <<MSG

strangler runs on http://127.0.0.1:8080 (logs and access log, appended across runs: $logs/strangler.log).
Dashboard and admin API: http://127.0.0.1:9901/ (its changes are kept in
$logs/state.json across runs of the demo: delete it to start from conf/demo.conf).
Try:
  curl -i http://127.0.0.1:8080/api/users/7
  curl -i -H 'X-User-Id: user-3' http://127.0.0.1:8080/api/orders/1
  build/proxy/strangler explain -c conf/demo.conf -H 'X-User-Id: user-3' GET /api/orders/1
  build/proxy/strangler diff-report $logs/diffs.jsonl
  curl -s -X PATCH -H 'Content-Type: application/json' -d '{"rollout": {"percent": 50}}' http://127.0.0.1:9901/api/routes/orders
Press Ctrl-C to stop everything.
MSG
wait "${pids[2]}"
