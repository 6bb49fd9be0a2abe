package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tethermq/tether/store"
)

// Acquire polls at most this often while waiting for a lease held by
// another holder; Release deletes the lease, so a waiter sees it free
// within one interval.
const (
	minAcquirePoll = 10 * time.Millisecond
	maxAcquirePoll = 250 * time.Millisecond
	// releaseTimeout bounds the script that deletes a lease: a lease that
	// cannot be deleted expires on its own after its TTL.
	releaseTimeout = 2 * time.Second
)

// Acquire takes the lease on k for this handle, with a fencing token larger
// than any handed out for k before. A TTL of zero means Options.LeaseTTL.
// When another holder has the lease (or another Acquire of this same handle
// is taking it), Acquire fails with store.ErrSessionTaken, or with
// opts.Wait polls until it is free or ctx is done.
//
// While the lease is held, a goroutine renews it every TTL/3; Lost is
// closed once a renewal finds another holder, or when no renewal has
// succeeded for a whole TTL (counted from when that renewal was sent, so
// the handle gives the lease up no later than Redis expires it).
func (s *Store) Acquire(ctx context.Context, k store.Key, opts store.LeaseOptions) (store.Lease, error) {
	ttl := opts.TTL
	if ttl == 0 {
		ttl = s.ttl
	}
	if ttl < 0 {
		return nil, fmt.Errorf("redis: acquire %s: negative TTL %v", k, ttl)
	}
	ttl = max(ttl.Round(time.Millisecond), 3*time.Millisecond)
	poll := minAcquirePoll
	for {
		l, wait, holder, err := s.tryAcquire(ctx, k, ttl)
		if err != nil {
			return nil, err
		}
		if l != nil {
			return l, nil
		}
		if !opts.Wait {
			return nil, fmt.Errorf("redis: acquire %s: %w (%s)", k, store.ErrSessionTaken, holder)
		}
		d := poll
		if wait > 0 && wait < d {
			d = wait // the holder's lease expires sooner than the next poll
		}
		poll = min(2*poll, maxAcquirePoll)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("redis: acquire %s: waiting for %s: %w", k, holder, ctx.Err())
		case <-t.C:
		}
	}
}

// tryAcquire makes one attempt. On refusal it returns a nil lease, how long
// the holder's lease still runs (0 when unknown), and who holds it.
func (s *Store) tryAcquire(ctx context.Context, k store.Key, ttl time.Duration) (*lease, time.Duration, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, "", err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, 0, "", fmt.Errorf("redis: acquire %s: %w", k, store.ErrClosed)
	}
	if old := s.leases[k]; s.pending[k] || (old != nil && !old.isLost()) {
		s.mu.Unlock()
		return nil, 0, "held by this handle", nil
	}
	s.pending[k] = true
	s.acquiring.Add(1) // Close waits, so a lease taken meanwhile is released before the client closes
	defer s.acquiring.Done()
	s.mu.Unlock()

	keys := s.keys(k)
	sent := time.Now()
	res, err := acquireScript.Run(ctx, s.rdb, []string{keys.lease, keys.fence},
		s.holder+":", ttl.Milliseconds()).Slice()

	s.mu.Lock()
	delete(s.pending, k)
	if err != nil {
		s.mu.Unlock()
		return nil, 0, "", s.fail(ctx, "acquire", k, err)
	}
	if len(res) < 2 {
		s.mu.Unlock()
		return nil, 0, "", s.fail(ctx, "acquire", k, fmt.Errorf("unexpected reply %v", res))
	}
	if ok, _ := res[0].(int64); ok != 1 {
		s.mu.Unlock()
		pttl, _ := res[1].(int64)
		var cur string
		if len(res) > 2 {
			cur, _ = res[2].(string)
		}
		return nil, time.Duration(pttl) * time.Millisecond, "lease " + describeLease(cur), nil
	}
	token, _ := res[1].(int64)
	l := &lease{
		s:     s,
		k:     k,
		key:   keys.lease,
		token: uint64(token),
		value: s.holder + ":" + strconv.FormatInt(token, 10),
		ttl:   ttl,
		lost:  make(chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.deadline = sent.Add(ttl)
	l.watchdog = time.AfterFunc(ttl-time.Since(sent), l.markLost)
	if s.closed {
		// Close ran while the script did: it could not see this lease.
		s.mu.Unlock()
		close(l.done)
		if rerr := l.release(ctx); rerr != nil {
			return nil, 0, "", fmt.Errorf("redis: acquire %s: %w (and the lease taken meanwhile was not released: %w)", k, store.ErrClosed, rerr)
		}
		return nil, 0, "", fmt.Errorf("redis: acquire %s: %w", k, store.ErrClosed)
	}
	old := s.leases[k]
	s.leases[k] = l
	s.mu.Unlock()
	if old != nil {
		old.stopRenewer() // lost already; its renewer has ended or is ending (not waited for under mu)
	}
	go l.renew()
	return l, 0, "", nil
}

// lease is one held lease and its renewer goroutine.
type lease struct {
	s     *Store
	k     store.Key
	key   string // the lease's Redis key
	token uint64
	value string // "<holder>:<token>", what the lease key holds while ours
	ttl   time.Duration

	lost     chan struct{} // closed by markLost
	lostOnce sync.Once
	stop     chan struct{} // closed to end the renewer
	stopOnce sync.Once
	done     chan struct{} // closed when the renewer has ended
	ctx      context.Context
	cancel   context.CancelFunc // ends a renewal in flight
	relOnce  sync.Once
	relErr   error
	released atomic.Bool // set when Release starts: a refusal after it is no loss

	mu       sync.Mutex
	deadline time.Time   // guarded by mu: when Redis may expire the lease
	watchdog *time.Timer // closes lost at deadline; reset by each renewal
}

// Key returns the session the lease is for.
func (l *lease) Key() store.Key { return l.k }

// Token returns the fencing token of this acquisition.
func (l *lease) Token() uint64 { return l.token }

// Lost is closed once the lease is no longer this handle's.
func (l *lease) Lost() <-chan struct{} { return l.lost }

func (l *lease) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

func (l *lease) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

// renew keeps the lease alive every TTL/3, retrying sooner after a failed
// attempt, until it is stopped or the lease is lost.
func (l *lease) renew() {
	defer close(l.done)
	interval := l.ttl / 3
	retry := max(l.ttl/10, time.Millisecond)
	t := time.NewTimer(interval)
	defer t.Stop()
	ms := l.ttl.Milliseconds()
	for {
		select {
		case <-l.stop:
			return
		case <-l.lost:
			return
		case <-t.C:
		}
		sent := time.Now()
		l.mu.Lock()
		deadline := l.deadline
		l.mu.Unlock()
		ctx, cancel := context.WithDeadline(l.ctx, deadline)
		ok, err := renewScript.Run(ctx, l.s.rdb, []string{l.key}, l.value, ms).Int64()
		cancel()
		switch {
		case err == nil && ok == 1:
			l.mu.Lock()
			l.deadline = sent.Add(l.ttl)
			if !l.isLost() {
				l.watchdog.Reset(time.Until(l.deadline))
			}
			l.mu.Unlock()
			t.Reset(interval)
		case err == nil:
			l.markLost() // expired, or another holder has it
			return
		default:
			t.Reset(retry) // the watchdog marks it lost if this goes on
		}
	}
}

// stopRenewer ends the renewer and the watchdog and waits for them.
func (l *lease) stopRenewer() {
	l.stopOnce.Do(func() {
		close(l.stop)
		l.cancel()
	})
	<-l.done
	l.mu.Lock()
	l.watchdog.Stop()
	l.mu.Unlock()
}

// release stops the renewer and deletes the lease if it is still ours.
func (l *lease) release(ctx context.Context) error {
	l.relOnce.Do(func() {
		l.released.Store(true)
		l.stopRenewer()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if err := releaseScript.Run(rctx, l.s.rdb, []string{l.key}, l.value).Err(); err != nil {
			l.relErr = fmt.Errorf("redis: release %s: %w: %w", l.k, store.ErrUnavailable, err)
		}
	})
	return l.relErr
}

// Release gives the lease up. It runs even when ctx is already done, since
// a lease left behind blocks other holders for a whole TTL. Releasing twice,
// or after the store was closed, is not an error.
func (l *lease) Release(ctx context.Context) error {
	err := l.release(ctx)
	l.s.mu.Lock()
	if l.s.leases[l.k] == l {
		delete(l.s.leases, l.k)
	}
	l.s.mu.Unlock()
	if errors.Is(err, store.ErrUnavailable) && l.s.isClosed() {
		return nil
	}
	return err
}
