package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tethermq/tether/store"
)

// refTag starts the trailer that follows the packet in an outbound record
// whose message has a Ref: the tag, the Ref's length (uvarint) and the Ref.
// Records without it (and those written before it existed) end with the
// packet.
const refTag = 0xE1

// appendRef appends the trailer of ref to an encoded record packet.
func appendRef(b []byte, ref string) []byte {
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

// PendingState tells where an outbound message of the session stands.
type PendingState uint8

// The states of a pending message.
const (
	// PendingQueued: stored, never sent (no packet identifier yet, or one
	// that never reached the network).
	PendingQueued PendingState = iota + 1
	// PendingSent: sent, awaiting PUBACK (QoS 1) or PUBREC (QoS 2); it is
	// resent with its packet identifier on the next connection.
	PendingSent
	// PendingReleased: QoS 2, PUBREC received and PUBREL sent, awaiting
	// PUBCOMP: the server has the message; only the PUBREL is resent.
	PendingReleased
)

func (s PendingState) String() string {
	switch s {
	case PendingQueued:
		return "queued"
	case PendingSent:
		return "sent"
	case PendingReleased:
		return "released"
	}
	return fmt.Sprintf("state(%d)", s)
}

// Pending is one outbound message the session still holds.
type Pending struct {
	Seq      uint64 // its place in the session's order
	State    PendingState
	PacketID uint16 // 0 while queued
	QoS      byte
	Ref      string // Message.Ref
	// Message holds the topic, payload and properties, except for a
	// released message loaded from the store, whose record keeps only its
	// packet identifier and Ref (the server has the message).
	Message *Message
}

// Pending lists, in order, the outbound QoS 1 and 2 messages the session
// holds: what the library will still deliver. On a Client that has not
// connected yet it loads the session from the store first, so an
// application resuming after a crash can tell which of its messages (by
// Message.Ref) still need nothing from it — and which it must publish
// again. A message completes, and leaves the list, at PUBACK or PUBCOMP.
func (c *Client) Pending(ctx context.Context) ([]Pending, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if !c.loaded {
		c.waitIdle()
		if err := c.loadSession(ctx, c.key); err != nil {
			return nil, err
		}
	}
	var out []Pending
	for _, m := range c.sortedMsgs() {
		if m.done {
			continue
		}
		p := Pending{Seq: m.seq, PacketID: m.id, QoS: m.qos, Ref: m.ref, State: PendingSent}
		switch {
		case m.pubrel:
			p.State = PendingReleased
		case m.id == 0 || !m.sent:
			p.State = PendingQueued
		}
		if m.pub != nil {
			p.Message = &Message{Ref: m.ref, Topic: m.pub.Topic, Payload: m.pub.Payload, QoS: m.pub.QoS,
				Retain: m.pub.Retain, Properties: m.pub.Properties}
		}
		out = append(out, p)
	}
	return out, nil
}

// RecordInfo describes one stored record of a session, for tools that
// show a store's contents (`tether sessions show`).
type RecordInfo struct {
	Kind  string // "meta", "publish", "pubrel" or "inbound"
	State string // where the record's exchange stands, in words
	QoS   byte
	Topic string
	Ref   string // Message.Ref of an outbound message
	Err   error  // why the client cannot use the record; nil when it can
}

// DescribeRecord decodes a record the client wrote, as the session load
// would: a record the load would leave out as corrupt has Err set.
func DescribeRecord(r store.Record) RecordInfo {
	pr, err := parseRecord(r)
	info := RecordInfo{Ref: pr.ref, Err: err}
	switch {
	case r.Dir == store.Meta:
		info.Kind, info.State = "meta", "session metadata"
		if err == nil {
			info.State = fmt.Sprintf("session metadata: expiry %ds, last connected %s, %d subscription(s)",
				pr.meta.expiry, pr.meta.lastConnected.UTC().Format(time.RFC3339), len(pr.meta.subs))
		}
	case r.Dir == store.Inbound:
		info.Kind, info.QoS, info.State = "inbound", 2, "received, PUBREC sent, awaiting PUBREL"
	case pr.pub != nil:
		info.Kind, info.QoS, info.Topic = "publish", pr.pub.QoS, pr.pub.Topic
		switch {
		case r.ID == 0:
			info.State = "queued, not sent"
		case pr.pub.QoS == 1:
			info.State = "sent, awaiting PUBACK"
		default:
			info.State = "sent, awaiting PUBREC"
		}
	case pr.pubrel:
		info.Kind, info.QoS = "pubrel", 2
		info.State = "PUBREC received, PUBREL sent, awaiting PUBCOMP"
	case r.Dir == store.Outbound:
		info.Kind = "outbound"
	default:
		info.Kind = "unknown"
	}
	return info
}
