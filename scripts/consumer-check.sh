#!/usr/bin/env bash
# The module graph a user of the library gets. internal/consumercheck is a
# module that imports tether's client and one store, as an application
# does; it is copied to a temporary directory, pointed at this checkout
# and tidied there, then:
#   - its build must compile no test-only package (testcontainers, moby,
#     Docker, OpenTelemetry, mochi, goleak, tether's testenv or
#     conformance): fails otherwise;
#   - its go.sum and `go mod graph` are measured, and the test-only modules
#     still listed there are named (they come from tether's own go.mod,
#     which lists every module its tests need; see the README's Layout).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/internal/consumercheck/go.mod" "$root/internal/consumercheck/main.go" "$work/"
cd "$work"
go mod edit -replace "github.com/tethermq/tether=$root"
go mod tidy >/dev/null 2>&1 || go mod tidy
go build ./... && go vet ./...
testonly='testcontainers|moby|docker|opentelemetry|mochi-mqtt|goleak|tethermq/tether/internal/testenv|tethermq/tether/conformance'
if compiled=$(go list -deps ./... | grep -E "$testonly"); then
	echo "consumer check: a user's build compiles test-only packages:" >&2
	echo "$compiled" >&2
	exit 1
fi
sum=$(wc -l <go.sum)
graph=$(go mod graph | awk '{print $2}' | sed 's/@.*//' | sort -u | wc -l)
listed=$(sed 's/ .*//' go.sum | sort -u | grep -cE "$testonly" || true)
echo "consumer check: client + store/bolt compile no test-only package; go.sum $sum lines, $graph modules in the graph, $listed of them test-only (listed by tether's go.mod, never built)"
