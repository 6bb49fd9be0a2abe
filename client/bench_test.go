package client

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/memory"
)

// benchWindow is how many publishes a benchmark keeps outstanding.
const benchWindow = 2000

func benchPublish(b *testing.B, qos byte) { benchPublishInflight(b, qos, 1000) }

// benchPublishInflight publishes against a broker announcing a Receive
// Maximum of inflight.
func benchPublishInflight(b *testing.B, qos byte, inflight int) {
	benchPublishStore(b, qos, inflight, memory.New())
}

// BenchmarkPublishBoltQoS1RM20 and BenchmarkPublishBoltQoS2RM20 publish
// through a bbolt store (each commit synced to the disk of the temporary
// directory), far more messages outstanding than the server's Receive
// Maximum of 20: queued messages wait for a slot, not for a store write.
func BenchmarkPublishBoltQoS1RM20(b *testing.B) { benchPublishStore(b, 1, 20, openBolt(b)) }

// BenchmarkPublishBoltQoS2RM20: see BenchmarkPublishBoltQoS1RM20.
func BenchmarkPublishBoltQoS2RM20(b *testing.B) { benchPublishStore(b, 2, 20, openBolt(b)) }

func openBolt(b *testing.B) store.SessionStore {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func benchPublishStore(b *testing.B, qos byte, inflight int, st store.SessionStore) {
	br := broker(b, testenv.WithMaxInflight(inflight), testenv.WithConfig(func(c *testenv.MosquittoConfig) {
		c.Extra = "set_tcp_nodelay true\n"
	}))
	c := start(b, Config{Servers: []string{br.URL()}, ClientID: uniqueID(b), Store: st, SessionExpiry: time.Hour})
	payload := make([]byte, 64)
	ring := make([]*Token, benchWindow)
	ctx := ctxT(b, 10*time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if t := ring[i%benchWindow]; t != nil {
			if err := t.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
		ring[i%benchWindow] = c.PublishAsync(&Message{Topic: "bench", QoS: qos, Payload: payload})
	}
	for _, t := range ring {
		if t != nil {
			if err := t.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkPublishQoS0 publishes 64-byte messages at QoS 0.
func BenchmarkPublishQoS0(b *testing.B) { benchPublish(b, 0) }

// BenchmarkPublishQoS1 publishes 64-byte messages at QoS 1, pipelined,
// with the memory store.
func BenchmarkPublishQoS1(b *testing.B) { benchPublish(b, 1) }

// BenchmarkPublishQoS2 publishes 64-byte messages at QoS 2, pipelined,
// with the memory store.
func BenchmarkPublishQoS2(b *testing.B) { benchPublish(b, 2) }

// BenchmarkPublishQoS1RM20 and BenchmarkPublishQoS2RM20 publish against
// Mosquitto's default Receive Maximum of 20.
func BenchmarkPublishQoS1RM20(b *testing.B) { benchPublishInflight(b, 1, 20) }

// BenchmarkPublishQoS2RM20: see BenchmarkPublishQoS1RM20.
func BenchmarkPublishQoS2RM20(b *testing.B) { benchPublishInflight(b, 2, 20) }

// BenchmarkReceiveQueuedQoS1 measures a subscriber receiving QoS 1
// messages the broker queued while it was away, so that only the
// subscriber's side runs while timed: its reconnection, then every message
// delivered to the handler and acknowledged.
func BenchmarkReceiveQueuedQoS1(b *testing.B) {
	br := broker(b, testenv.WithMaxInflight(1000), testenv.WithConfig(func(c *testenv.MosquittoConfig) {
		c.Extra = "set_tcp_nodelay true\n"
	}))
	id := uniqueID(b)
	st := memory.New()
	away := start(b, Config{Servers: []string{br.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if _, err := away.Subscribe(ctxT(b, 5*time.Second), Subscription{Filter: "recv", SubscribeOptions: subOpts(1)}); err != nil {
		b.Fatal(err)
	}
	away.Close()
	pub := start(b, Config{Servers: []string{br.URL()}, ClientID: uniqueID(b), Store: memory.New()})
	payload := make([]byte, 64)
	ring := make([]*Token, benchWindow)
	ctx := ctxT(b, 10*time.Minute)
	for i := range b.N {
		if t := ring[i%benchWindow]; t != nil {
			if err := t.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
		ring[i%benchWindow] = pub.PublishAsync(&Message{Topic: "recv", QoS: 1, Payload: payload})
	}
	for _, t := range ring {
		if t != nil {
			if err := t.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	pub.Close()

	var got atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	start(b, Config{Servers: []string{br.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		OnMessage: func(*Message) {
			if got.Add(1) == target {
				close(done)
			}
		}})
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("received %d of %d", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
}

// BenchmarkReceiveQoS1 measures a subscriber receiving QoS 1 messages
// published live by a second client in the same process: allocations and
// CPU of both are counted, so allocs/op is per message end to end.
func BenchmarkReceiveQoS1(b *testing.B) { benchReceive(b, 1) }

// BenchmarkReceiveQoS2 is BenchmarkReceiveQoS1 with QoS 2 both ways.
func BenchmarkReceiveQoS2(b *testing.B) { benchReceive(b, 2) }

func benchReceive(b *testing.B, qos byte) {
	br := broker(b, testenv.WithMaxInflight(1000), testenv.WithConfig(func(c *testenv.MosquittoConfig) {
		c.Extra = "set_tcp_nodelay true\n"
	}))
	var got atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	sub := start(b, Config{Servers: []string{br.URL()}, ClientID: uniqueID(b), Store: memory.New(), SessionExpiry: time.Hour,
		OnMessage: func(*Message) {
			if got.Add(1) == target {
				close(done)
			}
		}})
	if _, err := sub.Subscribe(ctxT(b, 5*time.Second), Subscription{Filter: "recv", SubscribeOptions: subOpts(qos)}); err != nil {
		b.Fatal(err)
	}
	pub := start(b, Config{Servers: []string{br.URL()}, ClientID: uniqueID(b), Store: memory.New()})
	payload := make([]byte, 64)
	ring := make([]*Token, benchWindow)
	ctx := ctxT(b, 10*time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for i := range b.N {
		if t := ring[i%benchWindow]; t != nil {
			if err := t.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
		ring[i%benchWindow] = pub.PublishAsync(&Message{Topic: "recv", QoS: qos, Payload: payload})
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("received %d of %d", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
}

// slowStore is a memory store whose Apply takes as long as an fsync, and
// which counts its Apply calls, to show the group commit at work.
type slowStore struct {
	*memory.Store
	latency time.Duration
	applies atomic.Int64
}

func (s *slowStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	s.applies.Add(1)
	time.Sleep(s.latency) // the cost of a durable write, not a wait for an event
	return s.Store.Apply(ctx, k, ops...)
}

// BenchmarkGroupCommit publishes QoS 1 from 64 goroutines to a store whose
// every Apply costs 1ms (an fsync), and reports how many messages share one
// Apply: with one Apply per message the rate could not pass 1,000 msgs/s.
func BenchmarkGroupCommit(b *testing.B) {
	br := broker(b, testenv.WithMaxInflight(1000))
	st := &slowStore{Store: memory.New(), latency: time.Millisecond}
	c := start(b, Config{Servers: []string{br.URL()}, ClientID: uniqueID(b), Store: st, SessionExpiry: time.Hour})
	payload := make([]byte, 64)
	ctx := ctxT(b, 10*time.Minute)
	b.ReportAllocs()
	b.SetParallelism(32)
	before := st.applies.Load()
	b.ResetTimer()
	t0 := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.Publish(ctx, &Message{Topic: "gc", QoS: 1, Payload: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/float64(st.applies.Load()-before), "msgs/apply")
}
