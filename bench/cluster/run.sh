#!/usr/bin/env bash
# Cluster benchmarks (internal/cluster), each beside a baseline measured in
# the same run: replicated inserts per second per node over the in-memory
# transport and over loopback UDP (baseline: the same inserts into one local
# table); query and publish round trips over loopback UDP (baseline: a bare
# UDP echo between two sockets); memory per replicated entry (baseline: a Go
# map of the same entries). Then the 64-node simulation.
#
# With --lab (root; the lab's tools from make deps) it runs instead the
# owner-chains scenario in network namespaces: three LB nodes behind BIRD,
# 300 long-lived connections, two backends added while an LB node is killed,
# and reports how long the moved flows' first packets were held for their
# chains' answers, against the same schedule without the cluster
# (connections broken).
#
# Usage: bench/cluster/run.sh [count] [flows]   (default 3 runs, 1000000 flows)
#        bench/cluster/run.sh --lab [count]      (default 3 runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = --lab ]; then
	for i in $(seq "${2:-3}"); do
		go test -count=1 -v -timeout 10m -run '^TestE2EOwnerChains(ControlNoCluster)?$' ./test/e2e |
			grep -E 'held-packet wait|asked their chains|without the cluster:|broken per phase|^--- '
	done
	exit 0
fi
count=${1:-3}
flows=${2:-1000000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run='^$' -count="$count" -benchtime=200000x -bench='^Benchmark(InsertsMem|InsertsUDP)$' ./internal/cluster | tee -a "$out" >/dev/null
go test -run='^$' -count="$count" -benchtime=20000x -bench='^BenchmarkRoundTripUDP$' ./internal/cluster | tee -a "$out" >/dev/null
go test -run='^$' -count=1 -benchtime=1x -bench='^BenchmarkMemoryPerEntry$' ./internal/cluster | tee -a "$out" >/dev/null

grep -m1 '^cpu:' "$out" || true
# Median of every reported metric per benchmark.
awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 3; i < NF; i += 2) { key = name " " $(i+1); v[key] = v[key] " " $i }
}
END {
	for (k in v) {
		n = split(substr(v[k], 2), a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		printf "%-60s %14s  (median of %d)\n", k, a[int((n + 1) / 2)], n
	}
}' "$out" | sort
echo "goals: inserts/s/node >= 125000; query_p99_us < 500; bytes/entry <= 64"
echo
go run ./cmd/sluice sim cluster --nodes 64 --replicas 3 --flows "$flows"
