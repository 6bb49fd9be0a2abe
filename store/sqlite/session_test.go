package sqlite_test

import (
	"testing"

	"github.com/tethermq/tether/conformance/sessiontest"
)

// TestSession runs the end-to-end session suite, crash cases included:
// the harness gives a child process the file's path (HarnessFuncs.Child),
// which it opens with openChild.
func TestSession(t *testing.T) {
	sessiontest.Run(t, newHarness, sessiontest.Options{OpenChild: openChild})
}
