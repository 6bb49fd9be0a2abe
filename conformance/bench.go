package conformance

import (
	"context"
	"testing"

	"github.com/tethermq/tether/store"
)

// Bench measures the backend that newHarness prepares, with the same
// sub-benchmarks for every backend so their figures compare:
//
//   - ApplySingle: one Apply putting a 100-byte record and one deleting it,
//     the store work of one QoS 1 message sent alone;
//   - ApplyBatch64: one Apply of 64 puts of 100-byte records, what group
//     commit makes of 64 concurrent publishes;
//   - Load10000: Load of a session of 10,000 100-byte records, a reconnect
//     with a long queue.
func Bench(b *testing.B, newHarness HarnessMaker) {
	b.Run("ApplySingle", func(b *testing.B) {
		benchStore(b, newHarness, func(b *testing.B, ctx context.Context, s store.SessionStore) {
			k := key("bench")
			r := store.Record{Dir: store.Outbound, ID: 1, Packet: pattern(1, 100)}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.Seq = uint64(i) + 1
				if err := s.Apply(ctx, k, store.Put(r)); err != nil {
					b.Fatal(err)
				}
				if err := s.Apply(ctx, k, store.Delete(r.Seq)); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("ApplyBatch64", func(b *testing.B) {
		benchStore(b, newHarness, func(b *testing.B, ctx context.Context, s store.SessionStore) {
			k := key("bench")
			packet := pattern(2, 100)
			ops := make([]store.Op, 64)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range ops {
					ops[j] = store.Put(store.Record{Seq: uint64(i*64+j) + 1, Dir: store.Outbound, ID: uint16(j + 1), Packet: packet})
				}
				if err := s.Apply(ctx, k, ops...); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("Load10000", func(b *testing.B) {
		benchStore(b, newHarness, func(b *testing.B, ctx context.Context, s store.SessionStore) {
			k := key("bench")
			packet := pattern(3, 100)
			const n = 10_000
			ops := make([]store.Op, 0, n)
			for i := 0; i < n; i++ {
				ops = append(ops, store.Put(store.Record{Seq: uint64(i) + 1, Dir: store.Outbound, ID: uint16(i%65535 + 1), Packet: packet}))
			}
			if err := s.Apply(ctx, k, ops...); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				recs, err := s.Load(ctx, k)
				if err != nil {
					b.Fatal(err)
				}
				if len(recs) != n {
					b.Fatalf("Load returned %d records, want %d", len(recs), n)
				}
			}
		})
	})
}

// benchStore runs fn on a store of a fresh harness, closing both after.
func benchStore(b *testing.B, newHarness HarnessMaker, fn func(*testing.B, context.Context, store.SessionStore)) {
	ctx := context.Background()
	h, err := newHarness(ctx, b)
	if err != nil {
		b.Fatalf("new harness: %v", err)
	}
	defer h.Close()
	s, err := h.MakeStore(ctx)
	if err != nil {
		b.Fatalf("MakeStore: %v", err)
	}
	defer s.Close()
	b.ReportAllocs()
	fn(b, ctx, s)
}
