package client

import (
	"fmt"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// handlePacket handles one packet read from cn. A returned *protoError ends
// the connection with a DISCONNECT carrying its reason code.
func (c *Client) handlePacket(cn *conn, p packets.Packet) error {
	switch p := p.(type) {
	case *packets.Publish:
		c.holdInbound(cn)
		return c.handlePublish(cn, p)
	case *packets.Ack:
		if p.Kind == packets.PUBREL {
			c.holdInbound(cn)
		}
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
