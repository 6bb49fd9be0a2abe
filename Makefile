# tether: `make test` sets up a fresh Debian machine and runs every check;
# `make demo` runs the main job.

GOBIN := $(shell go env GOPATH)/bin
export PATH := $(PATH):/usr/sbin:$(GOBIN)

.PHONY: setup test vet lint unit consumer demo bench fuzz matrix matrix-full

setup:
	@bash scripts/setup.sh

test: setup vet lint unit consumer

vet:
	go vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }

lint:
	staticcheck ./...

unit:
	go test -race -timeout 12m ./...

# The module graph an application importing client and one store gets:
# no test-only package in its build; go.sum and graph sizes printed.
consumer:
	@bash scripts/consumer-check.sh

# The command is built into bin/ with progress shown (the first build takes
# minutes), so that a second make demo starts at once.
demo: setup
	@bash scripts/demo.sh

bench: setup
	go test -run '^$$' -bench . -benchmem ./...

# The session suite's results, backend by case: -short as in CI, and the
# full run (20,000-message soaks, 25 kill -9 generations per backend).
matrix: setup
	TETHER_TEST_MOCHI=1 go test -json -race -short -run 'TestSession' ./store/... | go run ./internal/matrix

matrix-full: setup
	TETHER_TEST_MOCHI=1 go test -json -race -timeout 30m -run 'TestSession' ./store/... | go run ./internal/matrix

fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 5m ./packets/
	go test -run '^$$' -fuzz FuzzReader -fuzztime 5m ./packets/

# The comparative benchmark (bench/, a module of its own so the library
# gains no dependency): tether with each store, other Go MQTT clients and a
# minimal raw publisher against one private Mosquitto, as ratios to raw.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="-n 5000 -w 100".
.PHONY: bench-compare bench-resume
bench-compare: setup
	cd bench && GOWORK=off go run ./cmd/compare $(BENCH_ARGS)
