#!/bin/sh
# Builds the libFuzzer harnesses in a separate build directory: clang,
# AddressSanitizer + UndefinedBehaviorSanitizer (aborting on the first
# report), and the whole project compiled with -fsanitize=fuzzer-no-link so
# libFuzzer sees coverage in proxy/ and llhttp, not only in the harness.
#
# Usage: tests/fuzz/build-fuzzers.sh [BUILD_DIR]     (default: build-fuzz)
# Then:  BUILD_DIR/tests/fuzz/fuzz_request-libfuzzer -dict=tests/fuzz/http.dict \
#            NEW_DIR tests/fuzz/corpus/fuzz_request            (see README.md)
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-"$src/build-fuzz"}
harnesses="fuzz_request fuzz_response fuzz_config fuzz_compare fuzz_router fuzz_proxy fuzz_diffreport fuzz_realip"

command -v clang >/dev/null || { echo "build-fuzzers.sh: clang not found" >&2; exit 1; }

if [ ! -f "$dir/build.ninja" ]; then
	CC=clang CFLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" \
		meson setup "$dir" "$src" \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dbuildtype=debugoptimized -Dunit_tests=disabled
fi

targets=""
for h in $harnesses; do
	targets="$targets tests/fuzz/$h tests/fuzz/$h-libfuzzer"
done
# shellcheck disable=SC2086 # one word per target
ninja -C "$dir" $targets

for h in $harnesses; do
	if [ ! -x "$dir/tests/fuzz/$h-libfuzzer" ]; then
		echo "build-fuzzers.sh: $dir/tests/fuzz/$h-libfuzzer was not built" \
		     "(is $dir configured with clang and libclang-rt-dev installed?)" >&2
		exit 1
	fi
done
echo "libFuzzer harnesses in $dir/tests/fuzz/: $(echo $harnesses | sed 's/\([a-z_]*\)/\1-libfuzzer/g')"
