package client

import (
	"context"
	"fmt"

	"github.com/tethermq/tether/packets"
)

// Defaults of the outbound queue's bounds (Config.MaxQueued and
// Config.MaxQueuedBytes).
const (
	DefaultMaxQueued      = 100_000
	DefaultMaxQueuedBytes = 256 << 20
)

// pubCost is what a queued message counts against Config.MaxQueuedBytes:
// its topic, payload and properties, and the structures around them.
func pubCost(p *packets.Publish) int {
	if p == nil {
		return 128 // a PUBREL: no payload
	}
	return 128 + contentCost(p.Topic, p.Payload, &p.Properties)
}

// contentCost estimates the memory a message's topic, payload and
// properties hold: what both bounds on held messages count
// (MaxQueuedBytes outbound, MaxInboundBytes inbound).
func contentCost(topic string, payload []byte, pr *packets.Properties) int {
	n := len(topic) + len(payload) + len(pr.ResponseTopic) + len(pr.CorrelationData) +
		len(pr.ContentType) + 4*len(pr.SubscriptionIdentifier)
	for _, u := range pr.User {
		n += 32 + len(u.Key) + len(u.Value)
	}
	return n
}

// track adds m to the session's outbound messages. mu held.
func (c *Client) track(m *outMsg) {
	c.msgs[m.seq] = m
	c.queuedBytes += msgCost(m)
}

func msgCost(m *outMsg) int { return pubCost(m.pub) + len(m.ref) }

// untrack removes m from the session's outbound messages and wakes
// publishers waiting for room in the queue. mu held.
func (c *Client) untrack(m *outMsg) {
	if c.msgs[m.seq] != m {
		return
	}
	delete(c.msgs, m.seq)
	c.queuedBytes -= msgCost(m)
	c.wakeQueue()
}

// dropQueued0 forgets the QoS 0 messages queued while disconnected, which
// have been sent or failed. mu held.
func (c *Client) dropQueued0() {
	for _, p := range c.queued0 {
		c.queuedBytes -= pubCost(p)
	}
	c.queued0, c.tokens0 = nil, nil
	c.wakeQueue()
}

func (c *Client) wakeQueue() {
	if c.queueRoom != nil {
		close(c.queueRoom)
		c.queueRoom = nil
	}
}

// queueFull reports whether one more message p would exceed the queue's
// bounds. A queue holding nothing always takes one message, however large.
// mu held.
func (c *Client) queueFull(p *packets.Publish) bool {
	n := len(c.msgs) + len(c.queued0)
	return n > 0 && (n >= c.cfg.MaxQueued || c.queuedBytes+pubCost(p) > c.cfg.MaxQueuedBytes)
}

// waitQueueRoom waits, within ctx, until the queue of unfinished messages
// has room for p, or fails at once with ErrQueueFull under
// Config.FailWhenQueueFull. QoS 0 messages count only while they wait for
// a connection (Config.QueueQoS0); on a connection the write buffer bounds
// them. mu held; it is released while waiting.
func (c *Client) waitQueueRoom(ctx context.Context, p *packets.Publish) error {
	for {
		if p.QoS == 0 && c.conn != nil && c.conn.ready {
			return nil
		}
		if !c.queueFull(p) {
			return nil
		}
		if c.cfg.FailWhenQueueFull {
			return fmt.Errorf("%w: %d messages, %d bytes", ErrQueueFull, len(c.msgs)+len(c.queued0), c.queuedBytes)
		}
		if c.queueRoom == nil {
			c.queueRoom = make(chan struct{})
		}
		room := c.queueRoom
		c.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			c.mu.Lock()
			return fmt.Errorf("%w: waiting for room: %w", ErrQueueFull, ctx.Err())
		}
		c.mu.Lock()
		if c.closed {
			return ErrClosed
		}
		if c.fatal != nil {
			return c.fatal
		}
	}
}
