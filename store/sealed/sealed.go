package sealed

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tethermq/tether/store"
)

// Options configure a sealed store.
type Options struct {
	// Keyring holds the keys that seal and open records. Required.
	Keyring Keyring
	// NameKey, when set, hides every session's Key from the inner store:
	// the inner store sees HiddenServer and an opaque ClientID that only
	// this NameKey can map back. It is KeyLen bytes and, unlike the
	// Keyring, cannot rotate: a store opened with another NameKey (or
	// none) sees none of the sessions written under this one. Nil keeps
	// Keys in clear, which is what tools that read the backend directly
	// expect.
	NameKey []byte
	// InnerMaxPacketLen is the largest Packet the inner store accepts.
	// Zero means the inner store's MaxPacketLen() when it has that method
	// (the bolt store does), else store.MaxPacketLen.
	InnerMaxPacketLen int
}

// Store is the sealed view of an inner store. New returns it behind
// store.SessionStore, together with whichever of store.Lister, store.Owner,
// store.Transactor, store.Scanner and store.Pipeliner the inner store
// implements; its own
// methods (Inner, InnerKey, MaxPacketLen, Reseal) are reached with a type
// assertion to an interface that names them.
type Store struct {
	inner     store.SessionStore
	ring      *ring
	names     *namer // nil when Keys are kept in clear
	maxPacket int
}

var _ store.SessionStore = (*Store)(nil)

// New returns a store that seals every record it writes to inner and opens
// every record it reads from it. The result implements each of the optional
// interfaces of package store (Lister, Owner, Transactor, Scanner,
// Pipeliner) exactly
// when inner does, passed through to inner; it also has the methods of *Store
// (MaxPacketLen, Inner, InnerKey). Closing it closes inner.
func New(inner store.SessionStore, opts Options) (store.SessionStore, error) {
	if inner == nil {
		return nil, errors.New("sealed: nil inner store")
	}
	r, err := newRing(opts.Keyring)
	if err != nil {
		return nil, err
	}
	s := &Store{inner: inner, ring: r}
	if opts.NameKey != nil {
		if s.names, err = newNamer(opts.NameKey); err != nil {
			return nil, err
		}
	}
	innerMax := opts.InnerMaxPacketLen
	if innerMax == 0 {
		innerMax = store.MaxPacketLen
		if m, ok := inner.(interface{ MaxPacketLen() int }); ok {
			innerMax = m.MaxPacketLen()
		}
	}
	if s.maxPacket = innerMax - Overhead; s.maxPacket < 1 {
		return nil, fmt.Errorf("sealed: the inner store's packet limit %d leaves no room for the %d bytes of sealing", innerMax, Overhead)
	}
	return withCapabilities(s), nil
}

// MaxPacketLen returns the largest Packet the store accepts: the inner
// store's limit less Overhead. A larger one is refused with
// store.ErrTooLarge before the inner store is asked.
func (s *Store) MaxPacketLen() int { return s.maxPacket }

// Inner returns the wrapped store, whose records are the sealed ones.
func (s *Store) Inner() store.SessionStore { return s.inner }

// InnerKey returns the Key under which the inner store keeps session k: k
// itself, or with Options.NameKey its hidden name, for an operator who must
// find or remove a session's data in the backend by hand.
func (s *Store) InnerKey(k store.Key) store.Key { return s.name(k) }

// name returns the inner store's Key of session k.
func (s *Store) name(k store.Key) store.Key {
	if s.names == nil {
		return k
	}
	return s.names.hide(k)
}

// Load returns the records of session k, opened. A record that does not open
// (wrong key, unknown key id, changed bytes, moved from another session or
// Seq) is left out and reported, with the inner store's own corrupt records,
// in one *store.CorruptError naming k; the other records are still returned.
func (s *Store) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	recs, err := s.inner.Load(ctx, s.name(k))
	return s.openAll(k, recs, err)
}

// scan is the inner store's Scan of the inner Key of k, opened as Load opens
// a session; next passes through, since sealing keeps every Seq.
func (s *Store) scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	recs, next, err := s.inner.(store.Scanner).Scan(ctx, s.name(k), from, limit)
	recs, err = s.openAll(k, recs, err)
	if err != nil && !errors.Is(err, store.ErrCorrupt) {
		next = 0
	}
	return recs, next, err
}

// openAll opens recs, which the inner store read for session k with error
// err, and reports the records that do not open together with those the
// inner store found corrupt.
func (s *Store) openAll(k store.Key, recs []store.Record, err error) ([]store.Record, error) {
	var innerBad *store.CorruptError
	if err != nil && !errors.As(err, &innerBad) {
		return nil, err
	}
	var (
		bad    []uint64
		causes []error
	)
	if innerBad != nil {
		bad = append(bad, innerBad.Seqs...)
		if innerBad.Err != nil {
			causes = append(causes, innerBad.Err)
		}
	}
	out := recs[:0]
	for _, r := range recs {
		p, err := s.ring.open(k, r)
		if err != nil {
			bad = append(bad, r.Seq)
			causes = addCause(causes, err)
			continue
		}
		r.Packet = p
		out = append(out, r)
	}
	if len(out) == 0 {
		out = nil
	}
	if innerBad == nil && len(bad) == 0 {
		return out, nil
	}
	slices.Sort(bad)
	return out, &store.CorruptError{Key: k, Seqs: slices.Compact(bad), Err: errors.Join(causes...)}
}

// addCause adds err to causes unless one of the same kind is there already,
// so that a session of a thousand records under a retired key reports one
// cause, not a thousand.
func addCause(causes []error, err error) []error {
	for _, kind := range []error{ErrUnknownKey, ErrAuth, ErrFormat} {
		if errors.Is(err, kind) {
			for _, c := range causes {
				if errors.Is(c, kind) {
					return causes
				}
			}
		}
	}
	return append(causes, err)
}

// Apply seals the Packet of every put with the keyring's current key, bound
// to k and to the record's Seq, Dir and ID, and applies the batch to the
// inner store as one batch.
func (s *Store) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	sealed, err := s.seal(k, ops)
	if err != nil {
		return err
	}
	return s.inner.Apply(ctx, s.name(k), sealed...)
}

// seal checks a batch as a backend would, against the sealed limit, and
// returns it with every put's Packet sealed for session k.
func (s *Store) seal(k store.Key, ops []store.Op) ([]store.Op, error) {
	if err := store.Validate(s.maxPacket, ops); err != nil {
		return nil, fmt.Errorf("sealed: apply %s: %w", k, err)
	}
	sealed := make([]store.Op, len(ops))
	for i, op := range ops {
		if op.Kind == store.OpPut {
			p, err := s.ring.seal(k, op.Record)
			if err != nil {
				return nil, fmt.Errorf("sealed: apply %s: %w", k, err)
			}
			op.Record.Packet = p
		}
		sealed[i] = op
	}
	return sealed, nil
}

// applyTx is Apply inside the inner store's transaction with fn. Only the
// batch is sealed: what fn writes through the transaction is the
// application's own, stored as it writes it.
func (s *Store) applyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops []store.Op) error {
	sealed, err := s.seal(k, ops)
	if err != nil {
		return err
	}
	return s.inner.(store.Transactor).ApplyTx(ctx, s.name(k), fn, sealed...)
}

// refused is a batch that every store refuses before it writes anything:
// an op of no known kind (store.Validate).
var refused = []store.Op{{Kind: 0}}

// applyAsync is Apply through the inner store's ApplyAsync. A batch that
// does not seal still goes to the inner store, as a batch it refuses, so
// that the inner store's chain orders its done call and fails the batches
// after it; done then gets the sealing error.
func (s *Store) applyAsync(ctx context.Context, k store.Key, ops []store.Op, done func(error)) {
	sealed, serr := s.seal(k, ops)
	if serr != nil {
		sealed = refused
	}
	s.inner.(store.Pipeliner).ApplyAsync(ctx, s.name(k), sealed, func(err error) {
		if serr != nil && !errors.Is(err, store.ErrClosed) {
			err = serr
		}
		done(err)
	})
}

// Clear removes every record of session k from the inner store.
func (s *Store) Clear(ctx context.Context, k store.Key) error {
	return s.inner.Clear(ctx, s.name(k))
}

// Close closes the inner store.
func (s *Store) Close() error { return s.inner.Close() }

// sessions lists the inner store's sessions; with a NameKey, it maps each
// back to its real Key and leaves out those it cannot (sessions written in
// clear or under another NameKey, which this store cannot open anyway).
func (s *Store) sessions(ctx context.Context) ([]store.Key, error) {
	keys, err := s.inner.(store.Lister).Sessions(ctx)
	if err != nil || s.names == nil {
		return keys, err
	}
	out := keys[:0]
	for _, h := range keys {
		if k, err := s.names.reveal(h); err == nil {
			out = append(out, k)
		}
	}
	return out, nil
}

// acquire takes the inner store's lease on the inner Key of k. Fencing is
// the inner store's: every Apply and Clear of this store reaches the inner
// store under the same inner Key, so its lease check covers them.
func (s *Store) acquire(ctx context.Context, k store.Key, opts store.LeaseOptions) (store.Lease, error) {
	l, err := s.inner.(store.Owner).Acquire(ctx, s.name(k), opts)
	if err != nil || s.names == nil {
		return l, err
	}
	return &lease{Lease: l, key: k}, nil
}

// lease is the inner store's lease, named by the session's real Key.
type lease struct {
	store.Lease
	key store.Key
}

// Key returns the session the lease is for.
func (l *lease) Key() store.Key { return l.key }
