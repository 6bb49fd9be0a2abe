package client

import (
	"context"
	"fmt"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/store"
)

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
	if _, ok := c.eng.Loaded(); !ok {
		c.waitIdle()
		if err := c.loadSession(ctx, c.key); err != nil {
			return nil, err
		}
	}
	var out []Pending
	for _, m := range c.eng.Outbound() {
		p := Pending{Seq: m.Seq, PacketID: m.ID, QoS: m.QoS, Ref: m.Ref, State: PendingSent}
		switch {
		case m.Pubrel:
			p.State = PendingReleased
		case m.ID == 0 || !m.Sent:
			p.State = PendingQueued
		}
		if m.Pub != nil {
			p.Message = &Message{Ref: m.Ref, Topic: m.Pub.Topic, Payload: m.Pub.Payload, QoS: m.Pub.QoS,
				Retain: m.Pub.Retain, Properties: m.Pub.Properties}
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
	pr, err := engine.ParseRecord(r)
	info := RecordInfo{Ref: pr.Ref, Err: err}
	switch {
	case r.Dir == store.Meta:
		info.Kind, info.State = "meta", "session metadata"
		if err == nil {
			info.State = fmt.Sprintf("session metadata: expiry %ds, last connected %s, %d subscription(s)",
				pr.Meta.Expiry, pr.Meta.LastConnected.UTC().Format(time.RFC3339), len(pr.Meta.Subs))
		}
	case r.Dir == store.Inbound:
		info.Kind, info.QoS, info.State = "inbound", 2, "received, PUBREC sent, awaiting PUBREL"
	case pr.Pub != nil:
		info.Kind, info.QoS, info.Topic = "publish", pr.Pub.QoS, pr.Pub.Topic
		switch {
		case r.ID == 0:
			info.State = "queued, not sent"
		case pr.Pub.QoS == 1:
			info.State = "sent, awaiting PUBACK"
		default:
			info.State = "sent, awaiting PUBREC"
		}
	case pr.Pubrel:
		info.Kind, info.QoS = "pubrel", 2
		info.State = "PUBREC received, PUBREL sent, awaiting PUBCOMP"
	case r.Dir == store.Outbound:
		info.Kind = "outbound"
	default:
		info.Kind = "unknown"
	}
	return info
}
