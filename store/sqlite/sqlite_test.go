package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sqlite"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	goleak.VerifyTestMain(m)
}

// newHarness opens handles on one file; several may be open at once, as
// several processes may share the file. A child process opens the file by
// its path (Child), and the Damage checks damage it (sqlite.DamageFile).
func newHarness(ctx context.Context, t testing.TB) (conformance.Harness, error) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	return &partitionHarness{conformance.HarnessFuncs{
		Make:  func(context.Context) (store.SessionStore, error) { return sqlite.Open(path, nil) },
		Caps:  conformance.Capabilities{Durable: true, SharedHandles: true},
		Child: path,
		Damage: func(ctx context.Context, k store.Key, kind conformance.DamageKind) error {
			return sqlite.DamageFile(ctx, path, k, kind)
		},
	}}, nil
}

// openChild opens, in a child process, the file a harness named.
func openChild(_ context.Context, path string) (store.SessionStore, error) {
	return sqlite.Open(path, nil)
}

func TestConformance(t *testing.T) {
	conformance.Run(t, newHarness, conformance.Options{OpenChild: openChild})
}

func BenchmarkConformance(b *testing.B) { conformance.Bench(b, newHarness) }

// rawDB opens the file with the driver directly, as a hand edit would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestCorruptRecord(t *testing.T) {
	ctx := context.Background()
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "victim"}
	other := store.Key{Server: "tcp://broker.test:1883", ClientID: "bystander"}
	var records []store.Record
	for i := uint64(1); i <= 5; i++ {
		records = append(records, store.Record{Seq: i, Dir: store.Outbound, ID: uint16(i), Packet: []byte(strings.Repeat("p", int(i)*10))})
	}
	// seq as stored: the top bit flipped.
	stored := func(seq uint64) int64 { return int64(seq ^ 1<<63) }
	where := ` WHERE client_id = CAST('victim' AS BLOB) AND seq = ?`
	cases := []struct {
		name   string
		damage func(db *sql.DB) error
		bad    []uint64
	}{
		{"FlippedPacketByte", func(db *sql.DB) error {
			_, err := db.Exec(`UPDATE tether_records SET value = substr(value, 1, 6) || x'ff' || substr(value, 8)`+where, stored(3))
			return err
		}, []uint64{3}},
		{"FlippedHeaderByte", func(db *sql.DB) error {
			_, err := db.Exec(`UPDATE tether_records SET value = substr(value, 1, 1) || x'07' || substr(value, 3)`+where, stored(2))
			return err
		}, []uint64{2}},
		{"Truncated", func(db *sql.DB) error {
			_, err := db.Exec(`UPDATE tether_records SET value = x'0101'`+where, stored(1))
			return err
		}, []uint64{1}},
		{"WrongType", func(db *sql.DB) error {
			_, err := db.Exec(`UPDATE tether_records SET value = 42`+where, stored(4))
			return err
		}, []uint64{4}},
		{"MovedToAnotherSeq", func(db *sql.DB) error {
			_, err := db.Exec(`UPDATE tether_records SET value = (SELECT value FROM tether_records`+where+`)`+where, stored(2), stored(5))
			return err
		}, []uint64{5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sessions.db")
			s, err := sqlite.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var ops []store.Op
			for _, r := range records {
				ops = append(ops, store.Put(r))
			}
			if err := s.Apply(ctx, k, ops...); err != nil {
				t.Fatal(err)
			}
			if err := s.Apply(ctx, other, ops...); err != nil {
				t.Fatal(err)
			}
			if err := c.damage(rawDB(t, path)); err != nil {
				t.Fatal(err)
			}
			got, err := s.Load(ctx, k)
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Load of a damaged session returned %v, want store.ErrCorrupt", err)
			}
			var ce *store.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Load error %v is not a *store.CorruptError", err)
			}
			if ce.Key != k || !equalSeqs(ce.Seqs, c.bad) {
				t.Errorf("CorruptError names %s seqs %v, want %s seqs %v", ce.Key, ce.Seqs, k, c.bad)
			}
			var want []store.Record
			for _, r := range records {
				if !containsSeq(c.bad, r.Seq) {
					want = append(want, r)
				}
			}
			if !equalRecords(got, want) {
				t.Errorf("Load returned %d records alongside the error, want the %d intact ones", len(got), len(want))
			}
			if got, err := s.Load(ctx, other); err != nil || !equalRecords(got, records) {
				t.Errorf("Load of the other session: %d records, %v", len(got), err)
			}
			// Writing the bad records again repairs the session.
			var fix []store.Op
			for _, r := range records {
				if containsSeq(c.bad, r.Seq) {
					fix = append(fix, store.Put(r))
				}
			}
			if err := s.Apply(ctx, k, fix...); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Load(ctx, k); err != nil || !equalRecords(got, records) {
				t.Errorf("Load after rewriting the bad records: %d records, %v", len(got), err)
			}
		})
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func containsSeq(seqs []uint64, q uint64) bool {
	for _, s := range seqs {
		if s == q {
			return true
		}
	}
	return false
}

func equalRecords(a, b []store.Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Seq != b[i].Seq || a[i].Dir != b[i].Dir || a[i].ID != b[i].ID || string(a[i].Packet) != string(b[i].Packet) {
			return false
		}
	}
	return true
}

func TestSchemaVersions(t *testing.T) {
	ctx := context.Background()
	t.Run("Fresh", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.db")
		s, err := sqlite.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		var v int
		if err := rawDB(t, path).QueryRow(`SELECT MAX(version) FROM tether_schema_migrations`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != sqlite.SchemaVersion {
			t.Errorf("schema version %d, want %d", v, sqlite.SchemaVersion)
		}
	})
	t.Run("Old", func(t *testing.T) {
		// A file from before the store's first schema: the migrations
		// table exists, at version 0, beside an application's own table.
		path := filepath.Join(t.TempDir(), "s.db")
		db := rawDB(t, path)
		for _, q := range []string{
			`CREATE TABLE tether_schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`,
			`CREATE TABLE app (x)`,
			`INSERT INTO app VALUES (1)`,
		} {
			if _, err := db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		s, err := sqlite.Open(path, nil)
		if err != nil {
			t.Fatalf("Open of an old file: %v", err)
		}
		defer s.Close()
		k := store.Key{Server: "s", ClientID: "c"}
		if err := s.Apply(ctx, k, store.Put(store.Record{Seq: 1, Packet: []byte("x")})); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM app`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("the application's table: %d rows, %v", n, err)
		}
	})
	t.Run("Future", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.db")
		s, err := sqlite.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		if _, err := rawDB(t, path).Exec(`INSERT INTO tether_schema_migrations VALUES (99, 'later')`); err != nil {
			t.Fatal(err)
		}
		s, err = sqlite.Open(path, nil)
		if err == nil {
			_ = s.Close()
			t.Fatal("Open of a file with a newer schema succeeded")
		}
		if !errors.Is(err, sqlite.ErrSchemaVersion) || !strings.Contains(err.Error(), "99") {
			t.Errorf("Open of a newer file returned %q, want ErrSchemaVersion naming version 99", err)
		}
	})
}

func TestNewKeepsCallersDB(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "app.db")
	db := rawDB(t, path)
	s, err := sqlite.New(db, &sqlite.Options{Synchronous: "normal", BusyTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	k := store.Key{Server: "s", ClientID: "c"}
	if err := s.Apply(ctx, k, store.Put(store.Record{Seq: 1, Packet: []byte("x")})); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatalf("the caller's db was closed: %v", err)
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q, %v; want wal", mode, err)
	}
	s2, err := sqlite.New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.Load(ctx, k); err != nil || len(got) != 1 {
		t.Fatalf("Load through a second New: %v, %v", got, err)
	}
}

func TestBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []sqlite.Options{{Synchronous: "OFF"}, {BusyTimeout: -1}, {MaxPacketLen: -1}} {
		if s, err := sqlite.Open(filepath.Join(dir, "x.db"), &o); err == nil {
			_ = s.Close()
			t.Errorf("Open with %+v succeeded", o)
		}
	}
}

func TestPathWithQuestionMark(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd?name#x%.db")
	s, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the file was not created under its own name: %v", err)
	}
}

func TestBusy(t *testing.T) {
	// Another connection holds the write lock: a write waits its busy
	// timeout, then fails with ErrLocked and changes nothing.
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := sqlite.Open(path, &sqlite.Options{BusyTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := rawDB(t, path)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	k := store.Key{Server: "s", ClientID: "c"}
	start := time.Now()
	err = s.Apply(ctx, k, store.Put(store.Record{Seq: 1, Packet: []byte("x")}))
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Apply while another connection writes returned %v, want store.ErrLocked", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("Apply gave up after %v with a 300ms busy timeout", d)
	}
	// Reads go on meanwhile (WAL), and once the lock is free writes do.
	if _, err := s.Load(ctx, k); err != nil {
		t.Fatalf("Load while another connection writes: %v", err)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, k, store.Put(store.Record{Seq: 1, Packet: []byte("x")})); err != nil {
		t.Fatal(err)
	}
}

// openTemp opens a store on a new file under t.TempDir, closed with t.
func openTemp(t *testing.T, o *sqlite.Options) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "s.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// putSeq puts a record of Seq seq into session k.
func putSeq(s *sqlite.Store, k store.Key, seq uint64) error {
	return s.Apply(context.Background(), k, store.Put(store.Record{Seq: seq, Packet: []byte("x")}))
}

// wantSeqs fails t unless session k holds exactly the records of seqs.
func wantSeqs(t *testing.T, s *sqlite.Store, k store.Key, seqs ...uint64) {
	t.Helper()
	recs, err := s.Load(context.Background(), k)
	got := make([]uint64, len(recs))
	for i, r := range recs {
		got[i] = r.Seq
	}
	if err != nil || !equalSeqs(got, seqs) {
		t.Fatalf("Load: records %v, %v; want %v", got, err, seqs)
	}
}

// TestBusyOwnWrites: the writes of one handle take turns on its writer's
// connection. One held up by a slow transactional handler keeps another
// of the same handle waiting no longer than the busy timeout, which then
// fails with ErrLocked and changes nothing; once the turn is free, writes
// go on, in the order they came.
func TestBusyOwnWrites(t *testing.T) {
	s := openTemp(t, &sqlite.Options{BusyTimeout: 300 * time.Millisecond})
	k := store.Key{Server: "s", ClientID: "c"}
	inside, release := make(chan struct{}), make(chan struct{})
	slow := make(chan error, 1)
	go func() {
		slow <- s.ApplyTx(context.Background(), k, func(any) error {
			close(inside)
			<-release
			return nil
		}, store.Put(store.Record{Seq: 1, Packet: []byte("slow")}))
	}()
	<-inside
	start := time.Now()
	if err := putSeq(s, k, 2); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Apply behind a slow write of the same handle returned %v, want store.ErrLocked", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("Apply gave up after %v with a 300ms busy timeout", d)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("the slow write: %v", err)
	}
	if err := putSeq(s, k, 3); err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, s, k, 1, 3)
}

// TestWriterConnectionEnds: when the connection a handle writes on ends
// under it, the write in progress fails and the next one takes another
// connection, rather than every later write failing.
func TestWriterConnectionEnds(t *testing.T) {
	s := openTemp(t, nil)
	k := store.Key{Server: "s", ClientID: "c"}
	if err := putSeq(s, k, 1); err != nil {
		t.Fatal(err)
	}
	if !sqlite.BreakWriter(s) {
		t.Fatal("a store from Open has no writer's connection after a write")
	}
	if err := putSeq(s, k, 2); err == nil {
		t.Fatal("a write on the ended connection succeeded")
	}
	if err := putSeq(s, k, 3); err != nil {
		t.Fatalf("the write after: %v", err)
	}
	wantSeqs(t, s, k, 1, 3)
}

func TestNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.db")
	junk := make([]byte, 8192)
	for i := range junk {
		junk[i] = byte(i*7 + 1)
	}
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(path, nil)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a file of junk succeeded")
	}
	if !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("Open of a file of junk returned %v, want store.ErrCorrupt", err)
	}
}

func TestContextWhileBusy(t *testing.T) {
	// A write waiting for the lock gives up when its context ends, with
	// the context's error.
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := rawDB(t, path).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(context.Background(), "ROLLBACK")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = s.Apply(ctx, store.Key{Server: "s", ClientID: "c"}, store.Put(store.Record{Seq: 1}))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply past its deadline while the lock is held returned %v, want context.DeadlineExceeded", err)
	}
}

func TestLargeBatch(t *testing.T) {
	// A batch of large packets is split into several statements inside
	// its one transaction; the result is the same.
	ctx := context.Background()
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := store.Key{Server: "s", ClientID: "c"}
	var ops []store.Op
	var want []store.Record
	for i := uint64(1); i <= 300; i++ {
		p := make([]byte, 64<<10)
		p[0], p[len(p)-1] = byte(i), byte(i>>8)
		r := store.Record{Seq: i, Dir: store.Outbound, ID: uint16(i), Packet: p}
		ops = append(ops, store.Put(r))
		want = append(want, r)
	}
	if err := s.Apply(ctx, k, ops...); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, k)
	if err != nil || !equalRecords(got, want) {
		t.Fatalf("Load: %d records, %v; want %d", len(got), err, len(want))
	}
}
