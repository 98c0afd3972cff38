# tcpstate: `make help` lists the targets.
GO       ?= go
BIN      ?= bin/tcpstate
FUZZTIME ?= 200000x
BENCHFLAGS ?=
# test-kernels: the Debian kernel series to boot, whether to run on the host
# kernel too, and more flags of internal/vmtest/run (-run, -timeout, ...).
KERNELS  ?= 6.1 6.12
HOST     ?= 1
KERNELFLAGS ?=
# sudo for a user, nothing for root (who may have no sudo: Debian installs none).
SUDO     ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What --version prints: the release (a git tag, else devel) and the commit.
VERSION  ?= $(shell git describe --tags --dirty 2>/dev/null || echo devel)
COMMIT   ?= $(shell git describe --always --dirty --abbrev=40 --match=NONE 2>/dev/null)

.PHONY: help build generate vmlinux check-generate test test-unit test-kernels fuzz bench latency gobench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/tcpstate (needs Go only: the BPF objects are committed)
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o $(BIN) ./cmd/tcpstate

generate: ## recompile bpf/*.bpf.c into tracer/*_bpfel.{go,o} (needs clang, llvm, libbpf-dev)
	$(GO) generate ./...

vmlinux: ## regenerate bpf/vmlinux.h from the running kernel's BTF (needs bpftool)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

check-generate: generate ## fail if the committed BPF objects do not match their source
	@git diff --exit-code -- tracer/ || { echo "committed BPF objects differ from bpf/ source: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- tracer/)" || { git status --porcelain -- tracer/; echo "untracked generated files: run 'make generate' and commit" >&2; exit 1; }

test: ## all tests; the privileged ones run the test binaries as root (through sudo unless you are root)
	$(GO) test -exec "$(SUDO)" -count=1 ./...

test-unit: ## only what needs no root (privileged tests skip)
	$(GO) test -count=1 ./...

test-kernels: ## the privileged tests on the host kernel and in qemu (TCG) guests of Debian's 6.1 and 6.12 kernels, one table (root; ~22 min for 6.1, ~17 for 6.12; KERNELS="6.12", HOST=0, KERNELFLAGS="-run TestX")
	GO=$(GO) $(GO) run ./internal/vmtest/run -kernels "$(KERNELS)" -host=$(HOST) $(KERNELFLAGS)

fuzz: ## a short run of every fuzz target (FUZZTIME: inputs, as Nx, or a duration)
	$(GO) test -run=NONE -fuzz=FuzzParseRecordAndCheck -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./model
	$(GO) test -run=NONE -fuzz=FuzzAppend -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./internal/termsafe

bench: ## load benchmark: loopback TCP loads of 4 and 16 clients with no tracer, each tcpstate mode and bpftrace, the syscall tax, a 10M-transition run (root; ~16 min idle, more on a busy host; BENCHFLAGS="--long 0")
	$(GO) run ./bench/runner $(BENCHFLAGS)

latency: ## how long an event takes to reach trace's output on an idle host (root)
	$(GO) run ./bench/latency

gobench: ## Go benchmarks of the user-space hot path and the tracker
	$(GO) test -run=NONE -bench=. -benchmem ./cmd/tcpstate ./model

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

clean: ## remove build output
	rm -rf bin
