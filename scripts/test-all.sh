#!/usr/bin/env bash
# Runs filterd's whole test suite. As root it first installs what the kernel
# tests need from Debian's packages (apt-get update once, then install).
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs="iptables iproute2 tcpdump hping3 conntrack curl netcat-openbsd ethtool python3"
if [ "$(id -u)" = 0 ]; then
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
export PATH="/usr/local/go/bin:$PATH"
go vet ./...
go test -race -count=1 -timeout 20m ./...
