package redis

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// legacyEncodeRecord is the encoder this backend used before it shared
// store/internal/recordfmt with bolt and sqlite, kept as a fixture: values it
// wrote are in Redis servers today and must keep loading.
func legacyEncodeRecord(r store.Record) []byte {
	const headerLen, trailerLen = 4, 4
	table := crc32.MakeTable(crc32.Castagnoli)
	n := headerLen + len(r.Packet)
	b := make([]byte, n+trailerLen)
	b[0] = 1
	b[1] = byte(r.Dir)
	binary.BigEndian.PutUint16(b[2:], r.ID)
	copy(b[headerLen:], r.Packet)
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], r.Seq)
	binary.BigEndian.PutUint32(b[n:], crc32.Update(crc32.Checksum(seq[:], table), table, b[:n]))
	return b
}

func legacyRecords() []store.Record {
	return []store.Record{
		{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte("one")},
		{Seq: 2, Dir: store.Inbound, ID: 65535, Packet: nil},
		{Seq: 3, Dir: store.Outbound, ID: 7, Packet: bytes.Repeat([]byte{0xa5}, 300)},
		{Seq: 1<<64 - 1, Dir: store.Inbound, ID: 0, Packet: []byte{0}},
	}
}

// TestLegacyRecordDecodes: the shared format decodes every value the old
// encoder wrote, and writes the same bytes for the same record.
func TestLegacyRecordDecodes(t *testing.T) {
	for _, r := range legacyRecords() {
		old := legacyEncodeRecord(r)
		got, err := decodeRecord(r.Seq, old)
		if err != nil {
			t.Fatalf("seq %d: decoding the old value: %v", r.Seq, err)
		}
		if msg := diff([]store.Record{got}, []store.Record{r}); msg != "" {
			t.Errorf("seq %d: %s", r.Seq, msg)
		}
		if enc := encodeRecord(r); !bytes.Equal(enc, old) {
			t.Errorf("seq %d: encodeRecord = %x, the old encoder wrote %x", r.Seq, enc, old)
		}
	}
}

// TestLegacyRecordLoads stores values written by the old encoder in a real
// Redis, in place of the store's own, and loads them through the store.
func TestLegacyRecordLoads(t *testing.T) {
	srv := testenv.Redis(t)
	s := openStore(t, srv.URL(), nil)
	ctx := context.Background()
	k := testKey("legacy")
	recs := legacyRecords()
	ops := make([]store.Op, len(recs))
	for i, r := range recs {
		ops[i] = store.Put(store.Record{Seq: r.Seq, Dir: r.Dir, ID: r.ID, Packet: []byte("placeholder")})
	}
	if err := s.Apply(ctx, k, ops...); err != nil {
		t.Fatal(err)
	}
	fields := make([]any, 0, 2*len(recs))
	for _, r := range recs {
		fields = append(fields, seqField(r.Seq), legacyEncodeRecord(r))
	}
	if err := s.Client().HSet(ctx, s.keys(k).rec, fields...).Err(); err != nil {
		t.Fatal(err)
	}
	expectRecords(t, s, k, recs...)
}
