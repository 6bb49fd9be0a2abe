package redis

import (
	"testing"

	"github.com/tethermq/tether/conformance"
)

// BenchmarkScan compares Load of a 100,000-record backlog with paging
// through it with Scan (conformance.BenchScan), on a standalone server.
func BenchmarkScan(b *testing.B) { conformance.BenchScan(b, standalone(b).maker()) }
