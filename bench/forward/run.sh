#!/usr/bin/env bash
# Small-packet forwarding benchmark: Sluice (AF_PACKET, AF_XDP) vs nftables DNAT.
# Usage: bench/forward/run.sh [-duration 5s] [-rates 100k,150k,200k,300k,max] [-io afpacket,afxdp]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
exec go run ./bench/forward "$@"
