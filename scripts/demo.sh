#!/usr/bin/env bash
# make demo: start a small local fleet of real `nanodc node` processes on loopback and show
# them finding each other, measuring RTT, and locating content through the DHT.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/nanodc}
N=${N:-5}
DIR=${DIR:-runs/demo-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$DIR"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Loopback only: no mDNS, UPnP or relays, ports picked by the OS.
cat > "$DIR/fleet.yaml" <<YAML
listen: ["/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"]
mdns: false
nat: {port_map: false, hole_punching: false, relay_client: false, autonat: false}
api: {listen: "127.0.0.1:0"}
ping_interval: 2s
YAML

start_node() { # index isp access_node [bootstrap]
  local i=$1 data="$DIR/node$1"
  mkdir -p "$data"
  "$BIN" node --data "$data" --config "$DIR/fleet.yaml" --isp "$2" --access-node "$3" \
    ${4:+--bootstrap "$4"} >"$data/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$data/api.addr" ] && return 0; sleep 0.1; done
  echo "node $i did not start:"; cat "$data/log"; exit 1
}

echo "== starting $N gateways on loopback (data in $DIR)"
start_node 0 isp-a dslam-a1
SEED=$("$BIN" node status --data "$DIR/node0" --json | sed -n 's/.*"\(\/ip4\/[^"]*quic-v1[^"]*\)".*/\1/p' | head -1)
echo "seed: $SEED"
for i in $(seq 1 $((N - 1))); do
  if [ $((i % 2)) -eq 0 ]; then isp=isp-a; else isp=isp-b; fi
  start_node "$i" "$isp" "dslam-$isp-$((i % 3))" "$SEED"
done

echo "== waiting for every DHT routing table to fill"
for i in $(seq 0 $((N - 1))); do
  for _ in $(seq 100); do
    rt=$("$BIN" node status --data "$DIR/node$i" --json | sed -n 's/.*"routing_table_size": \([0-9]*\).*/\1/p')
    [ "${rt:-0}" -ge $((N - 2)) ] && break
    sleep 0.2
  done
  echo "node$i: routing table $rt peers"
done
sleep 2 # let a ping round measure RTTs

echo; echo "== node1 status"; "$BIN" node status --data "$DIR/node1"
echo; echo "== node1 peers (nearest first)"; "$BIN" node peers --data "$DIR/node1"

CID=bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy
echo; echo "== node$((N - 1)) provides $CID"
"$BIN" node provide "$CID" --data "$DIR/node$((N - 1))" >/dev/null
echo "== node1 looks it up"
"$BIN" node providers "$CID" --data "$DIR/node1" | tee "$DIR/providers.txt"
want=$("$BIN" node status --data "$DIR/node$((N - 1))" --json | sed -n 's/.*"peer_id": "\([^"]*\)".*/\1/p')
grep -q "$want" "$DIR/providers.txt" || { echo "FAIL: provider not found"; exit 1; }

echo; echo "== stopping the fleet (SIGINT)"
cleanup
trap - EXIT
for i in $(seq 0 $((N - 1))); do grep -q "node stopped" "$DIR/node$i/log" || { echo "node$i did not stop cleanly"; exit 1; }; done
echo "demo OK: $N gateways found each other, measured RTTs and located content via the DHT"
