#!/usr/bin/env bash
# The module graph a user of the library gets. internal/consumercheck is a
# module that imports tether's client and one store, as an application
# does; it is copied to a temporary directory, pointed at this checkout
# and tidied there, then:
#   - its build must compile no test-only package (testcontainers, moby,
#     Docker, OpenTelemetry, mochi, goleak, tether's testenv or
#     conformance, faultproxy): fails otherwise;
#   - its go.sum and `go mod graph` must name no module of the test-only
#     machinery (testcontainers, moby, Docker, OpenTelemetry, mochi): those
#     live in modules of their own (see the README's Layout) and fail the
#     check should tether's go.mod list them again;
#   - what remains is measured, and the test-only modules still listed are
#     named: goleak, which tether's own tests use, so its go.mod lists it
#     and go mod tidy keeps its two go.sum lines (module and go.mod
#     hashes) for the tests of client; it is never built.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/internal/consumercheck/go.mod" "$root/internal/consumercheck/main.go" "$work/"
cd "$work"
go mod edit -replace "github.com/tethermq/tether=$root"
go mod tidy >/dev/null 2>&1 || go mod tidy
go build ./... && go vet ./...
testonly='testcontainers|moby|docker|opentelemetry|mochi-mqtt|goleak|tethermq/tether/internal/testenv|tethermq/tether/conformance|tethermq/tether/faultproxy'
if compiled=$(go list -deps ./... | grep -E "$testonly"); then
	echo "consumer check: a user's build compiles test-only packages:" >&2
	echo "$compiled" >&2
	exit 1
fi
# Modules that must not appear at all: what the containers helper, the
# embedded broker and the tether command need.
forbidden='testcontainers|moby|docker|opentelemetry|mochi-mqtt'
listed_mods=$( (sed 's/ .*//' go.sum; go mod graph | awk '{print $2}' | sed 's/@.*//') | sort -u)
if bad=$(grep -E "$forbidden" <<<"$listed_mods"); then
	echo "consumer check: a user's module graph or go.sum lists test-only modules:" >&2
	echo "$bad" >&2
	exit 1
fi
sum=$(wc -l <go.sum)
graph=$(go mod graph | awk '{print $2}' | sed 's/@.*//' | sort -u | wc -l)
remaining=$(grep -E "$testonly" <<<"$listed_mods" | paste -sd, - || true)
echo "consumer check: client + store/bolt compile no test-only package and list no container, Docker, OpenTelemetry or mochi module; go.sum $sum lines, $graph modules in the graph; test-only modules still in its go.sum (never built): ${remaining:-none}"
