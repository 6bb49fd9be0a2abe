package sealed

import (
	"context"

	"github.com/tethermq/tether/store"
)

// The optional interfaces of package store are found by type assertion, so
// the store New returns must implement exactly those of its inner store: a
// wrapper that hid Owner would silently turn off fencing, one that hid
// Transactor would turn transactional handlers off, and one that claimed
// Lister over a store without it would fail at run time. Hence one type per
// combination, named by the initials of what it adds to *Store (Lister,
// Owner, Transactor). Adding an optional interface to package store means
// adding it here.
type (
	withL   struct{ *Store }
	withO   struct{ *Store }
	withT   struct{ *Store }
	withLO  struct{ *Store }
	withLT  struct{ *Store }
	withOT  struct{ *Store }
	withLOT struct{ *Store }
)

var (
	_ store.Lister     = withL{}
	_ store.Owner      = withO{}
	_ store.Transactor = withT{}
	_ store.Lister     = withLO{}
	_ store.Owner      = withLO{}
	_ store.Lister     = withLT{}
	_ store.Transactor = withLT{}
	_ store.Owner      = withOT{}
	_ store.Transactor = withOT{}
	_ store.Lister     = withLOT{}
	_ store.Owner      = withLOT{}
	_ store.Transactor = withLOT{}
)

// withCapabilities returns s as the type that implements the optional
// interfaces its inner store implements.
func withCapabilities(s *Store) store.SessionStore {
	_, l := s.inner.(store.Lister)
	_, o := s.inner.(store.Owner)
	_, t := s.inner.(store.Transactor)
	switch {
	case l && o && t:
		return withLOT{s}
	case l && o && !t:
		return withLO{s}
	case l && !o && t:
		return withLT{s}
	case !l && o && t:
		return withOT{s}
	case l && !o && !t:
		return withL{s}
	case !l && o && !t:
		return withO{s}
	case !l && !o && t:
		return withT{s}
	}
	return s
}

// Sessions lists the inner store's sessions (store.Lister).
func (s withL) Sessions(ctx context.Context) ([]store.Key, error) { return s.sessions(ctx) }

// Acquire takes the inner store's lease on the session (store.Owner).
func (s withO) Acquire(ctx context.Context, k store.Key, o store.LeaseOptions) (store.Lease, error) {
	return s.acquire(ctx, k, o)
}

// ApplyTx seals the batch and applies it in the inner store's transaction
// with fn (store.Transactor).
func (s withT) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	return s.applyTx(ctx, k, fn, ops)
}

// Sessions lists the inner store's sessions (store.Lister).
func (s withLO) Sessions(ctx context.Context) ([]store.Key, error) { return s.sessions(ctx) }

// Acquire takes the inner store's lease on the session (store.Owner).
func (s withLO) Acquire(ctx context.Context, k store.Key, o store.LeaseOptions) (store.Lease, error) {
	return s.acquire(ctx, k, o)
}

// Sessions lists the inner store's sessions (store.Lister).
func (s withLT) Sessions(ctx context.Context) ([]store.Key, error) { return s.sessions(ctx) }

// ApplyTx seals the batch and applies it in the inner store's transaction
// with fn (store.Transactor).
func (s withLT) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	return s.applyTx(ctx, k, fn, ops)
}

// Acquire takes the inner store's lease on the session (store.Owner).
func (s withOT) Acquire(ctx context.Context, k store.Key, o store.LeaseOptions) (store.Lease, error) {
	return s.acquire(ctx, k, o)
}

// ApplyTx seals the batch and applies it in the inner store's transaction
// with fn (store.Transactor).
func (s withOT) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	return s.applyTx(ctx, k, fn, ops)
}

// Sessions lists the inner store's sessions (store.Lister).
func (s withLOT) Sessions(ctx context.Context) ([]store.Key, error) { return s.sessions(ctx) }

// Acquire takes the inner store's lease on the session (store.Owner).
func (s withLOT) Acquire(ctx context.Context, k store.Key, o store.LeaseOptions) (store.Lease, error) {
	return s.acquire(ctx, k, o)
}

// ApplyTx seals the batch and applies it in the inner store's transaction
// with fn (store.Transactor).
func (s withLOT) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	return s.applyTx(ctx, k, fn, ops)
}
