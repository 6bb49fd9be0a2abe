package client

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/store"
)

// PendingState tells where an outbound message of the session stands.
type PendingState uint8

// The states of a pending message.
const (
	// PendingQueued: stored, never sent (with or without the packet
	// identifier it will be sent under).
	PendingQueued PendingState = iota + 1
	// PendingSent: sent, awaiting PUBACK (QoS 1) or PUBREC (QoS 2); it is
	// resent with its packet identifier on the next connection. On a
	// session loaded after a restart it means may have been sent: the
	// session's record of what was sent runs a few messages ahead (see
	// README, Guarantees).
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
// The messages a resume keeps in the store rather than in memory
// (Config.LoadWindow) are read from the store for the list, and Pending
// waits for the session to be read to its end.
func (c *Client) Pending(ctx context.Context) ([]Pending, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if _, ok := c.eng.Loaded(); !ok {
		c.waitIdle()
		if err := c.loadSession(ctx, c.key, true); err != nil {
			return nil, err
		}
	}
	if err := c.waitScanned(ctx); err != nil {
		return nil, err
	}
	list := c.eng.Outbound()
	if _, ok := c.eng.TailFrom(); ok {
		// The messages still in the store, behind those in memory.
		err := c.readTail(ctx, func(_ uint64, recs []store.Record, _ uint64) bool {
			list = append(list, c.eng.TailOutbound(recs)...)
			return true
		})
		if err != nil {
			return nil, err
		}
		slices.SortFunc(list, func(a, b engine.OutInfo) int { return cmp.Compare(a.Seq, b.Seq) })
	}
	var out []Pending
	for _, m := range list {
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
// would: a record the load would leave out as corrupt has Err set. Alone,
// a PUBLISH record holding a packet identifier is described as sent: only
// the session's meta record tells whether it was (DescribeRecords).
func DescribeRecord(r store.Record) RecordInfo { return describe(r, engine.Meta{}, true) }

// DescribeRecords describes the records of one session, in the order Load
// returned them, as DescribeRecord does; the session's meta record tells
// which messages holding a packet identifier may have been sent and which
// were only queued.
func DescribeRecords(recs []store.Record) []RecordInfo {
	var meta engine.Meta
	seen := len(recs) > 0 && recs[0].Seq == store.MetaSeq
	if seen {
		meta, _ = engine.DecodeMeta(recs[0].Packet) // a corrupt one: the zero Meta, every record maybe sent
	}
	out := make([]RecordInfo, len(recs))
	for i, r := range recs {
		out[i] = describe(r, meta, seen)
	}
	return out
}

func describe(r store.Record, meta engine.Meta, seen bool) RecordInfo {
	pr, err := engine.ParseRecord(r)
	info := RecordInfo{Ref: pr.Ref, Err: err}
	switch {
	case r.Dir == store.Meta:
		info.Kind, info.State = "meta", "session metadata"
		if err == nil {
			sent := "any message may have been sent"
			if pr.Meta.Sent != 0 {
				sent = fmt.Sprintf("nothing beyond seq %d sent", pr.Meta.Sent)
			}
			info.State = fmt.Sprintf("session metadata: expiry %ds, last connected %s, %d subscription(s), %s",
				pr.Meta.Expiry, pr.Meta.LastConnected.UTC().Format(time.RFC3339), len(pr.Meta.Subs), sent)
		}
	case r.Dir == store.Inbound:
		info.Kind, info.QoS, info.State = "inbound", 2, "received, PUBREC sent, awaiting PUBREL"
	case pr.Pub != nil:
		info.Kind, info.QoS, info.Topic = "publish", pr.Pub.QoS, pr.Pub.Topic
		switch {
		case r.ID == 0:
			info.State = "queued, not sent"
		case !engine.MaybeSent(meta, seen, r):
			info.State = "queued, not sent (packet identifier given)"
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
