// Package limit bounds the checks of the store contract suite
// (conformance) and the cases of the session suite (conformance/sessiontest)
// by a silence, not a total: a check fails once nothing has moved for its
// limit, so that a slow machine makes a check slow, never red, while a
// store or client that is stuck still fails within the limit.
package limit

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

// Time limits of one check. The context ends first, so that a store
// honouring its context fails the check with a readable error; the
// watchdog comes later and only fires for a store that ignores its context.
const (
	normalTimeout = 60 * time.Second
	heavyFactor   = 3 // heavy checks get this many times the normal limit
)

// TimeoutEnv names an environment variable that, set to a duration
// ("2m"), replaces the time limit of one check (60s; heavy checks get three
// times as much). conformance.TimeoutEnv documents it for users.
const TimeoutEnv = "TETHER_CONFORMANCE_TIMEOUT"

// checkLimit returns the time limit of a check: how long it may go without
// progress.
func checkLimit(heavy bool) time.Duration {
	d := normalTimeout
	if v := os.Getenv(TimeoutEnv); v != "" {
		if e, err := time.ParseDuration(v); err == nil && e > 0 {
			d = e
		}
	}
	if heavy {
		d *= heavyFactor
	}
	return d
}

// grace is how long past a check's deadline the watchdog waits: a quarter
// of the limit, between 1s and 15s.
func grace(timeout time.Duration) time.Duration {
	return min(max(timeout/4, time.Second), 15*time.Second)
}

// Clock is the progress of one check or case. Progress is noted by the
// check's own steps: a store call returning, a message delivered for the
// first time, a new event of a child process.
type Clock struct {
	idle time.Duration
	last atomic.Int64 // UnixNano of the last progress
}

// Start returns a context that is cancelled, with a cause saying so, once
// no progress has been noted for idle, and the clock to note progress on.
// stop ends the watch and cancels the context.
func Start(parent context.Context, idle time.Duration) (context.Context, *Clock, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	c := &Clock{idle: idle}
	c.Note()
	stopWatch := c.watch(idle, func() { cancel(fmt.Errorf("conformance: no progress for %v", idle)) })
	return ctx, c, func() {
		stopWatch()
		cancel(context.Canceled)
	}
}

// watch runs silent, once, when c has seen no progress for d. stop ends the
// watch and waits for it.
func (c *Clock) watch(d time.Duration, silent func()) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(min(max(d/8, 20*time.Millisecond), time.Second))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if c.silence() >= d {
				silent()
				return
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// Check bounds one check named name: a context that ends once the check
// has made no progress for its limit (see Start), and a watchdog a little
// later for a check that ignores its context. stop ends both; call it when
// the check returns.
func Check(name string, heavy bool) (ctx context.Context, c *Clock, stop func()) {
	timeout := checkLimit(heavy)
	ctx, c, stopClock := Start(context.Background(), timeout)
	stopWatchdog := watchdog(name, c, timeout+grace(timeout))
	return ctx, c, func() {
		stopWatchdog()
		stopClock()
	}
}

// Note records progress now.
func (c *Clock) Note() { c.last.Store(time.Now().UnixNano()) }

// Last returns when progress was last noted: the zero Unix time on a
// zero Clock that was never noted.
func (c *Clock) Last() time.Time { return time.Unix(0, c.last.Load()) }

// silence returns how long nothing has moved.
func (c *Clock) silence() time.Duration {
	return time.Since(time.Unix(0, c.last.Load()))
}

// Stalled describes why ctx ended, for a failure message.
func Stalled(ctx context.Context) string {
	if err := context.Cause(ctx); err != nil {
		return err.Error()
	}
	return "the check's context ended"
}

// watchdog ends the test binary, with every goroutine's stack, once c has
// seen no progress for d. A check that blocks forever (a deadlock in a
// backend, a store ignoring its context) then fails with a message that
// names it instead of hanging the whole run.
func watchdog(name string, c *Clock, d time.Duration) (stop func()) {
	return c.watch(d, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "conformance: %s still running with no progress for %v; the store is stuck or ignores its context\n\n%s\n", name, d, buf)
		panic("conformance: " + name + " timed out")
	})
}
