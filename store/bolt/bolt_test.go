package bolt_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	goleak.VerifyTestMain(m)
}

// newHarness prepares a file for one check: a child process opens it by
// its path (Child), and the Damage checks damage it (bolt.DamageFile).
func newHarness(ctx context.Context, t testing.TB) (conformance.Harness, error) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	return &conformance.HarnessFuncs{
		Make:  func(context.Context) (store.SessionStore, error) { return bolt.Open(path, nil) },
		Caps:  conformance.Capabilities{Durable: true},
		Child: path,
		Damage: func(ctx context.Context, k store.Key, kind conformance.DamageKind) error {
			return bolt.DamageFile(ctx, path, k, kind)
		},
	}, nil
}

// openChild opens, in a child process, the file a harness named.
func openChild(_ context.Context, path string) (store.SessionStore, error) {
	return bolt.Open(path, nil)
}

func TestConformance(t *testing.T) {
	conformance.Run(t, newHarness, conformance.Options{OpenChild: openChild})
}

func BenchmarkConformance(b *testing.B) { conformance.Bench(b, newHarness) }

func openTemp(t *testing.T, opts *bolt.Options) (*bolt.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sessions.db")
	s, err := bolt.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func TestFileMode(t *testing.T) {
	_, path := openTemp(t, nil)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode %v, want 0600", perm)
	}
}

func TestLocked(t *testing.T) {
	_, path := openTemp(t, nil)
	// A second handle on the file is what a second process would be:
	// bbolt's flock belongs to the open file, not to the process.
	start := time.Now()
	s2, err := bolt.Open(path, &bolt.Options{Timeout: 300 * time.Millisecond})
	if err == nil {
		_ = s2.Close()
		t.Fatal("second Open of a file in use succeeded")
	}
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open returned %v, want store.ErrLocked", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("second Open took %v with a 300ms timeout", d)
	}
	if !strings.HasPrefix(err.Error(), "bolt: open ") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the operation and file", err)
	}
}

func TestNotABoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "garbage.db")
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := bolt.Open(path, &bolt.Options{Timeout: time.Second})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a file of junk succeeded")
	}
	if !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("Open of a file of junk returned %v, want store.ErrCorrupt", err)
	}
}

// rawUpdate opens the store's file with bbolt directly and runs fn on the
// bucket of session k.
func rawUpdate(t *testing.T, path string, k store.Key, fn func(b *bbolt.Bucket) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		all := tx.Bucket([]byte("tether")).Bucket([]byte("sessions"))
		var found *bbolt.Bucket
		err := all.ForEachBucket(func(name []byte) error {
			if strings.HasSuffix(string(name), k.ClientID) {
				found = all.Bucket(name)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if found == nil {
			return errors.New("session bucket not found")
		}
		return fn(found)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func seqKey(seq uint64) []byte {
	return []byte{byte(seq >> 56), byte(seq >> 48), byte(seq >> 40), byte(seq >> 32), byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
}

func TestCorruptRecord(t *testing.T) {
	ctx := context.Background()
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "victim"}
	other := store.Key{Server: "tcp://broker.test:1883", ClientID: "bystander"}
	records := func() []store.Record {
		var out []store.Record
		for i := uint64(1); i <= 5; i++ {
			out = append(out, store.Record{Seq: i, Dir: store.Outbound, ID: uint16(i), Packet: []byte(strings.Repeat("p", int(i)*10))})
		}
		return out
	}
	cases := []struct {
		name   string
		damage func(b *bbolt.Bucket) error
		bad    []uint64
	}{
		{"FlippedPacketByte", func(b *bbolt.Bucket) error {
			v := append([]byte(nil), b.Get(seqKey(3))...)
			v[6] ^= 0x01
			return b.Put(seqKey(3), v)
		}, []uint64{3}},
		{"FlippedHeaderByte", func(b *bbolt.Bucket) error {
			v := append([]byte(nil), b.Get(seqKey(2))...)
			v[1] ^= 0x80
			return b.Put(seqKey(2), v)
		}, []uint64{2}},
		{"FlippedChecksum", func(b *bbolt.Bucket) error {
			v := append([]byte(nil), b.Get(seqKey(5))...)
			v[len(v)-1] ^= 0xff
			return b.Put(seqKey(5), v)
		}, []uint64{5}},
		{"Truncated", func(b *bbolt.Bucket) error {
			return b.Put(seqKey(1), []byte{1, 1})
		}, []uint64{1}},
		{"Empty", func(b *bbolt.Bucket) error {
			return b.Put(seqKey(4), []byte{})
		}, []uint64{4}},
		{"MovedToAnotherSeq", func(b *bbolt.Bucket) error {
			return b.Put(seqKey(4), append([]byte(nil), b.Get(seqKey(2))...))
		}, []uint64{4}},
		{"BucketForRecord", func(b *bbolt.Bucket) error {
			if err := b.Delete(seqKey(3)); err != nil {
				return err
			}
			_, err := b.CreateBucket(seqKey(3))
			return err
		}, []uint64{3}},
		{"TwoBad", func(b *bbolt.Bucket) error {
			for _, q := range []uint64{1, 5} {
				v := append([]byte(nil), b.Get(seqKey(q))...)
				v[len(v)/2] ^= 0x10
				if err := b.Put(seqKey(q), v); err != nil {
					return err
				}
			}
			return nil
		}, []uint64{1, 5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sessions.db")
			s, err := bolt.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			var ops []store.Op
			for _, r := range records() {
				ops = append(ops, store.Put(r))
			}
			if err := s.Apply(ctx, k, ops...); err != nil {
				t.Fatal(err)
			}
			if err := s.Apply(ctx, other, ops...); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			rawUpdate(t, path, k, c.damage)

			s, err = bolt.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
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
			for _, r := range records() {
				if !containsSeq(c.bad, r.Seq) {
					want = append(want, r)
				}
			}
			if !equalRecords(got, want) {
				t.Errorf("Load returned %d records alongside the error, want the %d intact ones", len(got), len(want))
			}
			// The other session is untouched, and the damaged one can be
			// repaired by writing the record again.
			if got, err := s.Load(ctx, other); err != nil || !equalRecords(got, records()) {
				t.Errorf("Load of the other session: %d records, %v", len(got), err)
			}
			var fix []store.Op
			for _, r := range records() {
				if containsSeq(c.bad, r.Seq) {
					fix = append(fix, store.Put(r))
				}
			}
			if err := s.Apply(ctx, k, fix...); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Load(ctx, k); err != nil || !equalRecords(got, records()) {
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

func TestLongClientID(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t, nil)
	// MQTT allows a 65,535-byte ClientID, longer than a bbolt key.
	long := store.Key{Server: "tcp://broker.test:1883", ClientID: strings.Repeat("x", 65535)}
	longer := store.Key{Server: "tcp://broker.test:1883", ClientID: strings.Repeat("x", 65534) + "y"}
	r := store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte("long")}
	r2 := store.Record{Seq: 1, Dir: store.Outbound, ID: 2, Packet: []byte("longer")}
	if err := s.Apply(ctx, long, store.Put(r)); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, longer, store.Put(r2)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(ctx, long); err != nil || !equalRecords(got, []store.Record{r}) {
		t.Fatalf("Load: %v, %v", got, err)
	}
	keys, err := s.Sessions(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("Sessions: %d keys, %v", len(keys), err)
	}
	for _, k := range keys {
		if k != long && k != longer {
			t.Errorf("Sessions lists an unexpected key of %d bytes", len(k.ClientID))
		}
	}
	if err := s.Apply(ctx, long, store.Delete(1)); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.Sessions(ctx); err != nil || len(keys) != 1 || keys[0] != longer {
		t.Fatalf("Sessions after emptying one: %d keys, %v", len(keys), err)
	}
	if err := s.Clear(ctx, longer); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.Sessions(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("Sessions after Clear: %d keys, %v", len(keys), err)
	}
	_ = path
}

func TestNewKeepsCallersDB(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("app"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	s, err := bolt.New(db, nil)
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
	// The caller's database is still open, with its own data intact.
	if err := db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket([]byte("app")).Get([]byte("k")); string(v) != "v" {
			return errors.New("the application's bucket changed")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s2, err := bolt.New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.Load(ctx, k); err != nil || len(got) != 1 {
		t.Fatalf("Load through a second New: %v, %v", got, err)
	}
}

func TestUnknownFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "future.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("tether"))
		if err != nil {
			return err
		}
		return b.Put([]byte("format"), []byte{2})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := bolt.Open(path, nil)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a file in a future format succeeded")
	}
	if !strings.Contains(err.Error(), "format") {
		t.Errorf("error %q does not say the format is unknown", err)
	}
}

func TestOptions(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, &bolt.Options{NoSync: true, MaxPacketLen: 10})
	k := store.Key{Server: "s", ClientID: "c"}
	if err := s.Apply(ctx, k, store.Put(store.Record{Seq: 1, Packet: make([]byte, 10)})); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, k, store.Put(store.Record{Seq: 2, Packet: make([]byte, 11)})); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Apply over MaxPacketLen returned %v, want store.ErrTooLarge", err)
	}
	if _, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), &bolt.Options{MaxPacketLen: -1}); err == nil {
		t.Fatal("Open with a negative MaxPacketLen succeeded")
	}
}
