package conformance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/tethermq/tether/store"
)

// scannerChecks are the checks of store.Scanner, skipped for a store that
// does not implement it.
var scannerChecks = []check{
	{name: "Pages", fn: checkScanPages},
	{name: "Edges", fn: checkScanEdges},
	{name: "WritesBetweenPages", fn: checkScanWritesBetweenPages},
	{name: "KeyIsolation", fn: checkScanKeyIsolation},
	{name: "NotRetained", fn: checkScanNotRetained},
	{name: "ConsistentPage", heavy: true, fn: checkScanConsistentPage},
	{name: "Large", heavy: true, fn: checkScanLarge},
	{name: "Reopen", fn: checkScanReopen},
	{name: "FlipBytes", fn: func(e *env) { checkScanDamage(e, FlipBytes) }},
	{name: "DropKey", fn: func(e *env) { checkScanDamage(e, DropKey) }},
	{name: "Closed", fn: checkScanClosed},
	{name: "ContextCancelled", fn: checkScanContextCancelled},
}

// scannerOf returns the Scanner of handle s (whose Scan notes progress,
// see withProgress), or skips the check when the store has none.
func (e *env) scannerOf(s store.SessionStore) store.Scanner {
	e.t.Helper()
	sc, ok := s.(store.Scanner)
	if !ok {
		e.t.Skip("the store does not implement store.Scanner")
	}
	return sc
}

// scanned is a whole scan of a session: every page put together.
type scanned struct {
	recs    []store.Record
	corrupt []uint64 // the Seqs reported in *store.CorruptError, sorted
	errs    int      // pages that came with a *store.CorruptError
	pages   int
}

// scanAll pages through session k from 0 with limit, checking every page
// against the contract as it goes, and fails the check on any other error.
func (e *env) scanAll(sc store.Scanner, k store.Key, limit int) scanned {
	e.t.Helper()
	return e.scanFrom(sc, k, 0, limit)
}

// scanFrom is scanAll from Seq from.
func (e *env) scanFrom(sc store.Scanner, k store.Key, from uint64, limit int) scanned {
	e.t.Helper()
	var out scanned
	for {
		recs, next, err := sc.Scan(e.ctx, k, from, limit)
		out.pages++
		var ce *store.CorruptError
		switch {
		case err == nil:
		case errors.As(err, &ce):
			if ce.Key != k {
				e.t.Fatalf("Scan(%s, from %d): the *store.CorruptError names session %s", k, from, ce.Key)
			}
			out.corrupt = append(out.corrupt, ce.Seqs...)
			out.errs++
		default:
			e.t.Fatalf("Scan(%s, from %d, limit %d): %v", k, from, limit, err)
		}
		if msg := checkPage(recs, next, from, limit, ce); msg != "" {
			e.t.Fatalf("Scan(%s, from %d, limit %d) after %d pages: %s", k, from, limit, out.pages-1, msg)
		}
		out.recs = append(out.recs, recs...)
		if next == 0 {
			break
		}
		if out.pages > 1_000_000 {
			e.t.Fatalf("Scan(%s) still not at its end after %d pages", k, out.pages)
		}
		from = next
	}
	slices.Sort(out.corrupt)
	return out
}

// checkPage describes how one page breaks the contract on its own, or
// returns "": ordered records at or after from, no more than limit of them
// (counting the corrupt ones), and a next above all of them.
func checkPage(recs []store.Record, next, from uint64, limit int, ce *store.CorruptError) string {
	covered := len(recs)
	if ce != nil {
		covered += len(ce.Seqs)
	}
	if limit > 0 && covered > limit {
		return fmt.Sprintf("the page covers %d records (%d returned, %d corrupt), more than the limit %d", covered, len(recs), covered-len(recs), limit)
	}
	var top uint64
	for i, r := range recs {
		if r.Seq < from {
			return fmt.Sprintf("record %d has Seq %d, below from", i, r.Seq)
		}
		if i > 0 && recs[i-1].Seq >= r.Seq {
			return fmt.Sprintf("records out of order: Seq %d before Seq %d", recs[i-1].Seq, r.Seq)
		}
		top = max(top, r.Seq)
	}
	if ce != nil {
		for _, q := range ce.Seqs {
			if q < from {
				return fmt.Sprintf("corrupt record Seq %d is below from", q)
			}
			top = max(top, q)
		}
	}
	if next != 0 && next <= from {
		return fmt.Sprintf("next is %d, not above from: the scan would not advance", next)
	}
	if next != 0 && covered > 0 && next <= top {
		return fmt.Sprintf("next is %d, not above Seq %d of the page", next, top)
	}
	return ""
}

// expectScan pages through k with limit and compares the result with want,
// which must also be what Load returns. Against want it also checks every
// page's next: 0 exactly after the last record, and otherwise no further
// than the first record not yet returned.
func (e *env) expectScan(sc store.Scanner, k store.Key, limit int, want []store.Record) {
	e.t.Helper()
	from := uint64(0)
	var got []store.Record
	for {
		recs, next, err := sc.Scan(e.ctx, k, from, limit)
		if err != nil {
			e.t.Fatalf("Scan(%s, from %d, limit %d): %v", k, from, limit, err)
		}
		if msg := checkPage(recs, next, from, limit, nil); msg != "" {
			e.t.Fatalf("Scan(%s, from %d, limit %d): %s", k, from, limit, msg)
		}
		got = append(got, recs...)
		if len(got) > len(want) {
			break // reported below
		}
		rest := want[len(got):]
		switch {
		case next == 0 && len(rest) > 0:
			e.t.Fatalf("Scan(%s, from %d, limit %d) returned next 0 with %d records still to come (first Seq %d)", k, from, limit, len(rest), rest[0].Seq)
		case next != 0 && len(rest) == 0:
			e.t.Fatalf("Scan(%s, from %d, limit %d) returned the last record and next %d, want next 0: the end must be told on the last page", k, from, limit, next)
		case next != 0 && next > rest[0].Seq:
			e.t.Fatalf("Scan(%s, from %d, limit %d) returned next %d, past Seq %d, the first record not yet returned", k, from, limit, next, rest[0].Seq)
		case next != 0 && len(recs) == 0:
			e.t.Fatalf("Scan(%s, from %d, limit %d) returned no record and next %d, where records with no damage follow: a page covers at least one", k, from, limit, next)
		}
		if next == 0 {
			break
		}
		from = next
	}
	if msg := diffRecords(got, want); msg != "" {
		e.t.Fatalf("Scan(%s) page by page with limit %d: %s", k, limit, msg)
	}
}

// scanSession is a session whose Seqs' byte, string and write orders all
// differ from their numeric order, with the Meta record at MetaSeq.
func scanSession() []store.Record {
	seqs := []uint64{
		1, 2, 3, 9, 10, 11, 99, 100, 101, 255, 256, 257, 1000, 4095, 4096, 65535, 65536,
		1<<32 - 1, 1 << 32, 1 << 40, 1<<63 - 1, 1 << 63, 1<<63 + 1, math.MaxUint64 - 1, math.MaxUint64,
	}
	want := []store.Record{{Seq: store.MetaSeq, Dir: store.Meta, Packet: []byte("meta")}}
	for _, q := range seqs {
		want = append(want, rec(q, 0))
	}
	return want
}

// writeShuffled writes recs to k in a shuffled order, half in one batch and
// the rest one by one.
func (e *env) writeShuffled(s store.SessionStore, k store.Key, recs []store.Record) {
	e.t.Helper()
	shuffled := slices.Clone(recs)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	half := len(shuffled) / 2
	e.apply(s, k, puts(shuffled[:half]...)...)
	for _, r := range shuffled[half:] {
		e.apply(s, k, store.Put(r))
	}
}

// checkScanPages pages through a session with every limit from 1 to one
// past its length (and the default): each gives exactly what Load gives.
// The session is scanned twice: ending at Seq math.MaxUint64, and without
// that record, so that a next computed as the last Seq plus one (which
// wraps to 0 at the largest Seq) cannot pass for the end.
func checkScanPages(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	k := key("c")
	whole := scanSession()
	e.writeShuffled(s, k, whole)
	for _, want := range [][]store.Record{whole, whole[:len(whole)-1]} {
		e.apply(s, k, store.Delete(math.MaxUint64))
		e.apply(s, k, puts(want...)...)
		e.expect(s, k, want)
		for limit := 1; limit <= len(want)+1; limit++ {
			e.expectScan(sc, k, limit, want)
		}
		for _, limit := range []int{0, -1, math.MaxInt32} {
			e.expectScan(sc, k, limit, want)
		}
	}
}

// checkScanEdges: where a page starts and ends, the Meta record, and
// unknown, emptied and single-record sessions.
func checkScanEdges(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	expectPage := func(k store.Key, from uint64, limit int, want []uint64, nextLo, nextHi uint64) {
		e.t.Helper()
		recs, next, err := sc.Scan(e.ctx, k, from, limit)
		if err != nil {
			e.t.Fatalf("Scan(%s, from %d, limit %d): %v", k, from, limit, err)
		}
		got := make([]uint64, len(recs))
		for i, r := range recs {
			got[i] = r.Seq
		}
		if !slices.Equal(got, want) {
			e.t.Fatalf("Scan(%s, from %d, limit %d) returned Seqs %v, want %v", k, from, limit, got, want)
		}
		if next < nextLo || next > nextHi {
			if nextLo == nextHi {
				e.t.Fatalf("Scan(%s, from %d, limit %d) returned next %d, want %d", k, from, limit, next, nextLo)
			}
			e.t.Fatalf("Scan(%s, from %d, limit %d) returned next %d, want one in [%d, %d]", k, from, limit, next, nextLo, nextHi)
		}
	}
	unknown := key("never-written")
	expectPage(unknown, 0, 10, nil, 0, 0)
	expectPage(unknown, 5, 1, nil, 0, 0)

	k := key("c")
	recs := []store.Record{{Seq: store.MetaSeq, Dir: store.Meta, Packet: []byte("meta")}, rec(1, 0), rec(5, 0), rec(9, 0), rec(math.MaxUint64, 0)}
	e.writeShuffled(s, k, recs)
	const top = math.MaxUint64
	expectPage(k, 0, 1, []uint64{0}, 1, 1)             // the Meta record first; from 0 includes it
	expectPage(k, 0, 2, []uint64{0, 1}, 2, 5)          // next: above 1, at most 5
	expectPage(k, 1, 10, []uint64{1, 5, 9, top}, 0, 0) // from 1 leaves Meta out; the page ends the session
	expectPage(k, 2, 1, []uint64{5}, 6, 9)             // from between two records
	expectPage(k, 5, 1, []uint64{5}, 6, 9)             // from is inclusive
	expectPage(k, 6, 1, []uint64{9}, 10, top)
	expectPage(k, 10, 1, []uint64{top}, 0, 0) // a page at the largest Seq ends the scan
	expectPage(k, top, 5, []uint64{top}, 0, 0)
	e.apply(s, k, store.Delete(top))
	expectPage(k, 10, 1, nil, 0, 0)                 // from past the last record
	expectPage(k, 1, 3, []uint64{1, 5, 9}, 0, 0)    // a page exactly full at the end still says so
	expectPage(k, 0, 4, []uint64{0, 1, 5, 9}, 0, 0) //
	// A session holding only its Meta record.
	e.apply(s, k, store.Delete(1), store.Delete(5), store.Delete(9))
	expectPage(k, 0, 1, []uint64{0}, 0, 0)
	expectPage(k, 1, 1, nil, 0, 0)
	// Emptied and cleared sessions scan as unknown ones.
	e.apply(s, k, store.Delete(store.MetaSeq))
	expectPage(k, 0, 10, nil, 0, 0)
	e.apply(s, k, store.Put(rec(3, 0)))
	if err := s.Clear(e.ctx, k); err != nil {
		e.t.Fatalf("Clear: %v", err)
	}
	expectPage(k, 0, 10, nil, 0, 0)
}

// checkScanWritesBetweenPages: a batch applied between two pages shows in
// the pages read after it, for the Seqs they cover; a Clear ends the scan.
func checkScanWritesBetweenPages(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	k := key("c")
	var all []store.Record
	for q := uint64(1); q <= 20; q++ {
		all = append(all, rec(q, 0))
	}
	e.apply(s, k, puts(all...)...)
	page, next, err := sc.Scan(e.ctx, k, 0, 5)
	if err != nil {
		e.t.Fatalf("Scan: %v", err)
	}
	if msg := diffRecords(page, all[:5]); msg != "" {
		e.t.Fatalf("first page of 5: %s", msg)
	}
	if next != 6 {
		e.t.Fatalf("first page of 5 of records 1..20 returned next %d, want 6", next)
	}
	// Behind the scan: a delete and a replacement it will not see again.
	// Ahead of it: deletes, a replacement and new records that it will.
	e.apply(s, k, store.Delete(2), store.Put(rec(3, 1)),
		store.Delete(7), store.Delete(8), store.Put(rec(6, 1)), store.Put(rec(21, 1)), store.Put(rec(22, 1)))
	want := []store.Record{rec(6, 1)}
	want = append(want, all[8:]...)
	want = append(want, rec(21, 1), rec(22, 1))
	got := e.scanFrom(sc, k, next, 5)
	if got.errs > 0 {
		e.t.Fatalf("the rest of the scan reported corrupt records %v", got.corrupt)
	}
	if msg := diffRecords(got.recs, want); msg != "" {
		e.t.Fatalf("the rest of the scan after a batch between pages: %s", msg)
	}
	// A Clear between two pages: the next page is empty and ends the scan.
	_, next, err = sc.Scan(e.ctx, k, 0, 3)
	if err != nil || next == 0 {
		e.t.Fatalf("Scan: next %d, %v", next, err)
	}
	if err := s.Clear(e.ctx, k); err != nil {
		e.t.Fatalf("Clear: %v", err)
	}
	recs, next, err := sc.Scan(e.ctx, k, next, 3)
	if err != nil || len(recs) != 0 || next != 0 {
		e.t.Fatalf("Scan after Clear returned %d records, next %d, %v; want none, 0, nil", len(recs), next, err)
	}
}

// checkScanKeyIsolation: every tricky key scans its own records alone.
func checkScanKeyIsolation(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	keys := trickyKeys()
	want := make(map[store.Key][]store.Record)
	for i, k := range keys {
		recs := []store.Record{
			{Seq: store.MetaSeq, Dir: store.Meta, Packet: []byte(fmt.Sprintf("meta of key %d", i))},
			{Seq: 1, Dir: store.Outbound, ID: uint16(i + 1), Packet: []byte(fmt.Sprintf("key %d record 1 %q", i, k.String()))},
			{Seq: 2, Dir: store.Inbound, ID: uint16(i + 100), Packet: []byte(fmt.Sprintf("key %d record 2", i))},
		}
		e.apply(s, k, puts(recs...)...)
		want[k] = recs
	}
	for _, k := range keys {
		e.expectScan(sc, k, 1, want[k])
		e.expectScan(sc, k, 2, want[k])
	}
	if err := s.Clear(e.ctx, keys[1]); err != nil {
		e.t.Fatalf("Clear(%s): %v", keys[1], err)
	}
	e.apply(s, keys[2], store.Delete(1))
	want[keys[2]] = slices.Delete(want[keys[2]], 1, 2)
	for i, k := range keys {
		if i == 1 {
			e.expectScan(sc, k, 1, nil)
			continue
		}
		e.expectScan(sc, k, 1, want[k])
	}
}

// checkScanNotRetained: callers own what Scan returns. Changing a page
// changes nothing stored, and reading a page leaves the earlier ones as
// they were.
func checkScanNotRetained(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	k := key("c")
	want := make([]store.Record, 6)
	for i := range want {
		want[i] = store.Record{Seq: uint64(i + 1), Dir: store.Outbound, ID: uint16(i + 1), Packet: pattern(uint64(i+1), 40)}
	}
	e.apply(s, k, puts(want...)...)
	first, next, err := sc.Scan(e.ctx, k, 0, 3)
	if err != nil {
		e.t.Fatalf("Scan: %v", err)
	}
	kept := cloneRecords(first)
	second, _, err := sc.Scan(e.ctx, k, next, 3)
	if err != nil {
		e.t.Fatalf("Scan: %v", err)
	}
	if msg := diffRecords(first, kept); msg != "" {
		e.t.Fatalf("reading the second page changed the first: %s", msg)
	}
	for _, page := range [][]store.Record{first, second} {
		for i := range page {
			copy(page[i].Packet, "MUTATED!")
			page[i].Seq, page[i].ID = 99, 99
		}
	}
	e.expectScan(sc, k, 3, want)
	e.expect(s, k, want)
}

func cloneRecords(recs []store.Record) []store.Record {
	out := slices.Clone(recs)
	for i := range out {
		out[i].Packet = slices.Clone(out[i].Packet)
	}
	return out
}

// checkScanConsistentPage: a page never holds part of a batch. Writers
// apply batches while readers scan, one with pages larger than the
// session, one with pages of three records.
func checkScanConsistentPage(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	k := key("shared")
	const batches = 25
	ws := newWriters(4)
	limits := []int{store.DefaultScanLimit, 3}
	scans := make([]int, len(limits))
	var reads []func() error
	for i, limit := range limits {
		reads = append(reads, func() error {
			if err := scanConsistently(e.ctx, sc, k, limit, ws, batches); err != nil {
				return fmt.Errorf("scan with limit %d, number %d: %w", limit, scans[i], err)
			}
			scans[i]++
			return nil
		})
	}
	want := e.writeWhileReading(s, k, ws, batches, reads...)
	e.t.Logf("whole scans during the writes: %d with limit %d, %d with limit %d", scans[0], limits[0], scans[1], limits[1])
	e.expectScan(sc, k, 7, want)
}

// scanConsistently scans k once. Every record must be one a writer wrote;
// every page must be ordered, and the part of it that covers a writer's
// whole range must be the state after whole batches.
func scanConsistently(ctx context.Context, sc store.Scanner, k store.Key, limit int, ws []writer, batches int) error {
	from := uint64(0)
	for pages := 0; pages < 10_000; pages++ {
		recs, next, err := sc.Scan(ctx, k, from, limit)
		if err != nil {
			return err
		}
		if msg := checkPage(recs, next, from, limit, nil); msg != "" {
			return errors.New(msg)
		}
		for i, w := range ws {
			lo, hi := w.base, w.base+1<<32
			if lo < from || (next != 0 && next < hi) {
				continue // the page does not cover the writer's whole range
			}
			part := recs[sortIndex(recs, lo):sortIndex(recs, hi)]
			if m, ok := w.consistent(part, batches); !ok {
				return fmt.Errorf("a page from %d to %d holds %d records of writer %d, not the state after %d whole batches", from, next, len(part), i, m)
			}
		}
		for _, r := range recs {
			i := int(r.Seq>>32) - 1
			if i < 0 || i >= len(ws) {
				return fmt.Errorf("a record with Seq %d, which no writer wrote", r.Seq)
			}
			w := ws[i]
			n, j := int((r.Seq-w.base)/4), int((r.Seq-w.base)%4)
			if msg := diffRecords([]store.Record{r}, []store.Record{w.record(n, j)}); msg != "" {
				return fmt.Errorf("a record no writer wrote: %s", msg)
			}
		}
		if next == 0 {
			return nil
		}
		from = next
	}
	return errors.New("the scan does not end")
}

// checkScanLarge pages through 10,000 records, written in reverse, by 100.
func checkScanLarge(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	k := key("c")
	const n, batch = 10_000, 1000
	want := make([]store.Record, n)
	for i := range want {
		seq := uint64(i) + 1
		want[i] = store.Record{Seq: seq, Dir: store.Outbound, ID: uint16(seq), Packet: pattern(seq, 8+i%64)}
	}
	for end := n; end > 0; end -= batch {
		e.apply(s, k, puts(want[end-batch:end]...)...)
	}
	e.expectScan(sc, k, 100, want)
	e.expect(s, k, want)
}

// checkScanReopen: what a scan returns survives a reopen of the storage.
func checkScanReopen(e *env) {
	if !e.caps.Durable {
		e.t.Skip("the harness is not Durable: data need not survive Close")
	}
	s := e.open()
	e.scannerOf(s)
	k := key("c")
	want := scanSession()
	e.writeShuffled(s, k, want)
	if err := s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	s = e.open()
	sc := e.scannerOf(s)
	e.expectScan(sc, k, 4, want)
	e.expect(s, k, want)
}

// checkScanDamage damages one record of a session behind the store's back
// and requires Scan to report what Load reports: the same readable
// records and the same corrupt Seqs, whatever the page size, with the scan
// going on past the damage.
func checkScanDamage(e *env, kind DamageKind) {
	d := e.damagerOrSkip()
	victim, bystander := key("victim"), key("bystander")
	s := e.open()
	e.scannerOf(s)
	e.apply(s, bystander, puts(rec(1, 7), rec(2, 7))...)
	e.apply(s, victim, puts(damageVictim()...)...)
	e.closeAll()
	if err := d.Damage(e.ctx, victim, kind); errors.Is(err, ErrCannotDamage) {
		e.t.Skipf("the harness cannot apply %v to this storage: %v", kind, err)
	} else if err != nil {
		e.t.Fatalf("Damage(%s, %v): %v", victim, kind, err)
	}
	s = e.open()
	sc := e.scannerOf(s)
	loaded, err := e.damagedLoad(s, victim)
	var ce *store.CorruptError
	if err != nil && !errors.As(err, &ce) {
		e.t.Fatalf("Load of the damaged session: %v", err)
	}
	var wantBad []uint64
	if ce != nil {
		wantBad = slices.Sorted(slices.Values(ce.Seqs))
	}
	e.t.Logf("Load of the damaged session: %d records, %v", len(loaded), err)
	for limit := 1; limit <= len(damageVictim())+1; limit++ {
		var got scanned
		if err := e.safely(fmt.Sprintf("Scan with limit %d", limit), func() error {
			got = e.scanAll(sc, victim, limit)
			return nil
		}); err != nil {
			e.t.Fatal(err)
		}
		if msg := diffRecords(got.recs, loaded); msg != "" {
			e.t.Fatalf("Scan with limit %d of the damaged session differs from Load: %s", limit, msg)
		}
		if !slices.Equal(got.corrupt, wantBad) {
			e.t.Fatalf("Scan with limit %d of the damaged session reported corrupt Seqs %v; Load reported %v", limit, got.corrupt, wantBad)
		}
		if (got.errs > 0) != (ce != nil) {
			e.t.Fatalf("Scan with limit %d of the damaged session: %d pages with a *store.CorruptError; Load returned %v", limit, got.errs, err)
		}
	}
	if kind == FlipBytes && ce == nil {
		e.t.Fatalf("Load of a session whose record had bytes flipped returned %v, want a *store.CorruptError", err)
	}
	e.expectScan(sc, bystander, 1, []store.Record{rec(1, 7), rec(2, 7)})
}

// checkScanClosed: Scan on a closed store returns store.ErrClosed.
func checkScanClosed(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	k := key("c")
	e.apply(s, k, store.Put(rec(1, 0)))
	if err := s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	for _, from := range []uint64{0, 1, 2} {
		recs, next, err := sc.Scan(e.ctx, k, from, 10)
		if !errors.Is(err, store.ErrClosed) {
			e.t.Errorf("Scan from %d on a closed store returned %v, want store.ErrClosed", from, err)
		}
		if len(recs) != 0 || next != 0 {
			e.t.Errorf("Scan from %d on a closed store returned %d records and next %d with its error, want none and 0", from, len(recs), next)
		}
	}
}

// checkScanContextCancelled: Scan honours a cancelled or expired context.
func checkScanContextCancelled(e *env) {
	s := e.open()
	sc := e.scannerOf(s)
	k := key("c")
	e.apply(s, k, puts(rec(1, 0), rec(2, 0))...)
	for _, c := range e.doneContexts() {
		if _, _, err := sc.Scan(c.ctx, k, 0, 1); !errors.Is(err, c.want) {
			e.t.Errorf("Scan with a %s context returned %v, want %v", c.name, err, c.want)
		}
	}
	e.expectScan(sc, k, 1, []store.Record{rec(1, 0), rec(2, 0)})
}
