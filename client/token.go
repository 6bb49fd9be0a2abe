package client

import (
	"context"
	"sync"
)

// Token follows one asynchronous publish: when its message is durable in
// the store (Stored), and when its exchange has completed (Done).
type Token struct {
	done      chan struct{}
	completed bool // guarded by smu, as done's closing
	err       error

	smu     sync.Mutex
	stored  bool          // the message's record is durable
	storedC chan struct{} // made on demand; closed when stored or done
}

// Done is closed when the publish has completed: acknowledged (QoS 1 and
// 2), queued on the connection (QoS 0), or failed.
func (t *Token) Done() <-chan struct{} { return t.done }

// Err returns the outcome once Done is closed: nil, a *ReasonError for a
// negative acknowledgement, or another error. Before that it returns nil.
func (t *Token) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// Wait waits for the publish to complete or ctx to end, and returns Err or
// ctx's error. The publish itself goes on when ctx ends first.
func (t *Token) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		select {
		case <-t.done: // both ready: the outcome wins
			return t.err
		default:
			return ctx.Err()
		}
	}
}

// Stored is closed once the QoS 1 or 2 message is durable in the store —
// from then on it is delivered whatever happens to the process, and a
// later Client on the same store sends it if this one cannot — or once the
// publish has completed, whichever comes first (a QoS 0 message is never
// stored). WaitStored tells which.
func (t *Token) Stored() <-chan struct{} {
	t.smu.Lock()
	defer t.smu.Unlock()
	if t.storedC == nil {
		t.storedC = make(chan struct{})
		if t.stored || t.completed {
			close(t.storedC)
		}
	}
	return t.storedC
}

// WaitStored waits, within ctx, until the message is durable in the store
// and returns nil; or returns the publish's error if it failed before
// that (for QoS 0: its outcome once queued on the connection), or ctx's
// error.
func (t *Token) WaitStored(ctx context.Context) error {
	select {
	case <-t.Stored():
	case <-ctx.Done():
		return ctx.Err()
	}
	t.smu.Lock()
	stored := t.stored
	t.smu.Unlock()
	if stored {
		return nil
	}
	return t.Err()
}

// markStored records that the message is durable. Tokens of messages
// loaded from the store are nil.
func (t *Token) markStored() {
	if t == nil {
		return
	}
	t.smu.Lock()
	if !t.stored {
		t.stored = true
		if t.storedC != nil && !t.completed {
			close(t.storedC)
		}
	}
	t.smu.Unlock()
}

func (t *Token) complete(err error) {
	if t == nil {
		return
	}
	t.smu.Lock()
	defer t.smu.Unlock()
	if t.completed {
		return
	}
	t.completed = true
	t.err = err
	close(t.done)
	if t.storedC != nil && !t.stored {
		close(t.storedC)
	}
}
