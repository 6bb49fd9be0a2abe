package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tethermq/tether/conformance/internal/limit"
	"github.com/tethermq/tether/conformance/internal/reexec"
	"github.com/tethermq/tether/store"
)

// eventuallyWait is how long a check waits for an event that must come.
const eventuallyWait = 10 * time.Second

// TimeoutEnv names an environment variable that, set to a duration
// ("2m"), replaces the time limit of one check (60s; heavy checks get three
// times as much), for slow machines or for a quicker verdict on a store
// that hangs. The limit is how long a check may go without progress (an
// operation of the store returning; in the session suite, a message
// delivered for the first time, a change to the client's inbound records,
// a new event of a child process), not how long it may run.
const TimeoutEnv = limit.TimeoutEnv

// Options configures Run. The zero value runs every check that the
// harness's capabilities allow.
type Options struct {
	// OpenChild opens, in a child process, a handle on the storage that a
	// harness described with ChildHarness.ChildConfig (HarnessFuncs.ChildConfig).
	// The checks that kill a process (Store/KillAfterApply) or trace its
	// system calls (Store/SyncOnApply) re-execute the test binary; the
	// child calls OpenChild with the configuration string. A Durable
	// harness needs it: without it those checks fail, naming what is
	// missing.
	OpenChild func(ctx context.Context, config string) (store.SessionStore, error)
}

// Run runs the store contract checks against the backend that newHarness
// prepares. Each check is a subtest with a stable name (Store/OrderBySeq,
// Reopen/KeyIsolation, Damage/FlipBytes, Lister/Sessions,
// Owner/TakeoverAfterTTL, Scanner/Pages, Pipeliner/Order, ...) and a fresh harness; the
// package doc lists them all. At most one Options may be given.
//
// In a child process started by one of its checks, Run plays the child's
// role and exits the process: newHarness is not called there (it may be
// nil, see IsChild).
func Run(t *testing.T, newHarness HarnessMaker, opts ...Options) {
	t.Helper()
	var o Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		t.Fatal("conformance: Run: more than one Options")
	}
	if spec := os.Getenv(reexec.StoreEnv); spec != "" {
		runStoreChild(o, spec)
		return
	}
	if newHarness == nil {
		t.Fatal("conformance: Run: nil HarnessMaker")
	}
	s := &suite{newHarness: newHarness, opts: o, root: t.Name()}
	t.Run("Store", func(t *testing.T) {
		for _, c := range storeChecks {
			s.run(t, c, false)
		}
	})
	t.Run("Reopen", func(t *testing.T) {
		for _, c := range storeChecks {
			if c.reopen {
				s.run(t, c, true)
			}
		}
	})
	t.Run("Damage", func(t *testing.T) {
		for _, c := range damageChecks {
			s.run(t, c, false)
		}
	})
	t.Run("Lister", func(t *testing.T) {
		for _, c := range listerChecks {
			s.run(t, c, false)
		}
	})
	t.Run("Owner", func(t *testing.T) {
		for _, c := range ownerChecks {
			s.run(t, c, false)
		}
	})
	t.Run("Scanner", func(t *testing.T) {
		for _, c := range scannerChecks {
			s.run(t, c, false)
		}
	})
	t.Run("Pipeliner", func(t *testing.T) {
		for _, c := range pipelinerChecks {
			s.run(t, c, false)
		}
	})
}

// check is one named conformance check.
type check struct {
	name   string
	heavy  bool // gets three times the normal limit (see TimeoutEnv)
	reopen bool // runs again under Reopen/, reopening the storage before it reads
	fn     func(e *env)
}

type suite struct {
	newHarness HarnessMaker
	opts       Options
	root       string // the name of the test that called Run
}

// env is what a check works with: its test, a context bounded by the
// check's progress, the harness, and the handles opened so far.
type env struct {
	t         *testing.T
	ctx       context.Context
	prog      *progress
	s         *suite
	h         Harness
	caps      Capabilities
	reopening bool // the Reopen/ variant: again reopens the storage
	stores    []store.SessionStore
}

// run runs c as a subtest with a fresh harness, a deadline and a watchdog.
func (s *suite) run(t *testing.T, c check, reopening bool) {
	t.Run(c.name, func(t *testing.T) {
		ctx, clock, stop := limit.Check(t.Name(), c.heavy)
		defer stop()
		prog := &progress{clock}

		h, err := s.newHarness(ctx, t)
		if err != nil {
			t.Fatalf("new harness: %v", err)
		}
		if h == nil {
			t.Fatal("new harness: returned a nil Harness")
		}
		e := &env{t: t, ctx: ctx, prog: prog, s: s, h: h, caps: h.Capabilities(), reopening: reopening}
		// Handles close before the harness, whatever way the check ends.
		defer h.Close()
		defer e.closeAll()
		if reopening && !e.caps.Durable {
			t.Skip("the harness is not Durable: data need not survive a reopen")
		}
		c.fn(e)
	})
}

// open makes a new handle through the harness; the check's end closes it.
func (e *env) open() store.SessionStore {
	e.t.Helper()
	s, err := e.h.MakeStore(e.ctx)
	e.prog.note()
	if err != nil {
		e.t.Fatalf("MakeStore: %v", err)
	}
	if s == nil {
		e.t.Fatal("MakeStore returned a nil store")
	}
	s = withProgress(s, e.prog)
	e.stores = append(e.stores, s)
	return s
}

// again returns the handle to read back through: in a Reopen/ variant, s
// is closed and a new handle is opened on the same storage, so what the
// check then reads must have survived the reopen; otherwise s itself.
func (e *env) again(s store.SessionStore) store.SessionStore {
	e.t.Helper()
	if !e.reopening {
		return s
	}
	if err := s.Close(); err != nil {
		e.t.Fatalf("Close before the reopen: %v", err)
	}
	return e.open()
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
		e.t.Fatalf("%s did not happen: %s", what, limit.Stalled(e.ctx))
	}
}
