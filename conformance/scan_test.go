package conformance_test

import (
	"context"
	"os"
	"testing"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// brokenScanEnv selects, in a child process, which broken Scanner
// TestBrokenScanner runs the suite against.
const brokenScanEnv = "TETHER_CONFORMANCE_BROKEN_SCAN"

// brokenScanner is a memory store whose Scan has one deliberate bug.
type brokenScanner struct {
	*memory.Store
	bug string
	buf []byte // "alias": the packets of the last page live here
}

func (b *brokenScanner) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	switch b.bug {
	case "exclusive": // from read as "after"
		from++
	case "nolimit":
		limit = 1 << 30
	}
	recs, next, err := b.Store.Scan(ctx, k, from, limit)
	switch b.bug {
	case "lastnext": // the end told by one more, empty page
		if next == 0 && len(recs) > 0 {
			next = recs[len(recs)-1].Seq + 1
		}
	case "alias": // a buffer reused from page to page
		b.buf = b.buf[:0]
		for _, r := range recs {
			b.buf = append(b.buf, r.Packet...)
		}
		off := 0
		for i := range recs {
			n := len(recs[i].Packet)
			recs[i].Packet = b.buf[off : off+n : off+n]
			off += n
		}
	}
	return recs, next, err
}

// TestBrokenScannerChild is what TestBrokenScanner runs in a child process.
func TestBrokenScannerChild(t *testing.T) {
	bug := os.Getenv(brokenScanEnv)
	if bug == "" {
		t.Skip("only run as the child of TestBrokenScanner")
	}
	conformance.Run(t, func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
		s := &brokenScanner{Store: memory.New(), bug: bug}
		return &conformance.HarnessFuncs{
			Make: func(context.Context) (store.SessionStore, error) { return s, nil },
		}, nil
	})
}

// TestBrokenScanner checks that the Scanner checks catch each deliberate
// bug: the check named for it must fail.
func TestBrokenScanner(t *testing.T) {
	brokenChecks(t, "TestBrokenScannerChild", brokenScanEnv, []brokenCase{
		{"exclusive", "Scanner/Edges", "returned Seqs [1], want [0]"},
		{"exclusive", "Scanner/Pages", "past Seq 1, the first record not yet returned"},
		{"nolimit", "Scanner/Pages", "more than the limit 1"},
		{"lastnext", "Scanner/Pages", "the end must be told on the last page"},
		{"alias", "Scanner/NotRetained", "reading the second page changed the first"},
	})
}
