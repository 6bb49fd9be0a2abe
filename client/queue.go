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

func (c *Client) wakeQueue() {
	if c.queueRoom != nil {
		close(c.queueRoom)
		c.queueRoom = nil
	}
}

// waitQueueRoom waits, within ctx, until the queue of unfinished messages
// has room for p, or fails at once with ErrQueueFull under
// Config.FailWhenQueueFull. QoS 0 messages count only while they wait for
// a connection (Config.QueueQoS0); on a connection the write buffer bounds
// them. mu held; it is released while waiting.
func (c *Client) waitQueueRoom(ctx context.Context, p *packets.Publish) error {
	for {
		if !c.eng.QueueFull(p) {
			return nil
		}
		if c.cfg.FailWhenQueueFull {
			n, bytes := c.eng.Queued()
			return fmt.Errorf("%w: %d messages, %d bytes", ErrQueueFull, n, bytes)
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
