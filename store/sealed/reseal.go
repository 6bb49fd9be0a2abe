package sealed

import (
	"bytes"
	"context"
	"errors"
	"slices"

	"github.com/tethermq/tether/store"
)

// Reseal rewrites every record of session k that is sealed with a key other
// than the keyring's current one, in one batch, so that an old key can be
// retired. It returns how many records it rewrote. A record that does not
// open is left as it is and reported in a *store.CorruptError, returned
// with the count of those that were rewritten.
//
// Reseal reads, then writes: a record the client deleted in between would
// come back. Run it only while no client drives the session. When the
// inner store is a store.Owner, Reseal holds the session's lease while it
// works, and fails with store.ErrSessionTaken while a client holds it; the
// bolt store's file lock keeps other processes out; in one process, run it
// before the client starts or after it is closed.
func (s *Store) Reseal(ctx context.Context, k store.Key) (int, error) {
	if _, ok := s.inner.(store.Owner); ok {
		l, err := s.acquire(ctx, k, store.LeaseOptions{})
		if err != nil {
			return 0, err
		}
		defer l.Release(context.WithoutCancel(ctx))
	}
	raw, err := s.inner.Load(ctx, s.name(k))
	var innerBad *store.CorruptError
	if err != nil && !errors.As(err, &innerBad) {
		return 0, err
	}
	var (
		ops    []store.Op
		bad    []uint64
		causes []error
	)
	if innerBad != nil {
		bad = append(bad, innerBad.Seqs...)
		if innerBad.Err != nil {
			causes = append(causes, innerBad.Err)
		}
	}
	for _, r := range raw {
		if id, ok := KeyID(r.Packet); ok && id == s.ring.current {
			continue
		}
		r.Packet = bytes.Clone(r.Packet)
		p, err := s.ring.open(k, r)
		if err != nil {
			bad = append(bad, r.Seq)
			causes = addCause(causes, err)
			continue
		}
		r.Packet = p
		ops = append(ops, store.Put(r))
	}
	if len(ops) > 0 {
		if err := s.Apply(ctx, k, ops...); err != nil {
			return 0, err
		}
	}
	if innerBad == nil && len(bad) == 0 {
		return len(ops), nil
	}
	slices.Sort(bad)
	return len(ops), &store.CorruptError{Key: k, Seqs: slices.Compact(bad), Err: errors.Join(causes...)}
}
