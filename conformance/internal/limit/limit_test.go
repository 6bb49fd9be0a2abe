package limit

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestProgressDeadline: a check's context lives as long as progress is
// noted, and ends, saying why, once none has been for the limit.
func TestProgressDeadline(t *testing.T) {
	const idle = 2 * time.Second
	ctx, p, stop := Start(context.Background(), idle)
	defer stop()
	for start := time.Now(); time.Since(start) < 2*idle; {
		p.Note()
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
	if msg := Stalled(ctx); !strings.Contains(msg, "no progress for 2s") {
		t.Fatalf("Stalled(ctx) = %q, want it to say there was no progress for 2s", msg)
	}
}
