package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// TestPageShapes reads one damaged session with pages of many shapes: cut
// by count or by bytes on either side of the script's index chunks (256
// members), and unbounded, as Load's last attempt reads it. Every shape
// gives the same records and the same damage, and every page keeps its
// bounds.
func TestPageShapes(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("shapes")
	const n = 1100
	var all []store.Record
	var ops []store.Op
	for i := uint64(1); i <= n; i++ {
		r := record(i, strings.Repeat("x", int(i%7)*40+1))
		all = append(all, r)
		ops = append(ops, store.Put(r))
	}
	if err := s.Apply(ctx, k, ops...); err != nil {
		t.Fatal(err)
	}
	// Values missing on both sides of chunk edges, and a member that is no
	// seq field, sorting after every one.
	missing := []uint64{256, 257, 513, n}
	ks := s.keys(k)
	for _, seq := range missing {
		if err := s.Client().HDel(ctx, ks.rec, seqField(seq)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Client().ZAdd(ctx, ks.idx, goredis.Z{Member: "zz-not-a-seq"}).Err(); err != nil {
		t.Fatal(err)
	}
	var good []store.Record
	for _, r := range all {
		if !slices.Contains(missing, r.Seq) {
			good = append(good, r)
		}
	}

	for _, c := range []struct{ records, bytes int }{
		{0, 0}, {1, 0}, {255, 0}, {256, 0}, {257, 0}, {511, 0}, {512, 0}, {2000, 0},
		{loadPageRecords, loadPageBytes}, {2000, 1}, {2000, 255 * 100}, {3, 150},
	} {
		t.Run(fmt.Sprintf("records=%d,bytes=%d", c.records, c.bytes), func(t *testing.T) {
			s.pageRecords, s.pageBytes = c.records, c.bytes
			recs, err := s.Load(ctx, k)
			checkDamage(t, "Load", err, missing)
			if msg := diff(recs, good); msg != "" {
				t.Fatalf("Load: %s", msg)
			}
			if c.records == 0 {
				return // Scan pages are never unbounded
			}
			var scanned []store.Record
			var bad []uint64
			for from := uint64(0); ; {
				page, next, err := s.Scan(ctx, k, from, 1<<20)
				var ce *store.CorruptError
				if errors.As(err, &ce) {
					bad = append(bad, ce.Seqs...)
				} else if err != nil {
					t.Fatalf("Scan from %d: %v", from, err)
				}
				checkPage(t, page, ce, next, c.records, c.bytes)
				scanned = append(scanned, page...)
				if next == 0 {
					break
				}
				from = next
			}
			if msg := diff(scanned, good); msg != "" {
				t.Fatalf("Scan: %s", msg)
			}
			if !slices.Equal(bad, missing) {
				t.Fatalf("Scan reported seqs %v corrupt, want %v", bad, missing)
			}
		})
	}
}

// checkDamage checks that err is a *store.CorruptError naming seqs and the
// member that is no seq field.
func checkDamage(t *testing.T, op string, err error, seqs []uint64) {
	t.Helper()
	var ce *store.CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("%s returned %v, want a *store.CorruptError", op, err)
	}
	if !slices.Equal(ce.Seqs, seqs) || !strings.Contains(ce.Error(), "zz-not-a-seq") {
		t.Fatalf("%s reported seqs %v (%v), want %v and the member zz-not-a-seq", op, ce.Seqs, ce, seqs)
	}
}

// checkPage checks that a Scan page covers at most records members and
// stops at the first record that takes it to bytes, but always covers one
// unless the scan is over.
func checkPage(t *testing.T, page []store.Record, ce *store.CorruptError, next uint64, records, bytes int) {
	t.Helper()
	covered := len(page)
	if ce != nil {
		covered += len(ce.Seqs)
	}
	if covered > records {
		t.Fatalf("a page covers %d records, more than %d", covered, records)
	}
	if covered == 0 && next != 0 {
		t.Fatalf("an empty page with next %d", next)
	}
	if bytes == 0 || len(page) < 2 {
		return
	}
	sum := 0
	for _, r := range page[:len(page)-1] {
		sum += len(encodeRecord(r))
	}
	if sum >= bytes {
		t.Fatalf("a page goes on past %d bytes (%d before its last record)", bytes, sum)
	}
}
