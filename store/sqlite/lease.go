package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tethermq/tether/store"
)

// Leases live in the table tether_leases, one row per Key that was ever
// leased: the holder (the random identity of a Store handle, "" while the
// lease is free), the last fencing token handed out for the Key, and when
// the lease expires (Unix milliseconds, by the wall clock of the processes
// sharing the file, which SQLite requires to be on one machine). The row
// outlives Release and Clear, so tokens keep growing for the life of the
// file.
//
// Every Apply and Clear reads the row inside its BEGIN IMMEDIATE
// transaction, before it writes: SQLite lets one writer at a time into the
// file, so no acquisition can come between the check and the write.

// DefaultLeaseTTL is the lease TTL when neither Options.LeaseTTL nor
// store.LeaseOptions.TTL sets one.
const DefaultLeaseTTL = 10 * time.Second

// Acquire polls at most this often while waiting for a lease held by
// another holder; releaseTimeout bounds the transaction that frees a lease
// (one that cannot be freed expires on its own after its TTL).
const (
	minAcquirePoll = 10 * time.Millisecond
	maxAcquirePoll = 250 * time.Millisecond
	releaseTimeout = 2 * time.Second
)

// leaseRow is a Key's row of tether_leases.
type leaseRow struct {
	found   bool
	holder  string
	token   uint64
	expires int64 // Unix milliseconds
}

// live reports whether the row names a holder whose lease has not expired
// at now (Unix milliseconds).
func (r leaseRow) live(now int64) bool { return r.found && r.holder != "" && r.expires > now }

func (r leaseRow) String() string {
	if !r.live(time.Now().UnixMilli()) {
		return "free"
	}
	return "held with token " + strconv.FormatUint(r.token, 10)
}

func (s *Store) readLease(ctx context.Context, conn *sql.Conn, k store.Key) (leaseRow, error) {
	var (
		r              leaseRow
		token, expires int64
	)
	err := s.queryRow(ctx, conn, `SELECT holder, token, expires FROM tether_leases
		WHERE server = CAST(?1 AS BLOB) AND client_id = CAST(?2 AS BLOB)`, k.Server, k.ClientID).Scan(&r.holder, &token, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return leaseRow{}, nil
	}
	if err != nil {
		return leaseRow{}, err
	}
	r.found, r.token, r.expires = true, uint64(token), expires
	return r, nil
}

// fence is the check every Apply and Clear makes inside its transaction,
// before writing: a handle holding a lease on k writes only while the
// stored lease is still exactly that one and unexpired; a handle holding
// none writes only while no other holder has a live lease. A lease under
// this handle's own identity that the handle no longer tracks (its
// acquisition failed after the row was written) counts as free.
func (s *Store) fence(ctx context.Context, conn *sql.Conn, k store.Key, l *lease) error {
	r, err := s.readLease(ctx, conn, k)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	if l != nil {
		if !r.live(now) || r.holder != s.holder || r.token != l.token {
			return &takenError{row: r}
		}
		return nil
	}
	if r.live(now) && r.holder != s.holder {
		return &takenError{row: r}
	}
	return nil
}

// takenError is a write refused by the fence.
type takenError struct{ row leaseRow }

func (e *takenError) Error() string {
	return store.ErrSessionTaken.Error() + " (lease now " + e.row.String() + ")"
}

func (e *takenError) Is(target error) bool { return target == store.ErrSessionTaken }

// heldLease returns the lease this handle holds on k, if any.
func (s *Store) heldLease(k store.Key) *lease {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return s.leases[k]
}

// lostErr refuses a write under a lease this handle has lost, without
// asking the database: the holder was told through Lost that it no longer
// owns the session, and must Release and Acquire again before it writes.
func lostErr(l *lease) error {
	if l != nil && l.isLost() {
		return fmt.Errorf("%w (this handle's lease was lost)", store.ErrSessionTaken)
	}
	return nil
}

// refused marks l lost when a write under it was refused by the fence.
func refused(err error, l *lease) {
	var te *takenError
	if l != nil && errors.As(err, &te) && !l.released.Load() {
		l.markLost()
	}
}

// Acquire takes the lease on k for this handle, with a fencing token larger
// than any handed out for k before in this file. A TTL of zero means
// Options.LeaseTTL. When another holder (another handle, in this process or
// another) has the lease, or another Acquire of this same handle is taking
// it, Acquire fails with store.ErrSessionTaken, or with opts.Wait polls
// until it is free or ctx is done.
//
// While the lease is held, a goroutine renews it every TTL/3; Lost is
// closed once a renewal finds another holder, or when no renewal has
// succeeded for a whole TTL (counted from the start of the last successful
// one, so the handle gives the lease up no later than the file says it
// expires).
func (s *Store) Acquire(ctx context.Context, k store.Key, opts store.LeaseOptions) (store.Lease, error) {
	ttl := opts.TTL
	if ttl == 0 {
		ttl = s.leaseTTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("sqlite: acquire %s: negative TTL %v", k, ttl)
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
			return nil, fmt.Errorf("sqlite: acquire %s: %w (%s)", k, store.ErrSessionTaken, holder)
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
			return nil, fmt.Errorf("sqlite: acquire %s: waiting for the lease (%s): %w", k, holder, ctx.Err())
		case <-t.C:
		}
	}
}

// tryAcquire makes one attempt. On refusal it returns a nil lease, how long
// the holder's lease still runs (0 when unknown), and who holds it.
func (s *Store) tryAcquire(ctx context.Context, k store.Key, ttl time.Duration) (*lease, time.Duration, string, error) {
	end, err := s.begin(ctx, "acquire")
	if err != nil {
		return nil, 0, "", err
	}
	s.lmu.Lock()
	if s.leasesClosed {
		s.lmu.Unlock()
		end()
		return nil, 0, "", fmt.Errorf("sqlite: acquire %s: %w", k, store.ErrClosed)
	}
	if old := s.leases[k]; s.pending[k] || (old != nil && !old.isLost()) {
		s.lmu.Unlock()
		end()
		return nil, 0, "held by this handle", nil
	}
	s.pending[k] = true
	s.lmu.Unlock()

	var (
		cur   leaseRow
		token uint64
		ok    bool
	)
	sent := time.Now()
	err = s.write(ctx, func(conn *sql.Conn) error {
		r, err := s.readLease(ctx, conn, k)
		if err != nil {
			return err
		}
		now := time.Now()
		if r.live(now.UnixMilli()) && r.holder != s.holder {
			cur = r
			return nil
		}
		token, ok = r.token+1, true
		_, err = conn.ExecContext(ctx, `INSERT INTO tether_leases (server, client_id, holder, token, expires)
			VALUES (CAST(?1 AS BLOB), CAST(?2 AS BLOB), ?3, ?4, ?5)
			ON CONFLICT (server, client_id) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires = excluded.expires`,
			k.Server, k.ClientID, s.holder, int64(token), now.Add(ttl).UnixMilli())
		return err
	})

	s.lmu.Lock()
	delete(s.pending, k)
	if err != nil {
		s.lmu.Unlock()
		end()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, 0, "", fmt.Errorf("sqlite: acquire %s: %w", k, classify(err))
	}
	if !ok {
		s.lmu.Unlock()
		end()
		return nil, time.Until(time.UnixMilli(cur.expires)), "lease " + cur.String(), nil
	}
	if s.leasesClosed {
		// Close ran while the transaction did: it could not see this lease.
		s.lmu.Unlock()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		_ = s.freeLease(fctx, k, token)
		cancel()
		end()
		return nil, 0, "", fmt.Errorf("sqlite: acquire %s: %w", k, store.ErrClosed)
	}
	l := &lease{
		s:     s,
		k:     k,
		token: token,
		ttl:   ttl,
		lost:  make(chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.deadline = sent.Add(ttl)
	l.watchdog = time.AfterFunc(time.Until(l.deadline), l.markLost)
	old := s.leases[k]
	s.leases[k] = l
	s.lmu.Unlock()
	end()
	if old != nil {
		old.stopRenewer() // lost already; its renewer has ended or is ending
	}
	go l.renew()
	return l, 0, "", nil
}

// lease is one held lease and its renewer goroutine.
type lease struct {
	s     *Store
	k     store.Key
	token uint64
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
	deadline time.Time   // guarded by mu: when the file says the lease expires, or earlier
	watchdog *time.Timer // guarded by mu: closes lost at deadline; reset by each renewal
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
		ok, err := l.s.renewLease(ctx, l)
		cancel()
		switch {
		case err == nil && ok:
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
		case errors.Is(err, store.ErrClosed):
			return
		default:
			t.Reset(retry) // the watchdog marks it lost if this goes on
		}
	}
}

// renewDue reports whether l's last renewal is older than a third of its
// TTL, as the renewer would find it.
func (l *lease) renewDue(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline.Sub(now) < l.ttl*2/3
}

// renewed records a renewal made at sent.
func (l *lease) renewed(sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := sent.Add(l.ttl); d.After(l.deadline) {
		l.deadline = d
		if !l.isLost() {
			l.watchdog.Reset(time.Until(l.deadline))
		}
	}
}

// extendIn renews l inside a write transaction on conn whose fence has just
// found l live and this handle's.
func (s *Store) extendIn(ctx context.Context, conn *sql.Conn, l *lease, now time.Time) error {
	_, err := s.exec(ctx, conn, `UPDATE tether_leases SET expires = ?3
		WHERE server = CAST(?1 AS BLOB) AND client_id = CAST(?2 AS BLOB) AND holder = ?4 AND token = ?5`,
		l.k.Server, l.k.ClientID, now.Add(l.ttl).UnixMilli(), s.holder, int64(l.token))
	return err
}

// renewLease extends l in the file if it is still exactly l and unexpired.
func (s *Store) renewLease(ctx context.Context, l *lease) (bool, error) {
	end, err := s.begin(ctx, "renew lease")
	if err != nil {
		return false, err
	}
	defer end()
	var ok bool
	err = s.write(ctx, func(conn *sql.Conn) error {
		now := time.Now()
		res, err := conn.ExecContext(ctx, `UPDATE tether_leases SET expires = ?3
			WHERE server = CAST(?1 AS BLOB) AND client_id = CAST(?2 AS BLOB)
			AND holder = ?4 AND token = ?5 AND expires > ?6`,
			l.k.Server, l.k.ClientID, now.Add(l.ttl).UnixMilli(), s.holder, int64(l.token), now.UnixMilli())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return err
	})
	return ok, err
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

// release stops the renewer and frees the lease in the file if it is
// still ours; the row and its token stay.
func (l *lease) release(ctx context.Context) error {
	l.relOnce.Do(func() {
		l.released.Store(true)
		l.stopRenewer()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		end, err := l.s.begin(rctx, "release")
		if err != nil {
			if !errors.Is(err, store.ErrClosed) {
				l.relErr = err
			}
			return
		}
		defer end()
		if err := l.s.freeLease(rctx, l.k, l.token); err != nil {
			l.relErr = fmt.Errorf("sqlite: release %s: %w", l.k, classify(err))
		}
	})
	return l.relErr
}

// freeLease frees k's lease in the file if it is still this handle's with
// token; the row and its token stay. The caller holds s.mu for reading.
func (s *Store) freeLease(ctx context.Context, k store.Key, token uint64) error {
	return s.write(ctx, func(conn *sql.Conn) error {
		_, err := conn.ExecContext(ctx, `UPDATE tether_leases SET holder = '', expires = 0
			WHERE server = CAST(?1 AS BLOB) AND client_id = CAST(?2 AS BLOB) AND holder = ?3 AND token = ?4`,
			k.Server, k.ClientID, s.holder, int64(token))
		return err
	})
}

// Release gives the lease up. It runs even when ctx is already done, since
// a lease left behind blocks other holders for a whole TTL. Releasing
// twice, or after the store was closed, is not an error.
func (l *lease) Release(ctx context.Context) error {
	err := l.release(ctx)
	l.s.lmu.Lock()
	if l.s.leases[l.k] == l {
		delete(l.s.leases, l.k)
	}
	l.s.lmu.Unlock()
	return err
}

// releaseAll releases every lease this handle holds, for Close, and makes
// later acquisitions fail.
func (s *Store) releaseAll() {
	s.lmu.Lock()
	s.leasesClosed = true
	held := make([]*lease, 0, len(s.leases))
	for _, l := range s.leases {
		held = append(held, l)
	}
	s.leases = map[store.Key]*lease{}
	s.lmu.Unlock()
	var wg sync.WaitGroup
	for _, l := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = l.release(context.Background())
		}()
	}
	wg.Wait()
}
