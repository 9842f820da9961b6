#!/usr/bin/env bash
# The pipeline's stages, measured in one run: the cost of each stage on a
# new flow's first packet (a flow-table miss runs every stage) for each
# forwarding mode (gue, ipip, nat), and the cost of an established packet
# (a hit) of each mode with its ratio to GUE. Each figure is the median of
# the runs (BenchmarkStages and BenchmarkHitModes time their workers in
# alternating rounds, so every ratio compares the same machine state).
#
# Usage: bench/stages.sh [count]   (default 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run='^$' -benchmem -count="$count" -benchtime=50000x \
	-bench='^(BenchmarkStages|BenchmarkHitModes)$' ./internal/datapath | tee "$out" >/dev/null

grep -m1 '^cpu:' "$out" || true
awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
	for (i = 3; i < NF; i += 2) v[name "|" $(i+1)] = v[name "|" $(i+1)] " " $i
}
function median(s,   a, n, i, j, t) {
	n = split(s, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
END {
	split("parse+link nat_reply classify firewall balance nat_bind route encapsulate miss", st, " ")
	printf "\nmiss: ns per packet by stage (median of runs)\n%-12s %8s %8s %8s\n", "stage", "gue", "ipip", "nat"
	for (k = 1; k <= 9; k++) {
		printf "%-12s", st[k]
		split("gue ipip nat", m, " ")
		for (j = 1; j <= 3; j++) printf " %8.1f", median(v["Stages/" m[j] "|" st[k] "-ns"])
		printf "\n"
	}
	printf "\nhit: ns per packet (median of runs)\n"
	printf "%-12s %8.1f\n%-12s %8.1f  (ipip/gue %.2f)\n%-12s %8.1f  (nat/gue %.2f, goal <= 1.2)\n",
		"gue", median(v["HitModes|gue-ns"]), "ipip", median(v["HitModes|ipip-ns"]), median(v["HitModes|ipip/gue"]),
		"nat", median(v["HitModes|nat-ns"]), median(v["HitModes|nat/gue"])
}' "$out"
