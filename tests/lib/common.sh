# Shared by tests/check.sh and tests/demo.sh: package installation and builds.
# Sourced, not executed.

# Everything strangler, its tests and the demo services need, all from Debian.
SP_PACKAGES="meson ninja-build pkg-config gcc libc6-dev libevent-dev libconfig-dev
 libjansson-dev libssl-dev libcmocka-dev node-llhttp zlib1g-dev python3 python3-pytest
 curl golang-go librust-hyper-dev librust-tokio-dev librust-serde-json-dev
 clang libclang-rt-14-dev valgrind chromium openssl strace libnss-wrapper"

sp_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# Installs the packages that are missing (apt-get, as root or through sudo).
sp_install_packages() {
	local missing=() p
	for p in $SP_PACKAGES "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "==> installing: ${missing[*]}"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends "${missing[@]}" >/dev/null
}

# cargo lives in ~/.cargo/bin on these machines; Go needs a cache directory.
sp_toolchain_env() {
	export PATH="$HOME/.cargo/bin:$PATH"
	export GOCACHE="${GOCACHE:-$1/go-cache}" GOPATH="${GOPATH:-$1/go-path}" GOPROXY=off
	export GOFLAGS="${GOFLAGS:--mod=mod}"
}

# meson setup (once) + compile. $1 build dir, rest: meson options.
sp_build() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >/dev/null || return 1
	fi
	meson compile -C "$dir" >/dev/null || {
		meson compile -C "$dir"
		return 1
	}
}
