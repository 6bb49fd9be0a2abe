package conformance

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestProgressDeadline: a check's context lives as long as something
// moves — notes or a polled counter — and ends, saying why, once nothing
// has for the limit.
func TestProgressDeadline(t *testing.T) {
	const idle = time.Second
	ctx, p, stop := newProgress(context.Background(), idle)
	defer stop()
	var counter atomic.Uint64
	p.poll(counter.Load)
	// Three limits long, half by notes and half by the counter.
	for start := time.Now(); time.Since(start) < 3*idle; {
		if time.Since(start) < 3*idle/2 {
			p.note()
		} else {
			counter.Add(1)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the context ended while progress was noted every 20ms: %v", context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(30 * idle): // a bound for the test itself, far past the limit
		t.Fatal("the context did not end once progress stopped")
	}
	if msg := stalled(ctx); !strings.Contains(msg, "no progress for 1s") {
		t.Fatalf("stalled(ctx) = %q, want it to say there was no progress for 1s", msg)
	}
}
