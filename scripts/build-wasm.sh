#!/usr/bin/env bash
# Builds the example WebAssembly apps into examples/wasm/build/:
#   counter.wasm           hand-written WAT (needs wat2wasm, Debian package wabt)
#   relay.wasm             hand-written WAT: calls a service of its slice's private registry
#   hello-go.wasm          Go, WASI reactor (-buildmode=c-shared): what a slice runs
#   hello-go-command.wasm  Go, WASI command: main runs once and exits
# It installs nothing: scripts/install-deps.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
command -v wat2wasm >/dev/null || {
	echo "build-wasm: wat2wasm not found (Debian package wabt): run scripts/install-deps.sh" >&2
	exit 1
}
out=examples/wasm/build
mkdir -p "$out"
wat2wasm examples/wasm/counter/counter.wat -o "$out/counter.wasm"
wat2wasm examples/wasm/relay/relay.wat -o "$out/relay.wasm"
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o "$out/hello-go.wasm" ./examples/wasm/hello-go
GOOS=wasip1 GOARCH=wasm go build -o "$out/hello-go-command.wasm" ./examples/wasm/hello-go
for f in "$out"/*.wasm; do
	printf '%8d bytes  %s\n' "$(stat -c %s "$f")" "$f"
done
