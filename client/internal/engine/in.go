package engine

import (
	"fmt"
	"log/slog"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// inboundMarker is the Packet of an inbound QoS 2 record: the packet
// identifier is in Record.ID, so the record needs no more than a version.
var inboundMarker = []byte{1}

// InboundRecord returns the record that marks inbound QoS 2 identifier id
// as received and handled.
func InboundRecord(seq uint64, id uint16) store.Record {
	return store.Record{Seq: seq, Dir: store.Inbound, ID: id, Packet: inboundMarker}
}

// Inbound is one QoS 1 or 2 message from the server, or the slot of an
// answer in its connection's arrival order. The driver embeds it in its
// own message value (App points back there) and fills QoS, ID and Cost.
type Inbound struct {
	App  any
	QoS  byte
	ID   uint16
	Dup  bool
	Cost int // memory it holds, for MaxInboundBytes

	conn    *connState
	acked   bool
	counted bool               // delivered: counted in the crash window until done
	done    bool               // no longer counted
	shadow  *Inbound           // QoS 2: the copy a later connection brought while this one was handled
	answer  bool               // QoS 2: only the PUBREC answering a repeat of a recorded message
	reason  packets.ReasonCode // an error code when the application refused the message
	home    *store.Key         // QoS 2: the session it belongs to, when a failover left it behind
}

// Acked reports whether the message has been acknowledged or refused.
func (in *Inbound) Acked() bool { return in.acked }

// Inbound packet identifier states of one connection.
const (
	inNone    = iota
	inQoS1    // delivered, PUBACK not yet sent
	inQoS2    // delivered, PUBREC not yet sent
	inQoS2Rec // PUBREC sent (or due), PUBCOMP not yet sent
	inQoS2Ans // recorded, and a PUBREC for it waits in inq: repeats need no other
)

// Resolve replaces the topic alias of a PUBLISH from the server by its
// topic (MQTT-3.3.2-10 to MQTT-3.3.2-12), or says why it cannot.
func (e *Engine) Resolve(p *packets.Publish) error {
	cn := e.conn
	if cn == nil {
		return nil
	}
	if a := p.Properties.TopicAlias; a != 0 || p.Topic == "" {
		if a == 0 || int(a) >= len(cn.aliasIn) {
			return &ProtocolError{Code: packets.TopicAliasInvalid, Msg: fmt.Sprintf("topic alias %d out of range", a)}
		}
		if p.Topic != "" {
			cn.aliasIn[a] = p.Topic
		} else if p.Topic = cn.aliasIn[a]; p.Topic == "" {
			return &ProtocolError{Code: packets.ProtocolError, Msg: fmt.Sprintf("unknown topic alias %d", a)}
		}
	}
	p.Properties.TopicAlias = 0
	return nil
}

// Arrived runs the receiver side of a QoS 1 or 2 PUBLISH on the live
// connection: our Receive Maximum, duplicate detection for QoS 2, the
// crash window; it delivers in (a Deliver effect) or holds it.
func (e *Engine) Arrived(in *Inbound) error {
	cn := e.conn
	if cn == nil {
		return nil
	}
	id := in.ID
	switch cn.inState[id] {
	case inQoS1, inQoS2, inQoS2Ans:
		// A repeat while the application still holds it, or while the
		// PUBREC that answers it waits its turn: one answer is enough, and
		// nothing is queued per repeat, so a server cannot grow the queue.
		return nil
	case inQoS2Rec:
		if in.QoS == 2 {
			e.answerRecorded(cn, id)
			return nil
		}
		// A QoS 1 message reusing the identifier: the server broke the
		// QoS 2 flow; treat it as new.
		cn.inState[id] = inNone
		cn.inCount--
	}
	if cn.inCount >= int(e.cfg.ReceiveMaximum) {
		// §3.3.4 and §4.9 from our side: the server exceeds the Receive
		// Maximum we announced.
		if e.cfg.StrictReceiveMaximum || cn.inCount >= 65535 {
			return &ProtocolError{Code: packets.ReceiveMaximumExceeded,
				Msg: fmt.Sprintf("more than %d unacknowledged QoS>0 messages", e.cfg.ReceiveMaximum)}
		}
		if !cn.overrunLogged {
			cn.overrunLogged = true
			e.log.Log(slog.LevelWarn, "server exceeds our Receive Maximum; accepting (see Config.StrictReceiveMaximum)",
				"receive_maximum", e.cfg.ReceiveMaximum)
		}
	}
	cn.inCount++
	in.conn = cn
	if in.QoS == 1 {
		cn.inState[id] = inQoS1
		cn.inq = append(cn.inq, in)
		e.deliver(cn, in)
		return nil
	}
	if seq, ok := e.inQoS2[id]; ok {
		if in.Dup {
			// Recorded by an earlier connection or process.
			cn.inState[id] = inQoS2Rec
			e.answerRecorded(cn, id)
			return nil
		}
		// A first transmission (DUP 0, MQTT-3.3.1-1) cannot repeat the
		// recorded message: the server began a new exchange with this
		// identifier, which it does only once the old one ended — or when
		// its session is not the one the record belongs to (a process
		// that stopped after Session Present 0, before the discard of the
		// stale session was durable). The record is stale: taking the
		// message for a repeat would lose it.
		delete(e.inQoS2, id)
		e.addOp(store.Delete(seq))
	}
	cn.inState[id] = inQoS2
	if h := e.in2[id]; h != nil {
		// Still with the application since an earlier connection: do not
		// deliver it again; its acknowledgement answers this copy.
		s := &Inbound{QoS: 2, ID: id, conn: cn}
		h.shadow = s
		cn.inq = append(cn.inq, s)
		return nil
	}
	cn.inq = append(cn.inq, in)
	e.deliver(cn, in)
	return nil
}

// answerRecorded answers a QoS 2 PUBLISH whose identifier is recorded with
// PUBREC and does not deliver it again (MQTT-4.3.3-10); the PUBREC waits
// behind the acknowledgements of messages that arrived before it
// (MQTT-4.6.0-3).
func (e *Engine) answerRecorded(cn *connState, id uint16) {
	cn.inState[id] = inQoS2Ans
	cn.inq = append(cn.inq, &Inbound{QoS: 2, ID: id, conn: cn, acked: true, answer: true})
	e.drainAcks(cn)
}

// deliver hands an inbound QoS 1 or 2 message to the application, unless
// CrashWindow delivered messages still wait for their acknowledgement to
// be durable and sent. Later messages then wait, however many the server
// sends: so no more than CrashWindow handled messages can be delivered
// again after a crash. A message never overtakes one held before it: once
// the connection has closed, held messages stay held (the server sends
// them again on the next connection), while the reader may still hand
// over packets it had buffered — and with room in the window those would
// otherwise be delivered ahead of them.
func (e *Engine) deliver(cn *connState, in *Inbound) {
	if e.handling >= e.cfg.CrashWindow || len(cn.held) > 0 {
		cn.held = append(cn.held, in)
		cn.heldBytes += in.Cost
		return
	}
	e.push(cn, in)
}

// push delivers in now. A QoS 2 message is with the application from here
// on (in2), so that a redelivery on a later connection is not delivered
// again before it is acknowledged.
func (e *Engine) push(cn *connState, in *Inbound) {
	e.handling++
	in.counted = true
	if in.QoS == 2 {
		e.in2[in.ID] = in
	}
	e.effect(Effect{Kind: Deliver, In: in})
}

// inboundDone runs once a delivered message is done with: its
// acknowledgement has gone out (after its record was durable, for QoS 2),
// or never will on its connection (acknowledged or refused after the
// connection dropped, or its session discarded). The crash window counts
// delivered messages across connections: one handled on a connection that
// dropped is delivered again after a crash just the same. Held messages
// of the live connection may follow.
func (e *Engine) inboundDone(in *Inbound) {
	if !in.counted || in.done {
		return
	}
	in.done = true
	e.handling--
	cn := e.conn
	for cn != nil && len(cn.held) > 0 && e.handling < e.cfg.CrashWindow && e.live(cn) {
		in := cn.held[0]
		cn.held[0] = nil
		cn.held = cn.held[1:]
		cn.heldBytes -= in.Cost
		e.push(cn, in)
	}
}

// HeldBytes returns the memory held by messages waiting for the crash
// window on the live connection.
func (e *Engine) HeldBytes() int {
	if e.conn == nil {
		return 0
	}
	return e.conn.heldBytes
}

// pubrel finishes an inbound QoS 2 message: the record's deletion is
// durable before PUBCOMP goes out, so that a crash never takes the next
// message with this identifier for a duplicate.
func (e *Engine) pubrel(cn *connState, id uint16) {
	if st := cn.inState[id]; st == inQoS2Rec || st == inQoS2Ans {
		// With inQoS2Ans the server releases a message whose PUBREC still
		// waits in inq (a server that resends PUBLISH and PUBREL together
		// after a reconnection): that PUBREC is dropped when its turn
		// comes, and never records the message again.
		cn.inState[id] = inNone
		cn.inCount--
	}
	code := packets.Success
	if seq, ok := e.inQoS2[id]; ok {
		delete(e.inQoS2, id)
		e.addOp(store.Delete(seq))
	} else {
		code = packets.PacketIdentifierNotFound
	}
	e.emit(action{kind: actAck, conn: cn, pkt: packets.PUBCOMP, id: id, code: code}) // MQTT-4.3.3-11
}

// Ack acknowledges in for the application; acknowledgements leave in
// arrival order. A QoS 1 message whose connection has gone returns
// ErrNotConnected; a QoS 2 one is recorded all the same (nil), or returns
// ErrSessionLost when its session was discarded meanwhile.
func (e *Engine) Ack(in *Inbound) error {
	if in.acked {
		return nil
	}
	cn := in.conn
	live := e.live(cn)
	if in.QoS == 2 {
		if in.home != nil {
			// Handled after a failover took the client to another
			// server's session: record it in its own session, so that
			// when the client comes back its redelivery is answered, not
			// delivered again.
			seq := e.nextSeq
			e.nextSeq++
			in.acked = true
			e.inboundDone(in)
			e.effect(Effect{Kind: StoreAt, Key: *in.home, Ops: []store.Op{store.Put(InboundRecord(seq, in.ID))}})
			return nil
		}
		if e.in2[in.ID] != in {
			in.acked = true
			e.inboundDone(in)
			return ErrSessionLost
		}
		delete(e.in2, in.ID)
		// The message has been handled: record it now, whatever the order
		// of acknowledgements and whether or not its connection is still
		// up, so that the server's redelivery is answered with PUBREC and
		// not delivered again (MQTT-4.3.3-10), whichever connection brings
		// it. Only the PUBREC waits for its turn (MQTT-4.6.0-3).
		e.recordInbound(in.ID)
		if !live {
			in.acked = true
			e.emit(action{kind: actInDone, in: in}) // once its record is durable
			if s := in.shadow; s != nil {
				s.acked = true
				e.drainAcks(s.conn)
			}
			return nil
		}
	}
	if !live {
		e.inboundDone(in) // the server sends it again
		return ErrNotConnected
	}
	in.acked = true
	e.drainAcks(cn)
	return nil
}

// Refuse acknowledges in with an error reason code: the server does not
// send it again, and nothing is recorded.
func (e *Engine) Refuse(in *Inbound, code packets.ReasonCode) {
	if in.acked {
		return
	}
	if in.QoS == 2 && e.in2[in.ID] == in {
		delete(e.in2, in.ID)
	}
	in.acked, in.reason = true, code
	if !e.live(in.conn) {
		e.inboundDone(in) // nothing goes out on a dropped connection
	}
	e.drainAcks(in.conn)
	if s := in.shadow; s != nil && !s.acked {
		s.acked, s.reason = true, code
		e.drainAcks(s.conn)
	}
}

// drainAcks sends the acknowledgements of the acknowledged messages at the
// head of cn's arrival queue: MQTT-4.6.0-2 and MQTT-4.6.0-3 want them in
// the order the messages arrived.
func (e *Engine) drainAcks(cn *connState) {
	if !e.live(cn) {
		return
	}
	for len(cn.inq) > 0 && cn.inq[0].acked {
		in := cn.inq[0]
		cn.inq[0] = nil
		cn.inq = cn.inq[1:]
		e.sendInboundAck(cn, in)
	}
	if len(cn.inq) == 0 {
		cn.inq = nil
	}
}

// sendInboundAck sends the PUBACK, or persists the inbound QoS 2 record and
// then sends the PUBREC.
func (e *Engine) sendInboundAck(cn *connState, in *Inbound) {
	id := in.ID
	switch {
	case in.QoS == 1:
		cn.inState[id] = inNone
		cn.inCount--
		e.emit(action{kind: actAck, conn: cn, pkt: packets.PUBACK, id: id, code: in.reason}) // MQTT-4.3.2-4
	case in.reason.IsError():
		// Refused by the application: nothing recorded, and the
		// identifier is free for a new message (MQTT-4.3.3-9).
		cn.inState[id] = inNone
		cn.inCount--
		e.emit(action{kind: actAck, conn: cn, pkt: packets.PUBREC, id: id, code: in.reason})
	default:
		if in.answer && cn.inState[id] != inQoS2Ans {
			return // its exchange ended before this answer's turn (pubrel)
		}
		e.recordInbound(id)
		cn.inState[id] = inQoS2Rec
		e.emit(action{kind: actAck, conn: cn, pkt: packets.PUBREC, id: id}) // MQTT-4.3.3-8
	}
	if in.counted {
		e.emit(action{kind: actInDone, in: in})
	}
}

// recordInbound queues the Put of the inbound QoS 2 record of id, unless
// it is recorded already. A PUBREC emitted after it waits for it.
func (e *Engine) recordInbound(id uint16) {
	if _, ok := e.inQoS2[id]; ok {
		return
	}
	seq := e.nextSeq
	e.nextSeq++
	e.inQoS2[id] = seq
	e.addOp(store.Put(InboundRecord(seq, id)))
}

// TxBegin starts the transactional handling of in (a handler that writes
// its own data in the store's transaction): for QoS 2 it returns the
// sequence number of the inbound record the transaction must put, or false
// when the message's session was discarded meanwhile (nothing to do).
func (e *Engine) TxBegin(in *Inbound) (seq uint64, ok bool) {
	if in.QoS != 2 {
		return 0, true
	}
	if e.in2[in.ID] != in {
		return 0, false
	}
	seq = e.nextSeq
	e.nextSeq++
	return seq, true
}

// TxCommitted reports that the transaction of in, with its inbound record
// seq (QoS 2), is durable. The driver then acknowledges in (Ack).
func (e *Engine) TxCommitted(in *Inbound, seq uint64) {
	if in.QoS != 2 {
		return
	}
	if e.in2[in.ID] == in {
		e.inQoS2[in.ID] = seq // durable with the application's writes
	} else {
		e.addOp(store.Delete(seq)) // the session was discarded meanwhile
	}
}

// TxFailed reports that the transaction of in failed in the store: the
// message is not recorded, and its redelivery is a new delivery.
func (e *Engine) TxFailed(in *Inbound) {
	if in.QoS == 2 && e.in2[in.ID] == in {
		delete(e.in2, in.ID)
	}
}

// Received handles an acknowledgement from the server on the live
// connection: PUBACK, PUBREC, PUBREL or PUBCOMP.
func (e *Engine) Received(a *packets.Ack) {
	cn := e.conn
	if cn == nil {
		return
	}
	if a.Kind == packets.PUBREL {
		e.pubrel(cn, a.PacketID)
		return
	}
	e.outboundAck(cn, a)
}

// InboundQueued returns how many inbound messages of the live connection
// wait for their acknowledgement's turn (for tests).
func (e *Engine) InboundQueued() int {
	if e.conn == nil {
		return 0
	}
	return len(e.conn.inq)
}

// Recorded reports whether inbound QoS 2 identifier id is recorded (for
// tests).
func (e *Engine) Recorded(id uint16) bool {
	_, ok := e.inQoS2[id]
	return ok
}

// Unacked returns how many inbound QoS>0 messages of the live connection
// are unacknowledged, and whether the server ever exceeded our Receive
// Maximum on it (for tests).
func (e *Engine) Unacked() (n int, overrun bool) {
	if e.conn == nil {
		return 0, false
	}
	return e.conn.inCount, e.conn.overrunLogged
}

// RecordedCount returns how many inbound QoS 2 identifiers are recorded.
func (e *Engine) RecordedCount() int { return len(e.inQoS2) }
