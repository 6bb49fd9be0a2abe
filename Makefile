# tether: `make test` sets up a fresh Debian machine and runs every check;
# `make demo` runs the main job.

GOBIN := $(shell go env GOPATH)/bin
export PATH := $(PATH):/usr/sbin:$(GOBIN)

.PHONY: setup test vet lint unit demo bench fuzz

setup:
	@bash scripts/setup.sh

test: setup vet lint unit

vet:
	go vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }

lint:
	staticcheck ./...

unit:
	go test -race -timeout 12m ./...

demo: setup
	go run ./cmd/tether demo

bench: setup
	go test -run '^$$' -bench . -benchmem ./...

fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 5m ./packets/
	go test -run '^$$' -fuzz FuzzReader -fuzztime 5m ./packets/
