#!/usr/bin/env bash
# Build strangler's two demo backends, offline:
#   OUTDIR/legacy-go    (Go 1.19, standard library only)
#   OUTDIR/modern-rust  (hyper 0.14 + tokio from Debian's librust-*-dev crates)
# Caches (Go build cache, Cargo target dir) live under OUTDIR/.cache, so the
# source tree stays clean and a second run takes well under a second.
# Needs: golang-go, librust-hyper-dev, librust-tokio-dev, librust-serde-json-dev,
# and cargo (e.g. ~/.cargo/bin). Silent on success; non-zero exit on failure.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
trap 'echo "tests/backends/build.sh: build failed (line $LINENO)" >&2' ERR

# cargo/rustc are installed by rustup under ~/.cargo/bin, not on PATH for
# non-login shells.
for d in "${CARGO_HOME:-}/bin" "${HOME:-/root}/.cargo/bin" /root/.cargo/bin; do
    if [ -d "$d" ]; then PATH="$d:$PATH"; fi
done
export PATH

# ---- legacy-go: stdlib only, no module downloads, no VCS stamping (a fresh
# clone owned by another user would make `git status` fail inside go build).
# Runs in the background, alongside cargo (cold: ~15 s each, ~25 s together).
(
    cd "$here/legacy-go" || exit 1
    export GOCACHE="$out/.cache/go-build" GOPATH="$out/.cache/gopath" \
        GOPROXY=off GOFLAGS= GO111MODULE=on GOENV=off CGO_ENABLED=0 GOWORK=off
    go build -trimpath -buildvcs=false -o "$out/legacy-go" .
) &
go_pid=$!

# ---- modern-rust: .cargo/config.toml in that directory swaps crates.io for
# /usr/share/cargo/registry and sets offline mode; cargo reads it from the
# current directory, hence the cd.
rust_rc=0
(
    cd "$here/modern-rust" || exit 1
    cargo build --release --offline --quiet --target-dir "$out/.cache/cargo-target"
) || rust_rc=$?
go_rc=0
wait "$go_pid" || go_rc=$?
if [ "$go_rc" -ne 0 ] || [ "$rust_rc" -ne 0 ]; then
    echo "tests/backends/build.sh: build failed (legacy-go exit $go_rc, modern-rust exit $rust_rc)" >&2
    exit 1
fi
bin="$out/.cache/cargo-target/release/modern-rust"
if ! cmp -s "$bin" "$out/modern-rust"; then
    cp "$bin" "$out/modern-rust.tmp"
    mv -f "$out/modern-rust.tmp" "$out/modern-rust"
fi
