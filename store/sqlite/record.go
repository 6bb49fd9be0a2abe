package sqlite

import (
	"errors"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/internal/recordfmt"
)

// Record values (column value of table tether_records) use the format of
// store/internal/recordfmt (version, Dir, ID, Packet and a CRC-32C that also
// covers the Seq), shared with the bolt and redis backends.

// encodeRecord returns the stored value of r.
func encodeRecord(r store.Record) []byte { return recordfmt.Encode(r) }

// decodeRecord parses the value v stored under seq, copying the packet out
// of v, which the driver only lends until the next row.
func decodeRecord(seq uint64, v []byte) (store.Record, error) { return recordfmt.Decode(seq, v) }

var errBadSeq = errors.New("seq is not an integer")
