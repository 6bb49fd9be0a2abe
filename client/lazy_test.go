package client

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// putCounter counts the outbound Puts applied to its store.
type putCounter struct {
	store.SessionStore
	mu   sync.Mutex
	puts int
}

func (s *putCounter) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	n := 0
	for _, op := range ops {
		if op.Kind == store.OpPut && op.Record.Dir == store.Outbound {
			n++
		}
	}
	s.mu.Lock()
	s.puts += n
	s.mu.Unlock()
	return s.SessionStore.Apply(ctx, k, ops...)
}

func (s *putCounter) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts
}

// holdLazy makes the committer hold a batch that nothing waits for until
// the test ends, instead of lazyDelay.
func holdLazy(t *testing.T) {
	old := lazyDelay
	lazyDelay = time.Hour
	t.Cleanup(func() { lazyDelay = old })
}

// offlineClient returns a client that never connects, on a memory store,
// and a function counting the outbound records durable in that store.
func offlineClient(t *testing.T) (*Client, func() int) {
	t.Helper()
	st := memory.New()
	id := uniqueID(t)
	const url = "mqtt://127.0.0.1:1" // never connected
	c, err := New(Config{Servers: []string{url}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, func() int { return countDir(records(t, st, url, id), store.Outbound) }
}

// wantRecords fails the test unless count reports n records.
func wantRecords(t *testing.T, count func() int, n int, when string) {
	t.Helper()
	if got := count(); got != n {
		t.Fatalf("%d records %s, want %d", got, when, n)
	}
}

// TestLazyCommit: the committer holds back a batch that nothing waits for
// (engine.Urgent): the record of a QoS 1 message published while
// disconnected is written only when the application waits for
// Token.Stored, or when the client closes.
func TestLazyCommit(t *testing.T) {
	holdLazy(t)
	c, count := offlineClient(t)
	a := c.PublishAsync(&Message{Topic: "lazy", QoS: 1, Payload: []byte("a")})
	time.Sleep(100 * time.Millisecond)
	wantRecords(t, count, 0, "written that nothing waited for")
	if err := a.WaitStored(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("WaitStored: %v", err)
	}
	wantRecords(t, count, 1, "after WaitStored returned")

	// Once that Stored has closed, nothing waits: the next one is held
	// again. (Looking at b.Stored() would ask for the write.)
	b := c.PublishAsync(&Message{Topic: "lazy", QoS: 1, Payload: []byte("b")})
	time.Sleep(100 * time.Millisecond)
	wantRecords(t, count, 1, "with nothing waiting for the second")
	if err := b.WaitStored(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("WaitStored of the second message: %v", err)
	}
	wantRecords(t, count, 2, "after the second WaitStored returned")

	c.PublishAsync(&Message{Topic: "lazy", QoS: 1, Payload: []byte("d")})
	c.Close()
	wantRecords(t, count, 3, "after Close (which writes what was held back)")
}

// TestLazyQoS1CostsNothing: QoS 1 messages whose PUBACKs come while
// their batch is held back cost the store no write. 1,000 publishes, 20
// outstanding at a time, against Mosquitto, with every batch that nothing
// waits for held until the test ends: the only batches taken are those a
// PUBLISH waiting for the meta record's bound on what was sent made urgent
// (a handful while the bound learns how far to run ahead), and those move
// the Puts of the QoS 1 messages waiting to the next batch, which their
// PUBACKs then empty. With every batch committed at once, 989 of the 1,000
// were written.
func TestLazyQoS1CostsNothing(t *testing.T) {
	holdLazy(t)
	b := broker(t)
	st := &putCounter{SessionStore: memory.New()}
	id := uniqueID(t)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	const n = 1000
	toks := make([]*Token, 0, 20)
	for i := range n {
		toks = append(toks, c.PublishAsync(&Message{Topic: "lazy/q1", QoS: 1, Payload: []byte{byte(i)}}))
		if len(toks) == cap(toks) {
			for _, tok := range toks {
				if err := tok.Wait(ctxT(t, 5*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			toks = toks[:0]
		}
	}
	if puts := st.count(); puts > n/10 {
		t.Fatalf("%d Puts for %d QoS 1 messages acknowledged while their batches were held, want at most %d", puts, n, n/10)
	} else {
		t.Logf("%d Puts for %d messages", puts, n)
	}
	c.Close()
	if n := countDir(records(t, st, b.URL(), id), store.Outbound); n != 0 {
		t.Fatalf("%d outbound records left after every PUBACK and Close", n)
	}
}

// TestLazyCommitWithinDelay: a batch held back is written once lazyDelay
// has passed, with nobody asking.
func TestLazyCommitWithinDelay(t *testing.T) {
	c, count := offlineClient(t)
	c.PublishAsync(&Message{Topic: "lazy", QoS: 1, Payload: []byte("a")})
	eventually(t, 5*time.Second, "the record held back to be written", func() bool { return count() == 1 })
}

// TestLazyDelayAfterEmptiedBatch: when the batch flush told the committer
// of has emptied before the committer looks (every Put taken back), no
// delay runs, and the next batch that may wait must start one rather than
// wait for something urgent.
func TestLazyDelayAfterEmptiedBatch(t *testing.T) {
	c, count := offlineClient(t)
	c.mu.Lock()
	c.lazyKicked = true // as flush leaves it, the batch then emptied
	c.mu.Unlock()
	c.kickCommitter()
	eventually(t, 5*time.Second, "the committer, finding nothing to commit, to clear lazyKicked", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.lazyKicked
	})
	c.PublishAsync(&Message{Topic: "lazy", QoS: 1, Payload: []byte("a")})
	eventually(t, 5*time.Second, "the record held back to be written", func() bool { return count() == 1 })
}
