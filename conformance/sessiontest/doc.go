// Package sessiontest is the end-to-end session suite that every tether
// session store runs beside the store contract suite (package conformance):
// real clients on the backend, driven through a fault-injecting proxy
// (package faultproxy) to a real broker, cut at every packet of every QoS 1
// and QoS 2 exchange, restarted, crashed with kill -9, must lose no message
// and deliver no QoS 2 message twice.
//
// A backend runs it with the HarnessMaker and the OpenChild it gives
// conformance.Run:
//
//	func TestSession(t *testing.T) {
//		sessiontest.Run(t, newHarness, sessiontest.Options{OpenChild: openChild})
//	}
//
// Run lists the cases and the crash case's one remaining duplicate window.
// The environment variables of package conformance (TETHER_TEST_REQUIRE,
// conformance.TimeoutEnv) apply here too; SeedEnv and SoakEnv replay the
// chaos with a seed and size the soak.
package sessiontest
