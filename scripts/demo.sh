#!/usr/bin/env bash
# make demo, part 1: a small local fleet of real `nanodc node` processes on loopback: they find
# each other, measure RTT and locate content through the DHT; then a video provider publishes
# a clip, pushes it to two gateways, and a third gateway streams it from them with the origin
# switched off. (Part 2, in the Makefile, is the emulated flash crowd.)
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
vod: {enabled: true, listen: "127.0.0.1:0"}
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

echo; echo "== video provider: key, a 20 s clip, origin, signed catalog"
ffmpeg -v error -y -f lavfi -i testsrc2=size=426x240:rate=25 -f lavfi -i sine=frequency=440 -t 20 \
  -c:v libx264 -preset ultrafast -b:v 600k -g 25 -c:a aac -b:a 64k -movflags +faststart "$DIR/clip.mp4"
mkdir -p "$DIR/media" && mv "$DIR/clip.mp4" "$DIR/media/"
"$BIN" vod keygen --out "$DIR/provider.key"
"$BIN" vod origin --dir "$DIR/media" --listen 127.0.0.1:0 >"$DIR/origin.log" 2>&1 &
ORIGIN_PID=$!; pids+=($ORIGIN_PID)
for _ in $(seq 50); do ORIGIN=$(sed -n 's/.*origin serving HTTP" addr=\(127[0-9.:]*\).*/\1/p' "$DIR/origin.log"); [ -n "$ORIGIN" ] && break; sleep 0.1; done
"$BIN" vod publish "$DIR/media/clip.mp4" --key "$DIR/provider.key" --origin "http://$ORIGIN/" --catalog "$DIR/catalog"
echo; echo "== the provider pushes the clip to 2 gateways in different neighbourhoods"
# Gateways announce themselves within 10 s of starting: retry until two are found.
for _ in $(seq 30); do
  "$BIN" vod push clip.mp4 --replicas 2 --catalog "$DIR/catalog" --key "$DIR/provider.key" \
    --bootstrap "$SEED" --listen /ip4/127.0.0.1/udp/0/quic-v1 --timeout 60s --json >"$DIR/push.json" 2>"$DIR/push.err" && break
  sleep 1
done
grep -q '"status": "ok"' "$DIR/push.json" || { echo "FAIL: push"; cat "$DIR/push.err"; exit 1; }
sed -n 's/.*"peer_id": "\([^"]*\)".*/  replica \1/p; s/.*"access_node": "\([^"]*\)".*/    at \1/p' "$DIR/push.json"
# The viewer is a gateway that is not a replica: it has nothing of the clip.
VIEWER=
for i in $(seq $((N - 1)) -1 0); do
  id=$("$BIN" node status --data "$DIR/node$i" --json | sed -n 's/.*"peer_id": "\([^"]*\)".*/\1/p')
  grep -q "$id" "$DIR/push.json" || { VIEWER=$i; break; }
done
"$BIN" vod add clip.mp4 --catalog "$DIR/catalog" --data "$DIR/node$VIEWER"
echo "== origin switched off; node$VIEWER (not a replica) streams the clip from its peers"
kill "$ORIGIN_PID"
wait "$ORIGIN_PID" 2>/dev/null || true # off means off: its graceful shutdown has ended
VOD=$("$BIN" node status --data "$DIR/node$VIEWER" --json | sed -n '/"vod"/,/}/s/.*"addr": "\([^"]*\)".*/\1/p')
ffprobe -v error -show_entries format=duration,format_name:stream=codec_name,width,height -of compact "http://$VOD/vod/clip.mp4"
curl -sf -o "$DIR/streamed.mp4" "http://$VOD/vod/clip.mp4"
cmp "$DIR/streamed.mp4" "$DIR/media/clip.mp4" && echo "streamed copy is byte-identical ($(stat -c %s "$DIR/streamed.mp4") bytes)"
curl -sf -H "Range: bytes=1000-1999" "http://$VOD/vod/clip.mp4" | cmp - <(tail -c +1001 "$DIR/media/clip.mp4" | head -c 1000) && echo "range request OK"
TOKEN=$(cat "$DIR/node$VIEWER/api-token"); API=$(cat "$DIR/node$VIEWER/api.addr")
curl -sf -H "Authorization: Bearer $TOKEN" "http://$API/api/v1/vod/stats" >"$DIR/viewer-stats.json"
sed -n 's/^  "\(origin_bytes\|peer_bytes\|strategy\)": \(.*\),$/  \1: \2/p' "$DIR/viewer-stats.json"
grep -q '^  "origin_bytes": 0,' "$DIR/viewer-stats.json" || { echo "FAIL: the viewer fetched from the origin"; exit 1; }

echo; echo "== stopping the fleet (SIGINT)"
cleanup
trap - EXIT
for i in $(seq 0 $((N - 1))); do grep -q "node stopped" "$DIR/node$i/log" || { echo "node$i did not stop cleanly"; exit 1; }; done
echo "demo OK: $N gateways found each other, measured RTTs, located content via the DHT and streamed a pushed clip from peers"
