package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/tethermq/tether/store"
)

// A stored record value (column value of table tether_records) is
//
//	version (1 byte) | Dir (1) | ID (2, big-endian) | Packet | CRC-32C (4, big-endian)
//
// and the CRC covers the record's Seq (8 bytes, big-endian) followed by every byte
// of the value before the CRC, so a value copied under another Seq is caught
// as well as a flipped bit. The version byte lets a later format be read
// beside this one. The format is the bolt backend's; each keeps its own copy,
// since backends do not import each other.
const (
	recordVersion = 1
	headerLen     = 4
	crcLen        = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeRecord returns the stored value of r.
func encodeRecord(r store.Record) []byte {
	v := make([]byte, headerLen, headerLen+len(r.Packet)+crcLen)
	v[0] = recordVersion
	v[1] = byte(r.Dir)
	binary.BigEndian.PutUint16(v[2:], r.ID)
	v = append(v, r.Packet...)
	return binary.BigEndian.AppendUint32(v, recordCRC(r.Seq, v))
}

func recordCRC(seq uint64, body []byte) uint32 {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return crc32.Update(crc32.Update(0, castagnoli, k[:]), castagnoli, body)
}

var (
	errShort  = errors.New("value shorter than its header")
	errCRC    = errors.New("checksum mismatch")
	errBadSeq = errors.New("seq is not an integer")
)

// decodeRecord parses the value v stored under seq. It copies the packet out
// of v, which the driver only lends until the next row.
func decodeRecord(seq uint64, v []byte) (store.Record, error) {
	if len(v) < headerLen+crcLen {
		return store.Record{}, errShort
	}
	body := v[:len(v)-crcLen]
	if binary.BigEndian.Uint32(v[len(v)-crcLen:]) != recordCRC(seq, body) {
		return store.Record{}, errCRC
	}
	if body[0] != recordVersion {
		return store.Record{}, fmt.Errorf("unknown record version %d", body[0])
	}
	return store.Record{
		Seq:    seq,
		Dir:    store.Direction(body[1]),
		ID:     binary.BigEndian.Uint16(body[2:]),
		Packet: append([]byte(nil), body[headerLen:]...),
	}, nil
}
