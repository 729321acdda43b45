#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds strangler (release,
# as deployed, and with ASan+UBSan), builds the Go and Rust demo services, and
# runs every meson suite (unit, integration, interop, fuzz corpus replay). Exits
# non-zero on any failure. This is the README's second command and what CI runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$(sp_root)"

sp_install_packages
sp_toolchain_env "$PWD/build-check"

echo "==> building strangler"
# The tests run the build operators deploy (docs/operations.md); a warning
# fails them (the README's first command, tests/demo.sh, builds without -Dwerror).
sp_build build-check -Dbuildtype=release -Db_lto=true -Dunit_tests=enabled -Dwerror=true
echo "==> building strangler with ASan+UBSan"
sp_build build-asan -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
	-Dunit_tests=enabled -Dwerror=true
echo "==> building the demo services (Go, Rust)"
bash tests/backends/build.sh "$PWD/build-check/backends"
echo "==> installing the browser driver (npm: playwright-core)"
# Node.js from Debian unless the machine already has one (a NodeSource build,
# for one, would conflict with Debian's npm package).
command -v npm >/dev/null || sp_install_packages nodejs npm
npm ci --prefix tests/dashboard --no-audit --no-fund --loglevel=error >/dev/null

status=0
echo "==> tests"
meson test -C build-check --print-errorlogs --num-processes 2 || status=1
echo "==> tests under ASan+UBSan"
# A small quarantine keeps the proxy's RSS meaningful for the bounded-memory tests.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=4 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	meson test -C build-asan --print-errorlogs --num-processes 2 \
	--suite unit --suite integration --suite fuzz || status=1
[ $status -eq 0 ] && echo "==> all tests passed" || echo "==> FAILED"
exit $status
