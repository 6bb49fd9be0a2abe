package sessiontest

import (
	"context"
	"sync"

	"github.com/tethermq/tether/store"
)

// watched wraps the store handle of a client under test so that the case
// can wait for the client's writes as events, rather than polling. It
// follows the inbound records of the session: the ones present when the
// client starts, every one the client puts, every one it deletes. It keeps
// the optional interfaces of the handle that the client looks for here
// (store.Owner, and store.Scanner, through which it reads a session in
// pages; reading changes no record).
type watched struct {
	store.SessionStore
	mu      sync.Mutex           // guards the fields below
	live    map[uint64]struct{}  // inbound records in the store, by Seq
	puts    int                  // inbound records put since the start
	changed chan struct{}        // closed and replaced after every write
	onWrite func(live, puts int) // called after every write, under mu, if set
}

type watchedOwner struct {
	*watched
	store.Owner
}

type watchedScanner struct {
	*watched
	store.Scanner
}

type watchedOwnerScanner struct {
	*watched
	store.Owner
	store.Scanner
}

// watch wraps st for the client id on url, keeping its optional
// interfaces, and returns the wrapper and the watcher.
func (s *sess) watch(st store.SessionStore, url, id string) (store.SessionStore, *watched) {
	s.t.Helper()
	// A write counts as progress when it changes the inbound records (one
	// put or completed); a client rewriting the same state does not.
	lastLive, lastPuts := -1, -1
	return watchStore(st, s.sessionRecords(st, store.Key{Server: url, ClientID: id}), func(live, puts int) {
		if live != lastLive || puts != lastPuts {
			lastLive, lastPuts = live, puts
			s.note()
		}
	})
}

// watchStore wraps st, whose session holds recs, keeping its optional
// interfaces; onWrite, if not nil, is called after every write with the
// inbound records left and put so far.
func watchStore(st store.SessionStore, recs []store.Record, onWrite func(live, puts int)) (store.SessionStore, *watched) {
	w := &watched{SessionStore: st, live: map[uint64]struct{}{}, changed: make(chan struct{}), onWrite: onWrite}
	for _, r := range recs {
		if r.Dir == store.Inbound {
			w.live[r.Seq] = struct{}{}
		}
	}
	ow, isOwner := st.(store.Owner)
	sc, isScanner := st.(store.Scanner)
	switch {
	case isOwner && isScanner:
		return &watchedOwnerScanner{w, ow, sc}, w
	case isOwner:
		return &watchedOwner{w, ow}, w
	case isScanner:
		return &watchedScanner{w, sc}, w
	}
	return w, w
}

// Apply applies ops and, when they succeed, notes the inbound records
// they put and delete.
func (w *watched) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	err := w.SessionStore.Apply(ctx, k, ops...)
	w.mu.Lock()
	defer func() {
		if w.onWrite != nil {
			w.onWrite(len(w.live), w.puts)
		}
		w.mu.Unlock()
	}()
	if err == nil {
		for _, op := range ops {
			switch {
			case op.Kind == store.OpPut && op.Record.Dir == store.Inbound:
				if _, ok := w.live[op.Record.Seq]; !ok {
					w.puts++
				}
				w.live[op.Record.Seq] = struct{}{}
			default: // a deletion, or a put of another kind of record
				delete(w.live, op.Record.Seq)
			}
		}
	}
	close(w.changed)
	w.changed = make(chan struct{})
	return err
}

// Clear clears k and signals the write.
func (w *watched) Clear(ctx context.Context, k store.Key) error {
	err := w.SessionStore.Clear(ctx, k)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		clear(w.live)
	}
	close(w.changed)
	w.changed = make(chan struct{})
	return err
}

// waitInbound waits until the client has recorded at least handled
// inbound QoS 2 messages and completed every inbound exchange it recorded:
// no inbound record is left. The client deletes an inbound record durably
// before it sends the PUBCOMP, so this comes as soon as the last PUBREL has
// been answered. (Outbound deletions may be lazy, riding in a later batch,
// so they are checked after Close.)
func (s *sess) waitInbound(w *watched, handled int) {
	s.t.Helper()
	for {
		w.mu.Lock()
		live, puts, ch := len(w.live), w.puts, w.changed
		w.mu.Unlock()
		if live == 0 && puts >= handled {
			return
		}
		select {
		case <-ch:
		case <-s.ctx.Done():
			s.fatalf("timed out waiting for the inbound QoS 2 exchanges to complete (%s): %d of %d handled messages recorded, %d record(s) left", s.timedOut(), puts, handled, live)
		}
	}
}
