package client

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/tethermq/tether/packets"
)

// metaVersion is the version of the meta record encoding; a record of
// another version is ignored (the session is then treated as absent).
const metaVersion = 1

// meta is the client's own session metadata, kept in the Meta record. Its
// presence means the client holds session state for the key.
type meta struct {
	expiry        uint32    // Session Expiry Interval in force, seconds
	lastConnected time.Time // when the session was last known connected
	subs          []Subscription
}

var errBadMeta = errors.New("client: corrupt meta record")

// encode lays the record out as: version, expiry (4 bytes), last connected
// (Unix milliseconds, 8 bytes), subscription count (uvarint), then per
// subscription the filter (uvarint length, bytes), the options byte and the
// subscription identifier (uvarint).
func (m *meta) encode() []byte {
	b := make([]byte, 0, 16+len(m.subs)*24)
	b = append(b, metaVersion)
	b = binary.BigEndian.AppendUint32(b, m.expiry)
	b = binary.BigEndian.AppendUint64(b, uint64(m.lastConnected.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(len(m.subs)))
	for _, s := range m.subs {
		b = binary.AppendUvarint(b, uint64(len(s.Filter)))
		b = append(b, s.Filter...)
		b = append(b, optionsByte(s.SubscribeOptions))
		b = binary.AppendUvarint(b, uint64(s.ID))
	}
	return b
}

func optionsByte(o packets.SubscribeOptions) byte {
	b := o.QoS & 3
	if o.NoLocal {
		b |= 4
	}
	if o.RetainAsPublished {
		b |= 8
	}
	return b | (o.RetainHandling&3)<<4
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) < 13 || b[0] != metaVersion {
		return m, errBadMeta
	}
	m.expiry = binary.BigEndian.Uint32(b[1:])
	m.lastConnected = time.UnixMilli(int64(binary.BigEndian.Uint64(b[5:])))
	b = b[13:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return m, errBadMeta
	}
	b = b[k:]
	for range n {
		l, k := binary.Uvarint(b)
		// The filter and its options byte must fit in what is left; l is
		// compared, never l+1, which wraps for a crafted length of 2^64-1.
		if k <= 0 || l >= uint64(len(b)-k) {
			return m, errBadMeta
		}
		b = b[k:]
		s := Subscription{Filter: string(b[:l])}
		o := b[l]
		b = b[l+1:]
		s.QoS = o & 3
		s.NoLocal = o&4 != 0
		s.RetainAsPublished = o&8 != 0
		s.RetainHandling = (o >> 4) & 3
		id, k2 := binary.Uvarint(b)
		if k2 <= 0 || id > 268435455 {
			return m, errBadMeta
		}
		b = b[k2:]
		s.ID = uint32(id)
		m.subs = append(m.subs, s)
	}
	if len(b) != 0 {
		return m, errBadMeta
	}
	return m, nil
}

// expired reports whether the session's expiry interval has passed since
// it was last known connected (Session Expiry honoured locally).
func (m *meta) expired(now time.Time) bool {
	if m.expiry == 0xFFFFFFFF {
		return false
	}
	return now.Sub(m.lastConnected) > time.Duration(m.expiry)*time.Second
}

// setSub records s, replacing a subscription with the same filter.
func (m *meta) setSub(s Subscription) {
	s.User = nil
	for i := range m.subs {
		if m.subs[i].Filter == s.Filter {
			m.subs[i] = s
			return
		}
	}
	m.subs = append(m.subs, s)
}

func (m *meta) removeSub(filter string) {
	for i := range m.subs {
		if m.subs[i].Filter == filter {
			m.subs = append(m.subs[:i], m.subs[i+1:]...)
			return
		}
	}
}
