package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/tethermq/tether/store"
)

// A stored record value is
//
//	version (1 byte) | Dir (1) | ID (2, big-endian) | Packet | CRC-32C (4, big-endian)
//
// and the CRC covers the record's 8-byte key (its Seq) followed by every byte
// of the value before the CRC, so a value copied under another Seq is caught
// as well as a flipped bit. The version byte lets a later format be read
// beside this one.
const (
	recordVersion = 1
	headerLen     = 4
	crcLen        = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seqKey returns the bucket key of seq: big-endian, so bbolt's byte order is
// Seq order.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

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
	errShort      = errors.New("value shorter than its header")
	errCRC        = errors.New("checksum mismatch")
	errNotARecord = errors.New("a bucket where a record belongs")
)

// decodeRecord parses the value v stored under seq. It copies the packet out
// of v, which bbolt only lends for the length of a transaction.
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
