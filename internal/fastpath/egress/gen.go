package egress

// The egress program (bpf/egress.c) is built with bpf2go: `make generate`
// runs this line with clang (scripts/deps.sh --generate installs it). The
// object and its Go bindings (egress_bpfel.*) are committed, so that a plain
// `go build` needs no C compiler; TestEgressObjectFresh fails when they are
// stale.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target bpfel -type flow_key -type flow_value egress bpf/egress.c
