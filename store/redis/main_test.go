package redis

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when a test leaves a goroutine behind: a lease
// renewer that did not end, or a client that was not closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
