#!/usr/bin/env bash
# Smoke test for the demo backends built by build.sh: starts OUTDIR/legacy-go
# and OUTDIR/modern-rust on free loopback ports, checks every endpoint with
# curl, stops them. Prints "N passed, N failed"; exits non-zero on a failure.
set -u
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR   (after tests/backends/build.sh OUTDIR)" >&2
    exit 2
fi
out="$(cd "$1" && pwd)" || exit 2
tmp="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL [$svc] $*" >&2; }

# start NAME -> sets $addr (HOST:PORT from the startup line)
start() {
    "$out/$1" --listen 127.0.0.1:0 </dev/null >/dev/null 2>"$tmp/$1.err" &
    pids+=($!)
    addr=""
    for _ in $(seq 100); do
        addr="$(sed -n 's|.* listening on http://||p' "$tmp/$1.err")"
        [ -n "$addr" ] && return 0
        sleep 0.05
    done
    echo "$1 did not start: $(cat "$tmp/$1.err")" >&2
    exit 1
}

# req ARGS... : status code in $code, body in $tmp/body, headers in $tmp/hdr
req() { code="$(curl -sS -o "$tmp/body" -D "$tmp/hdr" -w '%{http_code}' "$@")" || code="curl-error"; }

# expect NAME CODE [BODY-SUBSTRING...]
expect() {
    local name="$1" want="$2"
    shift 2
    if [ "$code" != "$want" ]; then bad "$name: status $code, want $want"; return; fi
    if ! grep -qi "^x-served-by: $svc" "$tmp/hdr"; then bad "$name: no X-Served-By: $svc"; return; fi
    local s
    for s in "$@"; do
        if ! grep -qF -- "$s" "$tmp/body"; then bad "$name: body lacks $s: $(head -c 300 "$tmp/body")"; return; fi
    done
    ok
}

head -c 100000 /dev/zero | tr '\0' 'z' >"$tmp/100k"

for svc in legacy-go modern-rust; do
    start "$svc"
    u="http://$addr"

    req "$u/health"; expect health 200 "\"service\":\"$svc\"" '"status":"ok"'
    req "$u/api/users"; expect users 200 '"id":5' '"email":"user1@example.com"'
    req "$u/api/users/7"; expect user7 200 '"name":"user-7"' '"email":"user7@example.com"'
    req "$u/api/users/abc"; expect user-abc 400 '"error"'
    req "$u/api/users/1001"; expect user-1001 404 '"error"'
    req "$u/api/users/0"; expect user-0 404 '"error"'
    req "$u/api/orders"; expect orders 200 '"id":3'
    req "$u/api/orders/4"; expect order4 200 '"total":42.5' '"status":"shipped"' '"currency":"EUR"'
    if grep -qE '"created_at":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"' "$tmp/body"; then ok; else bad "created_at format"; fi
    req -H 'Content-Type: application/json' -d '{"user_id":3,"total":20}' "$u/api/orders"
    expect post-order 201 '"id":1001' '"user_id":3' '"total":20,' '"status":"pending"'
    req -d 'not json' "$u/api/orders"; expect post-bad 400 '"error"'
    # key order differs (Go: id,title,score; Rust: id,score,title); check pieces
    req "$u/api/search?q=Red"; expect search-Red 200 '"Red Shoes"' '"Dark Red Sweater"' '0.93' '0.76'
    req "$u/api/search?q=red"
    if [ "$svc" = legacy-go ]; then
        expect search-red 200 '"Red Shoes"' '"Red Scarf"'
    else
        expect search-red-bug 200 '"results":[]' # the deliberate case-sensitivity bug
    fi
    req -X PUT -H 'X-Test: one' -H 'X-Test: two' --data-binary 'hello' "$u/echo/x?a=1"
    expect echo 200 '"method":"PUT"' '"path":"/echo/x?a=1"' '"x-test":"one, two"' '"body":"hello"' '"body_bytes":5'
    req -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/100k" "$u/echo"
    expect echo-chunked-100k 200 '"transfer-encoding":"chunked"' '"body":""' '"body_bytes":100000'
    code="$(curl -sS -v -o "$tmp/body" -w '%{http_code}' -H 'Expect: 100-continue' \
        --data-binary @"$tmp/100k" "$u/echo" 2>"$tmp/hdr")"
    if [ "$code" = 200 ] && grep -q '^< HTTP/1.1 100 Continue' "$tmp/hdr" && grep -qF '"body_bytes":100000' "$tmp/body"; then
        ok
    else
        bad "echo 100-continue: $code"
    fi
    req --raw "$u/stream?chunks=3&size=4"
    if [ "$code" = 200 ] && grep -qi '^transfer-encoding: chunked' "$tmp/hdr" && ! grep -qi '^content-length' "$tmp/hdr" &&
        [ "$(tr -d '\r' <"$tmp/body")" = "$(printf '4\nxxxx\n4\nxxxx\n4\nxxxx\n0\n')" ]; then
        ok
    else
        bad "stream: $code $(head -c 100 "$tmp/body" | od -c | head -3)"
    fi
    req "$u/bytes?n=1000000"
    if [ "$code" = 200 ] && grep -qi '^content-length: 1000000' "$tmp/hdr" && [ "$(tr -d b <"$tmp/body" | wc -c)" = 0 ] &&
        [ "$(wc -c <"$tmp/body")" = 1000000 ]; then ok; else bad "bytes: $code"; fi
    req "$u/status/418"; expect status-418 418 '{"status":418}'
    req "$u/status/204"; expect status-204 204
    [ -s "$tmp/body" ] && bad "status 204 has a body"
    req "$u/nope"; expect not-found 404 '{"error":"not found"}'
    t="$(curl -sS -o /dev/null -w '%{time_total}' "$u/health?delay_ms=200")"
    if awk "BEGIN{exit !($t >= 0.2)}"; then ok; else bad "delay_ms=200 took $t s"; fi
    if curl -sS -v -o /dev/null "$u/health" -o /dev/null "$u/api/users/1" 2>&1 | grep -q 'Re-using existing connection'; then
        ok
    else
        bad "keep-alive: connection not reused"
    fi
done

echo "backends: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
