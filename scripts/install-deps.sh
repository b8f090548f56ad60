#!/usr/bin/env bash
# Installs what the build, tests and demo need on a fresh machine: Go modules now; Debian
# packages (chromium, ffmpeg, ...) join this list as the features that use them land.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
go mod download
