package redis

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

func TestFieldAbove(t *testing.T) {
	for _, c := range []struct {
		member string
		want   uint64
		ok     bool
	}{
		{"", 0, true},
		{"-", 0, true},
		{"00000000000000012", 2, true}, // a field with more after it
		{"0000000000000001", 2, true},  // a field itself: the next one
		{"00000001", 1 << 32, true},    // a prefix: padded with zeros
		{"not-a-seq", 0, false},        // 'n' sorts after every digit
		{"+", 0, true},
		{"A", 0xa000000000000000, true},   // between '9' and 'a'
		{"1Z", 0x1a00000000000000, true},  //
		{"1fz", 0x2000000000000000, true}, // no digit above 'z': carry
		{"z", 0, false},
		{"ffffz", 0, false},
		{"ffffffffffffffff", 0, false},
		{"ffffffffffffffff0", 0, false},
		{"fffffffffffffffe0", math.MaxUint64, true},
	} {
		got, ok := fieldAbove(c.member)
		if got != c.want || ok != c.ok {
			t.Errorf("fieldAbove(%q) = %#x, %v; want %#x, %v", c.member, got, ok, c.want, c.ok)
			continue
		}
		if ok && seqField(got) <= c.member {
			t.Errorf("fieldAbove(%q) = %s, which does not sort after it", c.member, seqField(got))
		}
	}
}

// TestScanBadMembers: index members that are no seq field, wherever they
// sort, are reported and never stop or loop a scan, whatever the page size.
func TestScanBadMembers(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("bad-members")
	good := []store.Record{record(0, "meta"), record(1, "one"), record(2, "two"), record(0x42, "x"), record(math.MaxUint64, "max")}
	for _, r := range good {
		if err := s.Apply(ctx, k, store.Put(r)); err != nil {
			t.Fatal(err)
		}
	}
	ks := s.keys(k)
	bad := []string{"+", "00000000000000012", "0000000000000040Z", "A", "zzz"}
	for _, m := range bad {
		if err := s.Client().ZAdd(ctx, ks.idx, goredis.Z{Member: m}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	_, loadErr := s.Load(ctx, k)
	if !errors.Is(loadErr, store.ErrCorrupt) {
		t.Fatalf("Load returned %v, want store.ErrCorrupt", loadErr)
	}
	for limit := 1; limit <= len(good)+len(bad)+1; limit++ {
		var got []store.Record
		var reported []string
		from := uint64(0)
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatalf("limit %d: the scan does not end", limit)
			}
			recs, next, err := s.Scan(ctx, k, from, limit)
			if err != nil {
				var ce *store.CorruptError
				if !errors.As(err, &ce) || len(ce.Seqs) != 0 {
					t.Fatalf("limit %d, from %d: %v, want a *store.CorruptError naming no Seq", limit, from, err)
				}
				reported = append(reported, err.Error())
			}
			got = append(got, recs...)
			if next == 0 {
				break
			}
			if next <= from {
				t.Fatalf("limit %d: next %d does not move past from %d", limit, next, from)
			}
			from = next
		}
		if msg := diff(got, good); msg != "" {
			t.Fatalf("limit %d: %s", limit, msg)
		}
		all := strings.Join(reported, "\n")
		for _, m := range bad {
			if !strings.Contains(all, `"`+m+`"`) {
				t.Errorf("limit %d: bad member %q never reported: %v", limit, m, reported)
			}
		}
	}
}
