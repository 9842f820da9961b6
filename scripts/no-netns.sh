#!/usr/bin/env bash
# Runs a command where no named network namespace can be made: in a private
# mount namespace whose /run/netns (where `ip netns add` and the lab put
# their namespaces) is an empty read-only tmpfs. Needs root. `make test`
# runs the -short tests through it as root, so a test that builds
# namespaces without skipping under -short fails there instead of passing.
set -euo pipefail
exec unshare --mount --propagation private sh -c \
	'mkdir -p /run/netns && mount -t tmpfs -o ro,size=4k,mode=0755 sluice-no-netns /run/netns && exec "$@"' sh "$@"
