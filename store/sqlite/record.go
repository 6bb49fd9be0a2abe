package sqlite

import (
	"errors"

	"github.com/tethermq/tether/internal/recordfmt"
	"github.com/tethermq/tether/store"
)

// Record values (column value of table tether_records) use the format of
// internal/recordfmt (version, Dir, ID, Packet and a CRC-32C that also
// covers the Seq), shared with the bolt backend.

// encodeRecord returns the stored value of r.
func encodeRecord(r store.Record) []byte { return recordfmt.Encode(r) }

// decodeRecord parses the value v stored under seq, copying the packet out
// of v, which the driver only lends until the next row.
func decodeRecord(seq uint64, v []byte) (store.Record, error) { return recordfmt.Decode(seq, v) }

var errBadSeq = errors.New("seq is not an integer")
