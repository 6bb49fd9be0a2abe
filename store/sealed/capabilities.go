package sealed

import (
	"context"

	"github.com/tethermq/tether/store"
)

// The optional interfaces of package store are found by type assertion, so
// the store New returns must implement exactly those of its inner store: a
// wrapper that hid Owner would silently turn off fencing, one that hid
// Transactor would turn transactional handlers off, one that hid Scanner
// would make the client load a long backlog whole, one that hid Pipeliner
// would make its commits wait for each other, and one that claimed Lister
// over a store without it would fail at run time.
//
// Each optional interface has a carrier type below that implements it for
// a *Store, and there is one type per combination, embedding *Store and
// the carriers of the interfaces it adds, named by their initials (Lister,
// Owner, Transactor, Scanner, Pipeliner). Adding an optional interface to package
// store means adding its carrier and doubling the combinations.
type (
	lister     struct{ s *Store }
	owner      struct{ s *Store }
	transactor struct{ s *Store }
	scanner    struct{ s *Store }
	pipeliner  struct{ s *Store }
)

// Sessions lists the inner store's sessions (store.Lister).
func (c lister) Sessions(ctx context.Context) ([]store.Key, error) { return c.s.sessions(ctx) }

// Acquire takes the inner store's lease on the session (store.Owner).
func (c owner) Acquire(ctx context.Context, k store.Key, o store.LeaseOptions) (store.Lease, error) {
	return c.s.acquire(ctx, k, o)
}

// ApplyTx seals the batch and applies it in the inner store's transaction
// with fn (store.Transactor).
func (c transactor) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	return c.s.applyTx(ctx, k, fn, ops)
}

// Scan reads a page of the inner store's session and opens its records
// (store.Scanner).
func (c scanner) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	return c.s.scan(ctx, k, from, limit)
}

// ApplyAsync seals the batch and begins it on the inner store
// (store.Pipeliner).
func (c pipeliner) ApplyAsync(ctx context.Context, k store.Key, ops []store.Op, done func(error)) {
	c.s.applyAsync(ctx, k, ops, done)
}

type (
	withL struct {
		*Store
		lister
	}
	withO struct {
		*Store
		owner
	}
	withT struct {
		*Store
		transactor
	}
	withS struct {
		*Store
		scanner
	}
	withP struct {
		*Store
		pipeliner
	}
	withLO struct {
		*Store
		lister
		owner
	}
	withLT struct {
		*Store
		lister
		transactor
	}
	withLS struct {
		*Store
		lister
		scanner
	}
	withLP struct {
		*Store
		lister
		pipeliner
	}
	withOT struct {
		*Store
		owner
		transactor
	}
	withOS struct {
		*Store
		owner
		scanner
	}
	withOP struct {
		*Store
		owner
		pipeliner
	}
	withTS struct {
		*Store
		transactor
		scanner
	}
	withTP struct {
		*Store
		transactor
		pipeliner
	}
	withSP struct {
		*Store
		scanner
		pipeliner
	}
	withLOT struct {
		*Store
		lister
		owner
		transactor
	}
	withLOS struct {
		*Store
		lister
		owner
		scanner
	}
	withLOP struct {
		*Store
		lister
		owner
		pipeliner
	}
	withLTS struct {
		*Store
		lister
		transactor
		scanner
	}
	withLTP struct {
		*Store
		lister
		transactor
		pipeliner
	}
	withLSP struct {
		*Store
		lister
		scanner
		pipeliner
	}
	withOTS struct {
		*Store
		owner
		transactor
		scanner
	}
	withOTP struct {
		*Store
		owner
		transactor
		pipeliner
	}
	withOSP struct {
		*Store
		owner
		scanner
		pipeliner
	}
	withTSP struct {
		*Store
		transactor
		scanner
		pipeliner
	}
	withLOTS struct {
		*Store
		lister
		owner
		transactor
		scanner
	}
	withLOTP struct {
		*Store
		lister
		owner
		transactor
		pipeliner
	}
	withLOSP struct {
		*Store
		lister
		owner
		scanner
		pipeliner
	}
	withLTSP struct {
		*Store
		lister
		transactor
		scanner
		pipeliner
	}
	withOTSP struct {
		*Store
		owner
		transactor
		scanner
		pipeliner
	}
	withLOTSP struct {
		*Store
		lister
		owner
		transactor
		scanner
		pipeliner
	}
)

// Capability bits, for withCapabilities.
const (
	capL = 1 << iota
	capO
	capT
	capS
	capP
)

// withCapabilities returns s as the type that implements the optional
// interfaces its inner store implements.
func withCapabilities(s *Store) store.SessionStore {
	var caps int
	if _, ok := s.inner.(store.Lister); ok {
		caps |= capL
	}
	if _, ok := s.inner.(store.Owner); ok {
		caps |= capO
	}
	if _, ok := s.inner.(store.Transactor); ok {
		caps |= capT
	}
	if _, ok := s.inner.(store.Scanner); ok {
		caps |= capS
	}
	if _, ok := s.inner.(store.Pipeliner); ok {
		caps |= capP
	}
	l, o, t, sc, pl := lister{s}, owner{s}, transactor{s}, scanner{s}, pipeliner{s}
	switch caps {
	case capL:
		return withL{s, l}
	case capO:
		return withO{s, o}
	case capT:
		return withT{s, t}
	case capS:
		return withS{s, sc}
	case capP:
		return withP{s, pl}
	case capL | capO:
		return withLO{s, l, o}
	case capL | capT:
		return withLT{s, l, t}
	case capL | capS:
		return withLS{s, l, sc}
	case capL | capP:
		return withLP{s, l, pl}
	case capO | capT:
		return withOT{s, o, t}
	case capO | capS:
		return withOS{s, o, sc}
	case capO | capP:
		return withOP{s, o, pl}
	case capT | capS:
		return withTS{s, t, sc}
	case capT | capP:
		return withTP{s, t, pl}
	case capS | capP:
		return withSP{s, sc, pl}
	case capL | capO | capT:
		return withLOT{s, l, o, t}
	case capL | capO | capS:
		return withLOS{s, l, o, sc}
	case capL | capO | capP:
		return withLOP{s, l, o, pl}
	case capL | capT | capS:
		return withLTS{s, l, t, sc}
	case capL | capT | capP:
		return withLTP{s, l, t, pl}
	case capL | capS | capP:
		return withLSP{s, l, sc, pl}
	case capO | capT | capS:
		return withOTS{s, o, t, sc}
	case capO | capT | capP:
		return withOTP{s, o, t, pl}
	case capO | capS | capP:
		return withOSP{s, o, sc, pl}
	case capT | capS | capP:
		return withTSP{s, t, sc, pl}
	case capL | capO | capT | capS:
		return withLOTS{s, l, o, t, sc}
	case capL | capO | capT | capP:
		return withLOTP{s, l, o, t, pl}
	case capL | capO | capS | capP:
		return withLOSP{s, l, o, sc, pl}
	case capL | capT | capS | capP:
		return withLTSP{s, l, t, sc, pl}
	case capO | capT | capS | capP:
		return withOTSP{s, o, t, sc, pl}
	case capL | capO | capT | capS | capP:
		return withLOTSP{s, l, o, t, sc, pl}
	}
	return s
}
