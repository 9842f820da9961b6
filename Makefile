# Sluice. `make test` is what CI runs (.ci/run); `make bench` and `make fuzz`
# are for humans and the benchmark scripts.
GO       ?= go
FUZZTIME ?= 60s
BENCHTIME ?= 1s
BENCHCOUNT ?= 5

# Benchmarks tracked over time (names are stable; see docs/benchmarks.md).
BENCH_CORE = ^(BenchmarkForwardEstablished|BenchmarkForwardSYN|BenchmarkMaglevBuild|BenchmarkParse)$$

# package:FuzzTarget for every parser and builder that takes untrusted input.
FUZZ_TARGETS = \
	./internal/packet:FuzzDecode \
	./internal/packet:FuzzICMPQuote \
	./internal/encap:FuzzDecodeGUE \
	./internal/encap:FuzzChecksum \
	./internal/encap:FuzzNAT \
	./internal/encap:FuzzNATICMPError \
	./internal/packet:FuzzVXLAN \
	./internal/maglev:FuzzBuild \
	./internal/datapath:FuzzWorker \
	./internal/datapath:FuzzRelay \
	./internal/agent:FuzzInspect \
	./internal/fastpath:FuzzOpen \
	./internal/agent:FuzzParseFlow \
	./internal/agent:FuzzSecondChance \
	./internal/packet:FuzzQUICDestCID \
	./internal/quiclb:FuzzDecode \
	./internal/health/vipprobe:FuzzParse

.PHONY: all build demo deps generate test vet race bench bench-all fuzz clean

all: build

build:
	$(GO) build -o bin/sluice ./cmd/sluice

# The demo: a real client reaching three backends through three Sluice nodes
# behind a BGP router (BIRD) in a network-namespace lab (needs root).
demo: deps build
	bin/sluice lab demo

# System tools for the lab, the end-to-end tests and the demo (needs root).
deps:
	scripts/deps.sh

# Rebuilds the committed BPF objects and their Go bindings (bpf2go, clang:
# scripts/deps.sh --generate installs it) — the XDP offload program and the
# fastpath tc egress program — and records their sources' hashes
# (TestOffloadObjectFresh and TestEgressObjectFresh check both).
generate:
	@command -v clang >/dev/null || { echo "make generate: no clang; run scripts/deps.sh --generate"; exit 1; }
	cd internal/link/afxdp && $(GO) generate ./... && sha256sum bpf/offload.c > offload_bpfel.sha256
	cd internal/fastpath/egress && $(GO) generate ./... && sha256sum bpf/egress.c > egress_bpfel.sha256

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# As root: the -short run cannot create network namespaces (scripts/no-netns.sh).
ROOT    := $(shell [ "$$(id -u)" = 0 ] && echo yes)
NONETNS := $(if $(ROOT),scripts/no-netns.sh)

# The whole test suite: vet, unit, fuzz seed corpora, and the race detector.
# As root it first installs what the end-to-end tests need (make deps);
# without root those tests skip.
test: vet
ifeq ($(ROOT),yes)
	scripts/deps.sh
else
	@echo "make test: not root: no make deps, and the tests that need root skip"
endif
	$(GO) test -count=1 -timeout 20m ./...
	$(NONETNS) $(GO) test -count=1 -short -race ./...

bench:
	$(GO) test -run='^$$' -bench='$(BENCH_CORE)' -benchmem -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) ./internal/...

bench-all:
	bench/datapath.sh

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

clean:
	rm -rf bin
