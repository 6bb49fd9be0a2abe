package conformance

import (
	"context"

	"github.com/tethermq/tether/conformance/internal/limit"
	"github.com/tethermq/tether/store"
)

//go:generate go run ./internal/capgen -o progress_caps.go

// progress is the progress clock of one check (see internal/limit), on
// which the check's steps and its store wrappers note progress.
type progress struct{ *limit.Clock }

// note records progress now.
func (p *progress) note() { p.Note() }

// noted wraps a store handle so that every call that returns notes
// progress. The wrapped handle implements exactly the optional interfaces
// of package store that the handle does, so checks find them by type
// assertion as they would on the handle; unwrap gives back the handle the
// harness made (Partitioner needs it).
//
// Go cannot add methods to a value at run time, so there is a type for
// every combination of optional interfaces: noted with a carrier per
// interface embedded. Those 31 types and the switch that picks one are
// generated into progress_caps.go (internal/capgen) rather than written
// by hand. A new optional interface needs a line in capgen, a carrier
// below and its detection in withProgress.
type noted struct {
	store.SessionStore
	p *progress
}

// capSet is a set of optional interfaces, one bit each (progress_caps.go).
type capSet uint

// carriers are the optional interfaces of a handle, each wrapped so that
// its calls note progress; set tells which of them the handle has.
type carriers struct {
	set        capSet
	lister     notedLister
	owner      notedOwner
	transactor notedTransactor
	scanner    notedScanner
	pipeliner  notedPipeliner
}

// withProgress wraps s so that its calls note progress on p.
func withProgress(s store.SessionStore, p *progress) store.SessionStore {
	var c carriers
	if l, ok := s.(store.Lister); ok {
		c.set |= capL
		c.lister = notedLister{l, p}
	}
	if o, ok := s.(store.Owner); ok {
		c.set |= capO
		c.owner = notedOwner{o, p}
	}
	if t, ok := s.(store.Transactor); ok {
		c.set |= capT
		c.transactor = notedTransactor{t, p}
	}
	if sc, ok := s.(store.Scanner); ok {
		c.set |= capS
		c.scanner = notedScanner{sc, p}
	}
	if pl, ok := s.(store.Pipeliner); ok {
		c.set |= capP
		c.pipeliner = notedPipeliner{pl, p}
	}
	return (&noted{SessionStore: s, p: p}).with(c)
}

// unwrap returns the handle the harness made under a wrapper of the suite.
func unwrap(s store.SessionStore) store.SessionStore {
	if w, ok := s.(interface{ inner() store.SessionStore }); ok {
		return w.inner()
	}
	return s
}

// inner returns the wrapped handle; every combination type has it.
func (n *noted) inner() store.SessionStore { return n.SessionStore }

func (n *noted) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	defer n.p.note()
	return n.SessionStore.Load(ctx, k)
}

func (n *noted) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	defer n.p.note()
	return n.SessionStore.Apply(ctx, k, ops...)
}

func (n *noted) Clear(ctx context.Context, k store.Key) error {
	defer n.p.note()
	return n.SessionStore.Clear(ctx, k)
}

// The carriers: each implements one optional interface through the
// handle's, noting progress when a call returns.
type (
	notedLister struct {
		l store.Lister
		p *progress
	}
	notedOwner struct {
		o store.Owner
		p *progress
	}
	notedTransactor struct {
		t store.Transactor
		p *progress
	}
	notedScanner struct {
		sc store.Scanner
		p  *progress
	}
	notedPipeliner struct {
		pl store.Pipeliner
		p  *progress
	}
)

func (c notedLister) Sessions(ctx context.Context) ([]store.Key, error) {
	defer c.p.note()
	return c.l.Sessions(ctx)
}

func (c notedOwner) Acquire(ctx context.Context, k store.Key, opts store.LeaseOptions) (store.Lease, error) {
	defer c.p.note()
	return c.o.Acquire(ctx, k, opts)
}

func (c notedTransactor) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	defer c.p.note()
	return c.t.ApplyTx(ctx, k, fn, ops...)
}

func (c notedScanner) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	defer c.p.note()
	return c.sc.Scan(ctx, k, from, limit)
}

// ApplyAsync notes progress when done is called, before it runs.
func (c notedPipeliner) ApplyAsync(ctx context.Context, k store.Key, ops []store.Op, done func(error)) {
	c.pl.ApplyAsync(ctx, k, ops, func(err error) {
		c.p.note()
		done(err)
	})
}
