package redis

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"strings"

	"github.com/tethermq/tether/store"
)

// recordVersion is the first byte of every stored value, so that a later
// layout can be told apart from this one instead of being misread.
const recordVersion = 1

// headerLen is version, direction and packet identifier; trailerLen the
// CRC-32C that ends every value.
const (
	headerLen  = 4
	trailerLen = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seqField names a record inside its session's hash and sorted set. The
// fixed-width big-endian hex form sorts lexically in numeric order, which
// lets Load page with ZRANGEBYLEX over the full uint64 range: sorted-set
// scores are float64 and would lose order above 2^53.
func seqField(seq uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return hex.EncodeToString(b[:])
}

// parseSeqField is the inverse of seqField; it refuses anything seqField
// could not have written, so a damaged member is reported, not misplaced.
func parseSeqField(s string) (uint64, bool) {
	if len(s) != 16 || strings.ToLower(s) != s {
		return 0, false
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// checksum covers the sequence number as well as the value, so a value that
// ends up under another record's field fails its check.
func checksum(seq uint64, body []byte) uint32 {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return crc32.Update(crc32.Checksum(b[:], castagnoli), castagnoli, body)
}

// encodeRecord lays a record out as version, direction, packet identifier,
// packet, CRC-32C.
func encodeRecord(r store.Record) []byte {
	n := headerLen + len(r.Packet)
	b := make([]byte, n+trailerLen)
	b[0] = recordVersion
	b[1] = byte(r.Dir)
	binary.BigEndian.PutUint16(b[2:], r.ID)
	copy(b[headerLen:], r.Packet)
	binary.BigEndian.PutUint32(b[n:], checksum(r.Seq, b[:n]))
	return b
}

var (
	errShortRecord   = errors.New("record shorter than its header")
	errRecordVersion = errors.New("unknown record version")
	errChecksum      = errors.New("checksum mismatch")
)

// decodeRecord checks and unpacks a value written by encodeRecord. The
// returned Packet aliases b, which the caller hands over.
func decodeRecord(seq uint64, b []byte) (store.Record, error) {
	if len(b) < headerLen+trailerLen {
		return store.Record{}, errShortRecord
	}
	if b[0] != recordVersion {
		return store.Record{}, errRecordVersion
	}
	n := len(b) - trailerLen
	if binary.BigEndian.Uint32(b[n:]) != checksum(seq, b[:n]) {
		return store.Record{}, errChecksum
	}
	return store.Record{
		Seq:    seq,
		Dir:    store.Direction(b[1]),
		ID:     binary.BigEndian.Uint16(b[2:]),
		Packet: b[headerLen:n:n],
	}, nil
}

// sessionTag is the Redis Cluster hash tag shared by every key of one
// session, so each script touches a single slot. It is the hex SHA-256 of a
// length-prefixed encoding of the key: hex has no braces, so no Server or
// ClientID can end the tag early, and the length prefixes stop ("a", "bc")
// and ("ab", "c") from meeting.
func sessionTag(k store.Key) string {
	h := sha256.New()
	h.Write([]byte("tether/redis/v1\x00"))
	var n [8]byte
	for _, s := range []string{k.Server, k.ClientID} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sessionKeys are the Redis keys of one session.
type sessionKeys struct {
	rec   string // hash: seq field → encoded record
	idx   string // sorted set, all scores 0: seq fields in lexical order
	meta  string // hash: server, client, gen, ver; exists while the session holds records
	lease string // string: "<holder>:<token>" with a PX expiry, while someone holds the lease
	fence string // counter: the last fencing token handed out; kept across Clear
}

func (s *Store) keys(k store.Key) sessionKeys {
	base := s.prefix + ":{" + sessionTag(k) + "}:"
	return sessionKeys{
		rec:   base + "rec",
		idx:   base + "idx",
		meta:  base + "meta",
		lease: base + "lease",
		fence: base + "fence",
	}
}

// metaPattern matches the meta key of every session under prefix, for SCAN.
func metaPattern(prefix string) string {
	var b strings.Builder
	for _, r := range prefix {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteString(":{*}:meta")
	return b.String()
}
