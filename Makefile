# chatgroupd — every target a developer or CI needs. `make test` is the one that must always pass.
GO        ?= go
PKGS      := ./...
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)

.PHONY: all build docker test test-short kfake-patch test-kafka chaos chaos-order lint vet fmt-check bench demo clean

all: build test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/chatgroupd ./cmd/chatgroupd

## docker: the chart's image, carrying the same version as `make build`. IMAGE=<registry>/chatgroupd:<tag>.
IMAGE ?= chatgroupd:$(VERSION)
docker:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

## test: vet, format check and the race-enabled unit + embedded-Kafka suite.
## TEST_P packages at once (go test -p), default one more than the CPUs: the chaos package's
## fleet runs take ~7 min mostly waiting on the wall clock. With go test's default (the CPUs), on
## a 2-core machine they held one of two slots while every small package queued behind the
## consumer package in the other (~80 s of tail after both ended); the extra slot runs them meanwhile.
TEST_P    ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))
test: vet fmt-check kfake-patch
	$(GO) test $(KFAKE_MODFILE) -race -count=1 -p $(TEST_P) -timeout 15m $(PKGS)

test-short: kfake-patch
	$(GO) test $(KFAKE_MODFILE) -count=1 -short $(PKGS)

## kfake-patch: the embedded broker of the tests and the chaos suite with Kafka's join barrier
## (internal/kfakepatch): a patched copy of kfake in bin/kfakepatch, used through -modfile.
## Product builds (build, docker, demo) don't use it.
KFAKE_MODFILE := -modfile=$(CURDIR)/bin/kfakepatch/go.mod
kfake-patch:
	$(GO) run ./internal/kfakepatch/cmd/kfakemodfile -dir bin/kfakepatch >/dev/null

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## test-kafka: start a real Apache Kafka broker, run the integration and fault suites, stop it.
test-kafka:
	./scripts/test-kafka.sh

## chaos: the seeded chaos suite (chaos/): a fleet of chatgroupd processes on the embedded broker
## and the IM simulator under a random schedule per seed, checked at the end; prints the totals.
## CHAOS_SEEDS (e.g. 1-30 or 3,7) and CHAOS_DURATION pick the runs; CHAOS_REPLICAS fixes the fleet size.
## TestChaosLane runs CHAOS_LANE_SEEDS (default 1-3) with the retry lane on and accounts parked.
## The self-tests' controls run too, and TestChaosCatchesNoPreload (the budget check must catch
## successors that skip the preload; ~40 s a run, kept out of the long make test) with its control.
CHAOS_SEEDS    ?= 1-30
CHAOS_DURATION ?= 60s
chaos: kfake-patch
	CHAOS_SEEDS='$(CHAOS_SEEDS)' CHAOS_DURATION='$(CHAOS_DURATION)' CHAOS_REPLICAS='$(CHAOS_REPLICAS)' \
		$(GO) test $(KFAKE_MODFILE) -count=1 -v -timeout 0 -run '^(TestChaos|TestChaosLane|TestChaosLegacyDrainControl|TestChaosWholeBudgetControl|TestChaosUngatedWritesControl|TestChaosUngatedLaneControl|TestChaosCatchesNoPreload|TestChaosNoPreloadControl)$$' ./chaos/

## chaos-order: issue 19's lifecycle order test (1 000 accounts, 6 000 events, a fleet of three
## across a SIGKILL and a graceful leave; the final state must equal the model) and its self-test
## (two deliberately broken variants it must catch). ~45 s each. CHAOS_ORDER_SEED picks the seed.
## CHAOS_ORDER_TESTS=TestChaosLifecycleOrder runs the order test alone (CI does).
CHAOS_ORDER_TESTS ?= TestChaosLifecycleOrder|TestChaosCatchesBrokenLifecycle
chaos-order: kfake-patch
	CHAOS_ORDER=1 CHAOS_ORDER_SEED='$(CHAOS_ORDER_SEED)' \
		$(GO) test $(KFAKE_MODFILE) -count=1 -v -timeout 20m -run '^($(CHAOS_ORDER_TESTS))$$' ./chaos/

## lint: staticcheck pinned in tools/go.mod.
lint: vet
	"$$($(GO) -C tools tool -n staticcheck)" ./...

## bench: the Go benchmarks once each, then chatgroupd against the naive kafka-go loop and a Watermill router, as child processes,
## on the IM simulator and embedded Kafka (or CHATGROUPD_TEST_BROKERS). See BENCHMARKS.md.
## BENCH_SCENARIOS=all (or util,cpu,e2e,backlog,restart) widens the set; BENCH_FLAGS=-full for
## the published window sizes. The harness lives in bench/, a module of its own.
BENCH_SCENARIOS ?= util-100ms,cpu,e2e,backlog
BENCH_FLAGS     ?=
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/chatgroupd ./cmd/chatgroupd
	cd bench && $(GO) build -o ../bin/naive ./cmd/naive && $(GO) build -o ../bin/watermill-peer ./cmd/watermill-peer \
		&& $(GO) build -o ../bin/chatgroupd-bench ./cmd/chatgroupd-bench
	./bin/chatgroupd-bench -scenarios '$(BENCH_SCENARIOS)' $(BENCH_FLAGS)

demo:
	$(GO) run ./cmd/chatgroupd demo

clean:
	rm -rf bin

.PHONY: chart-test alerts-test

## chart-test: helm lint/template, promtool on the alert rules, and the deploytest module
## (strict manifest decoding, dashboard and alert PromQL vs registered metrics). Needs promtool.
chart-test:
	./scripts/check-deploy.sh

## alerts-test: just the promtool checks and unit tests of the alert rules.
alerts-test:
	cd charts/chatgroupd/files && promtool check rules alerts.yaml && promtool test rules alerts_test.yaml
