package conformance

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/tethermq/tether/store"
)

// damageChecks damage the storage behind the store's back (Damager) and
// require a clean answer on Open, Load, Apply and Clear.
var damageChecks = []check{
	{name: "Truncate", fn: func(e *env) { checkDamage(e, Truncate) }},
	{name: "FlipBytes", fn: func(e *env) { checkDamage(e, FlipBytes) }},
	{name: "DropKey", fn: func(e *env) { checkDamage(e, DropKey) }},
}

// damageVictim returns the records of the session that is damaged: sizes
// on both sides of a 16-bit length, so that a cut lands inside a record.
func damageVictim() []store.Record {
	return []store.Record{
		{Seq: 1, Dir: store.Outbound, ID: 1, Packet: pattern(101, 30)},
		{Seq: 2, Dir: store.Inbound, ID: 2, Packet: pattern(102, 300)},
		{Seq: 3, Dir: store.Outbound, ID: 3, Packet: pattern(103, 70_000)},
		{Seq: 4, Dir: store.Outbound, ID: 4, Packet: pattern(104, 5)},
	}
}

// safely runs fn and fails the check, naming what, if it panics.
func (e *env) safely(what string, fn func() error) error {
	e.t.Helper()
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				e.t.Fatalf("%s panicked on damaged storage, where the contract wants an error: %v\n%s", what, p, debug.Stack())
			}
		}()
		err = fn()
	}()
	e.prog.note()
	return err
}

// damagedLoad loads k through safely.
func (e *env) damagedLoad(s store.SessionStore, k store.Key) ([]store.Record, error) {
	e.t.Helper()
	var recs []store.Record
	err := e.safely("Load("+k.String()+")", func() error {
		var err error
		recs, err = s.Load(e.ctx, k)
		return err
	})
	return recs, err
}

// genuine reports the first record of got that is not one of want (by Seq,
// with every field equal): damage passed off as data.
func genuine(got, want []store.Record) string {
	bySeq := make(map[uint64]store.Record, len(want))
	for _, r := range want {
		bySeq[r.Seq] = r
	}
	for _, g := range got {
		w, ok := bySeq[g.Seq]
		if !ok {
			return fmt.Sprintf("a record with Seq %d, which was never written", g.Seq)
		}
		if msg := diffRecords([]store.Record{g}, []store.Record{w}); msg != "" {
			return fmt.Sprintf("record Seq %d differs from what was written: %s", g.Seq, msg)
		}
	}
	return ""
}

// checkDamage writes a victim session and two bystanders, closes every
// handle, has the harness damage the victim's storage as kind says, and
// opens the storage again. Whatever the damage, no call panics and no
// damaged record is returned as good. FlipBytes and DropKey damage one
// session: Open succeeds, the bystanders load whole and take writes, and
// Clear removes the victim. FlipBytes is reported: Load of the victim fails
// with store.ErrCorrupt (a *store.CorruptError). Truncate may take the
// sessions that share the victim's file along: Open may refuse it, and
// any Load may fail, but with an error, never with fewer records and nil.
func checkDamage(e *env, kind DamageKind) {
	d := e.damagerOrSkip()
	victim := key("victim")
	bystanders := []store.Key{key("bystander-1"), key("bystander-2")}
	byRecs := []store.Record{rec(1, 7), rec(2, 7), {Seq: 3, Dir: store.Inbound, ID: 9, Packet: pattern(3, 70_000)}}
	s := e.open()
	e.apply(s, bystanders[0], puts(byRecs...)...)
	e.apply(s, victim, puts(damageVictim()...)...)
	e.apply(s, bystanders[1], puts(byRecs...)...)
	e.closeAll()

	if err := d.Damage(e.ctx, victim, kind); errors.Is(err, ErrCannotDamage) {
		e.t.Skipf("the harness cannot apply %v to this storage: %v", kind, err)
	} else if err != nil {
		e.t.Fatalf("Damage(%s, %v): %v", victim, kind, err)
	}
	lenient := kind == Truncate // the bystanders may share the damage

	var opened store.SessionStore
	err := e.safely("MakeStore (opening the store)", func() error {
		var err error
		opened, err = e.h.MakeStore(e.ctx)
		return err
	})
	if err != nil {
		if lenient {
			e.t.Logf("Open refused the truncated storage: %v", err)
			return
		}
		e.t.Fatalf("Open failed after %v damaged one session: %v; every other session is lost with it", kind, err)
	}
	if opened == nil {
		e.t.Fatal("MakeStore returned a nil store")
	}
	s = withProgress(opened, e.prog)
	e.stores = append(e.stores, s)

	intact := e.checkBystanders(s, bystanders, byRecs, lenient, "after the damage")

	recs, err := e.damagedLoad(s, victim)
	if msg := genuine(recs, damageVictim()); msg != "" {
		e.t.Fatalf("Load of the damaged session returned %s (error %v): damage passed off as data", msg, err)
	}
	switch {
	case kind == FlipBytes && err == nil:
		e.t.Fatalf("Load of a session whose record had bytes flipped returned %d records and no error, want a *store.CorruptError", len(recs))
	case kind == FlipBytes && !errors.Is(err, store.ErrCorrupt):
		e.t.Fatalf("Load of a session whose record had bytes flipped returned %v, want a *store.CorruptError (errors.Is store.ErrCorrupt)", err)
	case kind == Truncate && err == nil && len(recs) != len(damageVictim()):
		e.t.Fatalf("Load of a truncated session returned %d of its %d records and no error: records lost without a word", len(recs), len(damageVictim()))
	}
	e.t.Logf("Load of the damaged session: %d records, %v", len(recs), err)

	// Writes: to the victim, a clean error or success; to the bystanders,
	// success when they were intact.
	err = e.safely("Apply to the damaged session", func() error {
		return s.Apply(e.ctx, victim, store.Put(rec(100, 1)), store.Delete(1))
	})
	e.t.Logf("Apply to the damaged session: %v", err)
	if intact {
		next := rec(50, 8)
		if err := e.safely("Apply to an undamaged session", func() error { return s.Apply(e.ctx, bystanders[0], store.Put(next)) }); err != nil {
			e.t.Fatalf("Apply to an undamaged session after %v damaged another: %v", kind, err)
		}
		if err := e.safely("Apply to an undamaged session", func() error { return s.Apply(e.ctx, bystanders[0], store.Delete(next.Seq)) }); err != nil {
			e.t.Fatalf("Apply to an undamaged session after %v damaged another: %v", kind, err)
		}
	}
	if l, ok := s.(store.Lister); ok {
		err := e.safely("Sessions", func() error { _, err := l.Sessions(e.ctx); return err })
		if err != nil && !lenient {
			e.t.Errorf("Sessions after %v damaged one session: %v", kind, err)
		}
	}

	// Clear removes what is left of the victim, so that an application or
	// the command-line tool can get rid of it.
	err = e.safely("Clear of the damaged session", func() error { return s.Clear(e.ctx, victim) })
	switch {
	case err != nil && !lenient:
		e.t.Fatalf("Clear of the damaged session: %v; a damaged session must be removable", err)
	case err == nil:
		recs, err := e.damagedLoad(s, victim)
		if err != nil || len(recs) != 0 {
			e.t.Fatalf("Load after Clear of the damaged session returned %d records, %v; want none and no error", len(recs), err)
		}
	}

	// And all of it holds across one more reopen.
	if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		e.t.Fatalf("Close: %v", err)
	}
	s = e.open()
	e.checkBystanders(s, bystanders, byRecs, lenient, "after a further reopen")
}

// checkBystanders loads the sessions the damage did not touch. They must
// be whole; when lenient (a truncated file they may share), a Load may
// also fail with an error, but never return wrong or missing records with
// none. It reports whether every bystander was whole.
func (e *env) checkBystanders(s store.SessionStore, keys []store.Key, want []store.Record, lenient bool, when string) bool {
	e.t.Helper()
	intact := true
	for _, k := range keys {
		recs, err := e.damagedLoad(s, k)
		switch {
		case err != nil && lenient:
			intact = false
			e.t.Logf("Load(%s) %s: %v", k, when, err)
		case err != nil:
			e.t.Fatalf("Load(%s), an undamaged session, %s: %v", k, when, err)
		default:
			if msg := diffRecords(recs, want); msg != "" {
				e.t.Fatalf("Load(%s), an undamaged session, %s: %s", k, when, msg)
			}
		}
	}
	return intact
}
