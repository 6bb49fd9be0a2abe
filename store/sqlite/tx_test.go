package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sqlite"
)

// TestApplyTx: the application's statements on the transaction's
// connection and the batch commit together; an error from fn applies
// neither.
func TestApplyTx(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.DB().ExecContext(ctx, "CREATE TABLE app (v TEXT)"); err != nil {
		t.Fatal(err)
	}
	k := store.Key{Server: "mqtt://h:1883", ClientID: "c"}
	put := store.Put(store.Record{Seq: 1, Dir: store.Inbound, ID: 5, Packet: []byte{1}})
	insert := func(v string) func(any) error {
		return func(tx any) error {
			_, err := tx.(*sql.Conn).ExecContext(ctx, "INSERT INTO app VALUES (?)", v)
			return err
		}
	}
	boom := errors.New("boom")
	err = st.ApplyTx(ctx, k, func(tx any) error {
		if err := insert("rolled back")(tx); err != nil {
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
	if err := st.ApplyTx(ctx, k, insert("committed"), put); err != nil {
		t.Fatal(err)
	}
	if recs, _ := st.Load(ctx, k); len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	var vs []string
	rows, err := st.DB().QueryContext(ctx, "SELECT v FROM app")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if len(vs) != 1 || vs[0] != "committed" {
		t.Fatalf("app rows %v, want [committed]", vs)
	}
}
