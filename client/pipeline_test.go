package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// pipeStore is a store.Pipeliner over a memory store: each batch spends
// delay on its way, overlapping the batches begun before it, then takes
// effect after them, and only if they did. failNext makes the next batch
// that puts a PUBLISH record (a message's first, so that its publish
// fails) and ends while another is on its way behind it fail without
// taking effect, and with it those behind it.
type pipeStore struct {
	*memory.Store
	delay    time.Duration
	failNext atomic.Bool

	mu      sync.Mutex
	last    chan struct{} // closed once the last batch begun has reported
	lastErr *error        // its outcome, readable once last is closed
	wg      sync.WaitGroup

	flying, peak atomic.Int32 // batches on their way, and the most at once
	async        atomic.Int32 // batches begun with ApplyAsync
	behind       atomic.Int32 // batches failed for one before them
}

func (s *pipeStore) ApplyAsync(ctx context.Context, k store.Key, ops []store.Op, done func(error)) {
	s.mu.Lock()
	prev, prevErr := s.last, s.lastErr
	if prev != nil {
		select {
		case <-prev:
			if *prevErr != nil {
				prev = nil // a batch begun after a reported error starts a new chain
			}
		default:
		}
	}
	me, myErr := make(chan struct{}), new(error)
	s.last, s.lastErr = me, myErr
	s.mu.Unlock()
	nth := s.async.Add(1)
	if n := s.flying.Add(1); n > s.peak.Load() {
		s.peak.Store(n) // only the committer begins batches: no race on peak
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		time.Sleep(s.delay)
		if prev != nil {
			<-prev
		}
		var err error
		switch {
		case prev != nil && *prevErr != nil:
			s.behind.Add(1)
			err = fmt.Errorf("pipestore: a batch before this one failed: %w", *prevErr)
		case s.async.Load() > nth && putsPublish(ops) && s.failNext.CompareAndSwap(true, false):
			err = errDiskFull // a batch is on its way behind this one
		default:
			err = s.Store.Apply(ctx, k, ops...)
		}
		*myErr = err
		s.flying.Add(-1)
		done(err)
		close(me)
	}()
}

// putsPublish reports whether ops put an outbound record holding a PUBLISH.
func putsPublish(ops []store.Op) bool {
	for _, op := range ops {
		r := op.Record
		if op.Kind == store.OpPut && r.Dir == store.Outbound && len(r.Packet) > 0 && packets.Type(r.Packet[0]>>4) == packets.PUBLISH {
			return true
		}
	}
	return false
}

func (s *pipeStore) Close() error {
	s.wg.Wait()
	return s.Store.Close()
}

// TestPipelinedCommits: with a store.Pipeliner, the committer begins an
// urgent batch while the one before it is on its way (never more than
// Config.CommitPipeline at once), and QoS 2 messages still arrive exactly once,
// in order, their records gone once they are done (MQTT-4.3.3-1: the
// PUBLISH and the PUBREL each durable before they are sent).
func TestPipelinedCommits(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "pipe")
	st := &pipeStore{Store: memory.New(), delay: 2 * time.Millisecond}
	id := uniqueID(t)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	const n = 300
	toks := make([]*Token, n)
	for i := range toks {
		toks[i] = c.PublishAsync(&Message{Topic: "pipe", QoS: 2, Payload: []byte(strconv.Itoa(i))})
	}
	for i, tok := range toks {
		if err := tok.Wait(ctxT(t, 20*time.Second)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	msgs := col.waitFor(t, n, 10*time.Second)
	col.quiet(t, n, 200*time.Millisecond)
	checkOrder(t, msgs, n)
	if p := st.peak.Load(); p != defaultPipeline {
		t.Errorf("at most %d batches on their way at once, want %d", p, defaultPipeline)
	}
	if st.async.Load() == 0 {
		t.Error("no batch went through ApplyAsync")
	}
	eventually(t, 5*time.Second, "the finished messages' records deleted", func() bool {
		return countDir(records(t, st, b.URL(), id), store.Outbound) == 0
	})
}

// TestPipelinedCommitFails: a batch that fails while the one behind it is
// on its way takes that one with it; the messages whose records were in
// either fail with the store's error and never arrive, the others arrive
// exactly once, and the client goes on once the store does.
func TestPipelinedCommitFails(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "pipefail")
	st := &pipeStore{Store: memory.New(), delay: 2 * time.Millisecond}
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Store: st, SessionExpiry: time.Hour})
	const n, window = 400, 20
	toks := make([]*Token, n)
	var want []string
	failed := 0
	wait := func(i int) {
		err := toks[i].Wait(ctxT(t, 30*time.Second))
		switch {
		case err == nil:
			want = append(want, strconv.Itoa(i))
		case errors.Is(err, errDiskFull):
			failed++
		default:
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for i := range toks {
		if i >= window {
			wait(i - window)
		}
		if i == n/2 {
			st.failNext.Store(true)
		}
		toks[i] = c.PublishAsync(&Message{Topic: "pipefail", QoS: 2, Payload: []byte(strconv.Itoa(i))})
	}
	for i := n - window; i < n; i++ {
		wait(i)
	}
	if failed == 0 || st.behind.Load() == 0 {
		t.Fatalf("%d publishes failed with the store's error, %d batches for one before them; want both", failed, st.behind.Load())
	}
	if err := c.Publish(ctxT(t, 10*time.Second), &Message{Topic: "pipefail", QoS: 2, Payload: []byte("after")}); err != nil {
		t.Fatalf("publish after the failure: %v", err)
	}
	want = append(want, "after")
	col.waitFor(t, len(want), 10*time.Second)
	col.quiet(t, len(want), 300*time.Millisecond)
	exactlyOnce(t, col, want)
	t.Logf("%d of %d publishes failed with the store; %d batches failed behind the one that did", failed, n, st.behind.Load())
}

// TestCommitPipelineOne: Config.CommitPipeline 1 commits one batch at a
// time through Apply, even with a store.Pipeliner.
func TestCommitPipelineOne(t *testing.T) {
	b := broker(t)
	st := &pipeStore{Store: memory.New()}
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Store: st, SessionExpiry: time.Hour, CommitPipeline: 1})
	for i := range 20 {
		if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "one", QoS: 2, Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := st.async.Load(); n != 0 {
		t.Fatalf("%d batches through ApplyAsync with CommitPipeline 1", n)
	}
}
