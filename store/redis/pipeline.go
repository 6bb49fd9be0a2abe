package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/store"
)

// ApplyAsync sends the batches of one session without waiting for the
// reply to the one before, so two scripts may be on their way at once on
// different connections of the pool, and arrive in either order. Redis
// keeps them in order with the batch fence: every batch has an id, and the
// session's batch key holds the id of the last one written. A batch of
// ApplyAsync names the one it follows and is written only if that is the
// last written (batchCheck in scripts.go); Apply and Clear store a fresh id
// without checking, so that a batch that lands after them (one whose
// command outlived its context on the client) writes nothing.
//
// A refused batch is sent once more when the batch it follows has since
// been written: it had overtaken it. The first batch of a chain reads the
// batch key, one more round trip, to learn whom it follows; the later ones
// follow the batch begun before them.

// anyBatch, as the id a write follows, skips the batch fence: Apply and
// Clear.
const anyBatch = "*"

// errOutOfOrder is wrapped by the error of a write the batch fence refused:
// it wrote nothing.
var errOutOfOrder = errors.New("batch out of order")

// call is one ApplyAsync batch. Its fields are set before it is published
// and not changed, except err (written before settled is closed) and prev
// (read and cleared by the call's own goroutine only).
type call struct {
	id      string
	prev    *call         // the batch begun before it in its chain; nil: it starts one
	settled chan struct{} // closed once err holds the outcome
	called  chan struct{} // closed once done has returned
	err     error
}

// finished returns a call that is over, with the outcome err.
func finished(id string, err error) *call {
	c := &call{id: id, settled: make(chan struct{}), called: make(chan struct{}), err: err}
	close(c.settled)
	close(c.called)
	return c
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// batchID returns an id no other batch of any handle has: the handle's
// holder and a counter.
func (s *Store) batchID() string {
	return s.holder + ":" + strconv.FormatUint(s.batches.Add(1), 10)
}

// wrote records the outcome of an Apply or Clear, which stored the batch id
// id, in k's chain: the next ApplyAsync follows it without reading it back.
// After an error, the next one reads the batch key. Only a chain that
// exists is kept up: a handle that never pipelines keeps no state per Key.
func (s *Store) wrote(k store.Key, id string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.chains[k]; !ok {
		return
	}
	if err != nil {
		delete(s.chains, k)
		return
	}
	s.chains[k] = finished(id, nil)
}

// ApplyAsync applies ops to session k as Apply does, and calls done with
// the outcome from a goroutine of the store's (store.Pipeliner). The
// batches begun on one Key take effect in the order begun, each only if
// every one before it did; done is called in that order, one at a time.
// A batch that fails without being sent (invalid, its context done, the
// one before it failed) fails every batch of its chain after it: the batch
// fence refuses them, since its id never reaches Redis.
//
// The batch is checked and encoded on the store's goroutine, not the
// caller's: the client begins batches holding its own lock.
func (s *Store) ApplyAsync(ctx context.Context, k store.Key, ops []store.Op, done func(error)) {
	expect, mine, l, _ := s.fenceArgs(k) // its only error, closed, is seen below
	c := &call{id: s.batchID(), settled: make(chan struct{}), called: make(chan struct{})}

	s.mu.Lock()
	last := s.chains[k]
	if last != nil && !(isDone(last.called) && last.err != nil) {
		c.prev = last // else a new chain: the last one ended with an error reported
	}
	s.chains[k] = c
	if s.closed {
		s.mu.Unlock()
		// Close may be waiting for the goroutines it counts: this one only
		// waits for the done of the batch before it, which ends on its own.
		go c.finish(fmt.Errorf("redis: apply %s: %w", k, store.ErrClosed), done)
		return
	}
	s.async.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.async.Done()
		err := store.Validate(store.MaxPacketLen, ops)
		if err != nil {
			err = fmt.Errorf("redis: apply %s: %w", k, err)
		} else {
			// ARGV[3], whom it follows, is set when sent.
			err = s.sendBatch(ctx, k, c, l, applyArgs(expect, mine, "", c.id, k, ops))
		}
		c.finish(err, done)
	}()
}

// finish settles c with err and calls done once the done of the batch
// before it has returned.
func (c *call) finish(err error, done func(error)) {
	c.err = err
	close(c.settled)
	if c.prev != nil {
		<-c.prev.called
		c.prev = nil // the chain's history is not kept
	}
	done(err)
	close(c.called)
}

// sendBatch writes c's batch once the chain allows it: args is its ARGV
// but for ARGV[3], the id of the batch it follows.
func (s *Store) sendBatch(ctx context.Context, k store.Key, c *call, l *lease, args []any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := lostErr("apply", k, l); err != nil {
		return err
	}
	keys := s.keys(k)
	prev := c.prev
	if prev != nil && isDone(prev.settled) && prev.err != nil {
		return fmt.Errorf("redis: apply %s: not sent, since a batch begun before it failed: %w", k, prev.err)
	}
	if prev != nil {
		args[2] = prev.id // optimistic: it may still be on its way
	} else {
		last, err := s.rdb.Get(ctx, keys.batch).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return s.fail(ctx, "apply", k, err)
		}
		args[2] = last
	}
	err := s.write(ctx, "apply", k, l, applyScript, keys.written(), args)
	if !errors.Is(err, errOutOfOrder) {
		return err
	}
	if prev == nil {
		return fmt.Errorf("%w; another write reached the session since this chain of batches began", err)
	}
	// It overtook the batch before it, or that one never landed.
	select {
	case <-prev.settled:
	case <-ctx.Done():
		return fmt.Errorf("redis: apply %s: waiting for the batch before it: %w", k, ctx.Err())
	}
	if prev.err != nil {
		return fmt.Errorf("redis: apply %s: not applied, since a batch begun before it failed: %w", k, prev.err)
	}
	err = s.write(ctx, "apply", k, l, applyScript, keys.written(), args)
	if errors.Is(err, errOutOfOrder) {
		return fmt.Errorf("%w: the session's batches were written out of order (another write came between)", err)
	}
	return err
}

// written returns the keys of the scripts that write a session.
func (ks sessionKeys) written() []string {
	return []string{ks.rec, ks.idx, ks.meta, ks.lease, ks.batch}
}
