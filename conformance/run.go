package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/tethermq/tether/store"
)

// Time limits of one check. The context deadline comes first, so that a store
// honouring its context fails the check with a readable error; the watchdog
// comes later and only fires for a store that ignores its context.
const (
	normalTimeout  = 60 * time.Second
	heavyFactor    = 3                // heavy checks get this many times the normal limit
	eventuallyWait = 10 * time.Second // how long to wait for an event that must come
)

// TimeoutEnv names an environment variable that, set to a duration
// ("2m"), replaces the time limit of one check (60s; heavy checks get three
// times as much), for slow machines or for a quicker verdict on a store
// that hangs.
const TimeoutEnv = "TETHER_CONFORMANCE_TIMEOUT"

// checkTimeout returns the time limit of a check.
func checkTimeout(heavy bool) time.Duration {
	d := normalTimeout
	if v := os.Getenv(TimeoutEnv); v != "" {
		if e, err := time.ParseDuration(v); err == nil && e > 0 {
			d = e
		}
	}
	if heavy {
		d *= heavyFactor
	}
	return d
}

// watchdogGrace is how long past a check's deadline the watchdog waits: a
// quarter of the limit, between 1s and 15s.
func watchdogGrace(timeout time.Duration) time.Duration {
	return min(max(timeout/4, time.Second), 15*time.Second)
}

// Run runs the store contract checks against the backend that newHarness
// prepares. Each check is a subtest with a stable name (Store/OrderBySeq,
// Lister/Sessions, Owner/TakeoverAfterTTL, ...) and a fresh harness.
func Run(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	s := &suite{newHarness: newHarness}
	t.Run("Store", func(t *testing.T) {
		for _, c := range storeChecks {
			s.run(t, c)
		}
	})
	t.Run("Lister", func(t *testing.T) {
		for _, c := range listerChecks {
			s.run(t, c)
		}
	})
	t.Run("Owner", func(t *testing.T) {
		for _, c := range ownerChecks {
			s.run(t, c)
		}
	})
}

// check is one named conformance check.
type check struct {
	name  string
	heavy bool // gets heavyTimeout instead of normalTimeout
	fn    func(e *env)
}

type suite struct {
	newHarness HarnessMaker
}

// env is what a check works with: its test, a context bounded by the
// check's deadline, the harness, and the handles opened so far.
type env struct {
	t      *testing.T
	ctx    context.Context
	h      Harness
	caps   Capabilities
	stores []store.SessionStore
}

// run runs c as a subtest with a fresh harness, a deadline and a watchdog.
func (s *suite) run(t *testing.T, c check) {
	t.Run(c.name, func(t *testing.T) {
		timeout := checkTimeout(c.heavy)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		stop := watchdog(t.Name(), timeout+watchdogGrace(timeout))
		defer stop()

		h, err := s.newHarness(ctx, t)
		if err != nil {
			t.Fatalf("new harness: %v", err)
		}
		if h == nil {
			t.Fatal("new harness: returned a nil Harness")
		}
		e := &env{t: t, ctx: ctx, h: h, caps: h.Capabilities()}
		// Handles close before the harness, whatever way the check ends.
		defer h.Close()
		defer e.closeAll()
		c.fn(e)
	})
}

// watchdog ends the test binary, with every goroutine's stack, if the check
// named name has not stopped it within d. A check that blocks forever
// (a deadlock in a backend, a store ignoring its context) then fails with a
// message that names it instead of hanging the whole run.
func watchdog(name string, d time.Duration) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-done:
			return
		case <-timer.C:
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "conformance: %s still running %v after it started; the store is stuck or ignores its context\n\n%s\n", name, d, buf)
		panic("conformance: " + name + " timed out")
	}()
	return func() {
		close(done)
		<-exited
	}
}

// open makes a new handle through the harness; the check's end closes it.
func (e *env) open() store.SessionStore {
	e.t.Helper()
	s, err := e.h.MakeStore(e.ctx)
	if err != nil {
		e.t.Fatalf("MakeStore: %v", err)
	}
	if s == nil {
		e.t.Fatal("MakeStore returned a nil store")
	}
	e.stores = append(e.stores, s)
	return s
}

func (e *env) closeAll() {
	for _, s := range e.stores {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			e.t.Errorf("Close: %v", err)
		}
	}
	e.stores = nil
}

// apply applies ops and fails the check on error.
func (e *env) apply(s store.SessionStore, k store.Key, ops ...store.Op) {
	e.t.Helper()
	if err := s.Apply(e.ctx, k, ops...); err != nil {
		e.t.Fatalf("Apply(%s, %d ops): %v", k, len(ops), err)
	}
}

// load loads k and fails the check on error.
func (e *env) load(s store.SessionStore, k store.Key) []store.Record {
	e.t.Helper()
	recs, err := s.Load(e.ctx, k)
	if err != nil {
		e.t.Fatalf("Load(%s): %v", k, err)
	}
	return recs
}

// expect loads k and compares it with want.
func (e *env) expect(s store.SessionStore, k store.Key, want []store.Record) {
	e.t.Helper()
	if msg := diffRecords(e.load(s, k), want); msg != "" {
		e.t.Fatalf("Load(%s): %s", k, msg)
	}
}

// diffRecords describes the first difference between got and want, or
// returns "" when they match. A nil and an empty Packet are equal: a store
// need not tell them apart.
func diffRecords(got, want []store.Record) string {
	for i := 0; i < len(got) && i < len(want); i++ {
		g, w := got[i], want[i]
		switch {
		case g.Seq != w.Seq:
			return fmt.Sprintf("record %d has Seq %d, want %d (got %d records, want %d)", i, g.Seq, w.Seq, len(got), len(want))
		case g.Dir != w.Dir:
			return fmt.Sprintf("record %d (seq %d) has Dir %v, want %v", i, g.Seq, g.Dir, w.Dir)
		case g.ID != w.ID:
			return fmt.Sprintf("record %d (seq %d) has ID %d, want %d", i, g.Seq, g.ID, w.ID)
		case !bytes.Equal(g.Packet, w.Packet):
			return fmt.Sprintf("record %d (seq %d) has a %d-byte Packet %s, want %d bytes %s",
				i, g.Seq, len(g.Packet), preview(g.Packet), len(w.Packet), preview(w.Packet))
		}
	}
	if len(got) != len(want) {
		if len(got) > len(want) {
			return fmt.Sprintf("got %d records, want %d; first extra has Seq %d", len(got), len(want), got[len(want)].Seq)
		}
		return fmt.Sprintf("got %d records, want %d; first missing has Seq %d", len(got), len(want), want[len(got)].Seq)
	}
	return ""
}

func preview(b []byte) string {
	if len(b) > 16 {
		return fmt.Sprintf("%q...", b[:16])
	}
	return fmt.Sprintf("%q", b)
}

// pattern returns n bytes that depend on seed, so a record's Packet shows
// which write it came from.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// rec returns an outbound record whose packet identifies seq and gen.
func rec(seq uint64, gen int) store.Record {
	return store.Record{Seq: seq, Dir: store.Outbound, ID: uint16(seq%65535 + 1), Packet: pattern(seq<<8|uint64(gen), 24+int(seq%16))}
}

// puts returns a put op for every record.
func puts(recs ...store.Record) []store.Op {
	ops := make([]store.Op, len(recs))
	for i, r := range recs {
		ops[i] = store.Put(r)
	}
	return ops
}

// key returns a key unique to name, for checks that need a few sessions.
func key(name string) store.Key {
	return store.Key{Server: "tcp://broker.test:1883", ClientID: name}
}

// eventually waits for ch to close, failing the check after eventuallyWait.
func (e *env) eventually(ch <-chan struct{}, what string) {
	e.t.Helper()
	timer := time.NewTimer(eventuallyWait)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		e.t.Fatalf("%s did not happen within %v", what, eventuallyWait)
	case <-e.ctx.Done():
		e.t.Fatalf("%s did not happen before the check's deadline", what)
	}
}
