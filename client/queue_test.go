package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// TestQueueBounded: with the server unreachable, publishes beyond
// MaxQueued fail with ErrQueueFull under FailWhenQueueFull, and otherwise
// wait for room within their context; once connected, the queue drains
// and waiting publishers go on, in order.
func TestQueueBounded(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "q/#")
	for _, fail := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			col.mu.Lock()
			col.msgs = nil
			col.mu.Unlock()
			c, err := New(Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), MaxQueued: 10,
				FailWhenQueueFull: fail, SessionExpiry: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var toks []*Token
			for i := range 10 {
				toks = append(toks, c.PublishAsync(&Message{Topic: "q/a", QoS: 1, Payload: []byte(fmt.Sprint(i))}))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			err = c.Publish(ctx, &Message{Topic: "q/a", QoS: 1, Payload: []byte("over")})
			cancel()
			if !errors.Is(err, ErrQueueFull) {
				t.Fatalf("publish over the bound: %v, want ErrQueueFull", err)
			}
			if !fail && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("blocking policy: %v, want to have waited until the deadline", err)
			}
			waiter := make(chan error, 1)
			if !fail {
				go func() {
					waiter <- c.Publish(ctxT(t, 10*time.Second), &Message{Topic: "q/a", QoS: 1, Payload: []byte("10")})
				}()
			}
			if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			for _, tok := range toks {
				if err := tok.Wait(ctxT(t, 5*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			want := 10
			if !fail {
				if err := <-waiter; err != nil {
					t.Fatalf("waiting publisher: %v", err)
				}
				want = 11
			}
			checkOrder(t, col.waitFor(t, want, 5*time.Second), want)
		})
	}
}

// TestPublishStoredHandOver: PublishStored returns once the message is
// durable in the store — before its exchange completes, and even while
// the server is unreachable — so an application can hand its own copy
// over; the Token then completes when the exchange does.
func TestPublishStoredHandOver(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "handover")
	st := memory.New()
	id := uniqueID(t)
	c, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok, err := c.PublishStored(ctxT(t, 5*time.Second), &Message{Topic: "handover", QoS: 2, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tok.Done():
		t.Fatal("the exchange completed while disconnected")
	default:
	}
	if n := countDir(records(t, st, b.URL(), id), store.Outbound); n != 1 {
		t.Fatalf("%d records durable when PublishStored returned, want 1", n)
	}
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := tok.Wait(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, 1, 5*time.Second)
	// A message that fails before it is stored reports that error.
	_, err = c.PublishStored(ctxT(t, time.Second), &Message{Topic: "bad/#", QoS: 1})
	if !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("invalid message: %v", err)
	}
}

// sizeStore records the largest batch applied to it.
type sizeStore struct {
	*slowStore
	mu      sync.Mutex
	largest int
}

func (s *sizeStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	s.mu.Lock()
	s.largest = max(s.largest, len(ops))
	s.mu.Unlock()
	return s.slowStore.Apply(ctx, k, ops...)
}

// TestGroupCommitBounded: a burst of 5,000 publishes against a slow store
// becomes several Applies of at most engine.MaxBatchOps operations each, not one
// of thousands, and every message still arrives once, in order, with its
// token completed.
func TestGroupCommitBounded(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "burst")
	st := &sizeStore{slowStore: &slowStore{Store: memory.New(), latency: 20 * time.Millisecond}}
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Store: st, SessionExpiry: time.Hour})
	const n = 5000
	toks := make([]*Token, n)
	for i := range toks {
		toks[i] = c.PublishAsync(&Message{Topic: "burst", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	for i, tok := range toks {
		if err := tok.Wait(ctxT(t, 60*time.Second)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	checkOrder(t, col.waitFor(t, n, 30*time.Second), n)
	st.mu.Lock()
	largest := st.largest
	st.mu.Unlock()
	if largest > engine.MaxBatchOps {
		t.Fatalf("an Apply of %d operations, bound %d", largest, engine.MaxBatchOps)
	}
	if largest < engine.MaxBatchOps {
		t.Logf("largest Apply %d operations: the burst never reached the bound", largest)
	}
}
