// Package recordfmt is the stored format of a session record that the
// persistent backends (bolt, sqlite, redis) share: one definition, so their
// formats cannot drift apart.
//
// A stored value is
//
//	version (1 byte) | Dir (1) | ID (2, big-endian) | Packet | CRC-32C (4, big-endian)
//
// and the CRC covers the record's Seq (8 bytes, big-endian) followed by every
// byte of the value before the CRC, so a value copied under another Seq is
// caught as well as a flipped bit. The version byte lets a later format be
// read beside this one.
package recordfmt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/tethermq/tether/store"
)

const (
	version   = 1
	headerLen = 4
	crcLen    = 4
)

// Errors of Decode; callers report them in a *store.CorruptError.
var (
	ErrShort = errors.New("value shorter than its header")
	ErrCRC   = errors.New("checksum mismatch")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode returns the stored value of r.
func Encode(r store.Record) []byte {
	v := make([]byte, headerLen, headerLen+len(r.Packet)+crcLen)
	v[0] = version
	v[1] = byte(r.Dir)
	binary.BigEndian.PutUint16(v[2:], r.ID)
	v = append(v, r.Packet...)
	return binary.BigEndian.AppendUint32(v, checksum(r.Seq, v))
}

func checksum(seq uint64, body []byte) uint32 {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return crc32.Update(crc32.Update(0, castagnoli, k[:]), castagnoli, body)
}

// Decode parses the value v stored under seq. It copies the packet out of
// v, which storage engines only lend for a while.
func Decode(seq uint64, v []byte) (store.Record, error) {
	if len(v) < headerLen+crcLen {
		return store.Record{}, ErrShort
	}
	body := v[:len(v)-crcLen]
	if binary.BigEndian.Uint32(v[len(v)-crcLen:]) != checksum(seq, body) {
		return store.Record{}, ErrCRC
	}
	if body[0] != version {
		return store.Record{}, fmt.Errorf("unknown record version %d", body[0])
	}
	return store.Record{
		Seq:    seq,
		Dir:    store.Direction(body[1]),
		ID:     binary.BigEndian.Uint16(body[2:]),
		Packet: append([]byte(nil), body[headerLen:]...),
	}, nil
}
