#!/usr/bin/env bash
# Installs what the build, tests and demo need on a fresh Debian machine: the Debian packages
# the video tests and demo use (chromium plays the streams, ffmpeg/ffprobe make and check test
# videos, aria2 and curl fetch over HTTP) and the Go modules. It runs on every `make test`, so
# when everything is already there it only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin

# command -> Debian package that provides it.
declare -A pkg_of=(
	[chromium]=chromium
	[ffmpeg]=ffmpeg
	[ffprobe]=ffmpeg
	[aria2c]=aria2
	[curl]=curl
	[wat2wasm]=wabt
)
missing=()
for cmd in chromium ffmpeg ffprobe aria2c curl wat2wasm; do
	command -v "$cmd" >/dev/null 2>&1 && continue
	pkg=${pkg_of[$cmd]}
	[[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
	echo "install-deps: installing Debian packages: ${missing[*]}" >&2
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || {
			echo "install-deps: need root or sudo to install ${missing[*]}" >&2
			exit 1
		}
		sudo=(sudo)
	fi
	if ! command -v apt-get >/dev/null; then
		echo "install-deps: apt-get not found; install ${missing[*]} by hand (Debian is expected)" >&2
		exit 1
	fi
	# env, not export: sudo drops the environment. The lock timeout waits out another apt run
	# (e.g. unattended upgrades on a fresh machine) instead of failing at once.
	apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300)
	# Update once: on a fresh machine the package lists are empty and install finds nothing.
	"${apt[@]}" update ||
		{ echo "install-deps: apt-get update failed" >&2; exit 1; }
	"${apt[@]}" install -y --no-install-recommends "${missing[@]}" ||
		{ echo "install-deps: apt-get install ${missing[*]} failed" >&2; exit 1; }
	for cmd in chromium ffmpeg ffprobe aria2c curl wat2wasm; do
		command -v "$cmd" >/dev/null 2>&1 ||
			{ echo "install-deps: $cmd still missing after installing ${missing[*]}" >&2; exit 1; }
	done
fi

go mod download
