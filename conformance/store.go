package conformance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tethermq/tether/store"
)

// storeChecks are the checks of the SessionStore contract, in the order
// they run. Their names are part of the suite's interface: keep them stable.
var storeChecks = []check{
	{name: "EmptyLoad", reopen: true, fn: checkEmptyLoad},
	{name: "EmptyBatch", fn: checkEmptyBatch},
	{name: "OrderBySeq", reopen: true, fn: checkOrderBySeq},
	{name: "PutReplaces", reopen: true, fn: checkPutReplaces},
	{name: "ReplaceInBatch", reopen: true, fn: checkReplaceInBatch},
	{name: "LaterOpWins", reopen: true, fn: checkLaterOpWins},
	{name: "LargeBatch", reopen: true, fn: checkLargeBatch},
	{name: "DeleteIdempotent", reopen: true, fn: checkDeleteIdempotent},
	{name: "Clear", reopen: true, fn: checkClear},
	{name: "KeyIsolation", reopen: true, fn: checkKeyIsolation},
	{name: "RoundTrip", reopen: true, fn: checkRoundTrip},
	{name: "NotRetained", fn: checkNotRetained},
	{name: "PacketIDs", heavy: true, reopen: true, fn: checkPacketIDs},
	{name: "LongQueue", heavy: true, fn: checkLongQueue},
	{name: "RecordSizes", heavy: true, reopen: true, fn: checkRecordSizes},
	{name: "TooLarge", heavy: true, reopen: true, fn: checkTooLarge},
	{name: "UnknownOpKind", reopen: true, fn: checkUnknownOpKind},
	{name: "ConcurrentOneKey", heavy: true, fn: checkConcurrentOneKey},
	{name: "ConcurrentManyKeys", heavy: true, fn: checkConcurrentManyKeys},
	{name: "Reopen", fn: checkReopen},
	{name: "KillAfterApply", fn: checkKillAfterApply},
	{name: "SyncOnApply", fn: checkSyncOnApply},
	{name: "SharedHandles", fn: checkSharedHandles},
	{name: "Closed", fn: checkClosed},
	{name: "ContextCancelled", fn: checkContextCancelled},
}

func checkEmptyLoad(e *env) {
	s := e.open()
	if recs := e.load(s, key("never-written")); len(recs) != 0 {
		e.t.Fatalf("Load of an unknown session returned %d records, want none", len(recs))
	}
	// A session whose every record was deleted is empty again.
	k := key("emptied")
	e.apply(s, k, puts(rec(1, 0), rec(2, 0))...)
	e.apply(s, k, store.Delete(1), store.Delete(2))
	s = e.again(s)
	if recs := e.load(s, k); len(recs) != 0 {
		e.t.Fatalf("Load after deleting every record returned %d records, want none", len(recs))
	}
}

func checkEmptyBatch(e *env) {
	s := e.open()
	k := key("c")
	e.apply(s, k)
	e.expect(s, k, nil)
	e.apply(s, k, store.Put(rec(1, 0)))
	e.apply(s, k)
	e.expect(s, k, []store.Record{rec(1, 0)})
}

func checkOrderBySeq(e *env) {
	s := e.open()
	k := key("c")
	// Sequence numbers whose byte orders, string orders and write order all
	// disagree with their numeric order.
	seqs := []uint64{
		store.MetaSeq, 1, 2, 9, 10, 11, 99, 100, 255, 256, 257, 1000, 65535, 65536,
		1 << 31, 1<<32 - 1, 1 << 32, 1 << 40, 1<<63 - 1, 1 << 63, 1<<63 + 1, math.MaxUint64 - 1, math.MaxUint64,
	}
	shuffled := slices.Clone(seqs)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	// Half in one batch in shuffled order, the rest one by one.
	half := len(shuffled) / 2
	var ops []store.Op
	for _, q := range shuffled[:half] {
		ops = append(ops, store.Put(rec(q, 0)))
	}
	e.apply(s, k, ops...)
	for _, q := range shuffled[half:] {
		e.apply(s, k, store.Put(rec(q, 0)))
	}
	want := make([]store.Record, len(seqs))
	for i, q := range seqs {
		want[i] = rec(q, 0)
	}
	e.expect(e.again(s), k, want)
}

func checkPutReplaces(e *env) {
	s := e.open()
	k := key("c")
	e.apply(s, k, store.Put(rec(5, 0)), store.Put(rec(6, 0)))
	replacement := store.Record{Seq: 5, Dir: store.Inbound, ID: 777, Packet: []byte("replaced")}
	e.apply(s, k, store.Put(replacement))
	s = e.again(s)
	e.expect(s, k, []store.Record{replacement, rec(6, 0)})
	// A shorter packet replaces a longer one entirely.
	shorter := store.Record{Seq: 5, Dir: store.Outbound, ID: 1, Packet: []byte("x")}
	e.apply(s, k, store.Put(shorter))
	e.expect(e.again(s), k, []store.Record{shorter, rec(6, 0)})
}

func checkReplaceInBatch(e *env) {
	s := e.open()
	k := key("c")
	publish := store.Record{Seq: 1, Dir: store.Outbound, ID: 10, Packet: []byte("PUBLISH")}
	other := rec(2, 0)
	e.apply(s, k, store.Put(publish), store.Put(other))
	// The PUBLISH -> PUBREL replacement under a new sequence number.
	pubrel := store.Record{Seq: 3, Dir: store.Outbound, ID: 10, Packet: []byte("PUBREL")}
	e.apply(s, k, store.Delete(1), store.Put(pubrel))
	s = e.again(s)
	e.expect(s, k, []store.Record{other, pubrel})
	// The same replacement in place, under the same sequence number, along
	// with a delete of another record.
	pubrel2 := store.Record{Seq: 2, Dir: store.Outbound, ID: 11, Packet: []byte("PUBREL 2")}
	e.apply(s, k, store.Put(pubrel2), store.Delete(3))
	e.expect(e.again(s), k, []store.Record{pubrel2})
}

func checkLaterOpWins(e *env) {
	s := e.open()
	k := key("c")
	e.apply(s, k, store.Put(rec(3, 0)), store.Put(rec(4, 0)))
	e.apply(s, k,
		store.Put(rec(1, 1)), store.Put(rec(1, 2)), // put, put: the second
		store.Put(rec(2, 1)), store.Delete(2), // put, delete: gone
		store.Delete(3), store.Put(rec(3, 3)), // delete, put: present
		store.Put(rec(4, 4)), store.Delete(4), store.Put(rec(4, 5)), // the last
	)
	e.expect(e.again(s), k, []store.Record{rec(1, 2), rec(3, 3), rec(4, 5)})
}

// checkLargeBatch applies one batch of 3,000 operations, larger than the
// client's largest group commit, mixing puts, deletes and replacements of
// the same records: a store that splits a batch into parts (a script's
// argument limit, a statement's parameter limit) must still apply it whole
// and in order.
func checkLargeBatch(e *env) {
	s := e.open()
	k := key("c")
	e.apply(s, k, store.Put(rec(5000, 0)))
	var ops []store.Op
	for seq := uint64(1); seq <= 1500; seq++ {
		ops = append(ops, store.Put(rec(seq, 1)))
	}
	for seq := uint64(1); seq <= 1000; seq++ {
		ops = append(ops, store.Delete(seq))
	}
	for seq := uint64(501); seq <= 1000; seq++ {
		ops = append(ops, store.Put(rec(seq, 2)))
	}
	ops = append(ops, store.Delete(5000))
	e.apply(s, k, ops...)
	var want []store.Record
	for seq := uint64(501); seq <= 1500; seq++ {
		gen := 1
		if seq <= 1000 {
			gen = 2
		}
		want = append(want, rec(seq, gen))
	}
	e.expect(e.again(s), k, want)
}

func checkDeleteIdempotent(e *env) {
	s := e.open()
	k := key("c")
	e.apply(s, key("unknown"), store.Delete(1))
	e.apply(s, k, store.Put(rec(1, 0)), store.Put(rec(2, 0)))
	e.apply(s, k, store.Delete(1))
	e.apply(s, k, store.Delete(1), store.Delete(1), store.Delete(99))
	s = e.again(s)
	e.expect(s, k, []store.Record{rec(2, 0)})
	e.expect(s, key("unknown"), nil)
}

func checkClear(e *env) {
	s := e.open()
	a, b := key("a"), key("b")
	e.apply(s, a, puts(rec(1, 0), rec(2, 0))...)
	e.apply(s, b, puts(rec(1, 1), rec(2, 1))...)
	if err := s.Clear(e.ctx, a); err != nil {
		e.t.Fatalf("Clear: %v", err)
	}
	s = e.again(s)
	e.expect(s, a, nil)
	e.expect(s, b, []store.Record{rec(1, 1), rec(2, 1)})
	if err := s.Clear(e.ctx, a); err != nil {
		e.t.Fatalf("Clear of an empty session: %v", err)
	}
	if err := s.Clear(e.ctx, key("unknown")); err != nil {
		e.t.Fatalf("Clear of an unknown session: %v", err)
	}
	// A cleared session can be written again.
	e.apply(s, a, store.Put(rec(7, 0)))
	s = e.again(s)
	e.expect(s, a, []store.Record{rec(7, 0)})
	e.expect(s, b, []store.Record{rec(1, 1), rec(2, 1)})
}

// trickyKeys are keys that a backend building names from them by naive
// concatenation or escaping would confuse with each other.
func trickyKeys() []store.Key {
	return []store.Key{
		{Server: "", ClientID: ""},
		{Server: "", ClientID: "a"},
		{Server: "a", ClientID: ""},
		{Server: "a:b", ClientID: "c"},
		{Server: "a", ClientID: "b:c"},
		{Server: "a/b", ClientID: "c"},
		{Server: "a", ClientID: "b/c"},
		{Server: "a|b", ClientID: "c"},
		{Server: "a", ClientID: "b|c"},
		{Server: "{a}", ClientID: "b"},
		{Server: "a", ClientID: "{b}"},
		{Server: "{a", ClientID: "}b"},
		{Server: "a b", ClientID: "c"},
		{Server: "a", ClientID: "b c"},
		{Server: " ", ClientID: " "},
		{Server: "a\x00b", ClientID: "c"},
		{Server: "a", ClientID: "b\x00c"},
		{Server: "\x00", ClientID: ""},
		{Server: "", ClientID: "\x00"},
		{Server: "tcp://broker.test:1883", ClientID: "Grüße-客户端-🚀"},
		{Server: "tcp://broker.test:1883", ClientID: "\xff\xfe invalid utf-8"},
		{Server: "tcp://broker.test:1883", ClientID: "%2F%3A"},
		{Server: "tcp://broker.test:1883", ClientID: "/:"},
		{Server: "tcp://broker.test:1883/", ClientID: ":"},
		{Server: "tcp://broker.test:1883", ClientID: "*"},
		{Server: "tcp://broker.test:1883", ClientID: "?"},
		{Server: "tcp://broker.test:1883", ClientID: "'; DROP TABLE x; --"},
		{Server: "tcp://broker.test:1883", ClientID: "\"quoted\""},
		{Server: "tcp://broker.test:1883", ClientID: "line\nbreak"},
	}
}

func checkKeyIsolation(e *env) {
	s := e.open()
	keys := trickyKeys()
	want := make(map[store.Key][]store.Record)
	for i, k := range keys {
		// Every key holds the same sequence numbers with different
		// contents, so a record seen under the wrong key shows.
		recs := []store.Record{
			{Seq: 1, Dir: store.Outbound, ID: uint16(i + 1), Packet: []byte(fmt.Sprintf("key %d record 1 %q", i, k.String()))},
			{Seq: 2, Dir: store.Inbound, ID: uint16(i + 100), Packet: []byte(fmt.Sprintf("key %d record 2", i))},
		}
		e.apply(s, k, puts(recs...)...)
		want[k] = recs
	}
	s = e.again(s)
	for _, k := range keys {
		e.expect(s, k, want[k])
	}
	// A delete and a Clear touch their key alone.
	e.apply(s, keys[3], store.Delete(1))
	want[keys[3]] = want[keys[3]][1:]
	if err := s.Clear(e.ctx, keys[4]); err != nil {
		e.t.Fatalf("Clear(%s): %v", keys[4], err)
	}
	delete(want, keys[4])
	if err := s.Clear(e.ctx, keys[0]); err != nil {
		e.t.Fatalf("Clear(%s): %v", keys[0], err)
	}
	delete(want, keys[0])
	s = e.again(s)
	for _, k := range keys {
		e.expect(s, k, want[k])
	}
	if l, ok := s.(store.Lister); ok {
		got, err := l.Sessions(e.ctx)
		if err != nil {
			e.t.Fatalf("Sessions: %v", err)
		}
		e.expectKeys(got, want)
	}
}

// expectKeys compares a Sessions result with the keys of want.
func (e *env) expectKeys(got []store.Key, want map[store.Key][]store.Record) {
	e.t.Helper()
	seen := make(map[store.Key]bool)
	for _, k := range got {
		if seen[k] {
			e.t.Errorf("Sessions lists %s twice", k)
		}
		seen[k] = true
		if _, ok := want[k]; !ok {
			e.t.Errorf("Sessions lists %s, which holds no records", k)
		}
	}
	for k := range want {
		if !seen[k] {
			e.t.Errorf("Sessions does not list %s", k)
		}
	}
}

func checkRoundTrip(e *env) {
	s := e.open()
	k := key("c")
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	want := []store.Record{
		{Seq: store.MetaSeq, Dir: store.Meta, ID: 0, Packet: []byte("meta")},
		{Seq: 1, Dir: store.Outbound, ID: 1, Packet: all},
		{Seq: 2, Dir: store.Inbound, ID: 65535, Packet: []byte{0}},
		{Seq: 3, Dir: store.Outbound, ID: 0, Packet: []byte{0xff, 0, 0xff}},
		{Seq: 0x0102030405060708, Dir: store.Inbound, ID: 0x0102, Packet: []byte("\x00\x00\x00\x00")},
		{Seq: 1 << 63, Dir: store.Outbound, ID: 0x8000, Packet: []byte("high bit")},
		{Seq: math.MaxUint64, Dir: store.Inbound, ID: 0xfffe, Packet: []byte("max")},
	}
	e.apply(s, k, puts(want...)...)
	e.expect(e.again(s), k, want)
}

func checkNotRetained(e *env) {
	s := e.open()
	k := key("c")
	r := store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte("original")}
	buf := r.Packet
	e.apply(s, k, store.Put(r))
	copy(buf, "MUTATED!")
	want := []store.Record{{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte("original")}}
	e.expect(s, k, want)
	// Callers own what Load returns: changing it changes nothing stored.
	got := e.load(s, k)
	copy(got[0].Packet, "MUTATED!")
	got[0].Seq, got[0].ID = 99, 99
	e.expect(s, k, want)
}

func checkPacketIDs(e *env) {
	s := e.open()
	k := key("c")
	const n = 65535
	var ops []store.Op
	want := make([]store.Record, 0, n)
	for i := 1; i <= n; i++ {
		r := store.Record{Seq: uint64(i), Dir: store.Outbound, ID: uint16(n + 1 - i), Packet: pattern(uint64(i), 20)}
		want = append(want, r)
		ops = append(ops, store.Put(r))
		if len(ops) == 8192 || i == n {
			e.apply(s, k, ops...)
			ops = ops[:0]
		}
	}
	e.expect(e.again(s), k, want)
}

func checkLongQueue(e *env) {
	s := e.open()
	k := key("c")
	const n, batch = 200_000, 10_000
	// Queued (not yet sent) messages carry ID 0; write the batches in
	// reverse so that the order comes from Seq alone.
	want := make([]store.Record, n)
	for i := range want {
		seq := uint64(i) + 1
		want[i] = store.Record{Seq: seq, Dir: store.Outbound, Packet: pattern(seq, 8+i%8)}
	}
	for end := n; end > 0; end -= batch {
		e.apply(s, k, puts(want[end-batch:end]...)...)
	}
	e.expect(s, k, want)
}

func checkRecordSizes(e *env) {
	s := e.open()
	k := key("c")
	max := e.caps.maxPacket()
	if max > store.MaxPacketLen {
		max = store.MaxPacketLen // the contract's size; larger ones cost time for nothing
	}
	want := []store.Record{
		{Seq: 1, Dir: store.Outbound, ID: 1, Packet: nil},
		{Seq: 2, Dir: store.Outbound, ID: 2, Packet: []byte{}},
		{Seq: 3, Dir: store.Outbound, ID: 3, Packet: []byte{0x42}},
		{Seq: 4, Dir: store.Outbound, ID: 4, Packet: pattern(4, max)},
	}
	// The sizes where a length field of 8, 16 or 24 bits would wrap.
	for i, n := range []int{255, 256, 65535, 65536, 65537, 1 << 24} {
		if n < max {
			seq := uint64(10 + i)
			want = append(want, store.Record{Seq: seq, Dir: store.Inbound, ID: uint16(seq), Packet: pattern(seq, n)})
		}
	}
	e.apply(s, k, puts(want...)...)
	s = e.again(s)
	e.expect(s, k, want)
	// The large record can be replaced by a small one, and back.
	e.apply(s, k, store.Put(store.Record{Seq: 4, Dir: store.Outbound, ID: 4, Packet: []byte("small")}))
	e.apply(s, k, store.Put(want[3]))
	e.expect(e.again(s), k, want)
}

func checkTooLarge(e *env) {
	s := e.open()
	k := key("c")
	max := e.caps.maxPacket()
	e.apply(s, k, store.Put(rec(1, 0)))
	big := store.Record{Seq: 3, Dir: store.Outbound, ID: 3, Packet: make([]byte, max+1)}
	err := s.Apply(e.ctx, k, store.Put(rec(2, 0)), store.Delete(1), store.Put(big))
	if !errors.Is(err, store.ErrTooLarge) {
		e.t.Fatalf("Apply of a %d-byte packet (maximum %d) returned %v, want store.ErrTooLarge", max+1, max, err)
	}
	e.expect(e.again(s), k, []store.Record{rec(1, 0)})
}

func checkUnknownOpKind(e *env) {
	s := e.open()
	k := key("c")
	e.apply(s, k, store.Put(rec(1, 0)))
	for _, kind := range []store.OpKind{0, 3, 99, 255} {
		err := s.Apply(e.ctx, k, store.Put(rec(2, 0)), store.Delete(1), store.Op{Kind: kind, Record: rec(3, 0)})
		if err == nil {
			e.t.Fatalf("Apply with an op of kind %d returned nil, want an error", kind)
		}
		s = e.again(s)
		e.expect(s, k, []store.Record{rec(1, 0)})
	}
}

// writer drives one session the way the concurrency checks do: batch n puts
// four records and deletes two of the previous batch's, so every state a
// reader may legitimately see is "after batch m" for some m.
type writer struct {
	base uint64 // first sequence number of the writer's range
}

func (w writer) seq(batch, j int) uint64 { return w.base + uint64(batch)*4 + uint64(j) }

func (w writer) record(batch, j int) store.Record {
	q := w.seq(batch, j)
	return store.Record{Seq: q, Dir: store.Outbound, ID: uint16(q%65535 + 1), Packet: pattern(q, 16+j)}
}

func (w writer) batch(n int) []store.Op {
	ops := []store.Op{
		store.Put(w.record(n, 0)), store.Put(w.record(n, 1)),
		store.Put(w.record(n, 2)), store.Put(w.record(n, 3)),
	}
	if n > 0 {
		ops = append(ops, store.Delete(w.seq(n-1, 0)), store.Delete(w.seq(n-1, 1)))
	}
	return ops
}

// after returns the writer's records once batches 0..m-1 are applied.
func (w writer) after(m int) []store.Record {
	var out []store.Record
	for n := 0; n < m; n++ {
		if n == m-1 {
			out = append(out, w.record(n, 0), w.record(n, 1))
		}
		out = append(out, w.record(n, 2), w.record(n, 3))
	}
	slices.SortFunc(out, func(a, b store.Record) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out
}

// consistent reports whether recs, the writer's part of a snapshot, is the
// state after some whole number of batches, and how many.
func (w writer) consistent(recs []store.Record, maxBatches int) (int, bool) {
	// The newest batch visible is the one holding the highest Seq.
	if len(recs) == 0 {
		return 0, true
	}
	m := int((recs[len(recs)-1].Seq-w.base)/4) + 1
	if m > maxBatches {
		return m, false
	}
	return m, diffRecords(recs, w.after(m)) == ""
}

func checkConcurrentOneKey(e *env) {
	s := e.open()
	k := key("shared")
	const batches = 25
	ws := newWriters(6)
	read := func() error {
		recs, err := s.Load(e.ctx, k)
		if err != nil {
			return fmt.Errorf("concurrent Load: %w", err)
		}
		if msg := checkSnapshot(recs, ws, batches); msg != "" {
			return errors.New("concurrent Load saw a partial batch: " + msg)
		}
		return nil
	}
	e.expect(s, k, e.writeWhileReading(s, k, ws, batches, read, read))
}

// newWriters returns n writers of one session, each with Seqs of its own.
func newWriters(n int) []writer {
	ws := make([]writer, n)
	for i := range ws {
		ws[i] = writer{base: uint64(i+1) << 32}
	}
	return ws
}

// writeWhileReading has every writer of ws apply its batches of k
// concurrently while each of reads runs again and again; the check fails
// on the first error of either. It returns what the writers wrote.
func (e *env) writeWhileReading(s store.SessionStore, k store.Key, ws []writer, batches int, reads ...func() error) []store.Record {
	errs := make(chan error, len(ws)+len(reads))
	stop := make(chan struct{})
	var readers, wg sync.WaitGroup
	for _, read := range reads {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := read(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < batches; n++ {
				if err := s.Apply(e.ctx, k, w.batch(n)...); err != nil {
					errs <- fmt.Errorf("writer %d: Apply of batch %d: %w", w.base>>32, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	var want []store.Record
	for _, w := range ws {
		want = append(want, w.after(batches)...)
	}
	return want
}

// checkSnapshot checks that a snapshot of a session written by ws is
// ordered and made of whole batches of each writer.
func checkSnapshot(recs []store.Record, ws []writer, maxBatches int) string {
	for i := 1; i < len(recs); i++ {
		if recs[i-1].Seq >= recs[i].Seq {
			return fmt.Sprintf("records out of order: seq %d before seq %d", recs[i-1].Seq, recs[i].Seq)
		}
	}
	for i, w := range ws {
		lo := sortIndex(recs, w.base)
		hi := sortIndex(recs, w.base+1<<32)
		if m, ok := w.consistent(recs[lo:hi], maxBatches); !ok {
			return fmt.Sprintf("writer %d: %d records are not the state after %d batches", i, hi-lo, m)
		}
	}
	return ""
}

func sortIndex(recs []store.Record, seq uint64) int {
	i, _ := slices.BinarySearchFunc(recs, seq, func(r store.Record, q uint64) int {
		switch {
		case r.Seq < q:
			return -1
		case r.Seq > q:
			return 1
		}
		return 0
	})
	return i
}

func checkConcurrentManyKeys(e *env) {
	s := e.open()
	const sessions, batches = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	w := writer{base: 1}
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := key(fmt.Sprintf("client-%d", i))
			for n := 0; n < batches; n++ {
				if err := s.Apply(e.ctx, k, w.batch(n)...); err != nil {
					errs <- fmt.Errorf("session %s: Apply of batch %d: %w", k, n, err)
					return
				}
				if n%5 == 4 {
					recs, err := s.Load(e.ctx, k)
					if err != nil {
						errs <- fmt.Errorf("Load(%s): %w", k, err)
						return
					}
					// Only this goroutine writes k: its state is exact.
					if msg := diffRecords(recs, w.after(n+1)); msg != "" {
						errs <- fmt.Errorf("Load(%s) after batch %d: %s", k, n, msg)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	for i := 0; i < sessions; i++ {
		e.expect(s, key(fmt.Sprintf("client-%d", i)), w.after(batches))
	}
}

func checkReopen(e *env) {
	if !e.caps.Durable {
		e.t.Skip("the harness is not Durable: data need not survive Close")
	}
	a, b := key("a"), key("b")
	s := e.open()
	e.apply(s, a, puts(rec(1, 0), rec(2, 0), rec(3, 0))...)
	e.apply(s, a, store.Delete(2), store.Put(rec(3, 1)))
	e.apply(s, b, puts(rec(1, 1))...)
	e.apply(s, key("cleared"), store.Put(rec(1, 2)))
	if err := s.Clear(e.ctx, key("cleared")); err != nil {
		e.t.Fatalf("Clear: %v", err)
	}
	if err := s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	s2 := e.open()
	e.expect(s2, a, []store.Record{rec(1, 0), rec(3, 1)})
	e.expect(s2, b, []store.Record{rec(1, 1)})
	e.expect(s2, key("cleared"), nil)
	// And the reopened store takes writes that survive the next reopen.
	e.apply(s2, a, store.Delete(1))
	if err := s2.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.expect(e.open(), a, []store.Record{rec(3, 1)})
}

func checkSharedHandles(e *env) {
	if !e.caps.SharedHandles {
		e.t.Skip("the harness does not declare SharedHandles: one open handle at a time")
	}
	s1, s2 := e.open(), e.open()
	k := key("c")
	e.apply(s1, k, store.Put(rec(1, 0)))
	e.expect(s2, k, []store.Record{rec(1, 0)})
	// Both handles write one session at once; the result is the same.
	w1, w2 := writer{base: 1 << 32}, writer{base: 2 << 32}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, p := range []struct {
		s store.SessionStore
		w writer
	}{{s1, w1}, {s2, w2}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 10; n++ {
				if err := p.s.Apply(e.ctx, k, p.w.batch(n)...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatalf("concurrent Apply through two handles: %v", err)
	}
	want := append([]store.Record{rec(1, 0)}, w1.after(10)...)
	want = append(want, w2.after(10)...)
	e.expect(s1, k, want)
	e.expect(s2, k, want)
	// Closing one handle leaves the other working.
	if err := s1.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.apply(s2, k, store.Delete(1))
	e.expect(s2, k, want[1:])
}

func checkClosed(e *env) {
	s := e.open()
	k := key("c")
	e.apply(s, k, store.Put(rec(1, 0)))
	if err := s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	expectClosed := func(what string, err error) {
		e.t.Helper()
		if !errors.Is(err, store.ErrClosed) {
			e.t.Errorf("%s on a closed store returned %v, want store.ErrClosed", what, err)
		}
	}
	_, err := s.Load(e.ctx, k)
	expectClosed("Load", err)
	expectClosed("Apply", s.Apply(e.ctx, k, store.Put(rec(2, 0))))
	expectClosed("Apply of an empty batch", s.Apply(e.ctx, k))
	expectClosed("Clear", s.Clear(e.ctx, k))
	if l, ok := s.(store.Lister); ok {
		_, err := l.Sessions(e.ctx)
		expectClosed("Sessions", err)
	}
	if o, ok := s.(store.Owner); ok {
		_, err := o.Acquire(e.ctx, k, store.LeaseOptions{})
		expectClosed("Acquire", err)
	}
	if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		e.t.Errorf("second Close returned %v, want nil or store.ErrClosed", err)
	}
}

// doneCtx is a context a store method must refuse, with the error it must
// return.
type doneCtx struct {
	name string
	ctx  context.Context
	want error
}

// doneContexts returns a cancelled and an expired context.
func (e *env) doneContexts() []doneCtx {
	cancelled, cancel := context.WithCancel(e.ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(e.ctx, time.Now().Add(-time.Second))
	e.t.Cleanup(cancel2)
	return []doneCtx{{"cancelled", cancelled, context.Canceled}, {"expired", expired, context.DeadlineExceeded}}
}

func checkContextCancelled(e *env) {
	s := e.open()
	k := key("c")
	e.apply(s, k, store.Put(rec(1, 0)))
	for _, c := range e.doneContexts() {
		expectCtx := func(what string, err error) {
			e.t.Helper()
			if !errors.Is(err, c.want) {
				e.t.Errorf("%s with a %s context returned %v, want %v", what, c.name, err, c.want)
			}
		}
		_, err := s.Load(c.ctx, k)
		expectCtx("Load", err)
		expectCtx("Apply", s.Apply(c.ctx, k, store.Put(rec(2, 0)), store.Delete(1)))
		expectCtx("Clear", s.Clear(c.ctx, k))
		if l, ok := s.(store.Lister); ok {
			_, err := l.Sessions(c.ctx)
			expectCtx("Sessions", err)
		}
		// Nothing of the refused batch or Clear was applied.
		e.expect(s, k, []store.Record{rec(1, 0)})
	}
}
