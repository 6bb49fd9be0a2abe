package sealed_test

import (
	"context"
	"testing"

	"github.com/tethermq/tether/conformance/sessiontest"
	"github.com/tethermq/tether/store"
)

// TestSession runs the end-to-end session suite (a real client against
// Mosquitto, with cuts at every packet, session loss, a chaos soak and
// kill -9 crashes of a child process) on a sealed bolt store with hidden
// Keys: the client's own records (Meta included) go through sealing and
// hidden names and come back intact across every reconnect and crash.
func TestSession(t *testing.T) {
	sessiontest.Run(t, boltHarness("HiddenKeys"), sessiontest.Options{
		OpenChild: func(_ context.Context, config string) (store.SessionStore, error) { return openSealedBolt(config) },
		// The wrapper adds nothing to the soak the bolt package already
		// runs at full size: a shorter one keeps CI within its time.
		SoakMessages: 4000,
	})
}
