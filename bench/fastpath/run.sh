#!/usr/bin/env bash
# Fastpath lab benchmark: LB packets and CPU time per 1 MB upload with the VIPs' fastpath off and on.
# Usage: bench/fastpath/run.sh [-conns 100] [-size 1048576] [-rounds 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
exec go run ./bench/fastpath "$@"
