package conformance

import (
	"context"
	"reflect"
	"testing"

	"github.com/tethermq/tether/store"
)

// BenchScanRecords is the size of the backlog BenchScan reads.
const BenchScanRecords = 100_000

// BenchScan measures what it costs a client to read a backlog of
// BenchScanRecords 100-byte records, the same way for every backend:
//
//   - Load: the whole session in one call, as a client without
//     store.Scanner reads it before it connects;
//   - ScanFirstPage: the first page of store.DefaultScanLimit records, the
//     time until a streaming client can send its first message;
//   - ScanAll/100 and ScanAll/1000: every page, 100 or 1,000 records each.
//
// Besides time and allocations per operation, each reports held-B: the
// bytes of the largest result a call returned (records and packets), what
// the caller holds at once. The session is written once, before the
// sub-benchmarks, which share it. A store without store.Scanner skips all
// but Load.
func BenchScan(b *testing.B, newHarness HarnessMaker) {
	benchStore(b, newHarness, benchScan)
}

func benchScan(b *testing.B, ctx context.Context, s store.SessionStore) {
	k := key("backlog")
	packet := pattern(4, 100)
	const batch = 10_000
	ops := make([]store.Op, 0, batch)
	for i := 0; i < BenchScanRecords; i++ {
		ops = append(ops, store.Put(store.Record{Seq: uint64(i) + 1, Dir: store.Outbound, Packet: packet}))
		if len(ops) == batch {
			if err := s.Apply(ctx, k, ops...); err != nil {
				b.Fatalf("Apply: %v", err)
			}
			ops = ops[:0]
		}
	}
	b.Run("Load", func(b *testing.B) {
		b.ReportAllocs()
		var held int
		for i := 0; i < b.N; i++ {
			recs, err := s.Load(ctx, k)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) != BenchScanRecords {
				b.Fatalf("Load returned %d records, want %d", len(recs), BenchScanRecords)
			}
			held = max(held, resultBytes(recs))
		}
		b.ReportMetric(float64(held), "held-B")
	})
	sc, ok := s.(store.Scanner)
	b.Run("ScanFirstPage", func(b *testing.B) {
		if !ok {
			b.Skip("the store does not implement store.Scanner")
		}
		b.ReportAllocs()
		var held int
		for i := 0; i < b.N; i++ {
			recs, _, err := sc.Scan(ctx, k, 0, store.DefaultScanLimit)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				b.Fatal("the first page is empty")
			}
			held = max(held, resultBytes(recs))
		}
		b.ReportMetric(float64(held), "held-B")
	})
	for _, c := range []struct {
		name  string
		limit int
	}{{"ScanAll/100", 100}, {"ScanAll/1000", 1000}} {
		b.Run(c.name, func(b *testing.B) {
			if !ok {
				b.Skip("the store does not implement store.Scanner")
			}
			b.ReportAllocs()
			var held int
			for i := 0; i < b.N; i++ {
				n := 0
				for from := uint64(0); ; {
					recs, next, err := sc.Scan(ctx, k, from, c.limit)
					if err != nil {
						b.Fatal(err)
					}
					n += len(recs)
					held = max(held, resultBytes(recs))
					if next == 0 {
						break
					}
					from = next
				}
				if n != BenchScanRecords {
					b.Fatalf("the scan returned %d records, want %d", n, BenchScanRecords)
				}
			}
			b.ReportMetric(float64(held), "held-B")
		})
	}
}

// resultBytes is the memory a result holds: its records and their packets.
func resultBytes(recs []store.Record) int {
	n := cap(recs) * int(reflect.TypeFor[store.Record]().Size())
	for _, r := range recs {
		n += cap(r.Packet)
	}
	return n
}
