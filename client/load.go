package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tethermq/tether/store"
)

// loadSession rebuilds the session in memory from the store for key k.
// The commit pipeline is idle and mu held: this runs once per connection,
// not on the hot path. See engine.Engine.Load for what a corrupt record
// becomes.
func (c *Client) loadSession(ctx context.Context, k store.Key) error {
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
