package conformance

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tethermq/tether/store"
)

// progress is the clock of one check or case. Its deadline is not a total
// but a silence: the check's context ends when nothing has moved for idle,
// so that a slow machine makes a check slow, never red, while a store or
// client that is stuck still fails within idle. Progress is noted by the
// check's own steps: a store call returning, a message delivered for the
// first time, a new event of a child process.
type progress struct {
	idle time.Duration
	last atomic.Int64 // UnixNano of the last progress
}

// newProgress returns a context that is cancelled, with a cause saying so,
// once no progress has been noted for idle, and the progress to note on.
// stop ends the watch and cancels the context.
func newProgress(parent context.Context, idle time.Duration) (context.Context, *progress, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	p := &progress{idle: idle}
	p.note()
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(min(max(idle/8, 20*time.Millisecond), time.Second))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if p.silence() >= idle {
				cancel(fmt.Errorf("conformance: no progress for %v", idle))
				return
			}
		}
	}()
	return ctx, p, func() {
		close(done)
		<-exited
		cancel(context.Canceled)
	}
}

// note records progress now.
func (p *progress) note() { p.last.Store(time.Now().UnixNano()) }

// silence returns how long nothing has moved.
func (p *progress) silence() time.Duration {
	return time.Since(time.Unix(0, p.last.Load()))
}

// stalled describes why ctx ended, for a failure message.
func stalled(ctx context.Context) string {
	if err := context.Cause(ctx); err != nil {
		return err.Error()
	}
	return "the check's context ended"
}

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
