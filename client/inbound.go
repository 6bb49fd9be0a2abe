package client

import (
	"fmt"
	"sync"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// handlePacket handles one packet read from cn. A returned *protoError ends
// the connection with a DISCONNECT carrying its reason code.
func (c *Client) handlePacket(cn *conn, p packets.Packet) error {
	switch p := p.(type) {
	case *packets.Publish:
		return c.handlePublish(cn, p)
	case *packets.Ack:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.conn == cn {
			c.eng.Received(p)
			c.flush()
		}
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
		return &protoError{Code: packets.ProtocolError, Msg: "unexpected " + engine.TypeName(p.Type())}
	}
	return nil
}

// handlePublish hands a PUBLISH to the engine, which resolves its topic
// alias, enforces our Receive Maximum and runs the receiver side of QoS 2;
// a QoS 0 message goes straight to delivery.
func (c *Client) handlePublish(cn *conn, p *packets.Publish) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != cn {
		return nil
	}
	if err := c.eng.Resolve(p); err != nil {
		return err
	}
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Dup: p.Dup,
		Properties: p.Properties, PacketID: p.PacketID}
	if p.QoS == 0 {
		c.deliv.push(m)
		return nil
	}
	m.c, m.cn = c, cn
	m.in = engine.Inbound{App: m, QoS: p.QoS, ID: p.PacketID, Dup: p.Dup, Cost: msgBytes(m)}
	err := c.eng.Arrived(&m.in)
	c.flush()
	return err
}

// ack acknowledges m; acks leave in arrival order.
func (m *Message) ack() error {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.eng.Ack(&m.in)
	c.flush()
	return err
}

// handleAuth runs a re-authentication the client started.
func (c *Client) handleAuth(cn *conn, p *packets.Auth) error {
	c.mu.Lock()
	done := cn.reauth
	c.mu.Unlock()
	a := c.cfg.Auth
	if done == nil || a == nil {
		return &protoError{Code: packets.ProtocolError, Msg: "AUTH without re-authentication in progress"}
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
		return &protoError{Code: packets.ProtocolError, Msg: "unexpected AUTH reason " + p.ReasonCode.String()}
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
func msgBytes(m *Message) int { return 256 + engine.ContentCost(m.Topic, m.Payload, &m.Properties) }

// throttle pauses the reader of cn while the inbound messages held for the
// application exceed Config.MaxInboundBytes: the server then meets TCP's
// flow control instead of growing the client's memory.
func (c *Client) throttle(cn *conn) {
	for {
		c.mu.Lock()
		limit := c.cfg.MaxInboundBytes - c.eng.HeldBytes()
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
	var ops []store.Op
	c.mu.Lock()
	key := c.key
	seq, ok := c.eng.TxBegin(&m.in)
	c.mu.Unlock()
	if !ok {
		return // its session was discarded meanwhile
	}
	if m.QoS == 2 {
		ops = []store.Op{store.Put(engine.InboundRecord(seq, m.PacketID))}
	}
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
		c.mu.Lock()
		if c.key == key {
			c.eng.TxCommitted(&m.in, seq)
			c.flush()
		}
		c.mu.Unlock()
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
		c.eng.TxFailed(&m.in)
		c.mu.Unlock()
		if m.cn != nil {
			m.cn.fail(err, 0, false) // the server redelivers on the next connection
		}
	}
}

// refuse acknowledges m with an error reason code: the server does not
// send it again, and nothing is recorded.
func (m *Message) refuse(code packets.ReasonCode) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.eng.Refuse(&m.in, code)
	c.flush()
}
