package client

import (
	"context"
	"errors"
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
		if err := c.await(ctx, c.queueRoom); errors.Is(err, ErrClosed) {
			return err
		} else if err != nil {
			return fmt.Errorf("%w: waiting for room: %w", ErrQueueFull, err)
		}
		if c.fatal != nil {
			return c.fatal
		}
	}
}

// await releases mu until ch is closed or ctx is done, and returns ctx's
// error, or ErrClosed when the client was closed meanwhile. mu held.
func (c *Client) await(ctx context.Context, ch <-chan struct{}) error {
	c.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		c.mu.Lock()
		return ctx.Err()
	}
	c.mu.Lock()
	if c.closed {
		return ErrClosed
	}
	return nil
}
