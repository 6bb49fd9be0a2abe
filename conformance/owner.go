package conformance

import (
	"context"
	"errors"
	"time"

	"github.com/tethermq/tether/store"
)

// listerChecks are the checks of store.Lister.
var listerChecks = []check{
	{name: "Sessions", fn: checkSessions},
}

func (e *env) lister() (store.SessionStore, store.Lister) {
	s := e.open()
	l, ok := s.(store.Lister)
	if !ok {
		e.t.Skip("the store does not implement store.Lister")
	}
	return s, l
}

func checkSessions(e *env) {
	s, l := e.lister()
	sessions := func() []store.Key {
		e.t.Helper()
		keys, err := l.Sessions(e.ctx)
		if err != nil {
			e.t.Fatalf("Sessions: %v", err)
		}
		return keys
	}
	if keys := sessions(); len(keys) != 0 {
		e.t.Fatalf("Sessions of an empty store returned %v, want none", keys)
	}
	want := make(map[store.Key][]store.Record)
	for _, k := range []store.Key{key("a"), key("b"), {Server: "tcp://other.test:1883", ClientID: "a"}} {
		e.apply(s, k, store.Put(rec(1, 0)), store.Put(rec(2, 0)))
		want[k] = nil
	}
	e.expectKeys(sessions(), want)
	// A session whose records are all deleted, or that is cleared, is gone;
	// one deleted and written again in one batch stays.
	e.apply(s, key("a"), store.Delete(1), store.Delete(2))
	delete(want, key("a"))
	if err := s.Clear(e.ctx, key("b")); err != nil {
		e.t.Fatalf("Clear: %v", err)
	}
	delete(want, key("b"))
	e.apply(s, key("c"), store.Put(rec(1, 0)), store.Delete(1), store.Put(rec(2, 0)))
	want[key("c")] = nil
	e.expectKeys(sessions(), want)
}

// ownerChecks are the checks of store.Owner.
var ownerChecks = []check{
	{name: "Acquire", fn: checkAcquire},
	{name: "TokenGrows", fn: checkTokenGrows},
	{name: "SecondFailsFast", fn: checkSecondFailsFast},
	{name: "WaitUntilRelease", fn: checkWaitUntilRelease},
	{name: "WaitBoundedByContext", fn: checkWaitBoundedByContext},
	{name: "NonHolderRefused", fn: checkNonHolderRefused},
	{name: "RenewedWhileHeld", fn: checkRenewedWhileHeld},
	{name: "TakeoverAfterTTL", fn: checkTakeoverAfterTTL},
}

const (
	longTTL  = 30 * time.Second // outlives any check: only Release frees it
	shortTTL = 750 * time.Millisecond
)

// owners opens n handles that implement store.Owner, or skips the check.
func (e *env) owners(n int) ([]store.SessionStore, []store.Owner) {
	e.t.Helper()
	first := e.open()
	if _, ok := first.(store.Owner); !ok {
		e.t.Skip("the store does not implement store.Owner")
	}
	if n > 1 && !e.caps.SharedHandles {
		e.t.Skip("the store implements store.Owner but the harness does not declare SharedHandles, which ownership checks need for a second holder")
	}
	ss := []store.SessionStore{first}
	for len(ss) < n {
		ss = append(ss, e.open())
	}
	ows := make([]store.Owner, n)
	for i, s := range ss {
		o, ok := s.(store.Owner)
		if !ok {
			e.t.Fatalf("handle %d does not implement store.Owner, the first did", i)
		}
		ows[i] = o
	}
	return ss, ows
}

func (e *env) acquire(o store.Owner, k store.Key, opts store.LeaseOptions) store.Lease {
	e.t.Helper()
	l, err := o.Acquire(e.ctx, k, opts)
	if err != nil {
		e.t.Fatalf("Acquire(%s): %v", k, err)
	}
	if l == nil {
		e.t.Fatalf("Acquire(%s) returned a nil Lease and no error", k)
	}
	// Releasing twice is allowed, so the check's end can always release.
	e.t.Cleanup(func() { _ = l.Release(context.Background()) })
	return l
}

func (e *env) release(l store.Lease) {
	e.t.Helper()
	if err := l.Release(e.ctx); err != nil {
		e.t.Fatalf("Release: %v", err)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func checkAcquire(e *env) {
	ss, ows := e.owners(1)
	k := key("owned")
	l := e.acquire(ows[0], k, store.LeaseOptions{TTL: longTTL})
	if l.Key() != k {
		e.t.Errorf("Lease.Key() = %s, want %s", l.Key(), k)
	}
	if isClosed(l.Lost()) {
		e.t.Fatal("Lost() is closed right after Acquire")
	}
	// The holder writes as usual.
	e.apply(ss[0], k, store.Put(rec(1, 0)))
	e.expect(ss[0], k, []store.Record{rec(1, 0)})
	if err := ss[0].Clear(e.ctx, k); err != nil {
		e.t.Fatalf("Clear by the holder: %v", err)
	}
	e.release(l)
	if isClosed(l.Lost()) {
		e.t.Error("Release closed Lost(); it must only close on a loss")
	}
	e.release(l) // a second Release is not an error
	// Other sessions are not covered by the lease.
	l2 := e.acquire(ows[0], key("other"), store.LeaseOptions{TTL: longTTL})
	e.release(l2)
}

func checkTokenGrows(e *env) {
	_, ows := e.owners(2)
	k := key("owned")
	var last uint64
	for i, o := range []store.Owner{ows[0], ows[1], ows[0], ows[0]} {
		l := e.acquire(o, k, store.LeaseOptions{TTL: longTTL})
		if i > 0 && l.Token() <= last {
			e.t.Fatalf("acquisition %d has token %d, not above the previous %d", i, l.Token(), last)
		}
		last = l.Token()
		e.release(l)
	}
}

func checkSecondFailsFast(e *env) {
	_, ows := e.owners(2)
	k := key("owned")
	l := e.acquire(ows[0], k, store.LeaseOptions{TTL: longTTL})
	start := time.Now()
	l2, err := ows[1].Acquire(e.ctx, k, store.LeaseOptions{TTL: longTTL})
	if !errors.Is(err, store.ErrSessionTaken) {
		if l2 != nil {
			_ = l2.Release(context.Background())
		}
		e.t.Fatalf("second Acquire without Wait returned %v, want store.ErrSessionTaken", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		e.t.Errorf("second Acquire without Wait took %v to fail; it must fail at once", d)
	}
	if isClosed(l.Lost()) {
		e.t.Error("a refused Acquire closed the holder's Lost()")
	}
}

func checkWaitUntilRelease(e *env) {
	_, ows := e.owners(2)
	k := key("owned")
	l := e.acquire(ows[0], k, store.LeaseOptions{TTL: longTTL})
	type result struct {
		l   store.Lease
		err error
	}
	got := make(chan result, 1)
	go func() {
		l2, err := ows[1].Acquire(e.ctx, k, store.LeaseOptions{TTL: longTTL, Wait: true})
		got <- result{l2, err}
	}()
	// The waiter must still be waiting a while later: the lease is held.
	select {
	case r := <-got:
		if r.l != nil {
			_ = r.l.Release(context.Background())
		}
		e.t.Fatalf("Acquire with Wait returned (%v) while the lease was held", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	e.release(l)
	timer := time.NewTimer(eventuallyWait)
	defer timer.Stop()
	select {
	case r := <-got:
		if r.err != nil {
			e.t.Fatalf("Acquire with Wait after Release: %v", r.err)
		}
		defer func() { _ = r.l.Release(context.Background()) }()
		if r.l.Token() <= l.Token() {
			e.t.Errorf("the waiter's token %d is not above the released holder's %d", r.l.Token(), l.Token())
		}
	case <-timer.C:
		e.t.Fatalf("Acquire with Wait did not return within %v of the lease's Release", eventuallyWait)
	}
}

func checkWaitBoundedByContext(e *env) {
	_, ows := e.owners(2)
	k := key("owned")
	e.acquire(ows[0], k, store.LeaseOptions{TTL: longTTL})
	ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
	defer cancel()
	l2, err := ows[1].Acquire(ctx, k, store.LeaseOptions{TTL: longTTL, Wait: true})
	if l2 != nil {
		_ = l2.Release(context.Background())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		e.t.Fatalf("Acquire with Wait past its context's deadline returned %v, want context.DeadlineExceeded", err)
	}
}

func checkNonHolderRefused(e *env) {
	ss, ows := e.owners(2)
	k := key("owned")
	l := e.acquire(ows[0], k, store.LeaseOptions{TTL: longTTL})
	e.apply(ss[0], k, store.Put(rec(1, 0)))
	if err := ss[1].Apply(e.ctx, k, store.Put(rec(2, 0)), store.Delete(1)); !errors.Is(err, store.ErrSessionTaken) {
		e.t.Errorf("Apply by a non-holder returned %v, want store.ErrSessionTaken", err)
	}
	if err := ss[1].Clear(e.ctx, k); !errors.Is(err, store.ErrSessionTaken) {
		e.t.Errorf("Clear by a non-holder returned %v, want store.ErrSessionTaken", err)
	}
	e.expect(ss[0], k, []store.Record{rec(1, 0)})
	// Reading is not refused, and other sessions are free.
	e.expect(ss[1], k, []store.Record{rec(1, 0)})
	e.apply(ss[1], key("free"), store.Put(rec(1, 0)))
	// Once released, nobody holds the lease and anyone may write.
	e.release(l)
	e.apply(ss[1], k, store.Put(rec(2, 0)))
	e.expect(ss[0], k, []store.Record{rec(1, 0), rec(2, 0)})
}

func checkRenewedWhileHeld(e *env) {
	ss, ows := e.owners(2)
	k := key("owned")
	l := e.acquire(ows[0], k, store.LeaseOptions{TTL: shortTTL})
	// Several TTLs pass: the holder's renewals must keep the lease.
	time.Sleep(4 * shortTTL)
	if isClosed(l.Lost()) {
		e.t.Fatal("Lost() closed while the holder was alive and renewing")
	}
	if _, err := ows[1].Acquire(e.ctx, k, store.LeaseOptions{TTL: shortTTL}); !errors.Is(err, store.ErrSessionTaken) {
		e.t.Fatalf("Acquire of a lease renewed by its holder returned %v, want store.ErrSessionTaken", err)
	}
	e.apply(ss[0], k, store.Put(rec(1, 0)))
}

func checkTakeoverAfterTTL(e *env) {
	ss, ows := e.owners(2)
	p, ok := e.h.(Partitioner)
	if !ok {
		e.t.Skip("the harness does not implement conformance.Partitioner, needed to let a lease lapse while its holder runs")
	}
	k := key("owned")
	old := e.acquire(ows[0], k, store.LeaseOptions{TTL: shortTTL})
	e.apply(ss[0], k, store.Put(rec(1, 0)))
	heal := p.Partition(unwrap(ss[0]))
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()
	// The old holder cannot renew: after its TTL another takes over.
	start := time.Now()
	l, err := ows[1].Acquire(e.ctx, k, store.LeaseOptions{TTL: longTTL, Wait: true})
	if err != nil {
		e.t.Fatalf("Acquire with Wait of a lease whose holder is cut off: %v", err)
	}
	e.t.Cleanup(func() { _ = l.Release(context.Background()) })
	if d := time.Since(start); d > shortTTL+eventuallyWait {
		e.t.Errorf("takeover took %v with a TTL of %v", d, shortTTL)
	}
	if l.Token() <= old.Token() {
		e.t.Errorf("the new holder's token %d is not above the old holder's %d", l.Token(), old.Token())
	}
	e.eventually(old.Lost(), "closing the old holder's Lost()")
	heal()
	healed = true
	// Back in touch, the old holder's writes are refused: fenced.
	if err := ss[0].Apply(e.ctx, k, store.Put(rec(2, 0))); !errors.Is(err, store.ErrSessionTaken) {
		e.t.Errorf("Apply by the old holder after takeover returned %v, want store.ErrSessionTaken", err)
	}
	if err := ss[0].Clear(e.ctx, k); !errors.Is(err, store.ErrSessionTaken) {
		e.t.Errorf("Clear by the old holder after takeover returned %v, want store.ErrSessionTaken", err)
	}
	e.apply(ss[1], k, store.Put(rec(3, 0)))
	e.expect(ss[1], k, []store.Record{rec(1, 0), rec(3, 0)})
}
