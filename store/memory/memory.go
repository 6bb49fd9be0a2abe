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
	_ store.Scanner      = (*Store)(nil)
)

// Store keeps sessions in memory. The zero value is not ready: use New.
type Store struct {
	mu       sync.RWMutex
	closed   bool
	sessions map[store.Key]*session // guarded by mu
	free     [][]byte               // record buffers to reuse; guarded by mu
}

// session is one session's records and their order. order is kept
// lazily: it holds every Seq of recs in ascending order, and also Seqs
// deleted since (stale of them), which are dropped once they are half of
// it. So the usual writes stay cheap (a Put of a Seq above every other is
// an append; a Delete marks nothing), and Load and Scan walk the order
// instead of sorting the map.
type session struct {
	recs  map[uint64]store.Record
	order []uint64
	stale int
}

// Record buffers are reused: a replaced record's buffer takes its
// replacement, a deleted record's goes to a small free list for the next
// Put. Nothing the store hands out aliases them (Load and Scan copy), so a
// session whose records come and go — every exchange — allocates nothing
// for them once warm.
const (
	maxFree    = 256  // buffers on the free list
	maxFreeCap = 4096 // largest buffer kept
)

// buffer returns an empty buffer for a record of n bytes replacing seq in
// ss, if any. s.mu held.
func (s *Store) buffer(ss *session, seq uint64, n int) []byte {
	if old, ok := ss.recs[seq]; ok && cap(old.Packet) >= n {
		return old.Packet[:0]
	} else if ok {
		s.recycle(old.Packet)
	}
	if k := len(s.free); k > 0 && cap(s.free[k-1]) >= n {
		b := s.free[k-1]
		s.free[k-1] = nil
		s.free = s.free[:k-1]
		return b[:0]
	}
	return make([]byte, 0, n)
}

// recycle keeps b for a later record. s.mu held.
func (s *Store) recycle(b []byte) {
	if cap(b) <= maxFreeCap && len(s.free) < maxFree {
		s.free = append(s.free, b[:0])
	}
}

// put stores r (whose Packet the caller gave up).
func (ss *session) put(r store.Record) {
	if _, ok := ss.recs[r.Seq]; !ok {
		i, found := slices.BinarySearch(ss.order, r.Seq)
		if found {
			ss.stale-- // back in the order it never left
		} else {
			ss.order = slices.Insert(ss.order, i, r.Seq)
		}
	}
	ss.recs[r.Seq] = r
}

// delete removes the record seq, if there is one.
func (ss *session) delete(seq uint64) {
	if _, ok := ss.recs[seq]; !ok {
		return
	}
	delete(ss.recs, seq)
	ss.stale++
	if ss.stale > len(ss.order)/2 {
		ss.order = slices.DeleteFunc(ss.order, func(q uint64) bool {
			_, ok := ss.recs[q]
			return !ok
		})
		ss.stale = 0
	}
}

// read returns copies of up to limit records with Seq >= from, in order
// (limit <= 0: all of them), and the Seq of the record after them, or 0.
func (ss *session) read(from uint64, limit int) (out []store.Record, next uint64) {
	i, _ := slices.BinarySearch(ss.order, from)
	for _, q := range ss.order[i:] {
		r, ok := ss.recs[q]
		if !ok {
			continue
		}
		if limit > 0 && len(out) == limit {
			return out, q
		}
		r.Packet = slices.Clone(r.Packet)
		out = append(out, r)
	}
	return out, 0
}

// New returns an empty store.
func New() *Store {
	return &Store{sessions: make(map[store.Key]*session)}
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
	ss := s.sessions[k]
	if ss == nil {
		return nil, nil
	}
	recs, _ := ss.read(0, 0)
	return recs, nil
}

// Scan returns up to limit records of session k with Seq >= from, in
// sequence order, and where the next page starts (store.Scanner). A limit
// of zero or less means store.DefaultScanLimit.
func (s *Store) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if limit <= 0 {
		limit = store.DefaultScanLimit
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, 0, store.ErrClosed
	}
	ss := s.sessions[k]
	if ss == nil {
		return nil, 0, nil
	}
	recs, next := ss.read(from, limit)
	return recs, next, nil
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
	ss := s.sessions[k]
	for _, op := range ops {
		switch op.Kind {
		case store.OpPut:
			if ss == nil {
				ss = &session{recs: make(map[uint64]store.Record)}
				s.sessions[k] = ss
			}
			r := op.Record
			r.Packet = append(s.buffer(ss, r.Seq, len(r.Packet)), r.Packet...)
			ss.put(r)
		case store.OpDelete:
			if ss != nil {
				if old, ok := ss.recs[op.Record.Seq]; ok {
					s.recycle(old.Packet)
				}
				ss.delete(op.Record.Seq)
			}
		}
	}
	if ss != nil && len(ss.recs) == 0 {
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
