package sqlite_test

import (
	"testing"

	"github.com/tethermq/tether/conformance"
)

// BenchmarkScan compares Load of a 100,000-record backlog with paging
// through it with Scan (conformance.BenchScan).
func BenchmarkScan(b *testing.B) { conformance.BenchScan(b, newHarness) }
