package main

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// countKey is the session the countingStore tests use.
var countKey = store.Key{Server: "mqtt://count.test:1883", ClientID: "count"}

// outRec returns an outbound PUBLISH record.
func outRec(seq uint64) store.Record {
	return store.Record{Seq: seq, Dir: store.Outbound, ID: uint16(seq), Packet: []byte{byte(packets.PUBLISH)<<4 | 2, 0}}
}

// backlog writes, straight to st, a session of 10 outbound records among
// a meta and two inbound ones, with gaps in its Seqs.
func backlog(t *testing.T, st store.SessionStore) {
	t.Helper()
	ops := []store.Op{
		store.Put(store.Record{Seq: store.MetaSeq, Dir: store.Meta, Packet: []byte{1}}),
		store.Put(store.Record{Seq: 4, Dir: store.Inbound, ID: 4, Packet: []byte{1}}),
		store.Put(store.Record{Seq: 9, Dir: store.Inbound, ID: 9, Packet: []byte{1}}),
	}
	for _, q := range []uint64{1, 2, 3, 5, 6, 7, 11, 12, 20, 30} {
		ops = append(ops, store.Put(outRec(q)))
	}
	if err := st.Apply(context.Background(), countKey, ops...); err != nil {
		t.Fatal(err)
	}
}

// scanAll reads session countKey through sc in pages of limit records,
// checking that c says it is reading until the last page.
func scanAll(t *testing.T, c *countingStore, sc store.Scanner, limit int) {
	t.Helper()
	for from := uint64(0); ; {
		_, next, err := sc.Scan(context.Background(), countKey, from, limit)
		if err != nil {
			t.Fatalf("Scan from %d: %v", from, err)
		}
		if next == 0 {
			if c.reading() {
				t.Fatal("reading() after the last page")
			}
			return
		}
		if !c.reading() {
			t.Fatalf("reading() false after the page from %d, with more to come", from)
		}
		from = next
	}
}

func held(c *countingStore) int {
	n, _ := c.outbound()
	return n
}

// plainStore hides every optional interface of the store it holds.
type plainStore struct{ store.SessionStore }

func TestCountingStoreCapabilities(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	h := newCountingStore(mem).handle()
	if _, ok := h.(store.Scanner); !ok {
		t.Error("over a store.Scanner, the client's store is no store.Scanner: it loads sessions whole")
	}
	// The wrapper never passed Lister (or Owner, Transactor) through.
	if _, ok := h.(store.Lister); ok {
		t.Error("the client's store is a store.Lister: the wrapper passes more than Scanner through")
	}
	h = newCountingStore(plainStore{mem}).handle()
	if _, ok := h.(store.Scanner); ok {
		t.Error("over a store without store.Scanner, the client's store is a store.Scanner")
	}
}

func TestCountingStoreScanCountsAsLoad(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	backlog(t, mem)
	const want = 10

	loaded := newCountingStore(mem)
	if _, err := loaded.Load(ctx, countKey); err != nil {
		t.Fatal(err)
	}
	if n := held(loaded); n != want {
		t.Fatalf("after Load: %d outbound records held, want %d", n, want)
	}

	for _, limit := range []int{1, 3, 0} {
		c := newCountingStore(mem)
		sc := c.handle().(store.Scanner)
		scanAll(t, c, sc, limit)
		if n := held(c); n != want {
			t.Fatalf("after a scan in pages of %d: %d outbound records held, want %d as after Load", limit, n, want)
		}
		// Reading the same records again counts none twice.
		scanAll(t, c, sc, 2)
		if _, err := c.Load(ctx, countKey); err != nil {
			t.Fatal(err)
		}
		if n, stored := c.outbound(); n != want || stored != 0 {
			t.Fatalf("after a second scan and a Load: %d held, %d stored, want %d and 0", n, stored, want)
		}
	}

	// Records deleted behind the wrapper's back leave the count at the
	// next scan, as at the next Load.
	c := newCountingStore(mem)
	sc := c.handle().(store.Scanner)
	scanAll(t, c, sc, 4)
	if err := mem.Apply(ctx, countKey, store.Delete(2), store.Delete(30)); err != nil {
		t.Fatal(err)
	}
	scanAll(t, c, sc, 4)
	if n := held(c); n != want-2 {
		t.Fatalf("after two records were deleted and a new scan: %d held, want %d", n, want-2)
	}

	// A record written through the wrapper, put twice in its batch and
	// once more later, is one, stored once, before and after a scan.
	if err := c.Apply(ctx, countKey, store.Put(outRec(40)), store.Put(outRec(40))); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, countKey, store.Put(outRec(40))); err != nil {
		t.Fatal(err)
	}
	if n, stored := c.outbound(); n != want-1 || stored != 1 {
		t.Fatalf("after the puts: %d held, %d stored, want %d and 1", n, stored, want-1)
	}
	scanAll(t, c, sc, 4)
	if n, stored := c.outbound(); n != want-1 || stored != 1 {
		t.Fatalf("after a put and a scan: %d held, %d stored, want %d and 1", n, stored, want-1)
	}
}

// gatedStore is a memory store that runs a hook after a Scan or Apply
// has reached the store and before it returns, to interleave calls.
type gatedStore struct {
	*memory.Store
	afterScan, afterApply func()
}

func (g *gatedStore) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	recs, next, err := g.Store.Scan(ctx, k, from, limit)
	if g.afterScan != nil {
		g.afterScan()
	}
	return recs, next, err
}

func (g *gatedStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	err := g.Store.Apply(ctx, k, ops...)
	if g.afterApply != nil {
		g.afterApply()
	}
	return err
}

// scanAround reads a page of countKey's backlog (limit records) through a
// counting store and runs during after the page is read and before it is
// counted; it returns the counting store once the page is.
func scanAround(t *testing.T, limit int, during func(ctx context.Context, c *countingStore)) *countingStore {
	t.Helper()
	ctx := context.Background()
	g := &gatedStore{Store: memory.New()}
	t.Cleanup(func() { g.Close() })
	backlog(t, g.Store)
	c := newCountingStore(g)
	sc := c.handle().(store.Scanner)
	read, resume := make(chan struct{}), make(chan struct{})
	g.afterScan = func() { close(read); <-resume }
	done := make(chan error)
	go func() {
		_, _, err := sc.Scan(ctx, countKey, 0, limit)
		done <- err
	}()
	<-read
	g.afterScan = nil
	var err error
	func() {
		defer func() { close(resume); err = <-done }() // even when during fails the test
		during(ctx, c)
	}()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A page read before a delete and counted after it does not bring the
// deleted record back.
func TestCountingStoreScanOverlapsDelete(t *testing.T) {
	c := scanAround(t, 0, func(ctx context.Context, c *countingStore) {
		if err := c.Apply(ctx, countKey, store.Delete(5), store.Put(outRec(50))); err != nil {
			t.Fatal(err)
		}
	})
	want := []uint64{1, 2, 3, 6, 7, 11, 12, 20, 30, 50}
	if got := heldSeqs(c); !slices.Equal(got, want) {
		t.Fatalf("outbound Seqs held %v, want %v: the page read before the Apply undid it", got, want)
	}
	if _, err := c.Load(context.Background(), countKey); err != nil {
		t.Fatal(err)
	}
	if got := heldSeqs(c); !slices.Equal(got, want) {
		t.Fatalf("after Load: outbound Seqs held %v, want %v", got, want)
	}
}

// heldSeqs returns the outbound Seqs c holds for countKey, in order.
func heldSeqs(c *countingStore) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.out[countKey]))
}

// A new record that a page finds before its Apply has counted it is
// still counted as stored in this run.
func TestCountingStoreScanOverlapsPut(t *testing.T) {
	ctx := context.Background()
	g := &gatedStore{Store: memory.New()}
	defer g.Close()
	c := newCountingStore(g)
	sc := c.handle().(store.Scanner)
	written, resume := make(chan struct{}), make(chan struct{})
	g.afterApply = func() { close(written); <-resume }
	done := make(chan error)
	go func() { done <- c.Apply(ctx, countKey, store.Put(outRec(1))) }()
	<-written
	g.afterApply = nil
	scanAll(t, c, sc, 0)
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, stored := c.outbound(); n != 1 || stored != 1 {
		t.Fatalf("%d held, %d stored, want 1 and 1", n, stored)
	}
}

// A session is being read from a first page that is not its last until
// the last page, a Load or a Clear; a page from elsewhere starts nothing.
func TestCountingStoreReading(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	backlog(t, mem)
	c := newCountingStore(mem)
	sc := c.handle().(store.Scanner)
	page := func(from uint64) {
		t.Helper()
		if _, _, err := sc.Scan(ctx, countKey, from, 2); err != nil {
			t.Fatal(err)
		}
	}
	page(5)
	if c.reading() {
		t.Fatal("reading() after a page that does not start at 0")
	}
	page(0)
	if !c.reading() {
		t.Fatal("reading() false after the first of several pages")
	}
	if _, err := c.Load(ctx, countKey); err != nil {
		t.Fatal(err)
	}
	if c.reading() {
		t.Fatal("reading() after a Load")
	}
	page(0)
	if err := c.Clear(ctx, countKey); err != nil {
		t.Fatal(err)
	}
	if c.reading() || held(c) != 0 {
		t.Fatalf("after a Clear: reading() %v, %d held; want false and 0", c.reading(), held(c))
	}
}

// A page read before a Clear and counted after it brings nothing back.
func TestCountingStoreScanOverlapsClear(t *testing.T) {
	c := scanAround(t, 2, func(ctx context.Context, c *countingStore) {
		if err := c.Clear(ctx, countKey); err != nil {
			t.Fatal(err)
		}
	})
	if n := held(c); n != 0 || c.reading() {
		t.Fatalf("after a Clear that overlapped a page: %d held, reading() %v; want 0 and false", n, c.reading())
	}
}
