package conformance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/tethermq/tether/store"
)

// pipelinerChecks are the checks of store.Pipeliner, skipped for a store
// that does not implement it.
var pipelinerChecks = []check{
	{name: "Order", fn: checkPipelineOrder},
	{name: "FailurePrefix", fn: checkPipelineFailurePrefix},
	{name: "Context", fn: checkPipelineContext},
	{name: "Keys", fn: checkPipelineKeys},
	{name: "Interleaved", fn: checkPipelineInterleaved},
	{name: "Closed", fn: checkPipelineClosed},
}

// pipelinerOf returns the Pipeliner of handle s (whose done calls note
// progress, see withProgress), or skips the check when the store has none.
func (e *env) pipelinerOf(s store.SessionStore) store.Pipeliner {
	e.t.Helper()
	p, ok := s.(store.Pipeliner)
	if !ok {
		e.t.Skip("the store does not implement store.Pipeliner")
	}
	return p
}

// pipeline records the done calls of batches begun with ApplyAsync: their
// order, their errors, and whether two ever ran at once.
type pipeline struct {
	e    *env
	gate chan struct{} // done calls wait for it: every batch is begun before any done returns

	mu      sync.Mutex
	order   []int   // guarded by mu: batch numbers in the order of their done calls
	errs    []error // guarded by mu: by batch number
	calls   []int   // guarded by mu: done calls per batch number
	all     chan struct{}
	pending int               // guarded by mu: batches whose done has not been called
	inside  map[store.Key]int // guarded by mu: done calls running, by Key
	overlap bool              // guarded by mu: two done calls on one Key ran at once
}

// newPipeline returns a recorder whose done calls wait until release is
// called, so that every batch is begun before the first done returns.
func (e *env) newPipeline() *pipeline {
	g := &pipeline{e: e, gate: make(chan struct{}), all: make(chan struct{}), inside: make(map[store.Key]int)}
	close(g.all)
	return g
}

// release lets the done calls run.
func (g *pipeline) release() {
	select {
	case <-g.gate:
	default:
		close(g.gate)
	}
}

// begin begins ops on k through p as batch number i (numbered from 0 in
// begin order) with ctx.
func (g *pipeline) begin(ctx context.Context, p store.Pipeliner, k store.Key, ops []store.Op) int {
	g.mu.Lock()
	i := len(g.errs)
	g.errs = append(g.errs, nil)
	g.calls = append(g.calls, 0)
	if g.pending == 0 {
		g.all = make(chan struct{})
	}
	g.pending++
	g.mu.Unlock()
	p.ApplyAsync(ctx, k, ops, func(err error) {
		g.mu.Lock()
		g.inside[k]++
		if g.inside[k] > 1 {
			g.overlap = true
		}
		g.mu.Unlock()
		<-g.gate
		runtime.Gosched() // a wider window for an overlapping call
		g.mu.Lock()
		g.inside[k]--
		g.order = append(g.order, i)
		g.errs[i] = err
		g.calls[i]++
		if g.calls[i] == 1 {
			g.pending--
			if g.pending == 0 {
				close(g.all)
			}
		}
		g.mu.Unlock()
	})
	return i
}

// wait waits until every batch begun has had its done called, and checks
// that each was called once, one at a time per Key, in the order begun on
// its Key: byKey lists the batch numbers of each Key in the order begun,
// and defaults to all of them on one Key. It returns the errors by batch
// number.
func (g *pipeline) wait(byKey ...[]int) []error {
	g.e.t.Helper()
	g.release()
	g.mu.Lock()
	all := g.all
	g.mu.Unlock()
	g.e.eventually(all, "a done call for every batch begun with ApplyAsync")
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, n := range g.calls {
		if n != 1 {
			g.e.t.Fatalf("the done of batch %d was called %d times, want once", i, n)
		}
	}
	if g.overlap {
		g.e.t.Fatal("two done calls on one Key ran at once, want one at a time")
	}
	if len(byKey) == 0 {
		byKey = [][]int{nil}
		for i := range g.calls {
			byKey[0] = append(byKey[0], i)
		}
	}
	for _, want := range byKey {
		var got []int
		for _, i := range g.order {
			if slices.Contains(want, i) {
				got = append(got, i)
			}
		}
		if !slices.Equal(got, want) {
			g.e.t.Fatalf("done calls came in the order %v, want the order begun %v", got, want)
		}
	}
	return slices.Clone(g.errs)
}

// model is what a session holds after some batches: the expected result of
// applying them in order.
type model map[uint64]store.Record

func (m model) apply(ops []store.Op) {
	for _, op := range ops {
		switch op.Kind {
		case store.OpPut:
			m[op.Record.Seq] = op.Record
		case store.OpDelete:
			delete(m, op.Record.Seq)
		}
	}
}

func (m model) records() []store.Record {
	recs := make([]store.Record, 0, len(m))
	for _, r := range m {
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(a, b store.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return recs
}

// pipelineBatch returns batch n of a run whose order matters: it overwrites
// and deletes Seqs that nearby batches write too.
func pipelineBatch(n int) []store.Op {
	ops := []store.Op{store.Put(rec(uint64(n%13)+1, n)), store.Put(rec(uint64(n%7)+20, n))}
	if n%3 == 0 {
		ops = append(ops, store.Delete(uint64(n*5%13)+1))
	}
	if n%5 == 0 {
		ops = append(ops, store.Delete(uint64(n%7)+20), store.Put(rec(uint64(n%4)+40, n)))
	}
	return ops
}

// badBatch returns a batch that every store refuses whole: an op of an
// unknown kind among good ones.
func badBatch(n int) []store.Op {
	return []store.Op{store.Put(rec(uint64(n%13)+1, n)), {Kind: 99, Record: rec(2, n)}}
}

func checkPipelineOrder(e *env) {
	s := e.open()
	p := e.pipelinerOf(s)
	k := key("c")
	e.apply(s, k, store.Put(rec(100, 0)))
	want := model{100: rec(100, 0)}
	g := e.newPipeline()
	g.release() // done calls run while batches are still being begun
	const n = 200
	for i := range n {
		ops := pipelineBatch(i)
		want.apply(ops)
		g.begin(e.ctx, p, k, ops)
	}
	for i, err := range g.wait() {
		if err != nil {
			e.t.Fatalf("batch %d of %d begun back to back failed: %v", i, n, err)
		}
	}
	e.expect(s, k, want.records())
	if e.caps.Durable {
		if err := s.Close(); err != nil {
			e.t.Fatalf("Close: %v", err)
		}
		e.expect(e.open(), k, want.records())
	}
}

// failure is how the failing batch of failedChain fails: begun with a done
// context ctx, reporting want, or, when ctx is nil, holding an op of an
// unknown kind.
type failure struct {
	ctx  context.Context
	want error
}

// failedChain begins, on k through p, good batches 0 to n-1 with batch bad
// replaced by one that fails as f says, every one of them before any done
// returns. It checks that the batches before bad succeed, bad fails, and
// every later one fails and takes no effect; then that a batch begun
// afterwards succeeds.
func (e *env) failedChain(s store.SessionStore, p store.Pipeliner, k store.Key, n, bad int, f failure) {
	e.t.Helper()
	e.apply(s, k, store.Put(rec(100, 0)))
	want := model{100: rec(100, 0)}
	g := e.newPipeline()
	for i := range n {
		switch {
		case i != bad:
			ops := pipelineBatch(i)
			if i < bad {
				want.apply(ops)
			}
			g.begin(e.ctx, p, k, ops)
		case f.ctx != nil:
			g.begin(f.ctx, p, k, pipelineBatch(i))
		default:
			g.begin(e.ctx, p, k, badBatch(i))
		}
	}
	errs := g.wait()
	for i, err := range errs {
		switch {
		case i < bad && err != nil:
			e.t.Fatalf("batch %d, before the failing batch %d, failed: %v", i, bad, err)
		case i == bad && err == nil:
			e.t.Fatalf("batch %d returned nil, want an error", i)
		case i == bad && f.want != nil && !errors.Is(err, f.want):
			e.t.Fatalf("batch %d returned %v, want %v", i, err, f.want)
		case i > bad && err == nil:
			e.t.Fatalf("batch %d, begun after the failing batch %d and before its done, returned nil, want an error", i, bad)
		}
	}
	e.expect(s, k, want.records())
	// A batch begun once the errors were reported starts a new chain.
	g = e.newPipeline()
	ops := pipelineBatch(n)
	want.apply(ops)
	g.begin(e.ctx, p, k, ops)
	if err := g.wait()[0]; err != nil {
		e.t.Fatalf("a batch begun after the failed chain's done calls failed: %v", err)
	}
	e.expect(s, k, want.records())
}

func checkPipelineFailurePrefix(e *env) {
	s := e.open()
	p := e.pipelinerOf(s)
	e.failedChain(s, p, key("c"), 40, 20, failure{})
	e.failedChain(s, p, key("first"), 10, 0, failure{})
}

func checkPipelineContext(e *env) {
	s := e.open()
	p := e.pipelinerOf(s)
	for i, c := range e.doneContexts() {
		e.failedChain(s, p, key(fmt.Sprint("c", i)), 15, 10, failure{c.ctx, c.want})
	}
}

func checkPipelineKeys(e *env) {
	s := e.open()
	p := e.pipelinerOf(s)
	ks := []store.Key{key("failing"), key("healthy"), {Server: "tcp://other.test:1883", ClientID: "failing"}}
	wants := []model{{}, {}, {}}
	byKey := make([][]int, len(ks))
	const n, bad = 30, 12
	g := e.newPipeline()
	for i := range n {
		for j, k := range ks {
			ops := pipelineBatch(i)
			if j != 1 && i == bad {
				ops = badBatch(i)
			}
			if j == 1 || i < bad {
				wants[j].apply(ops)
			}
			byKey[j] = append(byKey[j], g.begin(e.ctx, p, k, ops))
		}
	}
	errs := g.wait(byKey...)
	for j, k := range ks {
		for i, b := range byKey[j] {
			if fail := j != 1 && i >= bad; fail != (errs[b] != nil) {
				e.t.Fatalf("batch %d on %s returned %v (want an error: %v)", i, k, errs[b], fail)
			}
		}
		e.expect(s, k, wants[j].records())
	}
}

// checkPipelineInterleaved mixes ApplyAsync with Apply and Clear on one Key,
// each once the done calls before it have returned.
func checkPipelineInterleaved(e *env) {
	s := e.open()
	p := e.pipelinerOf(s)
	k := key("c")
	want := model{}
	run := func(from, n int) {
		e.t.Helper()
		g := e.newPipeline()
		for i := from; i < from+n; i++ {
			ops := pipelineBatch(i)
			want.apply(ops)
			g.begin(e.ctx, p, k, ops)
		}
		for i, err := range g.wait() {
			if err != nil {
				e.t.Fatalf("batch %d: %v", from+i, err)
			}
		}
	}
	run(0, 10)
	e.apply(s, k, store.Put(rec(200, 0)), store.Delete(1))
	want.apply([]store.Op{store.Put(rec(200, 0)), store.Delete(1)})
	run(10, 10)
	if err := s.Clear(e.ctx, k); err != nil {
		e.t.Fatalf("Clear: %v", err)
	}
	clear(want)
	run(20, 10)
	e.expect(s, k, want.records())
	// A failed Apply between chains does not stop the next one.
	if err := s.Apply(e.ctx, k, badBatch(30)...); err == nil {
		e.t.Fatal("Apply of a batch with an op of unknown kind returned nil")
	}
	run(31, 10)
	e.expect(s, k, want.records())
	// Another handle writes the session between two chains of this one.
	if e.caps.SharedHandles {
		e.apply(e.open(), k, store.Put(rec(300, 0)))
		want.apply([]store.Op{store.Put(rec(300, 0))})
		g := e.newPipeline()
		g.begin(e.ctx, p, k, pipelineBatch(41))
		if err := g.wait()[0]; err == nil {
			want.apply(pipelineBatch(41)) // else refused, which the contract allows
		}
		e.expect(s, k, want.records())
		run(42, 10)
		e.expect(s, k, want.records())
	}
}

func checkPipelineClosed(e *env) {
	s := e.open()
	p := e.pipelinerOf(s)
	k := key("c")
	g := e.newPipeline()
	g.begin(e.ctx, p, k, pipelineBatch(0))
	if err := g.wait()[0]; err != nil {
		e.t.Fatalf("ApplyAsync: %v", err)
	}
	if err := s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	g = e.newPipeline()
	g.begin(e.ctx, p, k, pipelineBatch(1))
	g.begin(e.ctx, p, k, nil)
	for i, err := range g.wait() {
		if !errors.Is(err, store.ErrClosed) {
			e.t.Errorf("ApplyAsync %d on a closed store reported %v, want store.ErrClosed", i, err)
		}
	}
}
