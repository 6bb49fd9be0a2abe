package sealed_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// TestCapabilities: the wrapper implements each optional interface of
// package store (Scanner and Pipeliner included) exactly when its inner store does, for
// every combination, with the methods of *sealed.Store.
func TestCapabilities(t *testing.T) {
	base := func() store.SessionStore { return plain{memory.New()} }
	var sc store.Scanner // never called
	for _, inner := range []store.SessionStore{
		base(), cL{base(), nil}, cO{base(), nil}, cT{base(), nil},
		cLO{base(), nil, nil}, cLT{base(), nil, nil}, cOT{base(), nil, nil}, cLOT{base(), nil, nil, nil},
		cS{base(), sc}, cLS{base(), nil, sc}, cOS{base(), nil, sc}, cTS{base(), nil, sc},
		cLOS{base(), nil, nil, sc}, cLTS{base(), nil, nil, sc}, cOTS{base(), nil, nil, sc}, cLOTS{base(), nil, nil, nil, sc},
		cP{base(), nil}, cOSP{base(), nil, sc, nil}, cLOTSP{base(), nil, nil, nil, sc, nil},
		memory.New(),
	} {
		s := mustNew(t, inner, opts(nil))
		for _, c := range []struct {
			name string
			has  func(any) bool
		}{
			{"Lister", func(v any) bool { _, ok := v.(store.Lister); return ok }},
			{"Owner", func(v any) bool { _, ok := v.(store.Owner); return ok }},
			{"Transactor", func(v any) bool { _, ok := v.(store.Transactor); return ok }},
			{"Scanner", func(v any) bool { _, ok := v.(store.Scanner); return ok }},
			{"Pipeliner", func(v any) bool { _, ok := v.(store.Pipeliner); return ok }},
		} {
			if got, want := c.has(s), c.has(inner); got != want {
				t.Errorf("inner %T: the sealed store implements %s: %v, want %v", inner, c.name, got, want)
			}
		}
		// The methods of *Store come along with every combination.
		if _, ok := s.(interface {
			MaxPacketLen() int
			Inner() store.SessionStore
			InnerKey(store.Key) store.Key
		}); !ok {
			t.Errorf("inner %T: the sealed store lacks a method of *sealed.Store", inner)
		}
		_ = s.Close()
	}
}

// TestScanOpens: a page of the sealed store is the inner store's page,
// opened, with next passed through; a record that does not open is
// reported with the page and the scan goes on past it.
func TestScanOpens(t *testing.T) {
	ctx := context.Background()
	inner := memory.New()
	s := mustNew(t, inner, opts(testKey(77)))
	defer s.Close()
	want := []store.Record{rec(0, "meta"), rec(1, "one"), rec(2, "two"), rec(3, "three")}
	want[0].Dir = store.Meta
	apply(t, s, keyA, store.Put(want[0]), store.Put(want[1]), store.Put(want[2]), store.Put(want[3]))
	sc := s.(store.Scanner)
	page, next, err := sc.Scan(ctx, keyA, 0, 2)
	if err != nil || next != 2 {
		t.Fatalf("Scan: next %d, %v; want 2, nil", next, err)
	}
	expectRecords(t, page, want[:2])
	// Damage record 2 in the inner store: its page reports it, and the scan
	// still reaches record 3.
	ik := s.(interface{ InnerKey(store.Key) store.Key }).InnerKey(keyA)
	recs, err := inner.Load(ctx, ik)
	if err != nil {
		t.Fatal(err)
	}
	bad := recs[2]
	bad.Packet[len(bad.Packet)-1] ^= 1
	if err := inner.Apply(ctx, ik, store.Put(bad)); err != nil {
		t.Fatal(err)
	}
	page, next, err = sc.Scan(ctx, keyA, next, 1)
	var ce *store.CorruptError
	if !errors.As(err, &ce) || len(ce.Seqs) != 1 || ce.Seqs[0] != 2 || ce.Key != keyA || len(page) != 0 || next != 3 {
		t.Fatalf("Scan of the damaged record: %d records, next %d, %v; want none, 3 and a *store.CorruptError for seq 2 of %s", len(page), next, err, keyA)
	}
	page, next, err = sc.Scan(ctx, keyA, next, 1)
	if err != nil || next != 0 {
		t.Fatalf("Scan: next %d, %v; want 0, nil", next, err)
	}
	expectRecords(t, page, want[3:])
}

// Stores with Scanner and each combination of the other optional
// interfaces, for TestCapabilitiesScanner; their optional methods are
// never called.
type (
	cS struct {
		store.SessionStore
		store.Scanner
	}
	cLS struct {
		store.SessionStore
		store.Lister
		store.Scanner
	}
	cOS struct {
		store.SessionStore
		store.Owner
		store.Scanner
	}
	cTS struct {
		store.SessionStore
		store.Transactor
		store.Scanner
	}
	cLOS struct {
		store.SessionStore
		store.Lister
		store.Owner
		store.Scanner
	}
	cLTS struct {
		store.SessionStore
		store.Lister
		store.Transactor
		store.Scanner
	}
	cOTS struct {
		store.SessionStore
		store.Owner
		store.Transactor
		store.Scanner
	}
	cLOTS struct {
		store.SessionStore
		store.Lister
		store.Owner
		store.Transactor
		store.Scanner
	}
	cP struct {
		store.SessionStore
		store.Pipeliner
	}
	cOSP struct {
		store.SessionStore
		store.Owner
		store.Scanner
		store.Pipeliner
	}
	cLOTSP struct {
		store.SessionStore
		store.Lister
		store.Owner
		store.Transactor
		store.Scanner
		store.Pipeliner
	}
)
