package client

import (
	"context"
	"sync"
)

// closedChan is a channel closed from the start: Done and Stored of a
// token that has already reached that point.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Token follows one asynchronous publish: when its message is durable in
// the store (Stored), and when its exchange has completed (Done).
//
// Its channels are made on demand: a publish whose token is looked at only
// after it completed — the common case when many are in flight — costs
// no channel.
type Token struct {
	mu        sync.Mutex
	completed bool
	err       error
	done      chan struct{} // made on demand; closed when completed
	stored    bool          // the message's record is durable
	storedC   chan struct{} // made on demand; closed when stored or completed
	// c is the client of a QoS 1 or 2 publish: it commits at once while
	// someone waits for a Stored not yet closed (Client.storedWaiters).
	c *Client
}

// Done is closed when the publish has completed: acknowledged (QoS 1 and
// 2), queued on the connection (QoS 0), or failed.
func (t *Token) Done() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done == nil {
		if t.completed {
			return closedChan
		}
		t.done = make(chan struct{})
	}
	return t.done
}

// Err returns the outcome once Done is closed: nil, a *ReasonError for a
// negative acknowledgement, or another error. Before that it returns nil.
func (t *Token) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Wait waits for the publish to complete or ctx to end, and returns Err or
// ctx's error. The publish itself goes on when ctx ends first.
func (t *Token) Wait(ctx context.Context) error {
	t.mu.Lock()
	if t.completed {
		err := t.err
		t.mu.Unlock()
		return err
	}
	if t.done == nil {
		t.done = make(chan struct{})
	}
	done := t.done
	t.mu.Unlock()
	select {
	case <-done:
		return t.Err()
	case <-ctx.Done():
		select {
		case <-done: // both ready: the outcome wins
			return t.Err()
		default:
			return ctx.Err()
		}
	}
}

// Stored is closed once the QoS 1 or 2 message is durable in the store —
// from then on it is delivered whatever happens to the process, and a
// later Client on the same store sends it if this one cannot — or once the
// publish has completed, whichever comes first (a QoS 0 message is never
// stored). WaitStored tells which. The record of a QoS 1 message is not
// needed by its exchange, so the client may hold it back a few
// milliseconds in the hope that the PUBACK makes it unnecessary; asking
// for Stored makes the client write it at once.
func (t *Token) Stored() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.storedC == nil {
		if t.stored || t.completed {
			return closedChan
		}
		t.storedC = make(chan struct{})
		if t.c != nil {
			t.c.storedWaiters.Add(1)
			t.c.kickCommitter() // a send that never blocks: no lock taken
		}
	}
	return t.storedC
}

// closeStored closes storedC, once, when stored or completed. t.mu held.
func (t *Token) closeStored() {
	close(t.storedC)
	if t.c != nil {
		t.c.storedWaiters.Add(-1)
	}
}

// WaitStored waits, within ctx, until the message is durable in the store
// or its exchange has completed successfully, and returns nil; or returns
// the publish's error if it failed before that (for QoS 0: its outcome
// once queued on the connection), or ctx's error.
func (t *Token) WaitStored(ctx context.Context) error {
	select {
	case <-t.Stored():
	case <-ctx.Done():
		return ctx.Err()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stored {
		return nil
	}
	return t.err
}

// markStored records that the message is durable. Tokens of messages
// loaded from the store are nil.
func (t *Token) markStored() {
	if t == nil {
		return
	}
	t.mu.Lock()
	if !t.stored {
		t.stored = true
		if t.storedC != nil && !t.completed {
			t.closeStored()
		}
	}
	t.mu.Unlock()
}

func (t *Token) complete(err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.completed {
		return
	}
	t.completed = true
	t.err = err
	if t.done != nil {
		close(t.done)
	}
	if t.storedC != nil && !t.stored {
		t.closeStored()
	}
}
