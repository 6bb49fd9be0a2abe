package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// acquireLease takes the store's lease on k when the store has leases
// (store.Owner) and the client does not hold it yet.
func (c *Client) acquireLease(ctx context.Context, k store.Key) error {
	ow, ok := c.st.(store.Owner)
	if !ok {
		return nil
	}
	c.mu.Lock()
	held := c.lease
	c.mu.Unlock()
	if held != nil && held.Key() == k {
		select {
		case <-held.Lost():
		default:
			return nil
		}
	}
	if held != nil {
		c.releaseLease()
	}
	l, err := ow.Acquire(ctx, k, store.LeaseOptions{TTL: c.cfg.LeaseTTL, Wait: c.cfg.WaitForLease})
	if err != nil {
		if errors.Is(err, store.ErrSessionTaken) {
			c.mu.Lock()
			c.setFatal(ErrSessionTaken)
			c.mu.Unlock()
		}
		return fmt.Errorf("client: acquire session lease %s: %w", k, err)
	}
	stop := make(chan struct{})
	c.mu.Lock()
	c.lease, c.leaseStop = l, stop
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		select {
		case <-l.Lost():
			c.log.Error("session lease lost: stopping", "key", k.String())
			c.mu.Lock()
			c.setFatal(ErrSessionTaken)
			cn := c.conn
			c.mu.Unlock()
			if cn != nil {
				cn.fail(ErrSessionTaken, packets.NormalDisconnection, true)
			}
		case <-stop:
		}
	}()
	return nil
}

func (c *Client) releaseLease() {
	c.mu.Lock()
	l, stop := c.lease, c.leaseStop
	c.lease, c.leaseStop = nil, nil
	c.mu.Unlock()
	if l == nil {
		return
	}
	close(stop)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.storeCtx), 5*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil {
		c.log.Warn("release session lease", "err", err)
	}
}
