#!/usr/bin/env bash
# make demo: build the tether command into bin/ and run its demo. The first
# build is long; later ones are a check of seconds (the Go build cache), so
# the demo then starts at once.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=bin/tether
mkdir -p bin
if [ ! -x "$bin" ]; then
	echo "tether demo: building the tether command first. The first build compiles SQLite (pure Go),"
	echo "  Redis, bbolt and the embedded broker: about 5 minutes on 2 cores, seconds afterwards."
	echo "  Packages are listed as they are compiled:"
else
	echo "tether demo: checking that $bin is up to date"
fi
start=$(date +%s)
# go build -v names each package it compiles: number them as progress.
# The command is a module of its own (cmd/tether/go.mod): build it from its
# directory, which works with and without the workspace (go.work).
(cd cmd/tether && go build -v -o ../../"$bin" .) 2>&1 |
	awk '/^[^ :]+$/ { n++; printf "  [%3d] %s\n", n, $0; fflush(); next } { print; fflush() }'
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
	echo "tether demo: the build failed" >&2
	exit "$status"
fi
echo "tether demo: built in $(($(date +%s) - start))s; running $bin demo $*"
exec "$bin" demo "$@"
