package store_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tethermq/tether/store"
)

func TestKeyStringUnambiguous(t *testing.T) {
	a := store.Key{Server: `a"/"b`, ClientID: "c"}
	b := store.Key{Server: "a", ClientID: `b"/"c`}
	if a.String() == b.String() {
		t.Fatalf("keys %#v and %#v print the same: %s", a, b, a)
	}
}

func TestValidate(t *testing.T) {
	small := store.Put(store.Record{Seq: 1, Packet: make([]byte, 10)})
	big := store.Put(store.Record{Seq: 2, Packet: make([]byte, 11)})
	if err := store.Validate(10, []store.Op{small, store.Delete(9)}); err != nil {
		t.Fatalf("valid batch: %v", err)
	}
	if err := store.Validate(10, []store.Op{small, big}); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("oversized record: got %v, want ErrTooLarge", err)
	}
	if err := store.Validate(0, []store.Op{{Kind: 7}}); err == nil || errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("unknown kind: got %v, want a distinct error", err)
	}
	if err := store.Validate(0, []store.Op{store.Put(store.Record{Packet: make([]byte, store.MaxPacketLen)})}); err != nil {
		t.Fatalf("record of MaxPacketLen must pass the default limit: %v", err)
	}
}

func TestCorruptError(t *testing.T) {
	err := error(&store.CorruptError{Key: store.Key{Server: "s", ClientID: "c"}, Seqs: []uint64{4, 7}, Err: io.ErrUnexpectedEOF})
	if !errors.Is(err, store.ErrCorrupt) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("errors.Is fails on %v", err)
	}
	var ce *store.CorruptError
	if !errors.As(err, &ce) || len(ce.Seqs) != 2 {
		t.Fatalf("errors.As fails on %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"s"/"c"`) || !strings.Contains(msg, "[4 7]") {
		t.Fatalf("message %q names neither the session nor the records", msg)
	}
}

func TestDirectionString(t *testing.T) {
	for d, want := range map[store.Direction]string{store.Meta: "meta", store.Outbound: "outbound", store.Inbound: "inbound", 9: "direction(9)"} {
		if got := d.String(); got != want {
			t.Errorf("Direction(%d).String() = %q, want %q", d, got, want)
		}
	}
}
