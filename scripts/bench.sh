#!/usr/bin/env bash
# make bench: runs the benchmarks whose figures docs/BENCHMARKS.md records, and prints the
# median of COUNT runs for each reported metric. Raw output is kept in runs/bench-*/.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-5}
OUT=runs/bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"

median() { # reads "name value unit" lines, prints the median per name+unit (POSIX awk)
  awk '{print $1"|"$3, $2}' | sort -k1,1 -k2,2g |
    awk '{if ($1 != k) {flush(); k=$1; n=0} v[++n]=$2} END {flush()}
         function flush(  m, p) {if (n == 0) return; m = (n % 2) ? v[(n+1)/2] : (v[n/2]+v[n/2+1])/2;
           split(k, p, "|"); printf "%-45s %12.3f %s  (n=%d)\n", p[1], m, p[2], n}'
}

run() { # package, bench regexp, benchtime
  echo "== go test $1 -bench '$2' -benchtime $3 -count $COUNT" | tee -a "$OUT/raw.txt"
  go test "$1" -run '^$' -bench "$2" -benchtime "$3" -count "$COUNT" -benchmem | tee -a "$OUT/raw.txt" |
    awk '/^Benchmark/ {for (i=3; i<=NF; i+=2) if ($(i+1) !~ /^(ns\/op|B\/op|allocs\/op)$/) print $1, $i, $(i+1)}' | median
}

run ./overlay 'Connect' 30x
run ./overlay 'StartToRoutable' 20x
run ./overlay 'IdleFleet' 1x
run ./emulator/vnet 'PacketForwarding|IdleHosts' 1s
# Slices and WebAssembly apps (issue 5; needs wat2wasm, from scripts/install-deps.sh).
run ./node/slice 'IdleSliceMemory' 1x
run ./node/slice 'ProbeSlice|ProbePolling|ProbeOverOverlay|InstallToRunning' 1s
run ./node/slice/wasm '.' 1s

# Idle daemon: a real `nanodc node` process with one peer, after it has settled.
echo "== idle daemon (real process, one peer, 20 s settle)"
go build -o "$OUT/nanodc" ./cmd/nanodc
cat > "$OUT/node.yaml" <<YAML
listen: ["/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"]
mdns: false
nat: {port_map: false, hole_punching: false, relay_client: false, autonat: false}
api: {listen: "127.0.0.1:0"}
YAML
"$OUT/nanodc" node --data "$OUT/a" --config "$OUT/node.yaml" 2>"$OUT/a.log" & A=$!
"$OUT/nanodc" node --data "$OUT/b" --config "$OUT/node.yaml" 2>"$OUT/b.log" & B=$!
trap 'kill -INT $A $B 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$OUT/a/api.addr" ] && [ -s "$OUT/b/api.addr" ] && break; sleep 0.1; done
SEED=$("$OUT/nanodc" node status --data "$OUT/a" --json | sed -n 's/.*"\(\/ip4\/[^"]*quic-v1[^"]*\)".*/\1/p' | head -1)
kill -INT $B; wait $B || true
"$OUT/nanodc" node --data "$OUT/b" --config "$OUT/node.yaml" --bootstrap "$SEED" 2>"$OUT/b.log" & B=$!
for _ in $(seq 100); do [ -s "$OUT/b/api.addr" ] && break; sleep 0.1; done
sleep 20
rss=$(awk '/VmRSS/ {print $2/1024}' /proc/$B/status)
gor=$(curl -s -H "Authorization: Bearer $(cat "$OUT/b/api-token")" "http://$(cat "$OUT/b/api.addr")/metrics" | awk '/^go_goroutines / {print $2}')
cpu=$(awk '{print ($14+$15)/100}' /proc/$B/stat)
printf '%-45s %12.1f MB\n' "idle daemon RSS" "$rss"
printf '%-45s %12d\n' "idle daemon goroutines" "$gor"
printf '%-45s %12.2f s (over ~21 s of life)\n' "idle daemon CPU time" "$cpu"
echo "raw output: $OUT/raw.txt"
