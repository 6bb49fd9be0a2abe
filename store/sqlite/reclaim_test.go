package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sqlite"
)

// The backlog TestReclaimDrain writes and drains; larger ones measure what a
// real backlog leaves behind, e.g. -drain.records=100000 -drain.packet=100.
var (
	drainRecords = flag.Int("drain.records", 20_000, "records TestReclaimDrain writes, then deletes")
	drainPacket  = flag.Int("drain.packet", 400, "packet bytes of each record TestReclaimDrain writes")
)

const mib = 1 << 20

// fileSizes returns the sizes of the database file at path and of its WAL
// (0 when there is none).
func fileSizes(t testing.TB, path string) (db, wal int64) {
	t.Helper()
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	return size(path), size(path + "-wal")
}

// waitFor polls until done returns true. It fails the test when progress,
// a value that moves while the store works, has not changed for 30s.
func waitFor(t *testing.T, what string, done func() bool, progress func() int64) {
	t.Helper()
	last, since := progress(), time.Now()
	for !done() {
		if p := progress(); p != last {
			last, since = p, time.Now()
		} else if time.Since(since) > 30*time.Second {
			t.Fatalf("no progress for 30s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// record returns the record of seq with a packet of n bytes.
func record(seq uint64, n int) store.Record {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(seq) + byte(i)
	}
	return store.Record{Seq: seq, Dir: store.Outbound, ID: uint16(seq), Packet: p}
}

// putRange writes records lo to hi-1 of k in batches of batch.
func putRange(t testing.TB, s *sqlite.Store, k store.Key, lo, hi uint64, packet, batch int, after func()) {
	t.Helper()
	ops := make([]store.Op, 0, batch)
	for q := lo; q < hi; q++ {
		ops = append(ops, store.Put(record(q, packet)))
		if len(ops) == batch || q == hi-1 {
			if err := s.Apply(context.Background(), k, ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
			after()
		}
	}
}

// deleteRange deletes records lo to hi-1 of k, oldest first, as a client
// draining a backlog does, in batches of batch.
func deleteRange(t testing.TB, s *sqlite.Store, k store.Key, lo, hi uint64, batch int, after func()) {
	t.Helper()
	ops := make([]store.Op, 0, batch)
	for q := lo; q < hi; q++ {
		ops = append(ops, store.Delete(q))
		if len(ops) == batch || q == hi-1 {
			if err := s.Apply(context.Background(), k, ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
			after()
		}
	}
}

func integrityCheck(t *testing.T, path string) {
	t.Helper()
	var res string
	if err := rawDB(t, path).QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Errorf("integrity_check: %q, %v", res, err)
	}
}

// vacuumState returns the auto-vacuum mode of db and its free pages. They
// are read on one connection, freelist_count first: it reads the file's
// header, of which auto_vacuum answers what the connection saw last.
func vacuumState(t *testing.T, db *sql.DB) (mode, free int64) {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.QueryRowContext(context.Background(), "PRAGMA freelist_count").Scan(&free); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRowContext(context.Background(), "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	return mode, free
}

// TestReclaimDrain writes a backlog, deletes it, and checks that the store
// gives the space back by itself, with default options: the file ends up a
// small fraction of its peak, the WAL never outgrows WALSizeLimit and is
// truncated at the end.
func TestReclaimDrain(t *testing.T) {
	n, packet := uint64(*drainRecords), *drainPacket
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "backlog"}
	var peakDB, peakWAL int64
	sample := func() {
		db, wal := fileSizes(t, path)
		peakDB, peakWAL = max(peakDB, db), max(peakWAL, wal)
	}
	began := time.Now()
	putRange(t, s, k, 1, n+1, packet, 1000, sample)
	written, writtenWAL := fileSizes(t, path)
	t.Logf("%d records of %d bytes written in %v: file %.1f MiB, WAL %.1f MiB", n, packet, time.Since(began).Round(time.Millisecond),
		float64(written)/mib, float64(writtenWAL)/mib)
	began = time.Now()
	deleteRange(t, s, k, 1, n+1, 1000, sample)
	drained, drainedWAL := fileSizes(t, path)
	t.Logf("deleted in %v: file %.1f MiB, WAL %.1f MiB", time.Since(began).Round(time.Millisecond),
		float64(drained)/mib, float64(drainedWAL)/mib)

	// Once the pages are back, the WAL is truncated: nothing else is
	// running to stop that.
	target := peakDB / 20
	waitFor(t, fmt.Sprintf("the file to shrink below %d bytes and the WAL to be truncated", target), func() bool {
		sample()
		db, wal := fileSizes(t, path)
		return db < target && wal < mib
	}, func() int64 { return sqlite.ReclaimSteps(s) })
	db, wal := fileSizes(t, path)
	t.Logf("peak: file %.1f MiB, WAL %.1f MiB; %v after the last delete: file %.3f MiB, WAL %.1f MiB, %d reclaim steps",
		float64(peakDB)/mib, float64(peakWAL)/mib, time.Since(began).Round(time.Millisecond),
		float64(db)/mib, float64(wal)/mib, sqlite.ReclaimSteps(s))
	if peakWAL > sqlite.WALSizeLimit {
		t.Errorf("the WAL grew to %d bytes, over WALSizeLimit (%d)", peakWAL, sqlite.WALSizeLimit)
	}
	if recs, err := s.Load(context.Background(), k); err != nil || len(recs) != 0 {
		t.Errorf("Load after the drain: %d records, %v", len(recs), err)
	}
	integrityCheck(t, path)
}

// TestReclaimConcurrentApply gives the pages of a drained backlog back
// while other sessions keep writing and deleting, with a threshold low
// enough that their deletes start more steps: every Apply must succeed and
// every session must load exactly what was written. Each writer pauses
// twice as long as its last Apply took, as a client waits for its broker:
// SQLite's write lock is not fair between handles or processes, and
// writers in a tight loop can starve each other past the busy timeout,
// with or without the reclaimer (one handle's own writes take turns).
func TestReclaimConcurrentApply(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := sqlite.Open(path, &sqlite.Options{MaxFreePages: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bulk := store.Key{Server: "tcp://broker.test:1883", ClientID: "bulk"}
	const n = 30_000 // about 13 steps of pages
	putRange(t, s, bulk, 1, n+1, 400, 500, func() {})

	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied int64 // batches committed by the writers, for progress
		fails   []error
	)
	const writers = 2
	models := make([][]store.Record, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := store.Key{Server: "tcp://broker.test:1883", ClientID: fmt.Sprintf("writer-%d", w)}
			var model []store.Record
			defer func() { models[w] = model }()
			for seq := uint64(1); ; seq += 20 {
				select {
				case <-stop:
					return
				default:
				}
				// 20 new records, and the 20 written two rounds ago deleted.
				var ops []store.Op
				for q := seq; q < seq+20; q++ {
					r := record(q, 300+int(q%200))
					ops = append(ops, store.Put(r))
					model = append(model, r)
				}
				if seq > 40 {
					for q := seq - 40; q < seq-20; q++ {
						ops = append(ops, store.Delete(q))
					}
					model = model[20:]
				}
				began := time.Now()
				err := s.Apply(ctx, k, ops...)
				took := time.Since(began)
				mu.Lock()
				applied++
				if err != nil {
					fails = append(fails, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
				time.Sleep(2 * took)
			}
		}()
	}
	// The backlog is drained while the writers run, and they go on until
	// its pages are all back and many steps were taken meanwhile.
	steps0 := sqlite.ReclaimSteps(s)
	deleteRange(t, s, bulk, 1, n+1, 1000, func() {})
	waitFor(t, "pages given back while writers run", func() bool {
		db, _ := fileSizes(t, path)
		return sqlite.ReclaimSteps(s)-steps0 >= 8 && db < 2*mib
	}, func() int64 { return sqlite.ReclaimSteps(s) })
	close(stop)
	wg.Wait()
	t.Logf("%d reclaim steps during %d writer batches", sqlite.ReclaimSteps(s)-steps0, applied)
	for _, err := range fails {
		t.Errorf("Apply while pages were given back: %v", err)
	}
	for w, model := range models {
		k := store.Key{Server: "tcp://broker.test:1883", ClientID: fmt.Sprintf("writer-%d", w)}
		got, err := s.Load(ctx, k)
		if err != nil || !equalRecords(got, model) {
			t.Errorf("Load %s: %d records, %v; want %d", k, len(got), err, len(model))
		}
	}
	if got, err := s.Load(ctx, bulk); err != nil || len(got) != 0 {
		t.Errorf("Load of the drained session: %d records, %v", len(got), err)
	}
	integrityCheck(t, path)
}

// TestIncrementalAutoVacuum checks the mode of new databases, from Open and
// from New, and that an existing database keeps its own.
func TestIncrementalAutoVacuum(t *testing.T) {
	dir := t.TempDir()
	t.Run("Open", func(t *testing.T) {
		path := filepath.Join(dir, "open.db")
		s, err := sqlite.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if mode, _ := vacuumState(t, rawDB(t, path)); mode != 2 {
			t.Errorf("auto_vacuum of a new file = %d, want 2 (incremental)", mode)
		}
	})
	t.Run("New", func(t *testing.T) {
		db := rawDB(t, filepath.Join(dir, "new.db"))
		s, err := sqlite.New(db, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if mode, _ := vacuumState(t, db); mode != 2 {
			t.Errorf("auto_vacuum of a new database = %d, want 2 (incremental)", mode)
		}
	})
	t.Run("Existing", func(t *testing.T) {
		path := filepath.Join(dir, "existing.db")
		db := rawDB(t, path)
		if _, err := db.Exec("CREATE TABLE app (x BLOB)"); err != nil {
			t.Fatal(err)
		}
		s, err := sqlite.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if mode, _ := vacuumState(t, db); mode != 0 {
			t.Errorf("auto_vacuum of an existing file = %d, want 0 (none) until Compact", mode)
		}
	})
}

// TestCompact converts a file without auto-vacuum, as earlier versions
// created, and gives its free pages back.
func TestCompact(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sessions.db")
	raw := rawDB(t, path)
	if _, err := raw.Exec("PRAGMA journal_mode = WAL; CREATE TABLE app (x BLOB)"); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "old"}
	putRange(t, s, k, 1, 5001, 400, 500, func() {})
	deleteRange(t, s, k, 1, 4001, 500, func() {})
	if mode, free := vacuumState(t, raw); mode != 0 || free < 256 {
		t.Fatalf("after deleting 4,000 records: auto_vacuum %d, freelist_count %d; want 0 (none), hundreds", mode, free)
	}
	before, _ := fileSizes(t, path)
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after, wal := fileSizes(t, path)
	t.Logf("Compact: file %.2f MiB -> %.2f MiB, WAL %d bytes", float64(before)/mib, float64(after)/mib, wal)
	if mode, free := vacuumState(t, raw); mode != 2 || free != 0 {
		t.Errorf("after Compact: auto_vacuum %d, freelist_count %d; want 2 (incremental), 0", mode, free)
	}
	if after > before/3 {
		t.Errorf("Compact left the file at %d bytes of %d", after, before)
	}
	got, err := s.Load(ctx, k)
	want := make([]store.Record, 0, 1000)
	for q := uint64(4001); q <= 5000; q++ {
		want = append(want, record(q, 400))
	}
	if err != nil || !equalRecords(got, want) {
		t.Errorf("Load after Compact: %d records, %v; want %d", len(got), err, len(want))
	}
	s.Close()
	if err := s.Compact(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Compact after Close: %v, want store.ErrClosed", err)
	}
}

// TestWALSizeLimit checks that a batch larger than WALSizeLimit does not
// leave a WAL of its size behind.
func TestWALSizeLimit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "big"}
	putRange(t, s, k, 1, 25, mib, 24, func() {})
	if _, wal := fileSizes(t, path); wal <= sqlite.WALSizeLimit {
		t.Fatalf("WAL after a 24 MiB batch: %d bytes; the test needs more than WALSizeLimit", wal)
	}
	// The automatic checkpoint after that batch copied the WAL back; the
	// next writer starts it over and trims it. A reader holding an old
	// snapshot (the reclaimer's check) can delay that by a write or two.
	var sizes []int64
	for i := range 20 {
		if err := s.Apply(ctx, k, store.Put(record(100+uint64(i), 100))); err != nil {
			t.Fatal(err)
		}
		_, wal := fileSizes(t, path)
		if sizes = append(sizes, wal); wal <= sqlite.WALSizeLimit {
			return
		}
	}
	t.Errorf("WAL sizes after 20 small writes: %v, want one at most WALSizeLimit (%d)", sizes, sqlite.WALSizeLimit)
}

// BenchmarkApplyReclaim measures Apply while backlogs of 5,000 records of 1
// KiB are written and drained in turn (10 records per Apply), with the
// reclaimer on (the default) and off: each drain frees about 1,500 pages,
// over DefaultMaxFreePages. Besides ns/op it reports the median, 99th
// percentile and largest Apply latency, and the reclaim steps taken.
func BenchmarkApplyReclaim(b *testing.B) {
	for _, c := range []struct {
		name    string
		maxFree int
	}{{"off", -1}, {"on", 0}} {
		b.Run("reclaim="+c.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "sessions.db")
			s, err := sqlite.Open(path, &sqlite.Options{MaxFreePages: c.maxFree})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			k := store.Key{Server: "tcp://broker.test:1883", ClientID: "bench"}
			const per, cycle = 10, 500 // records per Apply, Applies per half cycle
			lat := make([]time.Duration, 0, b.N)
			var next, oldest uint64 = 1, 1
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var ops []store.Op
				if (i/cycle)%2 == 0 {
					for range per {
						ops = append(ops, store.Put(record(next, 1024)))
						next++
					}
				} else {
					for ; len(ops) < per && oldest < next; oldest++ {
						ops = append(ops, store.Delete(oldest))
					}
				}
				began := time.Now()
				if err := s.Apply(ctx, k, ops...); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(began))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
			b.ReportMetric(float64(sqlite.ReclaimSteps(s)), "steps")
		})
	}
}
