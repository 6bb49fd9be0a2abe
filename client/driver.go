package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/store"
)

// The client drives the session engine (internal/engine), which holds every
// MQTT session rule and does no I/O: each call into it happens with c.mu
// held, and flush then performs the effects it queued, in order, before
// c.mu is released. The committer applies the store batches the engine
// hands out, one at a time, and reports each back.
//
// Lock order: Client.mu, then conn.wmu (write side of a connection), then
// delivery.mu and Token.mu. Callbacks into the application run with none
// of them held.

// flush performs the effects the engine queued. mu held.
func (c *Client) flush() {
	for _, f := range c.eng.Effects() {
		switch f.Kind {
		case engine.Write:
			if cn := c.conn; cn != nil && cn.gen == f.Conn {
				cn.writeNumbered(f.Packet, f.Num)
			}
		case engine.Publish0:
			tok := f.Ticket.(*Token)
			cn := c.conn
			switch {
			case cn == nil || cn.gen != f.Conn:
				tok.complete(ErrNotConnected)
			case cn.bufferFull():
				tok.complete(ErrBufferFull)
			default:
				cn.write(f.Packet)
				tok.complete(nil)
			}
		case engine.Deliver:
			c.deliv.push(f.In.App.(*Message))
		case engine.Complete:
			f.Ticket.(*Token).complete(publicErr(f.Err))
		case engine.Stored:
			f.Ticket.(*Token).markStored()
		case engine.IDFreed:
			if c.idFreed != nil {
				close(c.idFreed)
				c.idFreed = nil
			}
		case engine.QueueRoom:
			c.wakeQueue()
		case engine.Fail:
			if cn := c.conn; cn != nil && cn.gen == f.Conn {
				cn.fail(f.Err, 0, false)
			}
		case engine.StoreAt:
			c.storeAt(f.Key, f.Ops)
		case engine.ReadTail:
			c.fetchTail(f.Num, f.Limit)
		}
	}
	if c.eng.NeedsCommit() {
		switch {
		case c.mustCommit():
			c.kickCommitter()
		case !c.lazyKicked:
			c.lazyKicked = true
			c.kickCommitter() // to start the lazy delay
		}
	}
}

// lazyDelay is how long a batch that nothing waits for may wait before it
// is committed (engine.Urgent). A few round trips of a loaded local
// broker: long enough for most PUBACKs of the QoS 1 messages sent
// meanwhile to take their Puts back, short enough to bound what a crash
// leaves unwritten of what the application was not told is stored.
var lazyDelay = 2 * time.Millisecond // a variable for tests

// mustCommit reports whether the batch being accumulated must be committed
// now rather than within lazyDelay. mu held.
func (c *Client) mustCommit() bool {
	return c.commitNow || c.eng.Urgent() || c.storedWaiters.Load() > 0
}

// storeAt applies ops to the session of another server than the one
// loaded (see engine.StoreAt). Rare: once per message acknowledged across a
// failover. mu held.
func (c *Client) storeAt(k store.Key, ops []store.Op) {
	ctx, cancel := context.WithTimeout(c.storeCtx, c.cfg.ConnectTimeout)
	defer cancel()
	if err := c.st.Apply(ctx, k, ops...); err != nil {
		c.log.Warn("could not record a message in the session it came from; it will come again", "key", k.String(), "err", err)
	}
}

// publicErr gives an error of the engine the client's exported type.
func publicErr(err error) error {
	if ae, ok := err.(*engine.AckError); ok {
		return &ReasonError{Packet: ae.Packet, Code: ae.Code, Reason: ae.Reason}
	}
	return err
}

func (c *Client) kickCommitter() {
	select {
	case c.commitKick <- struct{}{}:
	default:
	}
}

// defaultPipeline is Config.CommitPipeline's default: one batch being
// applied and one behind it is what a QoS 2 flow needs, since a PUBLISH or
// PUBREL that becomes ready while a batch is applied no longer waits for
// that one to end. A third runs into the second more often than it saves
// (with a Redis across a network, three at once ran at a third of two's
// rate: batches overtaking each other on the pool's connections are sent
// again).
const defaultPipeline = 2

// committer is the single goroutine that writes the session to the store:
// it takes every operation the engine queued so far, applies them as one
// batch (group commit), and reports the outcome, which releases the
// packets that waited for the batch. A batch that nothing waits for
// (engine.Urgent) is taken within lazyDelay instead of at once. With a
// store.Pipeliner, an urgent batch is begun while fewer than
// Config.CommitPipeline others are still on their way; otherwise one
// Apply runs at a time. After a failed batch the engine keeps its
// operations; the committer retries them with backoff, once every batch
// begun before the failure has ended.
func (c *Client) committer() {
	defer c.wg.Done()
	async, depth := c.pipeliner()
	results := make(chan error, depth) // ApplyAsync's outcomes, in order
	report := func(err error) { results <- err }
	var (
		retry   <-chan time.Time
		backoff bool // a batch failed: take none before retry
		delay   = 50 * time.Millisecond
		out     int // batches begun whose outcome has not come
		dropped int // of those, the ones a failure before them gave back
	)
	lazy := time.NewTimer(lazyDelay)
	lazy.Stop()
	defer lazy.Stop()
	var lazyC <-chan time.Time // lazy's channel while it runs
	for {
		due := false
		select {
		case <-c.commitKick:
		case <-retry:
			retry, backoff = nil, false
		case <-lazyC:
			lazyC, due = nil, true
		case err := <-results:
			out--
			c.mu.Lock()
			if dropped > 0 {
				dropped-- // the engine took its operations back already
			} else if !c.committed(err) {
				dropped, backoff = out, true
			}
			c.mu.Unlock()
		case <-c.commitStop:
			for ; out > 0; out-- {
				<-results
			}
			return
		}
		c.mu.Lock()
		c.commitNow = c.commitNow || due
		for !backoff && dropped == 0 && out < depth && c.eng.NeedsCommit() {
			if !c.mustCommit() {
				if lazyC == nil {
					lazy.Reset(lazyDelay)
					lazyC = lazy.C
				}
				break
			}
			if lazyC != nil {
				lazy.Stop()
				lazyC = nil
			}
			c.commitNow, c.lazyKicked = false, false
			ops := c.eng.Commit()
			if async != nil {
				out++
				async.ApplyAsync(c.storeCtx, c.key, ops, report)
				continue
			}
			key := c.key
			c.mu.Unlock()
			var err error
			if len(ops) > 0 {
				err = c.st.Apply(c.storeCtx, key, ops...)
			}
			c.mu.Lock()
			backoff = !c.committed(err)
		}
		if lazyC == nil {
			// No delay runs (the batch flush told of may have emptied
			// since): the next batch that may wait starts one.
			c.lazyKicked = false
		}
		c.idleCond.Broadcast()
		c.mu.Unlock()
		switch {
		case backoff && retry == nil:
			retry = time.After(delay)
			delay = min(delay*2, 2*time.Second)
		case !backoff && out == 0:
			delay = 50 * time.Millisecond
		}
	}
}

// pipeliner returns the store as a store.Pipeliner and how many batches
// may be on their way at once, or nil and 1. Transactional handlers write
// the session outside the committer, which must not overlap its batches.
func (c *Client) pipeliner() (store.Pipeliner, int) {
	n := c.cfg.CommitPipeline
	if n == 0 {
		n = defaultPipeline
	}
	if p, ok := c.st.(store.Pipeliner); ok && n > 1 && c.cfg.OnMessageTx == nil {
		return p, n
	}
	return nil, 1
}

// committed reports the outcome of the oldest batch on its way to the
// engine and performs what follows, and whether it was a success. mu held.
func (c *Client) committed(err error) bool {
	if err != nil {
		err = fmt.Errorf("client: store: %w", err)
		c.log.Error("store write failed", "key", c.key.String(), "err", err)
		c.eng.CommitFailed(err)
		if errors.Is(err, store.ErrSessionTaken) {
			c.setFatal(ErrSessionTaken)
		}
		c.flush()
		return false
	}
	c.eng.Committed()
	c.flush()
	return true
}

// waitIdle waits until the committer has nothing queued or in progress, or
// is failing to write (the store is down). mu held; it is released while
// waiting.
func (c *Client) waitIdle() {
	for !c.eng.Idle() {
		c.commitNow = true
		c.kickCommitter()
		c.idleCond.Wait()
	}
}

// loadFirst loads the session of the first server before anything is
// published: once per Client, not on the hot path. mu held.
func (c *Client) loadFirst() error {
	c.waitIdle()
	if _, ok := c.eng.Loaded(); ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.storeCtx, c.cfg.ConnectTimeout)
	defer cancel()
	return c.loadSession(ctx, c.key, true)
}

// maxPacketID is the highest packet identifier the client uses. Tests lower
// it to exercise identifier exhaustion without 65,535 messages in flight.
var maxPacketID uint16 = 65535

// engineLog is the engine's Logger: the client's, and its rate-limited
// warnings for what a server can trigger at will.
type engineLog struct {
	log   *slog.Logger
	flood *floodLog
}

func (l engineLog) Log(level slog.Level, msg string, args ...any) {
	l.log.Log(context.Background(), level, msg, args...)
}

func (l engineLog) Flood(msg string, args ...any) { l.flood.warn(msg, args...) }
