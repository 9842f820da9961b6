#!/usr/bin/env bash
# Datapath benchmarks, reported against a baseline measured in the same run.
#
# The baseline is BenchmarkBaselineLink: the in-memory link stamping a frame
# into a buffer and taking it back, with no processing — what a NIC and its
# driver cost a real datapath. "datapath ns" is the median forwarding cost
# minus the median baseline; "x baseline" is the ratio of the two medians.
# Also reported: the median of each tracked component benchmark.
#
# Usage: bench/datapath.sh [count]   (default 5 runs of each benchmark)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run='^$' -benchmem -count="$count" -benchtime=2000000x \
	-bench='^(BenchmarkForwardEstablished|BenchmarkForwardEstablishedHot|BenchmarkForwardEstablishedChained|BenchmarkForwardSYN|BenchmarkBaselineLink)$' \
	./internal/datapath | tee -a "$out" >/dev/null
go test -run='^$' -benchmem -count="$count" -bench='^BenchmarkParse$' ./internal/packet | tee -a "$out" >/dev/null
go test -run='^$' -benchmem -count="$count" -bench='^BenchmarkMaglevBuild$' ./internal/maglev | tee -a "$out" >/dev/null
go test -run='^$' -benchmem -count="$count" -bench='^BenchmarkEncap$' ./internal/encap | tee -a "$out" >/dev/null

grep -m1 '^cpu:' "$out" || true
awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 2; i <= NF; i++) if ($(i+1) == "ns/op") { v[name] = v[name] " " $i; break }
	for (i = 2; i <= NF; i++) if ($(i+1) == "allocs/op") allocs[name] = $i
}
function median(s,   a, n, i, j, t) {
	n = split(s, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
END {
	base = median(v["BenchmarkBaselineLink"])
	printf "\n%-34s %10s %12s %11s %7s\n", "benchmark", "median ns", "datapath ns", "x baseline", "allocs"
	printf "%-34s %10.1f %12s %11s %7s\n", "BenchmarkBaselineLink", base, "-", "1.00", allocs["BenchmarkBaselineLink"]
	split("BenchmarkForwardEstablishedHot BenchmarkForwardEstablished BenchmarkForwardEstablishedChained BenchmarkForwardSYN", fwd, " ")
	for (k = 1; k <= 4; k++) {
		n = fwd[k]; m = median(v[n])
		printf "%-34s %10.1f %12.1f %11.2f %7s\n", n, m, m - base, m / base, allocs[n]
	}
	printf "\n%-34s %10s %7s\n", "component", "median ns", "allocs"
	for (n in v) if (n !~ /Forward|Baseline/) printf "%-34s %10.1f %7s\n", n, median(v[n]), allocs[n]
}' "$out"
