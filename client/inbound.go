package client

import (
	"fmt"
	"sync"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// inboundMarker is the Packet of an inbound QoS 2 record: the packet
// identifier is in Record.ID, so the record needs no more than a version.
var inboundMarker = []byte{1}

// handlePacket handles one packet read from cn. A returned *protoError ends
// the connection with a DISCONNECT carrying its reason code.
func (c *Client) handlePacket(cn *conn, p packets.Packet) error {
	switch p := p.(type) {
	case *packets.Publish:
		return c.handlePublish(cn, p)
	case *packets.Ack:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.conn != cn {
			return nil
		}
		if p.Kind == packets.PUBREL {
			c.handlePubrel(cn, p)
			return nil
		}
		return c.handleOutboundAck(cn, p)
	case *packets.Suback:
		c.finishRequest(p.PacketID, packets.SUBACK, p.ReasonCodes, p.Properties.ReasonString)
	case *packets.Unsuback:
		c.finishRequest(p.PacketID, packets.UNSUBACK, p.ReasonCodes, p.Properties.ReasonString)
	case *packets.Pingresp:
	case *packets.Disconnect:
		if c.cfg.OnServerDisconnect != nil {
			c.cfg.OnServerDisconnect(p)
		}
		err := &ReasonError{Packet: packets.DISCONNECT, Code: p.ReasonCode, Reason: p.Properties.ReasonString}
		c.log.Warn("server disconnected", "reason", p.ReasonCode.String(), "reason_string", p.Properties.ReasonString)
		return err
	case *packets.Auth:
		return c.handleAuth(cn, p)
	default:
		return &protoError{code: packets.ProtocolError, msg: "unexpected " + typeName(p.Type())}
	}
	return nil
}

// handlePublish resolves the topic alias, enforces our Receive Maximum and
// runs the receiver side of QoS 2, then queues the message for delivery.
func (c *Client) handlePublish(cn *conn, p *packets.Publish) error {
	if a := p.Properties.TopicAlias; a != 0 || p.Topic == "" {
		// MQTT-3.3.2-10: aliases 1..our maximum are accepted.
		if a == 0 || int(a) >= len(cn.aliasIn) {
			return &protoError{code: packets.TopicAliasInvalid, msg: fmt.Sprintf("topic alias %d out of range", a)}
		}
		if p.Topic != "" {
			cn.aliasIn[a] = p.Topic
		} else if p.Topic = cn.aliasIn[a]; p.Topic == "" {
			return &protoError{code: packets.ProtocolError, msg: fmt.Sprintf("unknown topic alias %d", a)}
		}
	}
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Dup: p.Dup,
		Properties: p.Properties, PacketID: p.PacketID}
	m.Properties.TopicAlias = 0
	if p.QoS == 0 {
		c.deliv.push(m)
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != cn {
		return nil
	}
	id := p.PacketID
	switch cn.inState[id] {
	case inQoS1, inQoS2, inQoS2Ans:
		// A repeat while the application still holds it, or while the
		// PUBREC that answers it waits its turn: one answer is enough, and
		// nothing is queued per repeat, so a server cannot grow the queue.
		return nil
	case inQoS2Rec:
		if p.QoS == 2 {
			c.answerRecorded(cn, id)
			return nil
		}
		// A QoS 1 message reusing the identifier: the server broke the
		// QoS 2 flow; treat it as new.
		cn.inState[id] = inNone
		cn.inCount--
	}
	if cn.inCount >= int(c.recvMax) {
		// §3.3.4 and §4.9 from our side: the server exceeds the Receive
		// Maximum we announced.
		if c.cfg.StrictReceiveMaximum || cn.inCount >= 65535 {
			return &protoError{code: packets.ReceiveMaximumExceeded,
				msg: fmt.Sprintf("more than %d unacknowledged QoS>0 messages", c.recvMax)}
		}
		if !cn.overrunLogged {
			cn.overrunLogged = true
			c.log.Warn("server exceeds our Receive Maximum; accepting (see Config.StrictReceiveMaximum)",
				"receive_maximum", c.recvMax)
		}
	}
	cn.inCount++
	if p.QoS == 1 {
		cn.inState[id] = inQoS1
		m.c, m.cn = c, cn
		cn.inq = append(cn.inq, m)
		c.deliver(cn, m)
		return nil
	}
	if _, ok := c.inQoS2[id]; ok {
		// Recorded by an earlier connection or process.
		cn.inState[id] = inQoS2Rec
		c.answerRecorded(cn, id)
		return nil
	}
	cn.inState[id] = inQoS2
	if h := c.in2[id]; h != nil {
		// Still with the application since an earlier connection: do not
		// deliver it again; its acknowledgement answers this copy.
		s := &Message{QoS: 2, PacketID: id, c: c, cn: cn}
		h.shadow = s
		cn.inq = append(cn.inq, s)
		return nil
	}
	m.c, m.cn = c, cn
	cn.inq = append(cn.inq, m)
	c.deliver(cn, m)
	return nil
}

// answerRecorded answers a QoS 2 PUBLISH whose identifier is recorded with
// PUBREC and does not deliver it again (MQTT-4.3.3-10); the PUBREC waits
// behind the acknowledgements of messages that arrived before it
// (MQTT-4.6.0-3). mu held.
func (c *Client) answerRecorded(cn *conn, id uint16) {
	cn.inState[id] = inQoS2Ans
	cn.inq = append(cn.inq, &Message{QoS: 2, PacketID: id, c: c, cn: cn, acked: true, answer: true})
	c.drainAcks(cn)
}

// deliver hands an inbound QoS 1 or 2 message to the application, unless
// Config.CrashWindow delivered messages still wait for their
// acknowledgement to be durable and sent. Later messages then wait, however
// many the server sends: so no more than CrashWindow handled messages can
// be delivered again after a crash. A message never overtakes one held
// before it: once the connection has closed, held messages stay held (the
// server sends them again on the next connection), while the reader may
// still hand over packets it had buffered — and with room in the window
// those would otherwise be delivered ahead of them. mu held.
func (c *Client) deliver(cn *conn, m *Message) {
	if cn.pending >= c.window || len(cn.held) > 0 {
		cn.held = append(cn.held, m)
		cn.heldBytes += msgBytes(m)
		return
	}
	c.push(cn, m)
}

// push delivers m now. A QoS 2 message is with the application from here on
// (Client.in2), so that a redelivery on a later connection is not delivered
// again before it is acknowledged. mu held.
func (c *Client) push(cn *conn, m *Message) {
	cn.pending++
	m.counted = true
	if m.QoS == 2 {
		c.in2[m.PacketID] = m
	}
	c.deliv.push(m)
}

// inboundDone runs once the acknowledgement of a delivered message has gone
// out (after its record was durable, for QoS 2): held messages may follow.
// mu held.
func (c *Client) inboundDone(cn *conn) {
	cn.pending--
	for len(cn.held) > 0 && cn.pending < c.window && cn == c.conn && !cn.isClosed() {
		m := cn.held[0]
		cn.held[0] = nil
		cn.held = cn.held[1:]
		cn.heldBytes -= msgBytes(m)
		c.push(cn, m)
	}
}

// handlePubrel finishes an inbound QoS 2 message: the record's deletion is
// durable before PUBCOMP goes out, so that a crash never takes the next
// message with this identifier for a duplicate. mu held.
func (c *Client) handlePubrel(cn *conn, p *packets.Ack) {
	id := p.PacketID
	if st := cn.inState[id]; st == inQoS2Rec || st == inQoS2Ans {
		// With inQoS2Ans the server releases a message whose PUBREC still
		// waits in inq (a server that resends PUBLISH and PUBREL together
		// after a reconnection): that PUBREC is dropped when its turn
		// comes, and never records the message again.
		cn.inState[id] = inNone
		cn.inCount--
	}
	code := packets.Success
	if seq, ok := c.inQoS2[id]; ok {
		delete(c.inQoS2, id)
		c.addOp(store.Delete(seq))
	} else {
		code = packets.PacketIdentifierNotFound
	}
	c.emit(action{kind: aSendAck, cn: cn, pkt: packets.PUBCOMP, id: id, code: code}) // MQTT-4.3.3-11
}

// ack acknowledges m; acks leave in arrival order.
func (m *Message) ack() error {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.acked {
		return nil
	}
	cn := m.cn
	live := cn == c.conn && !cn.isClosed()
	if m.QoS == 2 {
		if c.in2[m.PacketID] != m {
			// Its session was discarded meanwhile: nothing to record.
			m.acked = true
			return ErrSessionLost
		}
		delete(c.in2, m.PacketID)
		// The message has been handled: record it now, whatever the order
		// of acknowledgements and whether or not its connection is still
		// up, so that the server's redelivery is answered with PUBREC and
		// not delivered again (MQTT-4.3.3-10), whichever connection brings
		// it. Only the PUBREC waits for its turn (MQTT-4.6.0-3).
		c.recordInbound(m.PacketID)
		if !live {
			m.acked = true
			if s := m.shadow; s != nil {
				s.acked = true
				c.drainAcks(s.cn)
			}
			return nil
		}
	}
	if !live {
		return ErrNotConnected
	}
	m.acked = true
	c.drainAcks(cn)
	return nil
}

// drainAcks sends the acknowledgements of the acknowledged messages at the
// head of cn's arrival queue: MQTT-4.6.0-2 and MQTT-4.6.0-3 want them in
// the order the messages arrived. mu held.
func (c *Client) drainAcks(cn *conn) {
	if cn != c.conn || cn.isClosed() {
		return
	}
	for len(cn.inq) > 0 && cn.inq[0].acked {
		h := cn.inq[0]
		cn.inq[0] = nil
		cn.inq = cn.inq[1:]
		c.sendInboundAck(cn, h)
	}
	if len(cn.inq) == 0 {
		cn.inq = nil
	}
}

// sendInboundAck sends the PUBACK, or persists the inbound QoS 2 record and
// then sends the PUBREC. mu held.
func (c *Client) sendInboundAck(cn *conn, m *Message) {
	id := m.PacketID
	if m.QoS == 1 {
		cn.inState[id] = inNone
		cn.inCount--
		c.emit(action{kind: aSendAck, cn: cn, pkt: packets.PUBACK, id: id, code: m.reason}) // MQTT-4.3.2-4
	} else if m.reason.IsError() {
		// Refused by the application: nothing recorded, and the
		// identifier is free for a new message (MQTT-4.3.3-9).
		cn.inState[id] = inNone
		cn.inCount--
		c.emit(action{kind: aSendAck, cn: cn, pkt: packets.PUBREC, id: id, code: m.reason})
	} else {
		if m.answer && cn.inState[id] != inQoS2Ans {
			return // its exchange ended before this answer's turn (handlePubrel)
		}
		c.recordInbound(id)
		cn.inState[id] = inQoS2Rec
		c.emit(action{kind: aSendAck, cn: cn, pkt: packets.PUBREC, id: id}) // MQTT-4.3.3-8
	}
	if m.counted {
		c.emit(action{kind: aInboundDone, cn: cn})
	}
}

// recordInbound queues the Put of the inbound QoS 2 record of id, unless
// it is recorded already. A PUBREC emitted after it waits for it. mu held.
func (c *Client) recordInbound(id uint16) {
	if _, ok := c.inQoS2[id]; ok {
		return
	}
	seq := c.nextSeq
	c.nextSeq++
	c.inQoS2[id] = seq
	c.addOp(store.Put(store.Record{Seq: seq, Dir: store.Inbound, ID: id, Packet: inboundMarker}))
}

// handleAuth runs a re-authentication the client started.
func (c *Client) handleAuth(cn *conn, p *packets.Auth) error {
	c.mu.Lock()
	done := cn.reauth
	c.mu.Unlock()
	a := c.cfg.Auth
	if done == nil || a == nil {
		return &protoError{code: packets.ProtocolError, msg: "AUTH without re-authentication in progress"}
	}
	finish := func(err error) {
		c.mu.Lock()
		if cn.reauth == done {
			cn.reauth = nil
			done <- err
		}
		c.mu.Unlock()
	}
	switch p.ReasonCode {
	case packets.Success:
		finish(a.Finish(p.Properties.AuthData))
	case packets.ContinueAuthentication:
		data, err := a.Continue(p.Properties.AuthData)
		if err != nil {
			finish(fmt.Errorf("client: authenticator: %w", err))
			return fmt.Errorf("client: re-authentication: %w", err)
		}
		cn.write(&packets.Auth{ReasonCode: packets.ContinueAuthentication,
			Properties: packets.Properties{AuthMethod: a.Method(), AuthData: data}})
	default:
		return &protoError{code: packets.ProtocolError, msg: "unexpected AUTH reason " + p.ReasonCode.String()}
	}
	return nil
}

// delivery runs OnMessage on its own goroutine, in arrival order, so that
// a slow handler never blocks the reader (keep alive and acks go on).
// Inbound QoS>0 messages are bounded by our Receive Maximum; QoS 0 ones by
// Config.MaxQueuedQoS0, beyond which they are dropped and logged.
type delivery struct {
	c      *Client
	mu     sync.Mutex
	q      []*Message
	n0     int           // QoS 0 messages in q
	bytes  int           // estimated memory of the messages in q
	room   chan struct{} // closed when a message leaves q; nil when nobody waits
	wake   chan struct{}
	quit   chan struct{}
	exited chan struct{}
	closed bool
}

func newDelivery(c *Client) *delivery {
	return &delivery{c: c, wake: make(chan struct{}, 1), quit: make(chan struct{}), exited: make(chan struct{})}
}

func (d *delivery) push(m *Message) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	if m.QoS == 0 {
		if d.n0 >= d.c.cfg.MaxQueuedQoS0 {
			d.mu.Unlock()
			d.c.flood.warn("inbound QoS 0 message dropped: delivery queue full", "topic", m.Topic)
			return
		}
		d.n0++
	}
	d.q = append(d.q, m)
	d.bytes += msgBytes(m)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// stop ends delivery and waits for the handler running, if any.
func (d *delivery) stop() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.q, d.bytes = nil, 0
	if d.room != nil {
		close(d.room)
		d.room = nil
	}
	d.mu.Unlock()
	close(d.quit)
	<-d.exited
}

func (d *delivery) run() {
	defer d.c.wg.Done()
	defer close(d.exited)
	for {
		select {
		case <-d.quit:
			return
		default:
		}
		d.mu.Lock()
		var m *Message
		if len(d.q) > 0 {
			m = d.q[0]
			d.q[0] = nil
			d.q = d.q[1:]
			if m.QoS == 0 {
				d.n0--
			}
			d.bytes -= msgBytes(m)
			if len(d.q) == 0 {
				d.q = nil
			}
			if d.room != nil {
				close(d.room)
				d.room = nil
			}
		}
		d.mu.Unlock()
		if m == nil {
			select {
			case <-d.wake:
				continue
			case <-d.quit:
				return
			}
		}
		if m.QoS == 1 && m.cn.isClosed() {
			// Its connection is gone: the server sends it again, so
			// delivering it now would only make a duplicate. (A QoS 2
			// message is delivered: its acknowledgement is kept in the
			// session and answers the redelivery.)
			continue
		}
		if d.c.cfg.OnMessageTx != nil {
			d.c.deliverTx(m)
			continue
		}
		if h := d.c.cfg.OnMessage; h != nil {
			h(m)
		}
		if m.cn != nil && (!d.c.cfg.ManualAck || d.c.cfg.OnMessage == nil) {
			_ = m.ack()
		}
	}
}

// waitRoom returns nil when the queue holds fewer than limit bytes, and
// otherwise a channel closed when a message next leaves it.
func (d *delivery) waitRoom(limit int) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.bytes < limit {
		return nil
	}
	if d.room == nil {
		d.room = make(chan struct{})
	}
	return d.room
}

// msgBytes estimates the memory an inbound message holds: its strings and
// byte slices, and the structures around them.
func msgBytes(m *Message) int { return 256 + contentCost(m.Topic, m.Payload, &m.Properties) }

// throttle pauses the reader of cn while the inbound messages held for the
// application exceed Config.MaxInboundBytes: the server then meets TCP's
// flow control instead of growing the client's memory.
func (c *Client) throttle(cn *conn) {
	for {
		c.mu.Lock()
		limit := c.cfg.MaxInboundBytes - cn.heldBytes
		c.mu.Unlock()
		room := c.deliv.waitRoom(max(limit, 0))
		if room == nil {
			return
		}
		cn.paused.Store(true)
		select {
		case <-room:
			cn.paused.Store(false)
		case <-cn.done:
			return
		}
	}
}

// deliverTx runs Config.OnMessageTx for m inside the store transaction that
// also writes m's inbound record (QoS 2), then acknowledges it; or refuses
// it when the handler fails. Runs on the delivery goroutine.
func (c *Client) deliverTx(m *Message) {
	tr := c.st.(store.Transactor)
	id := m.PacketID
	var ops []store.Op
	var seq uint64
	c.mu.Lock()
	key := c.key
	if m.QoS == 2 {
		if c.in2[id] != m {
			c.mu.Unlock()
			return // its session was discarded meanwhile
		}
		seq = c.nextSeq
		c.nextSeq++
		ops = []store.Op{store.Put(store.Record{Seq: seq, Dir: store.Inbound, ID: id, Packet: inboundMarker})}
	}
	c.mu.Unlock()
	var appErr error
	err := tr.ApplyTx(c.storeCtx, key, func(tx any) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("client: OnMessageTx panicked: %v", r)
				appErr = err
			}
		}()
		if err := c.cfg.OnMessageTx(m, tx); err != nil {
			appErr = err
			return err
		}
		return nil
	}, ops...)
	switch {
	case err == nil:
		if m.QoS == 2 {
			c.mu.Lock()
			if c.in2[id] == m && c.key == key {
				c.inQoS2[id] = seq // durable with the application's writes
			} else if c.key == key {
				c.addOp(store.Delete(seq)) // the session was discarded meanwhile
			}
			c.mu.Unlock()
		}
		if m.cn != nil {
			_ = m.ack()
		}
	case appErr != nil:
		c.log.Warn("OnMessageTx failed: message refused with 0x80", "topic", m.Topic, "err", appErr)
		if m.cn != nil {
			m.refuse(packets.UnspecifiedError)
		}
	default:
		err = fmt.Errorf("client: store: transactional handler: %w", err)
		c.log.Error("store write failed", "key", key.String(), "err", err)
		c.mu.Lock()
		if m.QoS == 2 && c.in2[id] == m {
			delete(c.in2, id) // not recorded: its redelivery is a new delivery
		}
		cn := m.cn
		c.mu.Unlock()
		if cn != nil {
			cn.fail(err, 0, false) // the server redelivers on the next connection
		}
	}
}

// refuse acknowledges m with an error reason code: the server does not
// send it again, and nothing is recorded.
func (m *Message) refuse(code packets.ReasonCode) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.acked {
		return
	}
	if m.QoS == 2 && c.in2[m.PacketID] == m {
		delete(c.in2, m.PacketID)
	}
	m.acked, m.reason = true, code
	c.drainAcks(m.cn)
	if s := m.shadow; s != nil && !s.acked {
		s.acked, s.reason = true, code
		c.drainAcks(s.cn)
	}
}
