package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// MaxSeq bounds the sequence numbers the client accepts from a store. The
// client counts from 1 and never gets near it (2^62 records at ten million
// a second take 14,000 years), so a record above it can only be damage or
// tampering; taken at face value it would make the sequence wrap and a new
// message overwrite a stored one, or the Meta record.
const MaxSeq = 1 << 62

// Record is what one stored record says, decoded and checked.
type Record struct {
	Meta   Meta             // store.Meta
	Pub    *packets.Publish // an outbound PUBLISH: DUP and packet identifier cleared
	Pubrel bool             // an outbound PUBREL
	Ref    string           // the Ref of an outbound record
	Packet []byte           // the record's packet, without the Ref trailer
}

// ParseRecord decodes r, or says why it is not a record this client could
// have written: the one check both the session load and tools make.
func ParseRecord(r store.Record) (Record, error) {
	var pr Record
	if r.Seq >= MaxSeq {
		return pr, fmt.Errorf("sequence number %d out of range", r.Seq)
	}
	switch r.Dir {
	case store.Meta:
		if r.Seq != store.MetaSeq {
			return pr, errors.New("meta record outside the meta sequence number")
		}
		m, err := DecodeMeta(r.Packet)
		pr.Meta = m
		return pr, err
	case store.Inbound:
		if r.ID == 0 || r.Seq == store.MetaSeq {
			return pr, errors.New("inbound record without a packet identifier")
		}
		return pr, nil
	case store.Outbound:
	default:
		return pr, fmt.Errorf("unknown direction %d", r.Dir)
	}
	if r.Seq == store.MetaSeq {
		return pr, errors.New("outbound record at the meta sequence number")
	}
	pkt, ref, err := splitRef(r.Packet)
	if err != nil {
		return pr, err
	}
	pr.Ref, pr.Packet = ref, pkt
	p, err := packets.Decode(pkt, 0)
	if err != nil {
		return pr, err
	}
	switch p := p.(type) {
	case *packets.Publish:
		pr.Pub = p
		if p.QoS == 0 {
			return pr, errors.New("stored PUBLISH of QoS 0")
		}
		if err := ValidOutbound(p.Topic, &p.Properties); err != nil {
			return pr, err
		}
		p.Dup = false
		p.PacketID = 0
	case *packets.Ack:
		if p.Kind != packets.PUBREL || r.ID == 0 {
			return pr, fmt.Errorf("stored %s is not a PUBREL with a packet identifier", TypeName(p.Kind))
		}
		pr.Pubrel = true
	default:
		return pr, fmt.Errorf("stored %s is not a PUBLISH or PUBREL", TypeName(p.Type()))
	}
	return pr, nil
}

// ValidOutbound checks what makes a PUBLISH sendable by this client
// whatever the server: a full topic name without wildcards and none of the
// properties a client never sends. Publish checks it before a message is
// stored; loading checks it again, since a store may hand back anything.
func ValidOutbound(topic string, pr *packets.Properties) error {
	if err := packets.ValidTopicName(topic); err != nil {
		return fmt.Errorf("topic %q: %w", topic, err)
	}
	switch {
	case len(pr.SubscriptionIdentifier) > 0: // MQTT-3.3.4-6
		return errors.New("subscription identifier in an outbound PUBLISH")
	case pr.TopicAlias != 0:
		return errors.New("topic aliases are assigned by the client (Config.OutboundTopicAliases)")
	}
	if pr.ResponseTopic != "" || pr.Has(packets.PropResponseTopic) {
		if err := packets.ValidTopicName(pr.ResponseTopic); err != nil { // MQTT-3.3.2-14
			return fmt.Errorf("response topic %q: %w", pr.ResponseTopic, err)
		}
	}
	return nil
}

// refTag starts the trailer that follows the packet in an outbound record
// whose message has a Ref: the tag, the Ref's length (uvarint) and the Ref.
// Records without it (and those written before it existed) end with the
// packet.
const refTag = 0xE1

// AppendRef appends the trailer of ref to an encoded record packet.
func AppendRef(b []byte, ref string) []byte {
	if ref == "" {
		return b
	}
	b = append(b, refTag)
	b = binary.AppendUvarint(b, uint64(len(ref)))
	return append(b, ref...)
}

// splitRef separates an outbound record's packet from its Ref trailer.
func splitRef(b []byte) (pkt []byte, ref string, err error) {
	n, ok := packetLen(b)
	if !ok {
		return nil, "", errors.New("record packet truncated")
	}
	pkt, rest := b[:n], b[n:]
	if len(rest) == 0 {
		return pkt, "", nil
	}
	if rest[0] != refTag {
		return nil, "", fmt.Errorf("unknown record trailer 0x%02x", rest[0])
	}
	l, k := binary.Uvarint(rest[1:])
	if k <= 0 || l != uint64(len(rest)-1-k) {
		return nil, "", errors.New("corrupt Ref trailer")
	}
	return pkt, string(rest[1+k:]), nil
}

// packetLen returns the length of the MQTT packet at the start of b, from
// its fixed header.
func packetLen(b []byte) (int, bool) {
	var n, shift uint
	for i := 1; i < len(b) && i <= 4; i++ {
		n |= uint(b[i]&0x7f) << shift
		if b[i]&0x80 == 0 {
			total := 1 + i + int(n)
			return total, total <= len(b)
		}
		shift += 7
	}
	return 0, false
}

// metaVersion is the version of the meta record encoding. Version 1,
// written before Meta.Sent, still decodes (Sent unknown); a record of any
// other version is corrupt.
const (
	metaVersion   = 2
	metaVersionV1 = 1
)

// Sub is a subscription remembered in the meta record.
type Sub struct {
	Filter  string
	Options packets.SubscribeOptions
	ID      uint32
}

// Meta is the client's own session metadata, kept in the Meta record. Its
// presence means the client holds session state for the key.
type Meta struct {
	Expiry        uint32    // Session Expiry Interval in force, seconds
	LastConnected time.Time // when the session was last known connected
	// Sent bounds the outbound messages that may have reached the server:
	// none with a greater Seq was ever written to the network, so a
	// stored PUBLISH beyond it never left, even if it holds a packet
	// identifier (given when it was queued). 0 means unknown: every
	// record with an identifier may have been sent.
	Sent uint64
	Subs []Sub
}

// metaSentAt is where Sent lies in an encoded meta record.
const metaSentAt = 13

// MaybeSent reports whether the outbound record r may have been written to
// the network, by the meta record of its session: m, if the session has
// one (seen: a corrupt one counts, as the zero Meta). Without a meta
// record nothing was sent: one is durable before the first PUBLISH.
func MaybeSent(m Meta, seen bool, r store.Record) bool {
	return seen && r.ID != 0 && (m.Sent == 0 || r.Seq <= m.Sent)
}

// sentOf returns Sent from an encoded meta record.
func sentOf(b []byte) (uint64, bool) {
	if len(b) < metaSentAt+8 || b[0] != metaVersion {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[metaSentAt:]), true
}

// ErrBadMeta says a meta record cannot be decoded.
var ErrBadMeta = errors.New("client: corrupt meta record")

// Encode lays the record out as: version, expiry (4 bytes), last connected
// (Unix milliseconds, 8 bytes), Sent (8 bytes, at a fixed place so that a
// committed batch's value is read without decoding), subscription count
// (uvarint), then per subscription the filter (uvarint length, bytes), the
// options byte and the subscription identifier (uvarint). Version 1 had no
// Sent.
func (m *Meta) Encode() []byte {
	b := make([]byte, 0, 24+len(m.Subs)*24)
	b = append(b, metaVersion)
	b = binary.BigEndian.AppendUint32(b, m.Expiry)
	b = binary.BigEndian.AppendUint64(b, uint64(m.LastConnected.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, m.Sent)
	b = binary.AppendUvarint(b, uint64(len(m.Subs)))
	for _, s := range m.Subs {
		b = binary.AppendUvarint(b, uint64(len(s.Filter)))
		b = append(b, s.Filter...)
		b = append(b, optionsByte(s.Options))
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

// DecodeMeta decodes a meta record.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) < metaSentAt || (b[0] != metaVersion && b[0] != metaVersionV1) {
		return m, ErrBadMeta
	}
	m.Expiry = binary.BigEndian.Uint32(b[1:])
	m.LastConnected = time.UnixMilli(int64(binary.BigEndian.Uint64(b[5:])))
	if b[0] == metaVersion {
		sent, ok := sentOf(b)
		if !ok {
			return m, ErrBadMeta
		}
		m.Sent = sent
		b = b[metaSentAt+8:]
	} else {
		b = b[metaSentAt:] // version 1 had no Sent
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return m, ErrBadMeta
	}
	b = b[k:]
	for range n {
		l, k := binary.Uvarint(b)
		// The filter and its options byte must fit in what is left; l is
		// compared, never l+1, which wraps for a crafted length of 2^64-1.
		if k <= 0 || l >= uint64(len(b)-k) {
			return m, ErrBadMeta
		}
		b = b[k:]
		s := Sub{Filter: string(b[:l])}
		o := b[l]
		b = b[l+1:]
		s.Options.QoS = o & 3
		s.Options.NoLocal = o&4 != 0
		s.Options.RetainAsPublished = o&8 != 0
		s.Options.RetainHandling = (o >> 4) & 3
		id, k2 := binary.Uvarint(b)
		if k2 <= 0 || id > 268435455 {
			return m, ErrBadMeta
		}
		b = b[k2:]
		s.ID = uint32(id)
		m.Subs = append(m.Subs, s)
	}
	if len(b) != 0 {
		return m, ErrBadMeta
	}
	return m, nil
}

// Expired reports whether the session's expiry interval has passed since
// it was last known connected (Session Expiry honoured locally).
func (m *Meta) Expired(now time.Time) bool {
	if m.Expiry == 0xFFFFFFFF {
		return false
	}
	return now.Sub(m.LastConnected) > time.Duration(m.Expiry)*time.Second
}

// setSub records s, replacing a subscription with the same filter.
func (m *Meta) setSub(s Sub) {
	for i := range m.Subs {
		if m.Subs[i].Filter == s.Filter {
			m.Subs[i] = s
			return
		}
	}
	m.Subs = append(m.Subs, s)
}

func (m *Meta) removeSub(filter string) {
	for i := range m.Subs {
		if m.Subs[i].Filter == filter {
			m.Subs = append(m.Subs[:i], m.Subs[i+1:]...)
			return
		}
	}
}
