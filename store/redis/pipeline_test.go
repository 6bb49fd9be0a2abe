package redis

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// runFenced runs applyScript for ops on k as batch id following prev, as
// ApplyAsync sends it, and returns the reply.
func runFenced(t *testing.T, s *Store, k store.Key, prev, id string, ops ...store.Op) []any {
	t.Helper()
	args := applyArgs("", s.holder+":", prev, id, k, ops)
	res, err := applyScript.Run(context.Background(), s.Client(), s.keys(k).written(), args...).Slice()
	if err != nil {
		t.Fatalf("applyScript: %v", err)
	}
	return res
}

func lastBatch(t *testing.T, s *Store, k store.Key) string {
	t.Helper()
	v, err := s.Client().Get(context.Background(), s.keys(k).batch).Result()
	if err != nil && !errors.Is(err, goredis.Nil) {
		t.Fatal(err)
	}
	return v
}

// TestBatchFence drives the script: a batch whose predecessor is not the
// last one written writes nothing; one that ran already is not run again;
// Apply and Clear leave an id that a late batch cannot follow.
func TestBatchFence(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("fence")
	if err := s.Apply(ctx, k, store.Put(record(1, "apply"))); err != nil {
		t.Fatal(err)
	}
	applied := lastBatch(t, s, k)
	if applied == "" {
		t.Fatal("Apply stored no batch id")
	}
	res := runFenced(t, s, k, "elsewhere:1", "test:1", store.Put(record(1, "wrong")), store.Put(record(2, "wrong")))
	if code, _ := res[0].(int64); code != 2 || res[1] != applied {
		t.Fatalf("a batch following another one returned %v, want [2 %s]", res, applied)
	}
	expectRecords(t, s, k, record(1, "apply"))
	if got := lastBatch(t, s, k); got != applied {
		t.Fatalf("a refused batch changed the batch id to %q", got)
	}

	res = runFenced(t, s, k, applied, "test:2", store.Put(record(2, "two")))
	if code, _ := res[0].(int64); code != 1 {
		t.Fatalf("a batch following the last one returned %v, want [1 ]", res)
	}
	// The same command again (go-redis retrying after a lost reply) is
	// success, and writes nothing more.
	if err := s.Client().HSet(ctx, s.keys(k).rec, seqField(2), encodeRecord(record(2, "changed"))).Err(); err != nil {
		t.Fatal(err)
	}
	res = runFenced(t, s, k, applied, "test:2", store.Put(record(2, "two")))
	if code, _ := res[0].(int64); code != 1 {
		t.Fatalf("a batch run twice returned %v the second time, want [1 ]", res)
	}
	expectRecords(t, s, k, record(1, "apply"), record(2, "changed"))

	// A batch that lands after Apply or Clear, following what came before
	// them, writes nothing.
	for _, w := range []struct {
		name  string
		write func() error
		want  []store.Record
	}{
		{"Apply", func() error { return s.Apply(ctx, k, store.Delete(2)) }, []store.Record{record(1, "apply")}},
		{"Clear", func() error { return s.Clear(ctx, k) }, nil},
	} {
		before := lastBatch(t, s, k)
		if err := w.write(); err != nil {
			t.Fatal(err)
		}
		after := lastBatch(t, s, k)
		if after == before {
			t.Fatalf("%s left the batch id %q as it was", w.name, after)
		}
		res := runFenced(t, s, k, before, "test:late-"+w.name, store.Put(record(3, "late")))
		if code, _ := res[0].(int64); code != 2 || res[1] != after {
			t.Fatalf("a late batch after %s returned %v, want [2 %s]", w.name, res, after)
		}
		expectRecords(t, s, k, w.want...)
	}
}

// fencedWrites watches a store's writing scripts: hold delays the one of
// a batch id until release is closed, and replies records each reply's code
// by batch id.
type fencedWrites struct {
	hold    string
	release chan struct{}
	onReply func(id string, code int64)

	mu      sync.Mutex
	replies map[string][]int64
}

func (h *fencedWrites) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *fencedWrites) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (h *fencedWrites) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		args := cmd.Args()
		// evalsha|eval, sha|script, 5, five keys, then ARGV: the id is ARGV[4].
		if name := cmd.Name(); (name != "evalsha" && name != "eval") || len(args) < 12 || args[2] != 5 {
			return next(ctx, cmd)
		}
		id, _ := args[11].(string)
		if id == h.hold {
			<-h.release
		}
		err := next(ctx, cmd)
		if c, ok := cmd.(*goredis.Cmd); ok && err == nil {
			if res, err := c.Slice(); err == nil && len(res) == 2 {
				code, _ := res[0].(int64)
				h.mu.Lock()
				h.replies[id] = append(h.replies[id], code)
				h.mu.Unlock()
				if h.onReply != nil {
					h.onReply(id, code)
				}
			}
		}
		return err
	}
}

func (h *fencedWrites) codes(id string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.replies[id]
}

// outcome is the done call of batch i.
type outcome struct {
	i   int
	err error
}

// TestPipelineOvertaken holds the first of two batches back until the
// second has reached Redis first: the fence refuses the second, which is
// sent again once the first is written. Both end applied, in order, and
// their dones come in order.
func TestPipelineOvertaken(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("overtaken")
	// Loads the script, so that every write below is one EVALSHA.
	if err := s.Apply(ctx, k, store.Put(record(9, "before"))); err != nil {
		t.Fatal(err)
	}
	n := s.batches.Load()
	first, second := s.holder+":"+strconv.FormatUint(n+1, 10), s.holder+":"+strconv.FormatUint(n+2, 10)
	h := &fencedWrites{hold: first, release: make(chan struct{}), replies: make(map[string][]int64)}
	var once sync.Once
	h.onReply = func(id string, code int64) {
		if id == second {
			once.Do(func() { close(h.release) })
		}
	}
	s.Client().AddHook(h)

	outcomes := make(chan outcome, 2)
	var inside atomic.Int32
	begin := func(i int, ops ...store.Op) {
		s.ApplyAsync(ctx, k, ops, func(err error) {
			if inside.Add(1) != 1 {
				t.Error("two done calls ran at once")
			}
			outcomes <- outcome{i, err}
			inside.Add(-1)
		})
	}
	begin(1, store.Put(record(1, "first")), store.Put(record(2, "first")))
	begin(2, store.Put(record(1, "second")), store.Delete(9))
	for want := 1; want <= 2; want++ {
		select {
		case o := <-outcomes:
			if o.i != want || o.err != nil {
				t.Fatalf("done call %d was batch %d with %v, want batch %d with nil", want, o.i, o.err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no done call for batch %d within 10s", want)
		}
	}
	if got := h.codes(second); len(got) != 2 || got[0] != 2 || got[1] != 1 {
		t.Errorf("the second batch's replies were %v, want [2 1]: refused, then written", got)
	}
	if got := h.codes(first); len(got) != 1 || got[0] != 1 {
		t.Errorf("the first batch's replies were %v, want [1]", got)
	}
	expectRecords(t, s, k, record(1, "second"), record(2, "first"))
	if got := lastBatch(t, s, k); got != second {
		t.Errorf("the batch id is %q, want the second batch's %q", got, second)
	}
}

// TestPipelineChainStartRaced lets another handle write between the read
// of the batch id that starts a chain and the chain's first batch: the
// batch fails and writes nothing, and the next chain works.
func TestPipelineChainStartRaced(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	other := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("raced")
	batchKey := s.keys(k).batch
	var once sync.Once
	s.Client().AddHook(hookFunc(func(ctx context.Context, cmd goredis.Cmder, next goredis.ProcessHook) error {
		err := next(ctx, cmd)
		if args := cmd.Args(); cmd.Name() == "get" && len(args) == 2 && args[1] == batchKey {
			once.Do(func() {
				if err := other.Apply(ctx, k, store.Put(record(2, "other"))); err != nil {
					t.Error(err)
				}
			})
		}
		return err
	}))
	errs := make(chan error, 1)
	s.ApplyAsync(ctx, k, []store.Op{store.Put(record(1, "mine"))}, func(err error) { errs <- err })
	if err := <-errs; !errors.Is(err, errOutOfOrder) {
		t.Fatalf("a chain's first batch after another handle's write returned %v, want errOutOfOrder", err)
	} else {
		t.Logf("refused: %v", err)
	}
	expectRecords(t, s, k, record(2, "other"))
	s.ApplyAsync(ctx, k, []store.Op{store.Put(record(1, "mine"))}, func(err error) { errs <- err })
	if err := <-errs; err != nil {
		t.Fatalf("the next chain's first batch: %v", err)
	}
	expectRecords(t, s, k, record(1, "mine"), record(2, "other"))
}

// hookFunc is a go-redis hook around single commands.
type hookFunc func(ctx context.Context, cmd goredis.Cmder, next goredis.ProcessHook) error

func (f hookFunc) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (f hookFunc) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (f hookFunc) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error { return f(ctx, cmd, next) }
}

// TestPipelineWaitReplicas pipelines through the WAIT path: with no replica
// to acknowledge, each batch fails with store.ErrUnavailable.
func TestPipelineWaitReplicas(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), &Options{WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	k := testKey("replicated")
	errs := make(chan error, 3)
	for i := range 3 {
		s.ApplyAsync(ctx, k, []store.Op{store.Put(record(uint64(i+1), "x"))}, func(err error) { errs <- err })
	}
	for range 3 {
		if err := <-errs; !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("ApplyAsync waiting for a replica of none reported %v, want store.ErrUnavailable", err)
		}
	}
}
