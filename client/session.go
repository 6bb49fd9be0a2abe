package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// maxPacketID is the highest packet identifier the client uses. Tests lower
// it to exercise identifier exhaustion without 65,535 messages in flight.
var maxPacketID uint16 = 65535

// outMsg is one outbound QoS 1 or 2 message of the session: queued, in
// flight, or waiting for PUBCOMP. Guarded by Client.mu.
type outMsg struct {
	seq       uint64
	id        uint16           // packet identifier, 0 while never assigned
	qos       byte             // 1 or 2
	pubrel    bool             // PUBREC received: the stored record is the PUBREL
	stored    bool             // a Put of the record has been queued
	sent      bool             // went on the wire before: resend with DUP=1
	onWire    bool             // counted in flight on the current connection
	done      bool             // finished or dropped; skip in queues
	putQueued bool             // its first Put is in a batch not yet applied
	size      uint32           // wire size with a packet identifier and no alias; 0 until needed
	wcn       *conn            // the connection it was last written to
	wgen      uint64           // the write buffer generation it went into on wcn
	sentPrev  bool             // sent, as it was before that write
	pub       *packets.Publish // full topic, never an alias; nil for loaded PUBRELs
	ref       string           // Message.Ref, kept in the record
	tok       *Token
}

// idSet tracks the packet identifiers in use by the session: stored
// outbound records, and SUBSCRIBE/UNSUBSCRIBE requests in flight.
type idSet struct {
	bits [1024]uint64
	n    int
	next uint16
}

func (s *idSet) has(id uint16) bool { return s.bits[id>>6]&(1<<(id&63)) != 0 }

func (s *idSet) set(id uint16) {
	if !s.has(id) {
		s.bits[id>>6] |= 1 << (id & 63)
		s.n++
	}
}

func (s *idSet) clear(id uint16) {
	if s.has(id) {
		s.bits[id>>6] &^= 1 << (id & 63)
		s.n--
	}
}

// alloc returns a free identifier, going round the space so that a freed
// identifier is reused as late as possible.
func (s *idSet) alloc() (uint16, bool) {
	if s.n >= int(maxPacketID) {
		return 0, false
	}
	for {
		s.next++
		if s.next == 0 || s.next > maxPacketID {
			s.next = 1
		}
		if !s.has(s.next) {
			s.set(s.next)
			return s.next, true
		}
	}
}

func (s *idSet) reset() { *s = idSet{next: s.next} }

// Action kinds: what the committer does, in order, once the store changes
// queued before an action are durable.
const (
	aSendPublish = iota + 1 // send m (QoS 1/2) or pub (QoS 0) on cn
	aSendAck                // send an Ack of kind/id/code on cn
	aFreeID                 // packet identifier id may be reused
	aDone                   // complete tok with err
	aSendPacket             // send pkt on cn
	aInboundDone            // a delivered message's acknowledgement is out on cn
)

type action struct {
	kind uint8
	p    packets.Packet
	pkt  packets.Type
	id   uint16
	code packets.ReasonCode
	cn   *conn
	m    *outMsg
	pub  *packets.Publish
	tok  *Token
	err  error
	// after is how many of its batch's operations precede the action: it
	// runs once they are durable.
	after int
}

// maxBatchOps bounds the operations of one group commit, so that a burst
// (a backlog queued while disconnected, thousands of publishers at once)
// becomes several Applies of bounded size rather than one that holds the
// store — a Redis server runs a batch as one script and serves nothing
// else meanwhile — for as long as the whole burst takes.
const maxBatchOps = 1024

// batch is the group commit being accumulated: store operations and the
// actions that wait for them.
type batch struct {
	ops  []store.Op
	acts []action
	msgs []*outMsg // messages whose first Put is in ops, to fail if Apply fails
}

func (b *batch) empty() bool { return len(b.ops) == 0 && len(b.acts) == 0 }

// split keeps the first k operations in b, with the actions that wait for
// no more than them and the messages whose first Put is among them, and
// returns the rest as a batch of its own.
func (b *batch) split(k int) batch {
	var rest batch
	rest.ops = append(rest.ops, b.ops[k:]...)
	clear(b.ops[k:])
	b.ops = b.ops[:k]
	n := 0
	for _, a := range b.acts {
		if a.after <= k {
			b.acts[n] = a
			n++
		} else {
			a.after -= k
			rest.acts = append(rest.acts, a)
		}
	}
	clear(b.acts[n:])
	b.acts = b.acts[:n]
	here := make(map[uint64]bool, k)
	for _, op := range b.ops {
		if op.Kind == store.OpPut {
			here[op.Record.Seq] = true
		}
	}
	n = 0
	for _, m := range b.msgs {
		if here[m.seq] {
			b.msgs[n] = m
			n++
		} else {
			rest.msgs = append(rest.msgs, m)
		}
	}
	clear(b.msgs[n:])
	b.msgs = b.msgs[:n]
	return rest
}

func (b *batch) reset() {
	clear(b.ops)
	clear(b.acts)
	clear(b.msgs)
	b.ops, b.acts, b.msgs = b.ops[:0], b.acts[:0], b.msgs[:0]
}

// addOp queues a store operation for the next group commit. mu held.
func (c *Client) addOp(op store.Op) {
	c.cur.ops = append(c.cur.ops, op)
	c.kickCommitter()
}

// emit runs a at once when nothing waits for the store, and otherwise after
// every store change queued before it is durable, so that no packet ever
// overtakes the store write it depends on, nor a packet queued before it.
// mu held.
func (c *Client) emit(a action) {
	if c.committing || !c.cur.empty() {
		a.after = len(c.cur.ops)
		c.cur.acts = append(c.cur.acts, a)
		c.kickCommitter()
		return
	}
	c.runAction(&a)
}

func (c *Client) kickCommitter() {
	select {
	case c.commitKick <- struct{}{}:
	default:
	}
}

// committer is the single goroutine that writes the session to the store:
// it takes every operation queued so far, applies them as one batch, and
// then runs the actions that waited for that batch, in order. After a
// failed Apply it retries the batch's remaining operations with backoff.
func (c *Client) committer() {
	defer c.wg.Done()
	var spare batch
	var retry <-chan time.Time
	delay := 50 * time.Millisecond
	for {
		select {
		case <-c.commitKick:
		case <-retry:
		case <-c.commitStop:
			return
		}
		failed := false
		c.mu.Lock()
		for !c.cur.empty() {
			b := c.cur
			c.cur, spare = spare, batch{}
			if len(b.ops) > maxBatchOps {
				c.cur = b.split(maxBatchOps) // next, before anything queued later
			}
			c.committing = true
			key := c.key
			c.mu.Unlock()

			var err error
			if len(b.ops) > 0 {
				err = c.st.Apply(c.storeCtx, key, b.ops...)
			}

			c.mu.Lock()
			if err != nil {
				c.commitFailed(&b, err)
				failed = true
			} else {
				c.recycle(b.ops)
				for i := range b.msgs {
					b.msgs[i].stored = true
					b.msgs[i].putQueued = false
					b.msgs[i].tok.markStored()
				}
				for i := range b.acts {
					c.runAction(&b.acts[i])
				}
			}
			b.reset()
			spare = b
			if failed {
				break
			}
		}
		c.committing = false
		c.commitFailing = failed
		c.idleCond.Broadcast()
		c.mu.Unlock()
		if failed {
			retry = time.After(delay)
			delay = min(delay*2, 2*time.Second)
		} else {
			retry, delay = nil, 50*time.Millisecond
		}
	}
}

// commitFailed handles a failed Apply. Messages whose first record was in
// the batch fail with the error, and were never sent. The batch may still
// have been applied (a store whose reply was lost, such as Redis), so the
// retry starts by deleting those records, and their packet identifiers are
// freed only once that deletion is durable: a later connection or Client
// never sends a message whose Publish failed, and no identifier is held by
// two records. The batch's other operations (acknowledgement state,
// deletions, meta) and its actions go back to the front of the queue, to be
// retried: the in-memory session stays the truth and the store catches up.
// The connection is dropped, since packets that waited for the batch were
// not sent; the server redelivers and the next connection resends. mu held.
func (c *Client) commitFailed(b *batch, err error) {
	err = fmt.Errorf("client: store: %w", err)
	c.log.Error("store write failed", "key", c.key.String(), "err", err)
	failed := map[uint64]bool{}
	var undo []store.Op
	var freeIDs []action
	for _, m := range b.msgs {
		m.putQueued = false
		if m.done {
			continue
		}
		failed[m.seq] = true
		m.done = true
		c.untrack(m)
		undo = append(undo, store.Delete(m.seq))
		if m.id != 0 {
			delete(c.byID, m.id)
			freeIDs = append(freeIDs, action{kind: aFreeID, id: m.id})
		}
		m.tok.complete(err)
	}
	ops := make([]store.Op, 0, len(undo)+len(b.ops)+len(c.cur.ops))
	ops = append(ops, undo...)
	for _, op := range b.ops {
		if !failed[op.Record.Seq] {
			ops = append(ops, op)
		}
	}
	for _, op := range c.cur.ops {
		if !failed[op.Record.Seq] {
			ops = append(ops, op)
		}
	}
	c.cur.ops = ops
	acts := make([]action, 0, len(b.acts)+len(freeIDs)+len(c.cur.acts))
	acts = append(append(append(acts, b.acts...), freeIDs...), c.cur.acts...)
	for i := range acts {
		acts[i].after = len(ops) // after the whole retry: the order is rebuilt
	}
	c.cur.acts = acts
	if errors.Is(err, store.ErrSessionTaken) {
		c.setFatal(ErrSessionTaken)
	}
	if c.conn != nil {
		c.conn.fail(err, 0, false)
	}
}

// runAction performs one action. mu held.
func (c *Client) runAction(a *action) {
	switch a.kind {
	case aSendPublish:
		if a.cn != c.conn {
			return // that connection is gone; the next one resends
		}
		if a.m != nil {
			if a.m.done || a.cn.isClosed() {
				// Not written: the next connection sends it, and with DUP 0
				// if it never went out (MQTT-4.3.2-2, MQTT-4.3.3-2).
				return
			}
			p := &a.cn.scratch
			*p = *a.m.pub
			p.PacketID = a.m.id
			p.Dup = a.m.sent
			if gen, ok := c.writePublish(a.cn, p); ok {
				a.m.sentPrev, a.m.sent = a.m.sent, true
				a.m.wcn, a.m.wgen = a.cn, gen
			}
			return
		}
		if a.cn.bufferFull() {
			a.tok.complete(ErrBufferFull)
			return
		}
		p := &a.cn.scratch
		*p = *a.pub
		if a.cn.maxOut != 0 {
			if n, err := packets.Size(p); err == nil && uint32(n) > a.cn.maxOut { // MQTT-3.2.2-15
				a.tok.complete(fmt.Errorf("%w: %d bytes, server maximum %d", ErrPacketTooLarge, n, a.cn.maxOut))
				return
			}
		}
		c.writePublish(a.cn, p)
		a.tok.complete(nil)
	case aSendAck:
		if a.cn != c.conn {
			return
		}
		a.cn.scratchAck = packets.Ack{Kind: a.pkt, PacketID: a.id, ReasonCode: a.code}
		a.cn.write(&a.cn.scratchAck)
	case aSendPacket:
		if a.cn == c.conn {
			a.cn.write(a.p)
		}
	case aInboundDone:
		c.inboundDone(a.cn)
	case aFreeID:
		c.freeID(a.id)
	case aDone:
		a.tok.complete(a.err)
	}
}

// writePublish sends p, replacing its topic by an alias when outbound
// aliases are on and the alias keeps the packet within the server's
// Maximum Packet Size (MQTT-3.2.2-15): the Topic Alias property costs three
// bytes, more than a short topic saves. It reports the write buffer
// generation p went into, and false when the connection no longer takes
// packets. mu held.
func (c *Client) writePublish(cn *conn, p *packets.Publish) (uint64, bool) {
	if c.cfg.OutboundTopicAliases && cn.aliasMax > 0 {
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
	return cn.write(p)
}

// freeID makes id reusable, wakes requests waiting for an identifier and
// lets queued messages take it. mu held.
func (c *Client) freeID(id uint16) {
	c.ids.clear(id)
	if c.idFreed != nil {
		close(c.idFreed)
		c.idFreed = nil
	}
	c.pump()
}

// pump sends queued messages in Seq order while the server's Receive
// Maximum and the packet identifiers allow (MQTT-4.9.0-1, MQTT-4.9.0-2).
// A PUBREL needs no quota (MQTT-4.9.0-3) but keeps its place in the order,
// and counts as in flight until its PUBCOMP. mu held.
func (c *Client) pump() {
	cn := c.conn
	if cn == nil || !cn.ready {
		return
	}
	for c.waitHead < len(c.waiting) {
		m := c.waiting[c.waitHead]
		if m.done || m.onWire {
			c.popWaiting()
			continue
		}
		if m.pubrel {
			m.onWire = true
			c.quota--
			c.emit(action{kind: aSendAck, cn: cn, pkt: packets.PUBREL, id: m.id})
			c.popWaiting()
			continue
		}
		if cn.maxOut != 0 && c.wireSize(m) > cn.maxOut {
			c.popWaiting()
			c.dropTooLarge(m, cn.maxOut)
			continue
		}
		if c.quota <= 0 {
			return
		}
		if m.id == 0 {
			id, ok := c.ids.alloc()
			if !ok {
				return // MQTT-2.2.1-3: wait for a free identifier, never reuse one
			}
			m.id = id
			c.byID[id] = m
			if !c.putRecord(m) {
				c.popWaiting()
				continue
			}
		}
		c.quota--
		c.maxInflight = max(c.maxInflight, int(c.lim.receiveMax)-c.quota)
		m.onWire = true
		c.emit(action{kind: aSendPublish, cn: cn, m: m})
		c.popWaiting()
	}
}

func (c *Client) popWaiting() {
	c.waiting[c.waitHead] = nil
	c.waitHead++
	if c.waitHead == len(c.waiting) {
		c.waiting, c.waitHead = c.waiting[:0], 0
	} else if c.waitHead > 1024 && c.waitHead*2 > len(c.waiting) {
		n := copy(c.waiting, c.waiting[c.waitHead:])
		clear(c.waiting[n:])
		c.waiting, c.waitHead = c.waiting[:n], 0
	}
}

// recycle keeps the record buffers of an applied batch for later records:
// a store never retains the caller's slices once Apply has returned, and
// the client keeps no reference to them. mu held.
func (c *Client) recycle(ops []store.Op) {
	for i := range ops {
		r := &ops[i].Record
		if ops[i].Kind == store.OpPut && r.Dir == store.Outbound && cap(r.Packet) <= 4096 && len(c.recBufs) < 4096 {
			c.recBufs = append(c.recBufs, r.Packet[:0])
		}
	}
}

// putRecord queues the Put of m's PUBLISH record, with its packet
// identifier (a placeholder in the packet while Record.ID is 0, since a
// QoS>0 PUBLISH cannot be encoded without one). A message that cannot be
// encoded is failed rather than ever sent unstored; putRecord then reports
// false. mu held.
func (c *Client) putRecord(m *outMsg) bool {
	p := &c.recPub // a copy in a field: one on the stack would escape into Append
	*p = *m.pub
	p.Dup = false
	p.PacketID = m.id
	if p.PacketID == 0 {
		p.PacketID = 1
	}
	var buf []byte
	if n := len(c.recBufs); n > 0 {
		buf, c.recBufs = c.recBufs[n-1], c.recBufs[:n-1]
	}
	b, err := packets.Append(buf, p)
	*p = packets.Publish{} // keep no reference to the message's payload
	b = appendRef(b, m.ref)
	if err != nil {
		// Validated at Publish, so this is a bug; fail the message, never
		// panic and never send it without its record.
		c.log.Error("encode stored publish", "seq", m.seq, "err", err)
		m.done = true
		c.untrack(m)
		c.addOp(store.Delete(m.seq)) // an earlier record of it, if any
		if m.id != 0 {
			delete(c.byID, m.id)
			c.emit(action{kind: aFreeID, id: m.id}) // once that deletion is durable
		}
		m.tok.complete(fmt.Errorf("client: encode message for the store: %w", err))
		return false
	}
	c.addOp(store.Put(store.Record{Seq: m.seq, Dir: store.Outbound, ID: m.id, Packet: b}))
	if !m.stored && !m.putQueued {
		m.putQueued = true
		c.cur.msgs = append(c.cur.msgs, m)
	}
	return true
}

// finishOut ends the exchange of m and lets the next message take the
// quota it gave back. mu held.
func (c *Client) finishOut(m *outMsg, err error) {
	c.retire(m, err)
	c.pump()
}

// retire ends m, whatever ended it: its record is deleted (lazily, in the
// next batch), its packet identifier freed once that deletion is durable,
// its quota given back and its token completed. mu held.
func (c *Client) retire(m *outMsg, err error) {
	m.done = true
	c.untrack(m)
	if m.onWire {
		m.onWire = false
		if c.quota < int(c.lim.receiveMax) {
			c.quota++
		}
	}
	c.addOp(store.Delete(m.seq))
	if m.id != 0 {
		delete(c.byID, m.id)
		c.emit(action{kind: aFreeID, id: m.id})
	}
	m.tok.complete(err)
}

// wireSize returns the size of m's PUBLISH on the wire without an alias.
// mu held.
func (c *Client) wireSize(m *outMsg) uint32 {
	if m.size == 0 && m.pub != nil {
		p := &c.recPub
		*p = *m.pub
		p.PacketID = 1
		n, err := packets.Size(p)
		*p = packets.Publish{}
		if err != nil {
			n = 1<<32 - 1 // unencodable: larger than any limit
		}
		m.size = uint32(min(n, 1<<32-1))
	}
	return m.size
}

// dropTooLarge fails a message that this server's Maximum Packet Size will
// never let through (MQTT-3.2.2-15), once, and removes it from the session
// instead of sending it and being disconnected for it on every connection.
// A QoS 2 message that may have reached the server keeps its packet
// identifier out of use for the rest of the session: the server may still
// hold that identifier's exchange (MQTT-4.3.3-10). mu held.
func (c *Client) dropTooLarge(m *outMsg, limit uint32) {
	err := fmt.Errorf("%w: %d bytes, server maximum %d", ErrPacketTooLarge, c.wireSize(m), limit)
	c.log.Warn("message too large for the server: failed and removed from the session",
		"seq", m.seq, "topic", m.pub.Topic, "bytes", c.wireSize(m), "server_maximum", limit)
	if m.sent && m.qos == 2 && m.id != 0 {
		delete(c.byID, m.id)
		c.abandonedIDs = append(c.abandonedIDs, m.id)
		m.id = 0 // retire must not free it
	}
	c.retire(m, err)
}

// handleOutboundAck runs the sender side of QoS 1 and 2 for a PUBACK,
// PUBREC or PUBCOMP. mu held.
func (c *Client) handleOutboundAck(cn *conn, a *packets.Ack) error {
	m := c.byID[a.PacketID]
	switch a.Kind {
	case packets.PUBACK:
		if m == nil || m.qos != 1 || !m.onWire {
			c.flood.warn("PUBACK for unknown packet identifier", "id", a.PacketID)
			return nil
		}
		c.finishOut(m, ackErr(a)) // MQTT-4.4.0-2: an error code also ends it
	case packets.PUBREC:
		if m == nil || m.qos != 2 || !m.onWire {
			// Not ours: answer so the server can finish (§4.3.3).
			c.emit(action{kind: aSendAck, cn: cn, pkt: packets.PUBREL, id: a.PacketID,
				code: packets.PacketIdentifierNotFound})
			return nil
		}
		if a.ReasonCode.IsError() {
			c.finishOut(m, ackErr(a)) // MQTT-4.3.3-9 on the server's side
			return nil
		}
		if !m.pubrel {
			// The PUBLISH→PUBREL replacement is durable before the PUBREL
			// leaves, so a crash never resends the PUBLISH (MQTT-4.3.3-6).
			m.pubrel = true
			c.recAck = packets.Ack{Kind: packets.PUBREL, PacketID: m.id}
			var buf []byte
			if n := len(c.recBufs); n > 0 {
				buf, c.recBufs = c.recBufs[n-1], c.recBufs[:n-1]
			}
			b, _ := packets.Append(buf, &c.recAck)
			b = appendRef(b, m.ref) // the message stays identifiable (Client.Pending)
			c.addOp(store.Put(store.Record{Seq: m.seq, Dir: store.Outbound, ID: m.id, Packet: b}))
		}
		c.emit(action{kind: aSendAck, cn: cn, pkt: packets.PUBREL, id: m.id}) // MQTT-4.3.3-4
	case packets.PUBCOMP:
		if m == nil || !m.pubrel {
			c.flood.warn("PUBCOMP for unknown packet identifier", "id", a.PacketID)
			return nil
		}
		c.finishOut(m, nil)
	}
	return nil
}

func ackErr(a *packets.Ack) error {
	if !a.ReasonCode.IsError() {
		return nil
	}
	return &ReasonError{Packet: a.Kind, Code: a.ReasonCode, Reason: a.Properties.ReasonString}
}

// waitIdle waits until the committer has nothing queued or in progress, or
// is failing to write (the store is down). mu held; it is released while
// waiting.
func (c *Client) waitIdle() {
	for (c.committing || !c.cur.empty()) && !c.commitFailing {
		c.kickCommitter()
		c.idleCond.Wait()
	}
}

// loadFirst loads the session of the first server before anything is
// published: once per Client, not on the hot path. mu held.
func (c *Client) loadFirst() error {
	c.waitIdle()
	if c.loaded {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.storeCtx, c.cfg.ConnectTimeout)
	defer cancel()
	return c.loadSession(ctx, c.key)
}

// sortedMsgs returns the session's outbound messages in Seq order. mu held.
func (c *Client) sortedMsgs() []*outMsg {
	ms := make([]*outMsg, 0, len(c.msgs))
	for _, m := range c.msgs {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *outMsg) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	return ms
}

// discardSession drops the session state as MQTT-3.1.2-4 and MQTT-3.2.2-5
// ask: messages in flight are lost (or queued again as new messages when
// RepublishLost is set), PUBRELs are complete (the server had the message),
// inbound QoS 2 records go. Messages never sent are kept: they are not part
// of the MQTT session. Returns the lost messages. mu held.
func (c *Client) discardSession() []*Message {
	var lost []*Message
	for _, id := range c.abandonedIDs {
		c.ids.clear(id)
	}
	c.abandonedIDs = nil
	for _, m := range c.sortedMsgs() {
		if m.id == 0 {
			continue
		}
		c.ids.clear(m.id)
		delete(c.byID, m.id)
		if !m.sent && !m.pubrel {
			// It took an identifier but never reached the network: not
			// part of the lost session. Queued again, identifier-less.
			m.id, m.onWire = 0, false
			c.putRecord(m)
			continue
		}
		if m.pubrel {
			m.done = true
			c.untrack(m)
			c.addOp(store.Delete(m.seq))
			m.tok.complete(nil)
			continue
		}
		if m.pub != nil {
			lost = append(lost, &Message{Ref: m.ref, Topic: m.pub.Topic, Payload: m.pub.Payload, QoS: m.pub.QoS,
				Retain: m.pub.Retain, Properties: m.pub.Properties})
		}
		if c.cfg.RepublishLost && m.pub != nil {
			m.id, m.sent, m.onWire = 0, false, false
			c.putRecord(m)
			continue
		}
		m.done = true
		c.untrack(m)
		c.addOp(store.Delete(m.seq))
		m.tok.complete(ErrSessionLost)
	}
	for id, seq := range c.inQoS2 {
		c.addOp(store.Delete(seq))
		delete(c.inQoS2, id)
	}
	clear(c.in2) // their acks find themselves orphaned and record nothing
	return lost
}

// putMeta queues the Put of the meta record with the time now. mu held.
func (c *Client) putMeta(now time.Time) {
	c.meta.lastConnected = now
	c.haveMeta = true
	c.metaWritten = now
	c.addOp(store.Put(store.Record{Seq: store.MetaSeq, Dir: store.Meta, Packet: c.meta.encode()}))
}
