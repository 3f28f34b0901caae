# baton: the two commands are `make demo` and `make test`; see README.md.

SHELL   := /bin/bash
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/baton-relay/baton/internal/daemon.Version=$(VERSION)

.PHONY: all build demo test deps check unit e2e bench fuzz clean natscli dist test-arch

all: build

# Static binaries (no cgo): they run on any Linux of the same architecture.
build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/batond ./cmd/batond
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/embedded-nats ./cmd/embedded-nats

# Four nodes in one process, discovering each other over multicast on the
# loopback interface. No root needed.
demo: build
	$(BIN)/batond demo -duration 20s

# Installs what the tests need from Debian when run as root (iproute2 and
# nftables for the network-namespace tests, chromium for the live page's
# browser test); as another user it only reports.
deps:
	scripts/install-deps.sh

# Everything CI runs. The namespace tests need root: without it they say
# SKIP, and with CI=true a skip is a failure.
test: deps natscli check unit test-arch deploy-test
	@if [ "$$(id -u)" -ne 0 ]; then \
	  echo "*** SKIP: the network-namespace tests (e2e, internal/nstest) need root and did not run. ***"; \
	  echo "*** Run make test as root to include them; with CI=true they fail instead of skipping. ***"; \
	fi

# --- the nats CLI, for the tests (TestNATSCLI in internal/daemon) -------------
# The real nats CLI, installed once into bin/ with go install (about 75 s);
# skipped when bin/nats is already there. Without it the test says SKIP, and
# with CI=true fails.
NATSCLI_VERSION := v0.5.0
natscli: $(BIN)/nats
$(BIN)/nats:
	GOBIN=$(abspath $(BIN)) $(GO) install github.com/nats-io/natscli/nats@$(NATSCLI_VERSION)
# --- end of the nats CLI block --------------------------------------------------

check:
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# deploy/ansible runs on its own, after these: see deploy-test below.
unit:
	@rm -f artifacts/chaos-summary.txt
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/deploy/ansible$$')
	@cat artifacts/chaos-summary.txt 2>/dev/null || true

e2e:
	$(GO) test -count=1 -v -run TestNamespace ./e2e/

# Four batond processes against a raw TCP ring of four processes (the
# floor), in network namespaces when root, for 1, 64 and 1024 batons; prints
# a table of medians with ratios to the floor and writes it under
# artifacts/bench/. Then the hot path's Go benchmarks, with allocations.
# BENCH_BATONS, BENCH_ROUNDS, BENCH_WINDOW, GOMAXPROCS: see internal/bench.
# GOMAXPROCS=1 by default, for baton and the floor alike: the benchmark's
# four nodes share this machine's cores, and a node that shares a machine
# should not wake threads on cores it does not have (see README).
BENCH_GOMAXPROCS ?= 1
bench:
	GOMAXPROCS=$(BENCH_GOMAXPROCS) $(GO) test -run '^$$' -bench BenchmarkCluster -benchtime 1x -timeout 30m ./internal/bench
	$(GO) test -run '^$$' -bench . -benchmem ./relay ./internal/natsproto ./internal/hist ./internal/metrics

# A longer run of the discovery decoder fuzzer than `make test` does.
fuzz:
	$(GO) test ./cluster -run '^$$' -fuzz FuzzOpen -fuzztime 60s

clean:
	rm -rf $(BIN) $(DIST)

# --- release builds and tests on the Pis' architectures (issue 5) ------------
# dist/<version>/{batond,embedded-nats}-linux-{arm64,armv7,armv6,amd64} and
# dist/<version>/SHA256SUMS: static, stripped, the version stamped in (each
# binary's "version" is run, under qemu-user for ARM). See scripts/dist.sh.
DIST ?= dist
dist:
	scripts/dist.sh $(VERSION) $(DIST)

# The tests of cluster and relay on 386 (natively: catches unaligned 64-bit
# atomics) and under qemu-user for arm64, armv7 and armv6 (-cpu arm1176).
# Without qemu-user-static it says SKIP (a failure with CI=true). The tests
# that need multicast pinned to lo cannot run under Debian's qemu 7.2; the
# script says which and why. See scripts/test-arch.sh.
test-arch:
	scripts/test-arch.sh

# --- deploy/ansible -----------------------------------------------------------
# make deploy rolls batond out to your Pis, one at a time (deploy/ansible/
# README.md): INVENTORY is your inventory (a copy of
# deploy/ansible/inventory.example.yml), DEPLOY_ARGS more ansible-playbook
# arguments (--check --diff, --limit pi-02). The builds come from dist/
# (make dist). Without ANSIBLE_VAULT_PASSWORD_FILE it asks for the vault
# password.
INVENTORY   ?= deploy/ansible/inventory.yml
DEPLOY_ARGS ?=
.PHONY: deploy deploy-test
deploy:
	@test -f "$(INVENTORY)" || { echo "deploy: no inventory $(INVENTORY); copy deploy/ansible/inventory.example.yml (see deploy/ansible/README.md)" >&2; exit 1; }
	cd deploy/ansible && ansible-playbook -i "$(abspath $(INVENTORY))" site.yml $(if $(ANSIBLE_VAULT_PASSWORD_FILE),,--ask-vault-pass) $(DEPLOY_ARGS)

# The deploy/ansible tests (linters, the unit, a rollout over SSH into
# namespace hosts), part of make test. Run apart from `unit`, after it: the
# rollout takes minutes on a loaded 2-core machine (four playbook runs),
# more than go test's default 10 min when it shares the cores with the
# other namespace tests. Verbose, so it prints how long each run took.
deploy-test: deps
	$(GO) test -count=1 -v -timeout 30m ./deploy/ansible
# --- end deploy/ansible
