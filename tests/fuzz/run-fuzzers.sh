#!/bin/sh
# Runs the libFuzzer harnesses that build-fuzzers.sh built, one after the
# other, each for SECONDS, starting from the committed corpus. What they find
# stays in the build directory, under fuzz-out/<harness>/:
#   corpus/        inputs libFuzzer kept (new coverage); the committed corpus
#                  is only read
#   crash-*, leak-*, timeout-*, oom-*   inputs that failed (see README.md)
#   fuzz.log       libFuzzer's output (exec/s, coverage)
#   replay.log     the kept inputs replayed in one process (leaks show here)
# pick-new.py then chooses a few of the new inputs for the committed corpus.
#
# Usage: tests/fuzz/run-fuzzers.sh [-t SECONDS] [-b BUILD_DIR] [HARNESS...]
# Checks for bugs already reported can be silenced with SP_FUZZ_KNOWN=id,...
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
fz="$src/tests/fuzz"
dir="$src/build-fuzz"
secs=60
while getopts t:b: opt; do
	case $opt in
	t) secs=$OPTARG ;;
	b) dir=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
harnesses=${*:-fuzz_request fuzz_response fuzz_config fuzz_compare fuzz_router fuzz_proxy fuzz_diffreport fuzz_realip}

for h in $harnesses; do
	# libconfig leaks on most syntax errors (lsan.supp): suppressed, but
	# each one still costs libFuzzer a full leak scan (40x slower), so
	# fuzz_config checks leaks once, in the replay below, instead.
	leaks=1
	case $h in
	fuzz_request | fuzz_response | fuzz_router | fuzz_proxy | fuzz_realip) dict=http.dict ;;
	fuzz_config) dict=config.dict leaks=0 ;;
	fuzz_compare | fuzz_diffreport) dict=json.dict ;;
	*) echo "run-fuzzers.sh: unknown harness $h" >&2; exit 2 ;;
	esac
	bin="$dir/tests/fuzz/$h-libfuzzer"
	[ -x "$bin" ] || { echo "run-fuzzers.sh: $bin missing: run build-fuzzers.sh" >&2; exit 1; }
	out="$dir/fuzz-out/$h"
	mkdir -p "$out/corpus"
	echo "$h: fuzzing for ${secs}s, log in $out/fuzz.log"
	LSAN_OPTIONS="suppressions=$fz/lsan.supp" \
		"$bin" -dict="$fz/$dict" -max_total_time="$secs" -rss_limit_mb=2048 \
		-timeout=10 -detect_leaks=$leaks -print_final_stats=1 -artifact_prefix="$out/" \
		"$out/corpus" "$fz/corpus/$h" >"$out/fuzz.log" 2>&1 || true
	grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' \
		"$out/fuzz.log" | sed "s/^/  /" || true
	# Every kept input once more in one process: LeakSanitizer at exit.
	if ! LSAN_OPTIONS="suppressions=$fz/lsan.supp" "$dir/tests/fuzz/$h" "$out/corpus" \
		>/dev/null 2>"$out/replay.log"; then
		echo "  replaying $out/corpus failed: see $out/replay.log"
	fi
	ls "$out" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | sed "s|^|  found: $out/|" || true
done
