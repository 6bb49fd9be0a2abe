package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/store"
)

// countingStore counts what the client asks of its store.
type countingStore struct {
	store.SessionStore
	mu                  sync.Mutex
	applies, puts, dels int
	maxOps              int
	outPuts             int // outbound message records
}

func (c *countingStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	c.mu.Lock()
	c.applies++
	c.maxOps = max(c.maxOps, len(ops))
	for _, op := range ops {
		switch op.Kind {
		case store.OpPut:
			c.puts++
			if op.Record.Dir == store.Outbound {
				c.outPuts++
			}
		case store.OpDelete:
			c.dels++
		}
	}
	c.mu.Unlock()
	return c.SessionStore.Apply(ctx, k, ops...)
}

func (c *countingStore) reset() {
	c.mu.Lock()
	c.applies, c.puts, c.dels, c.maxOps, c.outPuts = 0, 0, 0, 0, 0
	c.mu.Unlock()
}

// BenchmarkStoreWrites counts the store work of each QoS 1 and QoS 2
// message a connected client publishes (bolt): outbound puts and deletes
// per message, Apply calls per message, and the largest batch one Apply
// carried. The application keeps W publishes outstanding, W the broker's
// Receive Maximum, so messages rarely queue; the Queued cases keep 50 W
// outstanding, so most messages wait in the queue for a free slot.
func BenchmarkStoreWrites(b *testing.B) {
	for _, cs := range []struct {
		name   string
		qos    byte
		factor int
	}{{"QoS1", 1, 1}, {"QoS2", 2, 1}, {"QoS1Queued", 1, 50}, {"QoS2Queued", 2, 50}} {
		qos := cs.qos
		b.Run(cs.name, func(b *testing.B) {
			e := newBenchEnv(b, *resumeWindow, false)
			id := "writes-" + cs.name
			inner, err := OpenStore("bolt", e.dir, "", id)
			if err != nil {
				b.Fatal(err)
			}
			defer inner.Close()
			st := &countingStore{SessionStore: inner}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			c, err := client.New(client.Config{Servers: []string{"mqtt://" + e.mosq.Addr}, ClientID: id, Store: st, SessionExpiry: time.Hour, CleanStart: true})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.Connect(ctx); err != nil {
				b.Fatal(err)
			}
			st.reset()
			b.ResetTimer()
			if err := TetherPublish(ctx, c, Run{QoS: qos, N: b.N, Window: cs.factor * *resumeWindow, Payload: *resumePayload, ID: id}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			// Deletes of the last completions may still be on their way.
			_ = c.Disconnect(ctx, 0)
			st.mu.Lock()
			defer st.mu.Unlock()
			n := float64(b.N)
			b.ReportMetric(float64(st.outPuts)/n, "puts/msg")
			b.ReportMetric(float64(st.dels)/n, "deletes/msg")
			b.ReportMetric(float64(st.applies)/n, "applies/msg")
			b.ReportMetric(float64(st.maxOps), "max-ops/apply")
		})
	}
}

// BenchmarkStoreSizeAfterDrain stores a backlog of 100,000 QoS 1 messages,
// drains it through the broker, closes the store and reports the bytes
// its files still take per message of the backlog.
func BenchmarkStoreSizeAfterDrain(b *testing.B) {
	const n = 100_000
	for _, kind := range []string{"bolt", "sqlite"} {
		b.Run(kind, func(b *testing.B) {
			e := newBenchEnv(b, *resumeWindow, false)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				id, topic := fmt.Sprintf("size-%s-%d", kind, i), fmt.Sprintf("size/%s/%d", kind, i)
				st, err := OpenStore(kind, e.dir, "", id)
				if err != nil {
					b.Fatal(err)
				}
				e.fillBacklog(b, st, id, topic, n)
				full := filesSize(e.dir, id)
				e.resume(b, st, id, topic, n)
				left := recordsLeft(b, st, id)
				st.Close()
				after := filesSize(e.dir, id)
				b.ReportMetric(float64(full)/n, "B/msg-full")
				b.ReportMetric(float64(after)/n, "B/msg-after-drain")
				b.ReportMetric(float64(left), "records-left")
			}
		})
	}
}

// filesSize sums the sizes of the store files named after id (the
// database and any journal beside it).
func filesSize(dir, id string) int64 {
	m, _ := filepath.Glob(filepath.Join(dir, id+".*"))
	var total int64
	for _, p := range m {
		if fi, err := os.Stat(p); err == nil {
			total += fi.Size()
		}
	}
	return total
}

// recordsLeft counts the records the store still holds for the sessions
// of client id.
func recordsLeft(b *testing.B, st store.SessionStore, id string) int {
	b.Helper()
	l, ok := st.(store.Lister)
	if !ok {
		b.Fatalf("%T lists no sessions", st)
	}
	ctx := context.Background()
	keys, err := l.Sessions(ctx)
	if err != nil {
		b.Fatal(err)
	}
	left := 0
	for _, k := range keys {
		if k.ClientID != id {
			continue
		}
		recs, err := st.Load(ctx, k)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range recs {
			if r.Dir != store.Meta {
				left++
			}
		}
	}
	return left
}
