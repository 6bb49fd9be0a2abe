package conformance

import (
	"context"

	"github.com/tethermq/tether/conformance/internal/limit"
	"github.com/tethermq/tether/store"
)

// progress is the progress clock of one check (see internal/limit), on
// which the check's steps and its store wrappers note progress.
type progress struct{ *limit.Clock }

// note records progress now.
func (p *progress) note() { p.Note() }

// noted wraps a store handle so that every call that returns notes
// progress. It keeps the optional interfaces of the handle; unwrap gives
// back the handle the harness made (Partitioner needs it).
type noted struct {
	store.SessionStore
	p *progress
}

type notedOwner struct {
	*noted
	store.Owner
}

type notedLister struct {
	*noted
	store.Lister
}

type notedOwnerLister struct {
	*noted
	store.Owner
	store.Lister
}

// withProgress wraps s so that its calls note progress on p.
func withProgress(s store.SessionStore, p *progress) store.SessionStore {
	n := &noted{SessionStore: s, p: p}
	ow, isOwner := s.(store.Owner)
	li, isLister := s.(store.Lister)
	switch {
	case isOwner && isLister:
		return &notedOwnerLister{n, ow, li}
	case isOwner:
		return &notedOwner{n, ow}
	case isLister:
		return &notedLister{n, li}
	}
	return n
}

// unwrap returns the handle the harness made under a wrapper of the suite.
func unwrap(s store.SessionStore) store.SessionStore {
	switch w := s.(type) {
	case *noted:
		return w.SessionStore
	case *notedOwner:
		return w.SessionStore
	case *notedLister:
		return w.SessionStore
	case *notedOwnerLister:
		return w.SessionStore
	}
	return s
}

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
