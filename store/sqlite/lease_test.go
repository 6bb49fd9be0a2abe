package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sqlite"
)

// partitionHarness is the conformance harness with conformance.Partitioner,
// so that the suite's takeover check can let a holder's lease lapse while
// the holder still runs.
type partitionHarness struct {
	conformance.HarnessFuncs
}

// Partition stops every operation of handle s until heal is called.
func (h *partitionHarness) Partition(s store.SessionStore) (heal func()) {
	return sqlite.Partition(s.(*sqlite.Store))
}

// TestUpgradeFromVersion1 opens a file of schema version 1 (records, no
// lease table): the store adds the lease table, keeps the records, and
// fences writes from then on.
func TestUpgradeFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "old"}
	rec := store.Record{Seq: 1, Dir: store.Outbound, ID: 7, Packet: []byte("kept")}
	s, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, k, store.Put(rec)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	db := rawDB(t, path)
	for _, q := range []string{`DROP TABLE tether_leases`, `DELETE FROM tether_schema_migrations WHERE version = 2`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	a, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatalf("Open of a version 1 file: %v", err)
	}
	defer a.Close()
	b, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, err := a.Load(ctx, k); err != nil || !equalRecords(got, []store.Record{rec}) {
		t.Fatalf("Load after the upgrade: %v, %v", got, err)
	}
	l, err := a.Acquire(ctx, k, store.LeaseOptions{})
	if err != nil {
		t.Fatalf("Acquire after the upgrade: %v", err)
	}
	defer l.Release(ctx)
	if err := b.Apply(ctx, k, store.Delete(1)); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("Apply by a non-holder after the upgrade returned %v, want store.ErrSessionTaken", err)
	}
	var v int
	if err := db.QueryRow(`SELECT MAX(version) FROM tether_schema_migrations`).Scan(&v); err != nil || v != sqlite.SchemaVersion {
		t.Errorf("schema version %d (%v), want %d", v, err, sqlite.SchemaVersion)
	}
}
