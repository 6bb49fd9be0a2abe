package conformance

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tethermq/tether/conformance/internal/limit"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// optional lists the optional interfaces of package store, each with a
// type assertion of the test's own.
var optional = []struct {
	name string
	has  func(store.SessionStore) bool
}{
	{"Lister", func(s store.SessionStore) bool { _, ok := s.(store.Lister); return ok }},
	{"Owner", func(s store.SessionStore) bool { _, ok := s.(store.Owner); return ok }},
	{"Transactor", func(s store.SessionStore) bool { _, ok := s.(store.Transactor); return ok }},
	{"Scanner", func(s store.SessionStore) bool { _, ok := s.(store.Scanner); return ok }},
}

// capsOf names the optional interfaces s implements, "" for none.
func capsOf(s store.SessionStore) string {
	var names []string
	for _, o := range optional {
		if o.has(s) {
			names = append(names, o.name)
		}
	}
	return strings.Join(names, "+")
}

// plainStore hides every optional interface of the store it holds.
type plainStore struct{ store.SessionStore }

// listerStore has store.Lister and no store.Scanner.
type listerStore struct {
	store.SessionStore
	store.Lister
}

// allCaps is a memory store (Lister, Scanner) that is also an Owner and a
// Transactor, of sorts: Acquire always fails, ApplyTx runs fn then Apply.
type allCaps struct{ *memory.Store }

var errNoLease = errors.New("allCaps: no leases here")

func (a allCaps) Acquire(context.Context, store.Key, store.LeaseOptions) (store.Lease, error) {
	return nil, errNoLease
}

func (a allCaps) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	if err := fn(nil); err != nil {
		return err
	}
	return a.Apply(ctx, k, ops...)
}

func TestWithProgressKeepsCapabilities(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	p := &progress{&limit.Clock{}}
	for _, c := range []struct {
		name  string
		s     store.SessionStore
		inner string // what s implements, to keep the cases honest
	}{
		{"memory", mem, "Lister+Scanner"},
		{"without Scanner", listerStore{mem, mem}, "Lister"},
		{"without any", plainStore{mem}, ""},
		{"with all", allCaps{mem}, "Lister+Owner+Transactor+Scanner"},
	} {
		if got := capsOf(c.s); got != c.inner {
			t.Fatalf("%s: the inner store implements %q, the case expects %q", c.name, got, c.inner)
		}
		w := withProgress(c.s, p)
		if got := capsOf(w); got != c.inner {
			t.Errorf("%s: the wrapped store implements %q, the inner one %q", c.name, got, c.inner)
		}
		if unwrap(w) != c.s {
			t.Errorf("%s: unwrap does not give back the inner store", c.name)
		}
	}
}

// TestWithProgressEveryCombination checks withProgress over inner stores
// of every set of optional interfaces. The combination types of
// progress_caps.go serve as those stores: what each implements is found
// here by type assertion, and they must cover every set.
func TestWithProgressEveryCombination(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	p := &progress{&limit.Clock{}}
	base := &noted{SessionStore: plainStore{mem}, p: p}
	seen := make(map[string]bool)
	for set := range capSet(1 << len(optional)) {
		inner := base.with(carriers{set: set})
		have := capsOf(inner)
		seen[have] = true
		w := withProgress(inner, p)
		if got := capsOf(w); got != have {
			t.Errorf("over a store implementing %q, the wrapped store implements %q", have, got)
		}
		if unwrap(w) != inner {
			t.Errorf("over a store implementing %q, unwrap does not give it back", have)
		}
	}
	if len(seen) != 1<<len(optional) {
		t.Errorf("the inner stores cover %d of the %d sets of optional interfaces", len(seen), 1<<len(optional))
	}
}

// TestWithProgressNotes checks that every call through the wrapper,
// optional interfaces included, notes progress when it returns.
func TestWithProgressNotes(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	k := key("progress")
	put := store.Put(store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte{1}})
	if got, want := capsOf(withProgress(allCaps{mem}, &progress{&limit.Clock{}})), capsOf(allCaps{mem}); got != want {
		t.Fatalf("the wrapped store implements %q, the inner one %q", got, want)
	}
	for _, c := range []struct {
		name string
		call func(w store.SessionStore) error
	}{
		{"Apply", func(w store.SessionStore) error { return w.Apply(ctx, k, put) }},
		{"Load", func(w store.SessionStore) error { _, err := w.Load(ctx, k); return err }},
		{"Scan", func(w store.SessionStore) error { _, _, err := w.(store.Scanner).Scan(ctx, k, 0, 0); return err }},
		{"Sessions", func(w store.SessionStore) error { _, err := w.(store.Lister).Sessions(ctx); return err }},
		{"ApplyTx", func(w store.SessionStore) error {
			return w.(store.Transactor).ApplyTx(ctx, k, func(any) error { return nil }, put)
		}},
		{"Acquire", func(w store.SessionStore) error {
			if _, err := w.(store.Owner).Acquire(ctx, k, store.LeaseOptions{}); !errors.Is(err, errNoLease) {
				return err
			}
			return nil
		}},
		{"Clear", func(w store.SessionStore) error { return w.Clear(ctx, k) }},
	} {
		clock := &limit.Clock{}
		if err := c.call(withProgress(allCaps{mem}, &progress{clock})); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if clock.Last().Equal(time.Unix(0, 0)) {
			t.Errorf("%s through the wrapper noted no progress", c.name)
		}
	}
}
