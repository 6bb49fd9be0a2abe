package bolt_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
)

// TestApplyTx: the application's writes through the *bbolt.Tx and the
// batch commit together; an error from fn applies neither.
func TestApplyTx(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.bolt"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	k := store.Key{Server: "mqtt://h:1883", ClientID: "c"}
	put := store.Put(store.Record{Seq: 1, Dir: store.Inbound, ID: 5, Packet: []byte{1}})
	write := func(v string) func(any) error {
		return func(tx any) error {
			b, err := tx.(*bbolt.Tx).CreateBucketIfNotExists([]byte("app"))
			if err != nil {
				return err
			}
			return b.Put([]byte("k"), []byte(v))
		}
	}
	boom := errors.New("boom")
	err = st.ApplyTx(ctx, k, func(tx any) error {
		if err := write("rolled back")(tx); err != nil {
			return err
		}
		return boom
	}, put)
	if !errors.Is(err, boom) {
		t.Fatalf("ApplyTx: %v, want boom", err)
	}
	if recs, _ := st.Load(ctx, k); len(recs) != 0 {
		t.Fatalf("batch applied although fn failed: %v", recs)
	}
	if err := st.ApplyTx(ctx, k, write("committed"), put); err != nil {
		t.Fatal(err)
	}
	if recs, _ := st.Load(ctx, k); len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	err = st.DB().View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket([]byte("app")).Get([]byte("k")); string(v) != "committed" {
			t.Errorf("app value %q", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
