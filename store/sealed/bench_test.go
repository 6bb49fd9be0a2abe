package sealed_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/memory"
	"github.com/tethermq/tether/store/redis"
	"github.com/tethermq/tether/store/sealed"
)

// BenchmarkOverhead runs the shared store benchmarks (conformance.Bench:
// ApplySingle, ApplyBatch64, Load10000, all of 100-byte records) on each
// backend bare, sealed, and sealed with hidden Keys, so that the cost of
// sealing reads as the ratio of Sealed or SealedHidden to Plain.
func BenchmarkOverhead(b *testing.B) {
	backends := []struct {
		name string
		open func(tb testing.TB) (store.SessionStore, error)
	}{
		{"Memory", func(testing.TB) (store.SessionStore, error) { return memory.New(), nil }},
		{"Bolt", func(tb testing.TB) (store.SessionStore, error) {
			return bolt.Open(filepath.Join(tb.TempDir(), "bench.db"), nil)
		}},
		{"Redis", func(tb testing.TB) (store.SessionStore, error) {
			return redis.Open("redis://"+redisAddr(tb), &redis.Options{Prefix: "bench-" + randomHex(6)})
		}},
	}
	variants := []struct {
		name string
		wrap func(store.SessionStore) (store.SessionStore, error)
	}{
		{"Plain", func(s store.SessionStore) (store.SessionStore, error) { return s, nil }},
		{"Sealed", func(s store.SessionStore) (store.SessionStore, error) { return sealed.New(s, opts(nil)) }},
		{"SealedHidden", func(s store.SessionStore) (store.SessionStore, error) {
			return sealed.New(s, opts(testKey(1000)))
		}},
	}
	benchTop = b
	benchRedisOnce = sync.Once{}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			for _, v := range variants {
				b.Run(v.name, func(b *testing.B) {
					conformance.Bench(b, func(ctx context.Context, tb testing.TB) (conformance.Harness, error) {
						return &conformance.HarnessFuncs{Make: func(context.Context) (store.SessionStore, error) {
							s, err := be.open(tb)
							if err != nil {
								return nil, err
							}
							return v.wrap(s)
						}}, nil
					})
				})
			}
		})
	}
}

// redisAddr starts one Redis server for the benchmarks and returns its
// address.
func redisAddr(tb testing.TB) string {
	benchRedisOnce.Do(func() {
		// The server outlives the benchmark that started it: testenv ties
		// it to that benchmark's cleanup, so start it on the top-level one.
		benchRedis = testenv.Redis(benchTop).Addr()
	})
	return benchRedis
}

var (
	benchTop       testing.TB
	benchRedisOnce sync.Once
	benchRedis     string
)

// BenchmarkSeal measures sealing and opening one 100-byte record alone.
func BenchmarkSeal(b *testing.B) {
	ctx := context.Background()
	inner := memory.New()
	s, err := sealed.New(inner, opts(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r := store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: make([]byte, 100)}
	b.Run("Apply", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := s.Apply(ctx, keyA, store.Put(r)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := s.Load(ctx, keyA); err != nil {
				b.Fatal(err)
			}
		}
	})
}
