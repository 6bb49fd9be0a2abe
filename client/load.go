package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tethermq/tether/store"
)

// loadSession rebuilds the session in memory from the store for key k,
// in pages when paged is set, or whole (a failover, whose moved messages
// must not be dropped by a load that fails half way).
// The commit pipeline is idle and mu held: this runs once per connection,
// not on the hot path. See engine.Engine.Load for what a corrupt record
// becomes.
//
// A store that reads in pages (store.Scanner) is read until the engine can
// connect: the meta record and every record that may have been sent,
// which come first (engine.Engine.CanConnect). A goroutine reads the rest
// while the client connects and sends (scanRest); the messages beyond
// Config.LoadWindow stay in the store until the queue reaches them
// (fetchTail).
func (c *Client) loadSession(ctx context.Context, k store.Key, paged bool) error {
	sc, ok := c.st.(store.Scanner)
	if !ok || !paged {
		recs, err := c.st.Load(ctx, k)
		var corrupt *store.CorruptError
		if err != nil && !errors.As(err, &corrupt) {
			return fmt.Errorf("client: load session %s: %w", k, err)
		}
		c.eng.Load(k, recs, corrupt)
		c.key = k
		c.flush()
		return nil
	}
	c.eng.LoadStart(k, false)
	c.key = k
	for {
		from, scanning := c.eng.Scanning()
		if !scanning || c.eng.CanConnect() {
			break
		}
		recs, next, corrupt, err := scanPage(ctx, sc, k, from, 0)
		if err != nil {
			c.eng.Unload() // the next load starts over
			c.flush()
			return fmt.Errorf("client: load session %s: %w", k, err)
		}
		c.eng.Page(recs, corrupt, next)
	}
	c.flush()
	if from, scanning := c.eng.Scanning(); scanning && !c.closed {
		done := make(chan struct{})
		c.scanDone = done
		c.wg.Add(1)
		go c.scanRest(sc, k, from, done)
	}
	return nil
}

// scanRest reads the pages of the session after those loadSession read,
// while the client connects and sends: the engine learns the inbound
// records, the last Seq and the corrupt records only from the whole
// session, so inbound PUBLISH and PUBREL packets (holdInbound) and new
// publishes (waitScanned) wait until done is closed. A failed read is retried with
// backoff.
func (c *Client) scanRest(sc store.Scanner, k store.Key, from uint64, done chan struct{}) {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		if c.scanDone == done {
			c.scanDone = nil
		}
		close(done)
		c.mu.Unlock()
		c.reportCorrupt()
	}()
	delay := 50 * time.Millisecond
	for {
		recs, next, corrupt, err := scanPage(c.storeCtx, sc, k, from, 0)
		if err != nil {
			c.log.Warn("reading the session failed; retrying", "key", k.String(), "err", err)
			select {
			case <-time.After(delay):
				delay = min(2*delay, 2*time.Second)
				continue
			case <-c.commitStop:
				return
			}
		}
		c.mu.Lock()
		at, scanning := c.eng.Scanning()
		if c.closed || c.key != k || !scanning || at != from {
			c.mu.Unlock()
			return
		}
		c.eng.Page(recs, corrupt, next)
		c.flush()
		c.mu.Unlock()
		if next == 0 {
			return
		}
		from, delay = next, 50*time.Millisecond
	}
}

// waitScanned waits, mu held, until the session's paged load has read its
// last page, or ctx is done.
func (c *Client) waitScanned(ctx context.Context) error {
	for c.scanDone != nil {
		if err := c.await(ctx, c.scanDone); errors.Is(err, ErrClosed) {
			return err
		} else if err != nil {
			return fmt.Errorf("client: waiting for the stored session to be read: %w", err)
		}
	}
	return nil
}

// holdInbound makes the reader of cn wait, before it hands over a PUBLISH
// or PUBREL, until the session's paged load has read every inbound record:
// a redelivered QoS 2 message must be known as recorded. Keep alive does
// not count the wait. Called without mu.
func (c *Client) holdInbound(cn *conn) {
	c.mu.Lock()
	done := c.scanDone
	c.mu.Unlock()
	if done == nil {
		return
	}
	cn.paused.Store(true)
	defer cn.paused.Store(false)
	select {
	case <-done:
	case <-cn.done:
	}
}

// fetchTail reads the page of the tail the engine asked for (ReadTail)
// and hands it over; after a failed read it waits before the engine may
// ask again. mu held when called: it returns at once.
func (c *Client) fetchTail(from uint64, limit int) {
	sc, ok := c.st.(store.Scanner)
	if !ok || c.closed {
		return // no tail without a Scanner; none to read once closed
	}
	k := c.key
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		recs, next, _, err := scanPage(c.storeCtx, sc, k, from, limit)
		failed := err != nil
		if failed {
			c.log.Warn("reading stored messages failed; retrying", "key", k.String(), "err", err)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-c.commitStop:
				return
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed || c.key != k {
			return
		}
		if failed {
			c.eng.TailFailed()
		} else {
			c.eng.Tail(from, recs, next)
		}
		c.flush()
	}()
}

// loadTail reads every message the paged load left in the store into
// memory, before a failover moves them. mu held; the scan has ended.
func (c *Client) loadTail(ctx context.Context) error {
	err := c.readTail(ctx, func(from uint64, recs []store.Record, next uint64) bool {
		c.eng.Tail(from, recs, next)
		_, more := c.eng.TailFrom()
		return more
	})
	c.flush()
	return err
}

// readTail reads the session from the start of the tail, page after page,
// handing each to page with where it was read from, until the session
// ends or page wants no more. Records the store reports corrupt are left
// out: the scan reported them. mu held.
func (c *Client) readTail(ctx context.Context, page func(from uint64, recs []store.Record, next uint64) bool) error {
	from, ok := c.eng.TailFrom()
	sc, isScanner := c.st.(store.Scanner)
	for ok && isScanner { // a tail comes only from a Scanner
		recs, next, _, err := scanPage(ctx, sc, c.key, from, 0)
		if err != nil {
			return fmt.Errorf("client: read stored messages of %s: %w", c.key, err)
		}
		ok = page(from, recs, next) && next != 0
		from = next
	}
	return nil
}

// scanPage reads one page of session k (store.Scanner.Scan). A
// *store.CorruptError comes back as corrupt, beside the page it spoiled;
// err is an error that left no page.
func scanPage(ctx context.Context, sc store.Scanner, k store.Key, from uint64, limit int) (recs []store.Record, next uint64, corrupt *store.CorruptError, err error) {
	recs, next, err = sc.Scan(ctx, k, from, limit)
	if err != nil && !errors.As(err, &corrupt) {
		return nil, 0, nil, err
	}
	return recs, next, corrupt, nil
}

// reportCorrupt hands a corruption found by the last load to
// Config.OnCorrupt, once. Called without mu.
func (c *Client) reportCorrupt() {
	c.mu.Lock()
	bad := c.eng.Corrupt()
	report := bad != nil && bad != c.corruptReported
	c.corruptReported = bad
	c.mu.Unlock()
	if report && c.cfg.OnCorrupt != nil {
		c.cfg.OnCorrupt(bad)
	}
}

// Corrupt returns the records the last load of the session left out
// because they were corrupt, or nil when there were none (or they have been
// discarded). The session goes on without them; the records stay in the
// store, and the packet identifiers they hold stay reserved, until
// DiscardCorrupt removes them.
func (c *Client) Corrupt() *store.CorruptError {
	c.mu.Lock()
	defer c.mu.Unlock()
	bad := c.eng.Corrupt()
	if bad == nil {
		return nil
	}
	cp := *bad
	cp.Seqs = slices.Clone(cp.Seqs)
	return &cp
}

// DiscardCorrupt deletes from the store the records the last load found
// corrupt (see Corrupt) and frees the packet identifiers they held. It
// returns how many records it deleted. Whatever exchange such a record
// belonged to is abandoned: for an outbound message, the server may or may
// not have it.
func (c *Client) DiscardCorrupt(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	c.waitIdle()
	bad := c.eng.Corrupt()
	if bad == nil {
		return 0, nil
	}
	ops := make([]store.Op, len(bad.Seqs))
	for i, s := range bad.Seqs {
		ops[i] = store.Delete(s)
	}
	if err := c.st.Apply(ctx, bad.Key, ops...); err != nil {
		return 0, fmt.Errorf("client: discard corrupt records: %w", err)
	}
	c.eng.CorruptDiscarded()
	c.flush()
	return len(ops), nil
}
