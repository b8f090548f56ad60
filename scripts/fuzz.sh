#!/usr/bin/env bash
# Runs every Fuzz target in the module for a while each: scripts/fuzz.sh [duration]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-30s}
for pkg in $(go list ./...); do
  for f in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "== $pkg $f"
    go test "$pkg" -run '^$' -fuzz "^$f\$" -fuzztime "$T" -fuzzminimizetime 2s
  done
done
