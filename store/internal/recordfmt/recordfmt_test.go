package recordfmt

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tethermq/tether/store"
)

func TestRoundTripAndDamage(t *testing.T) {
	r := store.Record{Seq: 1<<64 - 1, Dir: store.Inbound, ID: 65535, Packet: []byte("packet")}
	v := Encode(r)
	got, err := Decode(r.Seq, v)
	if err != nil || got.Seq != r.Seq || got.Dir != r.Dir || got.ID != r.ID || !bytes.Equal(got.Packet, r.Packet) {
		t.Fatalf("Decode(Encode(r)) = %+v, %v", got, err)
	}
	if _, err := Decode(r.Seq-1, v); !errors.Is(err, ErrCRC) {
		t.Errorf("value under another seq: %v, want ErrCRC", err)
	}
	flipped := bytes.Clone(v)
	flipped[5] ^= 1
	if _, err := Decode(r.Seq, flipped); !errors.Is(err, ErrCRC) {
		t.Errorf("flipped bit: %v, want ErrCRC", err)
	}
	if _, err := Decode(r.Seq, v[:3]); !errors.Is(err, ErrShort) {
		t.Errorf("truncated: %v, want ErrShort", err)
	}
	empty := Encode(store.Record{Seq: 1})
	if got, err := Decode(1, empty); err != nil || len(got.Packet) != 0 {
		t.Errorf("empty packet: %+v, %v", got, err)
	}
}
