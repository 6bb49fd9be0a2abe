package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sqlite"
)

// sessionHarness is the SQLite harness with the one thing a crash case
// needs more: the file's path, which a child process opens.
type sessionHarness struct {
	conformance.HarnessFuncs
	path string
}

// ChildConfig returns the database file's path.
func (h *sessionHarness) ChildConfig() string { return h.path }

func newSessionHarness(ctx context.Context, t testing.TB) (conformance.Harness, error) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	return &sessionHarness{
		HarnessFuncs: conformance.HarnessFuncs{
			Make: func(context.Context) (store.SessionStore, error) { return sqlite.Open(path, nil) },
			Caps: conformance.Capabilities{Durable: true, SharedHandles: true},
		},
		path: path,
	}, nil
}

// TestSession runs the end-to-end session suite, crash cases included:
// the child process opens the same file.
func TestSession(t *testing.T) {
	conformance.RunSession(t, newSessionHarness, conformance.SessionOptions{
		OpenChild: func(_ context.Context, path string) (store.SessionStore, error) { return sqlite.Open(path, nil) },
	})
}
