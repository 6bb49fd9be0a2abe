package redis

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/internal/recordfmt"
)

// Record values (fields of a session's rec hash) use the format of
// store/internal/recordfmt (version, Dir, ID, Packet and a CRC-32C that also
// covers the Seq), shared with the bolt and sqlite backends. Values written
// before the format was shared have the same bytes and load unchanged.

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

// encodeRecord returns the stored value of r.
func encodeRecord(r store.Record) []byte { return recordfmt.Encode(r) }

// decodeRecord parses the value v stored under seq; the packet it returns is
// a copy, not part of v.
func decodeRecord(seq uint64, v []byte) (store.Record, error) { return recordfmt.Decode(seq, v) }

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
	batch string // string: the id of the last batch written (the batch fence); kept across Clear
}

func (s *Store) keys(k store.Key) sessionKeys {
	base := s.prefix + ":{" + sessionTag(k) + "}:"
	return sessionKeys{
		rec:   base + "rec",
		idx:   base + "idx",
		meta:  base + "meta",
		lease: base + "lease",
		fence: base + "fence",
		batch: base + "batch",
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
