package conformance_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// brokenPipeEnv selects, in a child process, which broken Pipeliner
// TestBrokenPipeliner runs the suite against.
const brokenPipeEnv = "TETHER_CONFORMANCE_BROKEN_PIPE"

// pipelined is a memory store with ApplyAsync: a goroutine per batch
// applies it once the batch before it on its Key has succeeded, and calls
// done once that one's done has returned. With bug set it breaks one rule.
type pipelined struct {
	*memory.Store
	bug string

	mu   sync.Mutex
	last map[store.Key]*pipeCall // guarded by mu
	wg   sync.WaitGroup          // the goroutines of ApplyAsync; Close waits
}

var _ store.Pipeliner = (*pipelined)(nil)

type pipeCall struct {
	prev    *pipeCall
	settled chan struct{} // closed once err is set
	called  chan struct{} // closed once done has returned
	err     error
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (p *pipelined) ApplyAsync(ctx context.Context, k store.Key, ops []store.Op, done func(error)) {
	ops = slices.Clone(ops)
	c := &pipeCall{settled: make(chan struct{}), called: make(chan struct{})}
	p.mu.Lock()
	if last := p.last[k]; last != nil && !(closed(last.called) && last.err != nil) {
		c.prev = last // else a new chain: an error was reported
	}
	p.last[k] = c
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		var err error
		if c.prev != nil && p.bug != "reorder" {
			<-c.prev.settled
			if c.prev.err != nil && p.bug != "nochain" {
				err = fmt.Errorf("an earlier batch failed: %w", c.prev.err)
			}
		}
		if p.bug == "reorder" {
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		}
		if err == nil {
			err = p.Store.Apply(ctx, k, ops...)
		}
		c.err = err
		close(c.settled)
		if c.prev != nil && p.bug != "overlap" {
			<-c.prev.called
		}
		done(err)
		close(c.called)
	}()
}

func (p *pipelined) Close() error {
	p.wg.Wait()
	return p.Store.Close()
}

func newPipelinedHarness(bug string) conformance.HarnessMaker {
	return func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
		s := &pipelined{Store: memory.New(), bug: bug, last: make(map[store.Key]*pipeCall)}
		return &conformance.HarnessFuncs{
			Make: func(context.Context) (store.SessionStore, error) { return s, nil },
		}, nil
	}
}

// TestPipelined runs the suite against a correct Pipeliner: it must pass.
func TestPipelined(t *testing.T) {
	if os.Getenv(brokenPipeEnv) != "" {
		t.Skip("running as the child of TestBrokenPipeliner")
	}
	conformance.Run(t, newPipelinedHarness(""))
}

// TestBrokenPipelinerChild is what TestBrokenPipeliner runs in a child
// process.
func TestBrokenPipelinerChild(t *testing.T) {
	bug := os.Getenv(brokenPipeEnv)
	if bug == "" {
		t.Skip("only run as the child of TestBrokenPipeliner")
	}
	conformance.Run(t, newPipelinedHarness(bug))
}

// TestBrokenPipeliner checks that the Pipeliner checks catch each
// deliberate bug: the check named for it must fail.
func TestBrokenPipeliner(t *testing.T) {
	brokenChecks(t, "TestBrokenPipelinerChild", brokenPipeEnv, []brokenCase{
		{"reorder", "Pipeliner/Order", "Load("},
		{"nochain", "Pipeliner/FailurePrefix", "before its done, returned nil, want an error"},
		{"nochain", "Pipeliner/Context", "before its done, returned nil, want an error"},
		{"nochain", "Pipeliner/Keys", "returned <nil> (want an error: true)"},
		{"overlap", "Pipeliner/FailurePrefix", "done calls"},
	})
}
