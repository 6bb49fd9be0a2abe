package redis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// openStore opens a store on url that the test closes when it ends.
func openStore(t *testing.T, url string, opts *Options) *Store {
	t.Helper()
	s, err := Open(url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testKey(id string) store.Key { return store.Key{Server: "tcp://broker.test:1883", ClientID: id} }

func record(seq uint64, body string) store.Record {
	return store.Record{Seq: seq, Dir: store.Outbound, ID: uint16(seq), Packet: []byte(body)}
}

// expectRecords loads k and compares it with want.
func expectRecords(t *testing.T, s store.SessionStore, k store.Key, want ...store.Record) {
	t.Helper()
	got, err := s.Load(context.Background(), k)
	if err != nil {
		t.Fatalf("Load(%s): %v", k, err)
	}
	if msg := diff(got, want); msg != "" {
		t.Fatalf("Load(%s): %s", k, msg)
	}
}

func diff(got, want []store.Record) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d records, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Dir != w.Dir || g.ID != w.ID || string(g.Packet) != string(w.Packet) {
			return fmt.Sprintf("record %d is %+v, want %+v", i, g, w)
		}
	}
	return ""
}

// waitClosed waits for ch to close, failing the test after d.
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("%s did not happen within %v", what, d)
	}
}

func TestSessionTag(t *testing.T) {
	pairs := [][2]store.Key{
		{{Server: "a", ClientID: "bc"}, {Server: "ab", ClientID: "c"}},
		{{Server: "", ClientID: "a"}, {Server: "a", ClientID: ""}},
		{{Server: "{a}", ClientID: ""}, {Server: "", ClientID: "{a}"}},
		{{Server: "x}", ClientID: "{y"}, {Server: "x", ClientID: "}{y"}},
	}
	for _, p := range pairs {
		if sessionTag(p[0]) == sessionTag(p[1]) {
			t.Errorf("%s and %s share the tag %s", p[0], p[1], sessionTag(p[0]))
		}
	}
	s, err := New(goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"}), &Options{Prefix: "app:x"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Client().Close()
	defer s.Close()
	// Every key of one session has one hash tag, the hex digest, whatever
	// braces the Key holds: Redis Cluster hashes the text between the first
	// '{' and the first '}' after it.
	for _, k := range []store.Key{{Server: "}{", ClientID: "{{}}"}, {Server: "", ClientID: ""}} {
		tag := sessionTag(k)
		ks := s.keys(k)
		for _, name := range []string{ks.rec, ks.idx, ks.meta, ks.lease, ks.fence, ks.batch} {
			open := strings.IndexByte(name, '{')
			end := strings.IndexByte(name[open:], '}')
			if open < 0 || end < 0 || name[open+1:open+end] != tag {
				t.Errorf("key %q does not carry the hash tag {%s}", name, tag)
			}
			if !strings.HasPrefix(name, "app:x:{") {
				t.Errorf("key %q does not start with the prefix", name)
			}
		}
	}
	for _, bad := range []string{"a{b", "a}b"} {
		if _, err := New(s.Client(), &Options{Prefix: bad}); err == nil {
			t.Errorf("New accepted the prefix %q", bad)
		}
	}
	if got, want := metaPattern(`a*b?[c]\`), `a\*b\?\[c\]\\:{*}:meta`; got != want {
		t.Errorf("metaPattern = %q, want %q", got, want)
	}
}

func TestSeqField(t *testing.T) {
	seqs := []uint64{0, 1, 255, 256, 1 << 53, 1<<53 + 1, 1 << 63, math.MaxUint64 - 1, math.MaxUint64}
	for i, q := range seqs {
		f := seqField(q)
		if back, ok := parseSeqField(f); !ok || back != q {
			t.Errorf("parseSeqField(seqField(%d)) = %d, %v", q, back, ok)
		}
		if i > 0 && seqField(seqs[i-1]) >= f {
			t.Errorf("seqField(%d) does not sort before seqField(%d)", seqs[i-1], q)
		}
	}
	for _, bad := range []string{"", "0", "000000000000000G", "000000000000000A", "00000000000000001"} {
		if _, ok := parseSeqField(bad); ok {
			t.Errorf("parseSeqField(%q) accepted it", bad)
		}
	}
}

// TestKeyCollisions writes sessions whose keys a naive layout would merge:
// concatenations that meet, braces that would move the hash tag, and a
// ClientID spelling another session's Redis key.
func TestKeyCollisions(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	victim := store.Key{Server: "tcp://a:1883", ClientID: "victim"}
	keys := []store.Key{
		victim,
		{Server: "tcp://a:1883v", ClientID: "ictim"},
		{Server: "tcp://a:1883", ClientID: "victim}"},
		{Server: "{tcp://a:1883", ClientID: "victim"},
		{Server: "tcp://a:1883", ClientID: s.keys(victim).rec},
		{Server: s.keys(victim).rec, ClientID: ""},
		{Server: "tcp://a:1883", ClientID: "{" + sessionTag(victim) + "}"},
	}
	for i, k := range keys {
		if err := s.Apply(ctx, k, store.Put(record(1, fmt.Sprint("key ", i)))); err != nil {
			t.Fatalf("Apply(%s): %v", k, err)
		}
	}
	for i, k := range keys {
		expectRecords(t, s, k, record(1, fmt.Sprint("key ", i)))
	}
	got, err := s.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(keys) {
		t.Fatalf("Sessions returned %d keys, want %d: %v", len(got), len(keys), got)
	}
}

func TestCorruptRecords(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("corrupt")
	good := []store.Record{record(1, "one"), record(2, "two"), record(3, "three"), record(4, "four"), record(5, "five")}
	ops := make([]store.Op, len(good))
	for i, r := range good {
		ops[i] = store.Put(r)
	}
	if err := s.Apply(ctx, k, ops...); err != nil {
		t.Fatal(err)
	}
	ks := s.keys(k)
	rdb := s.Client()
	// Seq 2: one flipped bit. Seq 3: a value too short for its header.
	// Seq 4: the value of seq 1, moved. Seq 6: indexed, but missing.
	flipped := encodeRecord(good[1])
	flipped[5] ^= 0x10
	if err := rdb.HSet(ctx, ks.rec, seqField(2), flipped, seqField(3), "x", seqField(4), encodeRecord(good[0])).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, ks.idx, goredis.Z{Member: seqField(6)}, goredis.Z{Member: "not-a-seq"}).Err(); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Load(ctx, k)
	var ce *store.CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Load returned %v, want a *store.CorruptError", err)
	}
	if fmt.Sprint(ce.Seqs) != "[2 3 4 6]" || ce.Key != k {
		t.Errorf("CorruptError names %s seqs %v, want %s [2 3 4 6]", ce.Key, ce.Seqs, k)
	}
	if msg := diff(recs, []store.Record{good[0], good[4]}); msg != "" {
		t.Errorf("Load with corrupt records: %s", msg)
	}
	t.Logf("error: %v", err)
	// The session can still be repaired by writing over the bad records.
	if err := s.Apply(ctx, k, store.Put(good[1]), store.Delete(3), store.Put(good[3]), store.Delete(6)); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZRem(ctx, ks.idx, "not-a-seq").Err(); err != nil {
		t.Fatal(err)
	}
	expectRecords(t, s, k, good[0], good[1], good[3], good[4])
}

// TestLoadIsConsistentAcrossPages loads with tiny pages while batches move
// records: every Load must see whole batches only, however its pages fall.
func TestLoadIsConsistentAcrossPages(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	s.pageRecords = 3
	ctx := context.Background()
	k := testKey("paged")
	const n = 20
	var ops []store.Op
	for i := uint64(1); i <= n; i++ {
		ops = append(ops, store.Put(record(i, "r")))
	}
	if err := s.Apply(ctx, k, ops...); err != nil {
		t.Fatal(err)
	}
	// Each batch moves the lowest record to the top: the session always
	// holds exactly n records, and a torn read would not.
	done := make(chan error, 1)
	go func() {
		for i := uint64(1); i <= 300; i++ {
			if err := s.Apply(ctx, k, store.Delete(i), store.Put(record(i+n, "r"))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	loads := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d consistent loads", loads)
			return
		default:
		}
		recs, err := s.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		loads++
		if len(recs) != n || recs[n-1].Seq-recs[0].Seq != n-1 {
			t.Fatalf("Load saw %d records from %d to %d: a partial batch", len(recs), recs[0].Seq, recs[len(recs)-1].Seq)
		}
	}
}

// roundTrips counts the commands and pipelines a client sends.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *roundTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

func TestLoad200000(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	var trips roundTrips
	s.Client().AddHook(&trips)
	ctx := context.Background()
	k := testKey("long")
	// Warm up: the first call dials, and loads the scripts (NOSCRIPT).
	if err := s.Apply(ctx, testKey("warm-up"), store.Put(record(1, "x"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, testKey("warm-up")); err != nil {
		t.Fatal(err)
	}
	const n, batch = 200_000, 10_000
	want := make([]store.Record, n)
	for i := range want {
		seq := uint64(i) + 1
		want[i] = store.Record{Seq: seq, Dir: store.Outbound, ID: uint16(seq), Packet: fmt.Appendf(nil, "packet %d", seq)}
	}
	// Batches in reverse, so that the order comes from Seq alone.
	for end := n; end > 0; end -= batch {
		ops := make([]store.Op, 0, batch)
		for _, r := range want[end-batch : end] {
			ops = append(ops, store.Put(r))
		}
		before := trips.n.Load()
		if err := s.Apply(ctx, k, ops...); err != nil {
			t.Fatal(err)
		}
		if d := trips.n.Load() - before; d != 1 {
			t.Errorf("Apply of %d ops took %d round trips, want 1", batch, d)
		}
	}
	before := trips.n.Load()
	start := time.Now()
	recs, err := s.Load(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	took, trip := time.Since(start), trips.n.Load()-before
	if msg := diff(recs, want); msg != "" {
		t.Fatal(msg)
	}
	t.Logf("Load of %d records: %d round trips, %v", n, trip, took)
	if trip != n/loadPageRecords {
		t.Errorf("Load of %d records took %d round trips, want %d", n, trip, n/loadPageRecords)
	}
}

// TestRestartKeepsAcknowledged kills Redis (SIGKILL, appendfsync always)
// while a writer applies batches, restarts it, and checks that every batch
// Apply acknowledged is there, whole.
func TestRestartKeepsAcknowledged(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("restart")
	var (
		mu    sync.Mutex
		acked []uint64 // batch numbers Apply returned nil for
		fails int
	)
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	progress := make(chan struct{}, 1) // signalled after every Apply that returned
	go func() {
		defer close(writerDone)
		for b := uint64(0); ; b++ {
			select {
			case <-stop:
				return
			default:
			}
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := s.Apply(actx, k, store.Put(record(2*b+1, "a")), store.Put(record(2*b+2, "b")))
			cancel()
			mu.Lock()
			if err == nil {
				acked = append(acked, b)
				select {
				case progress <- struct{}{}:
				default:
				}
			} else {
				fails++
				select {
				case progress <- struct{}{}:
				default:
				}
				if !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("Apply while Redis restarts: %v, want store.ErrUnavailable", err)
				}
			}
			mu.Unlock()
			if err != nil {
				// Pace the retries while Redis is down.
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}()
	failCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return fails
	}
	waitFor := func(what string, done func() bool) {
		t.Helper()
		deadline := time.NewTimer(30 * time.Second)
		defer deadline.Stop()
		for !done() {
			select {
			case <-progress:
			case <-deadline.C:
				t.Fatalf("%s did not happen within 30s", what)
			}
		}
	}
	waitFor("100 acknowledged batches", func() bool { return ackedCount() >= 100 })
	srv.Kill()
	// Start again only once an Apply failed: the writer saw Redis die.
	waitFor("a failed Apply", func() bool { return failCount() > 0 })
	srv.Start()
	before := ackedCount()
	waitFor("100 more acknowledged batches", func() bool { return ackedCount() >= before+100 })
	close(stop)
	<-writerDone

	recs, err := s.Load(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	present := make(map[uint64]bool, len(recs))
	for _, r := range recs {
		present[r.Seq] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range acked {
		if !present[2*b+1] || !present[2*b+2] {
			t.Fatalf("acknowledged batch %d is missing after the restart", b)
		}
	}
	for q := range present {
		b := (q - 1) / 2
		if !present[2*b+1] || !present[2*b+2] {
			t.Fatalf("batch %d is present in part", b)
		}
	}
	t.Logf("%d batches acknowledged, %d failed while Redis was down, %d stored", len(acked), fails, len(recs)/2)
}

func TestUnavailable(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("down")
	if err := s.Apply(ctx, k, store.Put(record(1, "before"))); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	check := func(what string, timeout time.Duration, f func(ctx context.Context) error) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		err := f(cctx)
		took := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with Redis down returned %v, want store.ErrUnavailable", what, err)
		}
		if took > timeout+5*time.Second/2 {
			t.Errorf("%s with Redis down took %v", what, took)
		}
		t.Logf("%s: %v after %v", what, err, took.Round(time.Millisecond))
	}
	// Without a deadline, go-redis's own retries bound the call.
	check("Apply", 10*time.Second, func(ctx context.Context) error { return s.Apply(ctx, k, store.Put(record(2, "down"))) })
	// A shorter context cuts them short.
	check("Apply", 100*time.Millisecond, func(ctx context.Context) error { return s.Apply(ctx, k, store.Put(record(2, "down"))) })
	check("Load", 300*time.Millisecond, func(ctx context.Context) error { _, err := s.Load(ctx, k); return err })
	check("Clear", 300*time.Millisecond, func(ctx context.Context) error { return s.Clear(ctx, k) })
	check("Sessions", 300*time.Millisecond, func(ctx context.Context) error { _, err := s.Sessions(ctx); return err })
	check("Acquire", 300*time.Millisecond, func(ctx context.Context) error {
		l, err := s.Acquire(ctx, k, store.LeaseOptions{})
		if l != nil {
			_ = l.Release(ctx)
		}
		return err
	})

	srv.Start()
	// go-redis's pool, having failed to dial, probes in the background
	// until the server answers; the same Store then works again.
	deadline := time.Now().Add(10 * time.Second)
	back := time.Now()
	for {
		err := s.Apply(ctx, k, store.Put(record(3, "after")))
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Apply after Redis came back: %v", err)
		}
	}
	t.Logf("Apply worked again %v after Redis came back", time.Since(back).Round(time.Millisecond))
	expectRecords(t, s, k, record(1, "before"), record(3, "after"))
}

// TestHungRedis pauses every client of Redis: calls end with their context,
// wrapping both store.ErrUnavailable and the context's error.
func TestHungRedis(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("hung")
	if err := s.Apply(ctx, k, store.Put(record(1, "x"))); err != nil {
		t.Fatal(err)
	}
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer admin.Close()
	// The pause ends on its own; CLIENT UNPAUSE would wait for it too.
	if err := admin.Do(ctx, "client", "pause", 1000, "all").Err(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Apply(cctx, k, store.Put(record(2, "y")))
	took := time.Since(start)
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Apply on a paused Redis returned %v, want store.ErrUnavailable and context.DeadlineExceeded", err)
	}
	if took > 2*time.Second {
		t.Errorf("Apply on a paused Redis took %v with a 300ms context", took)
	}
}

func TestWaitReplicas(t *testing.T) {
	srv := testenv.Redis(t)
	const timeout = 200 * time.Millisecond
	s := openStore(t, srv.URL(), &Options{WaitReplicas: 1, WaitTimeout: timeout})
	ctx := context.Background()
	k := testKey("replicated")
	start := time.Now()
	err := s.Apply(ctx, k, store.Put(record(1, "x")))
	took := time.Since(start)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Apply waiting for 1 replica of none returned %v, want store.ErrUnavailable", err)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Errorf("Apply waiting for a replica took %v, want about %v", took, timeout)
	}
	t.Logf("%v after %v", err, took.Round(time.Millisecond))
	// The batch reached the primary: "may have been applied".
	expectRecords(t, s, k, record(1, "x"))
	if err := s.Clear(ctx, k); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Clear waiting for a replica returned %v, want store.ErrUnavailable", err)
	}
	// A refused write does not wait: it wrote nothing.
	other := openStore(t, srv.URL(), nil)
	l, err := other.Acquire(ctx, k, store.LeaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	if err := s.Apply(ctx, k, store.Put(record(2, "y"))); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("Apply on a taken session returned %v, want store.ErrSessionTaken", err)
	}
	// With a replica attached, WAIT is satisfied. (Redis waits 5s by
	// default before a diskless sync, in case more replicas come.)
	if err := s.Client().ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	replica := testenv.Redis(t, testenv.WithRedisArgs("--replicaof", "127.0.0.1", portOf(srv.Addr())))
	_ = replica
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Apply(ctx, k, store.Put(record(3, "z")))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Apply with a replica attached: %v", err)
		}
	}
}

func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// TestTakeover plays the failure the lease exists for: holder A is cut off
// from Redis (its user disabled and its connections killed, as a partition
// would), B takes the session over with a larger token once A's lease
// expires, and A, back in touch, finds every write refused.
func TestTakeover(t *testing.T) {
	d := standalone(t)
	ctx := context.Background()
	a, err := d.open(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := d.open(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	k := testKey("shared")
	const ttl = 400 * time.Millisecond
	la, err := a.Acquire(ctx, k, store.LeaseOptions{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, k, store.Put(record(1, "a"))); err != nil {
		t.Fatal(err)
	}
	// B fails fast while A holds the lease, and cannot write.
	start := time.Now()
	if _, err := b.Acquire(ctx, k, store.LeaseOptions{TTL: ttl}); !errors.Is(err, store.ErrSessionTaken) {
		t.Fatalf("second Acquire returned %v, want store.ErrSessionTaken", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("refused Acquire took %v", took)
	}
	if err := b.Apply(ctx, k, store.Put(record(2, "b"))); !errors.Is(err, store.ErrSessionTaken) {
		t.Fatalf("Apply by a non-holder returned %v, want store.ErrSessionTaken", err)
	}

	heal := d.partition(a.user)
	lb, err := b.Acquire(ctx, k, store.LeaseOptions{TTL: 10 * time.Second, Wait: true})
	if err != nil {
		heal()
		t.Fatalf("Acquire with Wait after A was cut off: %v", err)
	}
	defer lb.Release(ctx)
	// A's lease is lost no later than Redis let it expire.
	waitClosed(t, la.Lost(), time.Second, "A's Lost()")
	took := time.Since(start)
	if lb.Token() <= la.Token() {
		t.Errorf("B's token %d is not above A's %d", lb.Token(), la.Token())
	}
	heal()
	if err := a.Apply(ctx, k, store.Put(record(3, "a again"))); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("A's Apply after the takeover returned %v, want store.ErrSessionTaken", err)
	}
	if err := a.Clear(ctx, k); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("A's Clear after the takeover returned %v, want store.ErrSessionTaken", err)
	}
	if err := b.Apply(ctx, k, store.Put(record(4, "b"))); err != nil {
		t.Fatal(err)
	}
	expectRecords(t, b, k, record(1, "a"), record(4, "b"))
	// A's Release neither fails nor frees B's lease.
	if err := la.Release(ctx); err != nil {
		t.Errorf("Release of a lost lease: %v", err)
	}
	if _, err := a.Acquire(ctx, k, store.LeaseOptions{}); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("A's Acquire while B holds the lease returned %v", err)
	}
	t.Logf("takeover %v after A was cut off (TTL %v); tokens %d → %d", took.Round(time.Millisecond), ttl, la.Token(), lb.Token())
}

// TestLeaseCloseReleases checks that Close gives the leases up at once
// and ends their renewers (goleak checks the latter).
func TestLeaseCloseReleases(t *testing.T) {
	srv := testenv.Redis(t)
	ctx := context.Background()
	a, err := Open(srv.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := openStore(t, srv.URL(), nil)
	keys := []store.Key{testKey("one"), testKey("two")}
	for _, k := range keys {
		if _, err := a.Acquire(ctx, k, store.LeaseOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The same handle cannot take a lease it holds twice.
	if _, err := a.Acquire(ctx, keys[0], store.LeaseOptions{}); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("second Acquire by the holder returned %v, want store.ErrSessionTaken", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Acquire(ctx, keys[0], store.LeaseOptions{}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Acquire after Close returned %v, want store.ErrClosed", err)
	}
	for _, k := range keys {
		l, err := b.Acquire(ctx, k, store.LeaseOptions{})
		if err != nil {
			t.Fatalf("Acquire after the holder's Close: %v", err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLeaseLostToAnother checks that a renewal finding another holder
// closes Lost: the lease key is overwritten behind the holder's back.
func TestLeaseLostToAnother(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("stolen")
	l, err := s.Acquire(ctx, k, store.LeaseOptions{TTL: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Client().Set(ctx, s.keys(k).lease, "someone-else:999", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, l.Lost(), 2*time.Second, "Lost() after the lease was taken")
	if err := s.Apply(ctx, k, store.Put(record(1, "x"))); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("Apply after losing the lease returned %v, want store.ErrSessionTaken", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Client().Get(ctx, s.keys(k).lease).Result(); err != nil || v != "someone-else:999" {
		t.Errorf("Release of a lost lease touched the new holder's: %q, %v", v, err)
	}
}

// testClusterWaitReplicas runs the WAIT path on a cluster, where the
// script and WAIT go to the key's primary.
func testClusterWaitReplicas(t *testing.T, addrs []string) {
	rdb := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	defer rdb.Close()
	s, err := New(rdb, &Options{Prefix: "wait", WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range 5 {
		k := testKey(fmt.Sprint("c", i))
		if err := s.Apply(ctx, k, store.Put(record(1, "x"))); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Apply waiting for a replica the cluster lacks returned %v", err)
		}
		expectRecords(t, s, k, record(1, "x"))
	}
}

// testClusterKeySlots checks with the cluster itself that every key of a
// session hashes to one slot, whatever braces the Key holds, and that
// sessions spread over the slots.
func testClusterKeySlots(t *testing.T, addrs []string) {
	rdb := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	defer rdb.Close()
	s, err := New(rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	slot := func(name string) int64 {
		t.Helper()
		n, err := rdb.ClusterKeySlot(ctx, name).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	slots := make(map[int64]bool)
	for _, k := range []store.Key{
		{Server: "{a}", ClientID: "b"}, {Server: "a", ClientID: "{b}"}, {Server: "}", ClientID: "{"},
		{Server: "", ClientID: ""}, testKey("x"), testKey("y"), testKey("z"),
	} {
		ks := s.keys(k)
		first := slot(ks.rec)
		for _, name := range []string{ks.idx, ks.meta, ks.lease, ks.fence, ks.batch} {
			if slot(name) != first {
				t.Errorf("%s and %s hash to different slots", name, ks.rec)
			}
		}
		slots[first] = true
	}
	if len(slots) < 5 {
		t.Errorf("7 sessions share %d slots", len(slots))
	}
}
