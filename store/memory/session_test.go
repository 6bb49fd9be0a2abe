package memory_test

import (
	"testing"

	"github.com/tethermq/tether/conformance"
)

// TestSession runs the end-to-end session suite against Mosquitto. The
// memory store is not durable, so the crash case skips; a "new client"
// reuses the same store, as a new client in the same process would.
func TestSession(t *testing.T) {
	conformance.RunSession(t, newHarness, conformance.SessionOptions{})
}

// TestSessionMochi runs the same suite against a second, independent
// broker (the embedded mochi-mqtt), so that behaviour that passes only
// thanks to Mosquitto's quirks shows up. Cases broken by mochi's
// documented bugs are reported as KNOWN BROKER FAULT skips.
func TestSessionMochi(t *testing.T) {
	conformance.RunSession(t, newHarness, conformance.SessionOptions{Broker: conformance.MochiBroker})
}
