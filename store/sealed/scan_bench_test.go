package sealed_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/memory"
	"github.com/tethermq/tether/store/sealed"
)

// BenchmarkScan compares Load of a 100,000-record backlog with paging
// through it with Scan (conformance.BenchScan) on sealed stores, where
// every record read is also opened.
func BenchmarkScan(b *testing.B) {
	for _, be := range []struct {
		name string
		open func(tb testing.TB) (store.SessionStore, error)
	}{
		{"Memory", func(testing.TB) (store.SessionStore, error) { return memory.New(), nil }},
		{"Bolt", func(tb testing.TB) (store.SessionStore, error) {
			return bolt.Open(filepath.Join(tb.TempDir(), "bench.db"), nil)
		}},
	} {
		b.Run(be.name, func(b *testing.B) {
			conformance.BenchScan(b, func(ctx context.Context, tb testing.TB) (conformance.Harness, error) {
				return &conformance.HarnessFuncs{Make: func(context.Context) (store.SessionStore, error) {
					s, err := be.open(tb)
					if err != nil {
						return nil, err
					}
					return sealed.New(s, opts(nil))
				}}, nil
			})
		})
	}
}
