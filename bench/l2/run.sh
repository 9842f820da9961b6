#!/usr/bin/env bash
# L2 failover: Sluice's L2 mode against keepalived's VRRP (2.2.7: defaults,
# VRRPv2 with a 1 s advert interval; and tuned, VRRPv3 with 0.1 s), in the
# same lab and run (TestE2EL2BenchFailover): three LB nodes on one segment
# with the router, the VIP route on-link, 100 long-lived connections; the
# node owning the VIP dies (its processes SIGKILLed, keepalived's VIP gone
# from its interface). Measured: from the kill to the first packet the new
# owner forwards, the streams' longest gap, connections broken. Sluice runs
# with node.cluster.probe_interval 100ms.
#
# Needs root and the bench tools (scripts/deps.sh --bench installs keepalived).
# Usage: bench/l2/run.sh [count]   (default 3 rounds of the three)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v keepalived >/dev/null || { echo "keepalived missing: run scripts/deps.sh --bench" >&2; exit 1; }
count=${1:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$count"); do
	SLUICE_BENCH_L2=1 go test -count=1 -v -timeout 10m -run '^TestE2EL2BenchFailover$' ./test/e2e | grep 'BENCH l2' | sed 's/.*BENCH l2 //' | tee -a "$out"
done
echo "median over $count rounds (kill -> first forwarded packet on the new owner):"
awk '{
	name = $1; v = $7
	ms = (v ~ /ms$/) ? substr(v, 1, length(v) - 2) / 1000 : substr(v, 1, length(v) - 1) + 0
	all[name] = all[name] " " ms
}
END {
	for (k in all) {
		n = split(substr(all[k], 2), a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		printf "  %-20s median %.3f s  (min %.3f, max %.3f, n %d)\n", k, a[int((n + 1) / 2)], a[1], a[n], n
	}
}' "$out" | sort
