package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
)

// Publish publishes m and waits until the exchange completes: PUBACK for
// QoS 1, PUBCOMP for QoS 2; for QoS 0, until the packet is queued on the
// connection (its write then coalesces with others). A QoS 2 message is
// persisted in the store before it is sent, a QoS 1 message while it is
// sent (the server keeps nothing of a QoS 1 exchange, so only this process
// needs the record); once persisted or on the wire it completes whatever
// happens to ctx, which only bounds the wait:
// when ctx ends first, Publish returns ctx's error and the message is
// still delivered (by a later connection or a later Client on the same
// store, if need be). Publishing while disconnected stores the message and
// sends it, in order, on reconnection.
//
// A negative acknowledgement is returned as a *ReasonError.
//
// A QoS 0 message that finds the write buffer full (Config.MaxWriteBuffer)
// waits for room, within ctx; so does a message that finds the queue full
// (Config.MaxQueued, MaxQueuedBytes) unless Config.FailWhenQueueFull.
func (c *Client) Publish(ctx context.Context, m *Message) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := c.publish(ctx, m).Wait(ctx)
		if !errors.Is(err, ErrBufferFull) {
			return err
		}
		c.mu.Lock()
		cn := c.conn
		c.mu.Unlock()
		if cn == nil {
			return err // the offline queue is full: nothing will drain it soon
		}
		select {
		case <-cn.room():
		case <-cn.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// PublishAsync publishes m as Publish does, without waiting for the
// exchange: the Token tells when it has completed, and when the message is
// durable in the store (Token.Stored). Messages are sent in the order of
// the PublishAsync calls, pipelined up to the server's Receive Maximum. m
// is not retained: it may be reused once PublishAsync returns, but its
// Payload must not be changed until the Token is done.
//
// When the queue of unfinished messages is full (Config.MaxQueued,
// MaxQueuedBytes) PublishAsync waits for room, or fails the Token with
// ErrQueueFull under Config.FailWhenQueueFull; a QoS 0 message that finds
// the write buffer full fails with ErrBufferFull.
func (c *Client) PublishAsync(m *Message) *Token {
	return c.publish(context.Background(), m)
}

// PublishStored publishes m as PublishAsync does and waits, within ctx,
// until the message is durable in the store, or acknowledged by the server
// (a QoS 1 PUBACK may come before the record is durable, see Publish), and
// returns nil; or returns the publish's error if it failed first. From
// then on the library delivers it whatever happens to the process, so an
// application may mark its own copy (an outbox row) as handed over. It
// returns the Token, which completes when the exchange does. A QoS 0 message is never stored:
// PublishStored then waits for it to be queued on the connection. When ctx
// ends first, the message may still be stored and sent; the returned Token
// tells.
func (c *Client) PublishStored(ctx context.Context, m *Message) (*Token, error) {
	t := c.publish(ctx, m)
	return t, t.WaitStored(ctx)
}

// publishAlloc is what one publish needs, allocated at once: its token,
// its packet and, for QoS 1 and 2, its place in the session. They live as
// long as the longest-lived of them (usually the caller's Token).
type publishAlloc struct {
	tok Token
	pub packets.Publish
	om  engine.Msg
}

// publish is PublishAsync, waiting within ctx for room in a full queue.
func (c *Client) publish(ctx context.Context, m *Message) *Token {
	a := new(publishAlloc)
	t, p := &a.tok, &a.pub
	if err := c.newPublish(m, p); err != nil {
		t.complete(err)
		return t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkPublish(p); err != nil {
		t.complete(err)
		return t
	}
	if p.QoS > 0 {
		// Sequence numbers continue those of the stored session: it is
		// read to its last record before one is assigned, or a new
		// process would overwrite records.
		if _, ok := c.eng.Loaded(); !ok {
			if err := c.loadFirst(); err != nil {
				t.complete(err)
				return t
			}
		}
		if err := c.waitScanned(ctx); err != nil {
			t.complete(err)
			return t
		}
	}
	if err := c.waitQueueRoom(ctx, p); err != nil {
		t.complete(err)
		return t
	}
	if p.QoS == 0 {
		if !c.eng.Publish0(p, t, c.cfg.QueueQoS0) {
			t.complete(ErrNotConnected)
		}
		c.flush()
		return t
	}
	t.c = c // see Token.Stored
	c.eng.Publish(&a.om, p, m.Ref, t)
	c.flush()
	return t
}

// newPublish validates m and copies it into a PUBLISH packet.
func (c *Client) newPublish(m *Message, p *packets.Publish) error {
	switch {
	case m == nil:
		return fmt.Errorf("%w: nil message", ErrInvalidMessage)
	case m.QoS > 2:
		return fmt.Errorf("%w: QoS %d", ErrInvalidMessage, m.QoS)
	}
	if err := engine.ValidOutbound(m.Topic, &m.Properties); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	*p = packets.Publish{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Properties: m.Properties}
	return nil
}

// checkPublish checks p against the server's limits from its last
// CONNACK. mu held.
func (c *Client) checkPublish(p *packets.Publish) error {
	if c.closed {
		return ErrClosed
	}
	if c.fatal != nil {
		return c.fatal
	}
	lim := c.eng.Limits()
	if p.QoS > lim.MaxQoS { // MQTT-3.2.2-11
		return fmt.Errorf("%w: QoS %d, server maximum %d", ErrQoSNotSupported, p.QoS, lim.MaxQoS)
	}
	if p.Retain && !lim.Retain { // MQTT-3.2.2-14
		return ErrRetainNotSupported
	}
	if p.QoS > 0 {
		p.PacketID = 1 // for sizing and validation only
	}
	n, err := packets.Size(p)
	p.PacketID = 0
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	if lim.MaxPacket != 0 && uint32(n) > lim.MaxPacket { // MQTT-3.2.2-15
		return fmt.Errorf("%w: %d bytes, server maximum %d", ErrPacketTooLarge, n, lim.MaxPacket)
	}
	return nil
}
