// Package memory is an in-memory session store. Its sessions survive
// reconnects of a client but not the end of the process.
package memory

import (
	"context"
	"slices"
	"sync"

	"github.com/tethermq/tether/store"
)

var (
	_ store.SessionStore = (*Store)(nil)
	_ store.Lister       = (*Store)(nil)
)

// Store keeps sessions in memory. The zero value is not ready: use New.
type Store struct {
	mu       sync.RWMutex
	closed   bool
	sessions map[store.Key]map[uint64]store.Record // guarded by mu
}

// New returns an empty store.
func New() *Store {
	return &Store{sessions: make(map[store.Key]map[uint64]store.Record)}
}

// Load returns the records of session k in sequence order.
func (s *Store) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, store.ErrClosed
	}
	recs := s.sessions[k]
	if len(recs) == 0 {
		return nil, nil
	}
	out := make([]store.Record, 0, len(recs))
	for _, r := range recs {
		r.Packet = slices.Clone(r.Packet)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b store.Record) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out, nil
}

// Apply applies ops to session k atomically.
func (s *Store) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	if err := store.Validate(0, ops); err != nil {
		return err
	}
	recs := s.sessions[k]
	for _, op := range ops {
		switch op.Kind {
		case store.OpPut:
			if recs == nil {
				recs = make(map[uint64]store.Record)
				s.sessions[k] = recs
			}
			r := op.Record
			r.Packet = slices.Clone(r.Packet)
			recs[r.Seq] = r
		case store.OpDelete:
			delete(recs, op.Record.Seq)
		}
	}
	if recs != nil && len(recs) == 0 {
		delete(s.sessions, k)
	}
	return nil
}

// Clear removes every record of session k.
func (s *Store) Clear(ctx context.Context, k store.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	delete(s.sessions, k)
	return nil
}

// Sessions returns the keys of the sessions that hold records.
func (s *Store) Sessions(ctx context.Context) ([]store.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, store.ErrClosed
	}
	keys := make([]store.Key, 0, len(s.sessions))
	for k := range s.sessions {
		keys = append(keys, k)
	}
	return keys, nil
}

// Close discards every session; later calls return store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.sessions = nil
	return nil
}
