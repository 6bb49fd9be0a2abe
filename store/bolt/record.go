package bolt

import (
	"encoding/binary"
	"errors"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/internal/recordfmt"
)

// Record values use the format of store/internal/recordfmt (version, Dir,
// ID, Packet and a CRC-32C that also covers the Seq), shared with the sqlite
// and redis backends.

// seqKey returns the bucket key of seq: big-endian, so bbolt's byte order is
// Seq order.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// encodeRecord returns the stored value of r.
func encodeRecord(r store.Record) []byte { return recordfmt.Encode(r) }

// decodeRecord parses the value v stored under seq, copying the packet out
// of v, which bbolt only lends for the length of a transaction.
func decodeRecord(seq uint64, v []byte) (store.Record, error) { return recordfmt.Decode(seq, v) }

var errNotARecord = errors.New("a bucket where a record belongs")
