package conformance_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// The Owner checks need a store with leases, which no backend of this
// module offers in process. sharedWorld is a small one: handles on one
// in-memory storage with leases and fencing, enough to check the checks.

type sharedWorld struct {
	data *memory.Store
	bug  string // a deliberate bug, for TestBroken: "owner-nofence", "owner-sametoken", "owner-nolost"

	mu     sync.Mutex
	leases map[store.Key]*fakeLease // the current lease of each key
	tokens map[store.Key]uint64     // the last token handed out per key
}

type sharedHandle struct {
	w *sharedWorld

	mu          sync.Mutex // guards the fields below
	closed      bool
	partitioned bool
	held        map[store.Key]*fakeLease // the last lease this handle took per key
	renewers    sync.WaitGroup
}

type fakeLease struct {
	h       *sharedHandle
	key     store.Key
	token   uint64
	ttl     time.Duration
	expires time.Time // guarded by h.w.mu
	lost    chan struct{}
	lostMu  sync.Once
	stop    chan struct{}
	stopMu  sync.Once
}

var (
	_ store.SessionStore = (*sharedHandle)(nil)
	_ store.Owner        = (*sharedHandle)(nil)
)

func (h *sharedHandle) state() (closed, partitioned bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed, h.partitioned
}

func (h *sharedHandle) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	closed, partitioned := h.state()
	if closed {
		return store.ErrClosed
	}
	if partitioned {
		return store.ErrUnavailable
	}
	return nil
}

// fenced reports, under w.mu, whether h may not write k.
func (h *sharedHandle) fenced(k store.Key) bool {
	if h.w.bug == "owner-nofence" {
		return false
	}
	cur := h.w.leases[k]
	h.mu.Lock()
	mine := h.held[k]
	h.mu.Unlock()
	if mine != nil && cur != mine {
		return true // it held a lease that someone else has since taken
	}
	return cur != nil && cur.h != h && time.Now().Before(cur.expires)
}

func (h *sharedHandle) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	return h.w.data.Load(ctx, k)
}

func (h *sharedHandle) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	if err := h.check(ctx); err != nil {
		return err
	}
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	if h.fenced(k) {
		return store.ErrSessionTaken
	}
	return h.w.data.Apply(ctx, k, ops...)
}

func (h *sharedHandle) Clear(ctx context.Context, k store.Key) error {
	if err := h.check(ctx); err != nil {
		return err
	}
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	if h.fenced(k) {
		return store.ErrSessionTaken
	}
	return h.w.data.Clear(ctx, k)
}

func (h *sharedHandle) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	held := h.held
	h.mu.Unlock()
	for _, l := range held {
		_ = l.Release(context.Background())
	}
	h.renewers.Wait()
	return nil
}

func (h *sharedHandle) Acquire(ctx context.Context, k store.Key, opts store.LeaseOptions) (store.Lease, error) {
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	for {
		if err := h.check(ctx); err != nil {
			return nil, err
		}
		h.w.mu.Lock()
		cur := h.w.leases[k]
		if cur == nil || !time.Now().Before(cur.expires) {
			if h.w.bug != "owner-sametoken" {
				h.w.tokens[k]++
			}
			l := &fakeLease{h: h, key: k, token: h.w.tokens[k], ttl: ttl, expires: time.Now().Add(ttl),
				lost: make(chan struct{}), stop: make(chan struct{})}
			h.w.leases[k] = l
			h.mu.Lock()
			h.held[k] = l
			h.renewers.Add(1)
			h.mu.Unlock()
			h.w.mu.Unlock()
			go l.renew()
			return l, nil
		}
		h.w.mu.Unlock()
		if !opts.Wait {
			return nil, store.ErrSessionTaken
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (l *fakeLease) renew() {
	defer l.h.renewers.Done()
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		_, partitioned := l.h.state()
		w := l.h.w
		w.mu.Lock()
		switch {
		case w.leases[l.key] != l:
			l.markLost()
		case partitioned:
			if !time.Now().Before(l.expires) {
				l.markLost()
			}
		default:
			l.expires = time.Now().Add(l.ttl)
		}
		w.mu.Unlock()
	}
}

func (l *fakeLease) markLost() {
	if l.h.w.bug == "owner-nolost" {
		return
	}
	l.lostMu.Do(func() { close(l.lost) })
}

func (l *fakeLease) Key() store.Key        { return l.key }
func (l *fakeLease) Token() uint64         { return l.token }
func (l *fakeLease) Lost() <-chan struct{} { return l.lost }

func (l *fakeLease) Release(ctx context.Context) error {
	l.stopMu.Do(func() { close(l.stop) })
	w := l.h.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leases[l.key] == l {
		delete(w.leases, l.key)
	}
	return nil
}

type sharedHarness struct {
	conformance.HarnessFuncs
	w *sharedWorld
}

func (h *sharedHarness) Partition(s store.SessionStore) (heal func()) {
	sh := s.(*sharedHandle)
	sh.mu.Lock()
	sh.partitioned = true
	sh.mu.Unlock()
	return func() {
		sh.mu.Lock()
		sh.partitioned = false
		sh.mu.Unlock()
	}
}

func newSharedHarness(ctx context.Context, t testing.TB) (conformance.Harness, error) {
	return newSharedHarnessWith("")(ctx, t)
}

func newSharedHarnessWith(bug string) conformance.HarnessMaker {
	return func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
		return sharedHarnessOf(bug), nil
	}
}

func sharedHarnessOf(bug string) *sharedHarness {
	w := &sharedWorld{data: memory.New(), bug: bug, leases: map[store.Key]*fakeLease{}, tokens: map[store.Key]uint64{}}
	h := &sharedHarness{w: w}
	h.Make = func(context.Context) (store.SessionStore, error) {
		return &sharedHandle{w: w, held: map[store.Key]*fakeLease{}}, nil
	}
	// Not Durable: the world lives as long as the process, and a child
	// process cannot open it.
	h.Caps = conformance.Capabilities{SharedHandles: true}
	h.Cleanup = func() { _ = w.data.Close() }
	return h
}

// TestOwnerChecks runs the suite, the Owner checks included, against the
// in-memory leasing store: they must pass against a correct one.
func TestOwnerChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("the lease checks wait for TTLs to pass")
	}
	conformance.Run(t, newSharedHarness)
}
