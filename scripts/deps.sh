#!/usr/bin/env bash
# Installs the system tools the lab, the end-to-end tests, the demo and the
# benchmarks use (Debian packages). Idempotent; needs root. Go itself is
# expected at /usr/local/go (the machine image provides it).
set -euo pipefail
pkgs=(iproute2 iputils-ping ethtool curl nftables make gcc bird2 frr tcpdump)
case "${1:-}" in
--bench) pkgs+=(wrk haproxy keepalived) ;;
--generate) pkgs+=(clang llvm libbpf-dev) ;; # make generate: the XDP offload and tc egress programs
esac
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The lab runs its own FRR daemons inside its router namespace (`--router
# frr`); the system's FRR service that the package may have started is not
# needed: stop and disable it when this run installed frr.
if [[ " ${missing[*]:-} " == *" frr "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
	systemctl disable --now frr.service >/dev/null 2>&1 || true
fi
# Likewise keepalived (bench/l2 runs its own in the LB nodes' namespaces).
if [[ " ${missing[*]:-} " == *" keepalived "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
	systemctl disable --now keepalived.service >/dev/null 2>&1 || true
fi
