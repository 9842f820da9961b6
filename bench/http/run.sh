#!/usr/bin/env bash
# HTTP lab benchmark: wrk against direct, Sluice (GUE and full-NAT), nftables DNAT and HAProxy.
# Usage: bench/http/run.sh [-duration 10s] [-io afpacket,afxdp] [-close=false]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh --bench
exec go run ./bench/http "$@"
