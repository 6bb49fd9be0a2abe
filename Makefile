# tether: `make test` sets up a fresh Debian machine and runs every check;
# `make demo` runs the main job.

GOBIN := $(shell go env GOPATH)/bin
export PATH := $(PATH):/usr/sbin:$(GOBIN)

.PHONY: setup test vet lint unit consumer demo bench fuzz matrix matrix-full sim

setup:
	@bash scripts/setup.sh

test: setup vet lint unit consumer

# Every package of every module in the workspace (go.work): the library's
# module and the modules of its own that keep test-only and command-only
# dependencies out of it (cmd/tether, internal/embedbroker,
# internal/testenv/containers). A ./... pattern would stop at the nested
# modules' go.mod files.
PKGS := github.com/tethermq/tether/...

vet:
	go vet $(PKGS)
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }

lint:
	staticcheck $(PKGS)

unit:
	go test -race -timeout 12m $(PKGS)

# The module graph an application importing client and one store gets:
# no test-only package in its build, no container, Docker, OpenTelemetry or
# mochi module in its graph; go.sum and graph sizes printed.
consumer:
	@bash scripts/consumer-check.sh

# The command is built into bin/ with progress shown (the first build takes
# minutes), so that a second make demo starts at once.
demo: setup
	@bash scripts/demo.sh

bench: setup
	go test -run '^$$' -bench . -benchmem $(PKGS)

# The session suite's results, backend by case: -short as in CI, and the
# full run (20,000-message soaks, 25 kill -9 generations per backend).
matrix: setup
	TETHER_TEST_MOCHI=1 go test -json -race -short -run 'TestSession' ./store/... | go run ./internal/matrix

matrix-full: setup
	TETHER_TEST_MOCHI=1 go test -json -race -timeout 30m -run 'TestSession' ./store/... | go run ./internal/matrix

# The deterministic simulation of the session engine (client/internal/sim):
# fresh seeds for SIM_DURATION, then the rate in steps and seeds per second.
# A failing seed is shrunk and printed with its trace and the command that
# replays it.
SIM_DURATION ?= 5m
sim:
	go test -run TestSimulation -count=1 -timeout 0 -v ./client/internal/sim/ -args -sim.duration=$(SIM_DURATION)

fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 5m ./packets/
	go test -run '^$$' -fuzz FuzzReader -fuzztime 5m ./packets/

# The comparative benchmark (bench/, a module of its own so the library
# gains no dependency): tether with each store, other Go MQTT clients and a
# minimal raw publisher against one private Mosquitto, as ratios to raw.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="-n 5000 -w 100" (-markdown
# prints the README's tables).
.PHONY: bench-compare bench-resume
bench-compare: setup
	cd bench && GOWORK=off go run ./cmd/compare $(BENCH_ARGS)

# Session resume (bench/): a process restarting on a stored backlog of
# 100,000 QoS 1 messages per durable store and 1,000,000 on bolt (time to
# CONNACK, to the first resend, drain rate, peak memory), the heap a
# client holds per stored message and the store's size after the drain.
# Each runs once: the backlog's setup takes longer than the measurement.
# Then the store writes per message and the largest batch (20,000 each).
bench-resume: setup
	cd bench && GOWORK=off TETHER_BENCH_HUGE=1 go test -run '^$$' -bench 'Resume|HeapPerStored|StoreSizeAfterDrain' -benchtime 1x -timeout 60m .
	cd bench && GOWORK=off go test -run '^$$' -bench 'StoreWrites' -benchtime 20000x -timeout 20m .
