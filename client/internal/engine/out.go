package engine

import (
	"fmt"
	"log/slog"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// Out is one outbound QoS 1 or 2 message of the session: queued, in
// flight, or waiting for PUBCOMP. A session resumed with a backlog holds
// one per message of its window, so it is kept to 80 bytes: what the
// application gave with a message lives beside it (app).
type Out struct {
	seq    uint64
	wnum   uint64           // the write it last went out in, numbered across connections (Engine.wrote)
	raw    []byte           // a loaded PUBLISH not decoded yet (pub nil): its stored packet
	pub    *packets.Publish // full topic, never an alias; nil for loaded PUBRELs
	app    *app             // nil for a loaded message without a reference
	cost   uint32           // what it counts against MaxQueuedBytes, fixed when tracked
	putGen uint32           // the batch (Engine.curGen) of its last Put
	putAt  uint16           // and the Put's place in it, noPutAt when past 65,534
	id     uint16           // packet identifier, 0 while never assigned
	puts   uint16           // Puts of its record in batches not yet applied (the first: !stored)
	qos    byte             // 1 or 2
	pubrel bool             // PUBREC received: the stored record is the PUBREL
	stored bool             // its record is durable
	bare   bool             // a record of it without its packet identifier may be durable
	sent   bool             // went on the wire before: resend with DUP=1
	onWire bool             // counted in flight on the current connection
	done   bool             // finished or dropped; skip in queues
	// sentPrev is sent as it was before the write wnum.
	sentPrev bool
	tracked  bool // in the session's outList
	young    bool // a QoS 1 message whose first Put may wait a batch: see Commit
}

// noPutAt marks a Put too far into its batch to be taken back.
const noPutAt = 1<<16 - 1

// app is what the application gave with a message.
type app struct {
	ref    string
	ticket any // completed when the exchange ends; nil once it is
}

// Msg is the room a publish takes in the session, for the driver to
// allocate with the publish's other parts.
type Msg struct {
	Out
	app app
}

// refApp is what a loaded message with reference ref holds beside it.
func refApp(ref string) *app {
	if ref == "" {
		return nil
	}
	return &app{ref: ref}
}

func (m *Out) ref() string {
	if m.app == nil {
		return ""
	}
	return m.app.ref
}

func (m *Out) ticket() any {
	if m.app == nil {
		return nil
	}
	return m.app.ticket
}

// Publish adds the QoS 1 or 2 message p (validated by the driver) to the
// session, as m, completing ticket when its exchange ends. It is stored
// before it is sent (QoS 2) or while it is (QoS 1, see mayLeave), and sent
// in order, behind any messages a paged load left in the store. The engine
// keeps p until then. Not while a paged load scans (Scanning): the
// session's last Seq is not known yet.
func (e *Engine) Publish(pm *Msg, p *packets.Publish, ref string, ticket any) {
	pm.app = app{ref: ref, ticket: ticket}
	pm.Out = Out{seq: e.nextSeq, qos: p.QoS, pub: p, app: &pm.app}
	m := &pm.Out
	e.nextSeq++
	e.track(m)
	if cn := e.conn; cn != nil && e.scan.tailFrom == 0 {
		e.waiting = append(e.waiting, m)
		e.pump()
	}
	if !m.done && !m.stored && m.puts == 0 {
		// Not on the wire yet (no quota, or offline): stored as queued,
		// with the identifier giveAhead gave it, if any.
		e.putRecord(m)
	}
}

// sentAhead is how far Meta.Sent runs ahead of the messages sent: the
// meta record is rewritten once per half of it, in a batch that commits
// anyway, so that no PUBLISH waits for it. It starts at four windows of
// the server's Receive Maximum (at least 64 messages) and doubles, up to
// 1,024, each time a PUBLISH had to wait for it (the store commits slower
// than the server acknowledges); 1,024 too when many subscriptions make
// the meta record large. After a crash, at most that many messages that
// never left are taken for maybe sent.
func (e *Engine) sentAhead() uint64 {
	if e.cfg.SentAhead > 0 {
		return e.cfg.SentAhead
	}
	if e.metaSize > 1024 {
		return 1024
	}
	return uint64(min(max(4*int(e.lim.ReceiveMax), 64, e.ahead), 1024))
}

// giveAhead gives packet identifiers to the messages waiting behind those
// the server's Receive Maximum lets go now, in order, while identifiers are
// plentiful, and queues their records' rewrite: when a slot frees, the
// next PUBLISH then leaves at once, its record with its identifier durable
// long before. A message published while connected gets its identifier
// here before its first Put, so it is written once. The identifier says
// nothing of whether it was sent: Meta.Sent does.
//
// Identifiers are given in Seq order and the first message that cannot
// have one stops the round, so the messages not yet sent that hold one
// always come before those that do not: a message waiting for an
// identifier never waits behind messages holding them that cannot go
// before it (after a crash those are taken for maybe sent, and only their
// acknowledgement frees their identifiers). A share of the identifiers is
// never given ahead, for SUBSCRIBE and UNSUBSCRIBE and for the message due
// first.
func (e *Engine) giveAhead() {
	if !e.scan.idsKnown {
		return
	}
	e.giveAt = max(e.giveAt, e.waitHead)
	for ; e.giveAt < len(e.waiting); e.giveAt++ {
		m := e.waiting[e.giveAt]
		if m.done || m.pubrel || m.id != 0 {
			continue
		}
		if e.idsLow() {
			return
		}
		id, ok := e.ids.alloc()
		if !ok {
			return
		}
		m.id = id
		e.byID[id] = m
		if m.stored || m.puts > 0 {
			e.putRecord(m) // its record again, with the identifier
		}
	}
}

// coverSent makes sure a PUBLISH of the message with sequence number seq
// may go on the wire: Meta.Sent must cover it durably, so that a process
// loading the session after a crash knows the message may have been sent.
// It raises Meta.Sent ahead of need and reports whether seq is covered by
// what is durable already.
func (e *Engine) coverSent(seq uint64) bool {
	if seq <= e.sentDurable {
		if ahead := e.sentAhead(); seq+ahead/2 > e.meta.Sent {
			e.meta.Sent = seq + ahead
			e.raisedEarly = true
			e.putMetaRecord()
		}
		return true
	}
	if e.sentQueued >= seq {
		if e.raisedEarly {
			// Moved ahead in time, yet not durable when needed: too
			// little ahead for this store and server.
			e.ahead = 2 * int(e.sentAhead())
			e.raisedEarly = false
		}
		return false
	}
	e.meta.Sent = max(e.meta.Sent, seq+e.sentAhead())
	e.raisedEarly = false
	e.putMetaRecord()
	return false
}

// Publish0 sends the QoS 0 message p, or queues it while disconnected when
// queue is set. It reports false when it neither sent nor queued it: the
// driver then fails the publish with ErrNotConnected.
func (e *Engine) Publish0(p *packets.Publish, ticket any, queue bool) bool {
	switch {
	case e.conn != nil:
		e.emitOut(action{kind: actPublish0, conn: e.conn, eff: Effect{Packet: p, Ticket: ticket}}, true)
	case queue:
		e.queued0 = append(e.queued0, p)
		e.tickets0 = append(e.tickets0, ticket)
		e.queuedBytes += PubCost(p)
	default:
		return false
	}
	return true
}

func (e *Engine) writePublish0(cn *connState, p *packets.Publish, ticket any) {
	if !e.live(cn) {
		e.effect(Effect{Kind: Complete, Ticket: ticket, Err: ErrNotConnected})
		return
	}
	if cn.maxOut != 0 {
		if n, err := packets.Size(p); err == nil && uint32(n) > cn.maxOut { // MQTT-3.2.2-15
			e.effect(Effect{Kind: Complete, Ticket: ticket,
				Err: fmt.Errorf("%w: %d bytes, server maximum %d", ErrPacketTooLarge, n, cn.maxOut)})
			return
		}
	}
	w := e.pubs.next()
	*w = *p
	e.alias(cn, w)
	e.effect(Effect{Kind: Publish0, Conn: cn.gen, Packet: w, Ticket: ticket})
}

// writePublish writes m's PUBLISH on cn, unless m has finished or cn is no
// longer live: the next connection then sends it, with DUP 0 if it never
// went out (MQTT-4.3.2-2, MQTT-4.3.3-2).
func (e *Engine) writePublish(cn *connState, m *Out) {
	if m.done || !e.live(cn) {
		return
	}
	w := e.pubs.next()
	*w = *e.pubOf(m)
	w.PacketID = m.id
	w.Dup = m.sent
	e.alias(cn, w)
	num := e.numbered(cn)
	m.sentPrev, m.sent = m.sent, true
	m.wnum = e.wrote
	e.effect(Effect{Kind: Write, Conn: cn.gen, Num: num, Packet: w})
}

// alias replaces p's topic by an alias when outbound aliases are on and
// the alias keeps the packet within the server's Maximum Packet Size
// (MQTT-3.2.2-15): the Topic Alias property costs three bytes, more than a
// short topic saves.
func (e *Engine) alias(cn *connState, p *packets.Publish) {
	if !e.cfg.OutboundTopicAliases || cn.aliasMax == 0 {
		return
	}
	if a, ok := cn.aliasOut[p.Topic]; ok {
		topic := p.Topic
		p.Properties.TopicAlias, p.Topic = a, ""
		if cn.tooLarge(p) {
			p.Properties.TopicAlias, p.Topic = 0, topic
		}
	} else if len(cn.aliasOut) < int(cn.aliasMax) {
		a := uint16(len(cn.aliasOut) + 1) // MQTT-3.3.2-8, MQTT-3.3.2-9
		p.Properties.TopicAlias = a
		if cn.tooLarge(p) {
			p.Properties.TopicAlias = 0
		} else {
			cn.aliasOut[p.Topic] = a
		}
	}
}

// pump sends queued messages in Seq order while the server's Receive
// Maximum and the packet identifiers allow (MQTT-4.9.0-1, MQTT-4.9.0-2).
// A PUBREL needs no quota (MQTT-4.9.0-3) but keeps its place in the order,
// and counts as in flight until its PUBCOMP.
func (e *Engine) pump() {
	if e.conn == nil {
		return
	}
	e.send(e.conn)
	e.giveAhead()
	e.wantTail()
}

func (e *Engine) send(cn *connState) {
	for e.waitHead < len(e.waiting) {
		m := e.waiting[e.waitHead]
		if m.done || m.onWire {
			e.popWaiting()
			continue
		}
		if m.pubrel {
			m.onWire = true
			e.quota--
			e.emitOut(action{kind: actAck, conn: cn, pkt: packets.PUBREL, id: m.id}, false)
			e.popWaiting()
			continue
		}
		if cn.maxOut != 0 && e.wireSize(m) > cn.maxOut {
			e.popWaiting()
			e.dropTooLarge(m, cn.maxOut)
			continue
		}
		if e.quota <= 0 {
			return
		}
		covered := e.coverSent(m.seq)
		if m.id == 0 {
			if !e.scan.idsKnown {
				return // a stored record not read yet may hold the one alloc would give
			}
			id, ok := e.ids.alloc()
			if !ok {
				return // MQTT-2.2.1-3: wait for a free identifier, never reuse one
			}
			m.id = id
			e.byID[id] = m
			if !e.putRecord(m) {
				e.popWaiting()
				continue
			}
		}
		e.quota--
		e.peak = max(e.peak, int(e.lim.ReceiveMax)-e.quota)
		m.onWire = true
		early := covered && e.mayLeave(m)
		e.emitOut(action{kind: actPublish, conn: cn, m: m}, early)
		e.popWaiting()
	}
}

// mayLeave reports whether m's PUBLISH needs nothing more from the store
// (besides a Meta.Sent covering it, which coverSent sees to). A QoS 2
// PUBLISH waits until its record, with its identifier, is durable: a
// crash before that would leave the server holding the identifier's
// exchange while the next process, not knowing it, gives the identifier to
// another message, which the server would then take for a duplicate and
// drop (MQTT-4.3.3-10). A QoS 1 PUBLISH goes while its record is still
// being written: the server keeps nothing of a QoS 1 exchange once it has
// acknowledged it (MQTT-4.3.2-5), so a crash before the record is durable
// loses no state the server shares; the publish had not completed, nor
// had Token.Stored, so the message is still the application's, and at
// least once holds either way. The record then commits alongside the
// exchange instead of before it. Only a record lacking the identifier (a
// message stored while disconnected) must be replaced first: a process
// loading that record would take it for never sent. While the store is
// failing nothing leaves before its record, which would likely fail after
// the PUBLISH went out.
func (e *Engine) mayLeave(m *Out) bool {
	if m.qos == 1 && !m.bare && !e.failing {
		return true
	}
	return m.stored && m.puts == 0
}

func (e *Engine) popWaiting() {
	e.waiting[e.waitHead] = nil
	e.waitHead++
	if e.waitHead == len(e.waiting) {
		e.resetWaiting()
	} else if e.waitHead > 1024 && e.waitHead*2 > len(e.waiting) {
		n := copy(e.waiting, e.waiting[e.waitHead:])
		clear(e.waiting[n:])
		e.giveAt = max(e.giveAt-e.waitHead, 0)
		e.waiting, e.waitHead = e.waiting[:n], 0
	}
}

func (e *Engine) resetWaiting() { e.waiting, e.waitHead, e.giveAt = e.waiting[:0], 0, 0 }

// putRecord queues the Put of m's PUBLISH record, with its packet
// identifier (a placeholder in the packet while Record.ID is 0, since a
// QoS>0 PUBLISH cannot be encoded without one). A message that cannot be
// encoded is failed rather than ever sent unstored; putRecord then reports
// false.
func (e *Engine) putRecord(m *Out) bool {
	p := &e.recPub // a field: one on the stack would escape into Append
	*p = *e.pubOf(m)
	p.Dup = false
	p.PacketID = m.id
	if p.PacketID == 0 {
		p.PacketID = 1
	}
	b, err := packets.Append(e.recBuf(), p)
	*p = packets.Publish{} // keep no reference to the message's payload
	b = AppendRef(b, m.ref())
	if err != nil {
		// Validated at Publish, so this is a bug; fail the message, never
		// panic and never send it without its record.
		e.log.Log(slog.LevelError, "encode stored publish", "seq", m.seq, "err", err)
		m.done = true
		e.untrack(m)
		e.addOp(store.Delete(m.seq)) // an earlier record of it, if any
		if m.id != 0 {
			delete(e.byID, m.id)
			e.emit(action{kind: actFreeID, id: m.id}) // once that deletion is durable
		}
		e.complete(m, fmt.Errorf("client: encode message for the store: %w", err))
		return false
	}
	e.addOp(store.Put(store.Record{Seq: m.seq, Dir: store.Outbound, ID: m.id, Packet: b}))
	m.putGen, m.putAt = e.curGen, uint16(min(len(e.cur.ops)-1, noPutAt))
	m.bare = m.bare || m.id == 0
	if !m.stored && m.puts == 0 {
		e.cur.msgs = append(e.cur.msgs, m) // its first Put
		// A QoS 1 PUBLISH does not need a record that holds its
		// identifier (mayLeave): the Put may wait a batch (Commit).
		m.young = m.qos == 1 && m.id != 0
	}
	m.puts++
	return true
}

// idsLow reports whether the last sixteenth of the packet identifiers is
// all that is free: it is kept for the messages the server's window takes
// next (giveAhead), and freeing identifiers becomes urgent (Urgent).
func (e *Engine) idsLow() bool { return e.ids.n >= int(e.ids.max)-int(e.ids.max)/16 }

func (e *Engine) complete(m *Out, err error) {
	if t := m.ticket(); t != nil {
		e.effect(Effect{Kind: Complete, Ticket: t, Err: err})
		m.app.ticket = nil
	}
}

// finishOut ends the exchange of m and lets the next message take the
// quota it gave back.
func (e *Engine) finishOut(m *Out, err error) {
	e.retire(m, err)
	e.pump()
}

// retire ends m, whatever ended it: its record is deleted (lazily, in the
// next batch), its packet identifier freed once that deletion is durable,
// its quota given back and its publish completed.
func (e *Engine) retire(m *Out, err error) {
	m.done = true
	e.untrack(m)
	if m.onWire {
		m.onWire = false
		if e.quota < int(e.lim.ReceiveMax) {
			e.quota++
		}
	}
	if !e.unput(m) {
		e.addOp(store.Delete(m.seq))
	}
	if m.id != 0 {
		delete(e.byID, m.id)
		e.emit(action{kind: actFreeID, id: m.id})
	}
	e.complete(m, err)
}

// unput takes back the Put of m's record when it is the record's only one
// and still waits in the batch being accumulated: a QoS 1 message whose
// PUBACK overtook its record then costs the store nothing, neither the Put
// nor a Delete. It reports whether it did.
func (e *Engine) unput(m *Out) bool {
	if m.stored || m.puts != 1 || m.putGen != e.curGen || m.putAt == noPutAt {
		return false
	}
	op := &e.cur.ops[m.putAt]
	if !isPutOf(op, m) {
		return false
	}
	e.keepBuf(op.Record.Packet)
	*op = store.Op{}
	e.cur.dead++
	m.puts = 0
	return true
}

// wireSize returns the size of m's PUBLISH on the wire without an alias.
// It is not kept: only a server with a Maximum Packet Size asks, once a
// send.
func (e *Engine) wireSize(m *Out) uint32 {
	pub := e.pubOf(m)
	if pub == nil {
		return 0
	}
	p := &e.recPub
	*p = *pub
	p.PacketID = 1
	n, err := packets.Size(p)
	*p = packets.Publish{}
	if err != nil {
		return 1<<32 - 1 // unencodable: larger than any limit
	}
	return uint32(min(n, 1<<32-1))
}

// dropTooLarge fails a message that this server's Maximum Packet Size will
// never let through (MQTT-3.2.2-15), once, and removes it from the session
// instead of sending it and being disconnected for it on every connection.
// A QoS 2 message that may have reached the server keeps its packet
// identifier out of use for the rest of the session: the server may still
// hold that identifier's exchange (MQTT-4.3.3-10).
func (e *Engine) dropTooLarge(m *Out, limit uint32) {
	size := e.wireSize(m)
	err := fmt.Errorf("%w: %d bytes, server maximum %d", ErrPacketTooLarge, size, limit)
	e.log.Log(slog.LevelWarn, "message too large for the server: failed and removed from the session",
		"seq", m.seq, "topic", e.pubOf(m).Topic, "bytes", size, "server_maximum", limit)
	if m.sent && m.qos == 2 && m.id != 0 {
		delete(e.byID, m.id)
		e.abandonedIDs = append(e.abandonedIDs, m.id)
		m.id = 0 // retire must not free it
	}
	e.retire(m, err)
}

// outboundAck runs the sender side of QoS 1 and 2 for a PUBACK, PUBREC or
// PUBCOMP.
func (e *Engine) outboundAck(cn *connState, a *packets.Ack) {
	m := e.byID[a.PacketID]
	switch a.Kind {
	case packets.PUBACK:
		if m == nil || m.qos != 1 || !m.onWire {
			e.log.Flood("PUBACK for unknown packet identifier", "id", a.PacketID)
			return
		}
		e.finishOut(m, ackErr(a)) // MQTT-4.4.0-2: an error code also ends it
	case packets.PUBREC:
		if m == nil || m.qos != 2 || !m.onWire {
			// Not ours: answer so the server can finish (§4.3.3).
			e.emit(action{kind: actAck, conn: cn, pkt: packets.PUBREL, id: a.PacketID,
				code: packets.PacketIdentifierNotFound})
			return
		}
		if a.ReasonCode.IsError() {
			e.finishOut(m, ackErr(a)) // MQTT-4.3.3-9 on the server's side
			return
		}
		if !m.pubrel {
			// The PUBLISH→PUBREL replacement is durable before the PUBREL
			// leaves, so a crash never resends the PUBLISH (MQTT-4.3.3-6).
			m.pubrel = true
			e.addOp(store.Put(e.pubrelRecord(e.recBuf(), m)))
			m.puts++
		}
		e.emitOut(action{kind: actAck, conn: cn, pkt: packets.PUBREL, id: m.id}, false) // MQTT-4.3.3-4
	case packets.PUBCOMP:
		if m == nil || !m.pubrel {
			e.log.Flood("PUBCOMP for unknown packet identifier", "id", a.PacketID)
			return
		}
		e.finishOut(m, nil)
	}
}

// pubrelRecord returns the record of m's PUBREL, encoded into buf: the
// packet identifier and the Ref, so that the message stays identifiable
// (Client.Pending).
func (e *Engine) pubrelRecord(buf []byte, m *Out) store.Record {
	e.recAck = packets.Ack{Kind: packets.PUBREL, PacketID: m.id}
	b, _ := packets.Append(buf, &e.recAck) // an Ack always encodes
	return store.Record{Seq: m.seq, Dir: store.Outbound, ID: m.id, Packet: AppendRef(b, m.ref())}
}

func ackErr(a *packets.Ack) error {
	if !a.ReasonCode.IsError() {
		return nil
	}
	return &AckError{Packet: a.Kind, Code: a.ReasonCode, Reason: a.Properties.ReasonString}
}

// PubCost is what a queued message counts against MaxQueuedBytes: its
// topic, payload and properties, and the structures around them.
func PubCost(p *packets.Publish) int {
	if p == nil {
		return 128 // a PUBREL: no payload
	}
	return 128 + ContentCost(p.Topic, p.Payload, &p.Properties)
}

// ContentCost estimates the memory a message's topic, payload and
// properties hold: what both bounds on held messages count
// (MaxQueuedBytes outbound, MaxInboundBytes inbound).
func ContentCost(topic string, payload []byte, pr *packets.Properties) int {
	n := len(topic) + len(payload) + len(pr.ResponseTopic) + len(pr.CorrelationData) +
		len(pr.ContentType) + 4*len(pr.SubscriptionIdentifier)
	for _, u := range pr.User {
		n += 32 + len(u.Key) + len(u.Value)
	}
	return n
}

func msgCost(m *Out) int {
	if m.raw != nil {
		return rawCost(m.raw, m.ref())
	}
	return PubCost(m.pub) + len(m.ref())
}

// rawCost is what a message kept as its stored PUBLISH, raw, counts
// against MaxQueuedBytes, loaded or still in the store.
func rawCost(raw []byte, ref string) int { return 128 + len(raw) + len(ref) }

// pubOf returns m's PUBLISH, decoding a loaded one on first use: a
// session resumed with a large backlog holds its records' bytes, not
// decoded packets, until the window reaches them. Nil for a loaded PUBREL.
func (e *Engine) pubOf(m *Out) *packets.Publish {
	if m.pub == nil && m.raw != nil {
		m.pub = decodeStored(m.raw)
		m.raw = nil
	}
	return m.pub
}

// decodeStored decodes a stored PUBLISH that ParseRecord accepted when it
// was loaded.
func decodeStored(b []byte) *packets.Publish {
	p, err := packets.Decode(b, 0)
	pub, ok := p.(*packets.Publish)
	if err != nil || !ok {
		// ParseRecord decoded these very bytes: unreachable. An empty
		// topic without an alias cannot be encoded, so nothing is sent
		// rather than something else.
		return &packets.Publish{QoS: 1}
	}
	pub.Dup, pub.PacketID = false, 0
	return pub
}

// track adds m to the session's outbound messages.
func (e *Engine) track(m *Out) {
	m.cost = uint32(msgCost(m))
	e.msgs.add(m)
	e.queuedBytes += int(m.cost)
}

// untrack removes m from the session's outbound messages and wakes
// publishers waiting for room in the queue.
func (e *Engine) untrack(m *Out) {
	if !m.tracked {
		return
	}
	e.msgs.remove(m)
	e.queuedBytes -= int(m.cost)
	e.effect(Effect{Kind: QueueRoom})
}

// QueueFull reports whether one more message p would exceed the queue's
// bounds (MaxQueued, MaxQueuedBytes). A queue holding nothing always takes
// one message, however large. A QoS 0 message counts only while it waits
// for a connection.
func (e *Engine) QueueFull(p *packets.Publish) bool {
	if p.QoS == 0 && e.conn != nil {
		return false
	}
	n, bytes := e.Queued()
	return n > 0 && (n >= e.cfg.MaxQueued || bytes+PubCost(p) > e.cfg.MaxQueuedBytes)
}

// Queued returns the messages and bytes the outbound queue holds, those
// still in the store (the tail of a paged load) included.
func (e *Engine) Queued() (n, bytes int) {
	return e.msgs.live + len(e.queued0) + e.scan.tailN, e.queuedBytes + e.scan.tailBytes
}

// PeakInflight returns the most QoS>0 PUBLISHes seen in flight at once.
func (e *Engine) PeakInflight() int { return e.peak }

// AliasOf returns the alias the live connection uses for topic (for
// tests).
func (e *Engine) AliasOf(topic string) (uint16, bool) {
	if e.conn == nil {
		return 0, false
	}
	a, ok := e.conn.aliasOut[topic]
	return a, ok
}

// Aliases returns how many outbound topic aliases the live connection
// uses (for tests).
func (e *Engine) Aliases() int {
	if e.conn == nil {
		return 0
	}
	return len(e.conn.aliasOut)
}

// OutSeq returns the sequence number of the outbound message holding
// packet identifier id (for the simulation).
func (e *Engine) OutSeq(id uint16) (uint64, bool) {
	if m := e.byID[id]; m != nil {
		return m.seq, true
	}
	return 0, false
}

// InFlight returns how many outbound messages hold a packet identifier.
func (e *Engine) InFlight() int {
	n := 0
	for _, m := range e.byID {
		if m.onWire {
			n++
		}
	}
	return n
}
