// Package conformance is the shared test suite that every tether session
// store runs, so that all backends keep one contract (see package store).
//
// # For backend authors
//
// Write a HarnessMaker: a function that prepares fresh, empty storage for one
// test and returns a Harness whose MakeStore opens a handle on it. Calling
// MakeStore again must open another handle on the same storage, so the suite
// can check that data survives a reopen. Declare what the backend can do in
// Capabilities; checks of capabilities a backend lacks are skipped by name.
// Then call Run from a test and Bench from a benchmark:
//
//	func newHarness(ctx context.Context, t testing.TB) (conformance.Harness, error) {
//		path := filepath.Join(t.TempDir(), "sessions.db")
//		return &conformance.HarnessFuncs{
//			Make: func(ctx context.Context) (store.SessionStore, error) { return bolt.Open(path, nil) },
//			Caps: conformance.Capabilities{Durable: true},
//		}, nil
//	}
//
//	func TestConformance(t *testing.T)      { conformance.Run(t, newHarness) }
//	func BenchmarkConformance(b *testing.B) { conformance.Bench(b, newHarness) }
//
// Each check is a subtest with a stable name, so one can be run alone:
//
//	go test -race -run 'TestConformance/Store/OrderBySeq' ./store/bolt
//
// The checks are grouped as Store/... (the SessionStore contract), Lister/...
// (store.Lister) and Owner/... (store.Owner). Every check gets its own
// harness and runs under a deadline: its context expires first, so a store
// that honours contexts fails with a clear error, and a watchdog ends the
// test binary with every goroutine's stack if the check still does not
// return, rather than letting it hang until go test's own timeout.
//
// A check that needs a capability the harness does not declare, or an
// optional interface the store does not implement (store.Lister,
// store.Owner), is skipped with a message naming what is missing. The
// ownership checks need two handles at once (Capabilities.SharedHandles),
// and the takeover check needs a harness that can cut a handle off from the
// storage (Partitioner), so that a lease lapses while its holder still runs.
//
// Each check's time limit is 60s (three times that for the heavy ones); set
// the environment variable named by TimeoutEnv to change it.
//
// Run the suite with -race: several checks drive a store from many
// goroutines at once, and the race detector is what makes a data race in a
// backend visible. Use goleak (or equivalent) in the backend's TestMain: the
// suite closes every handle it opens and then the harness, so a goroutine
// left behind belongs to the backend.
//
// Some checks are heavy on purpose: Store/LongQueue writes 200,000 records,
// Store/PacketIDs 65,535, and Store/RecordSizes a record of
// store.MaxPacketLen bytes. They write in batches of thousands of records,
// so a backend that writes a batch in one transaction stays within seconds
// (the SQLite backend, the slowest here, takes about 25s under -race).
//
// # The session suite
//
// Run checks a store alone. RunSession checks the whole promise: real
// clients on the backend, driven through a fault-injecting proxy
// (conformance/faultproxy) to a real broker, cut at every packet of every
// QoS 1 and QoS 2 exchange, restarted, crashed with kill -9, must lose no
// message and deliver no QoS 2 message twice. A backend runs it with the
// same HarnessMaker:
//
//	func TestSession(t *testing.T) {
//		conformance.RunSession(t, newHarness, conformance.SessionOptions{})
//	}
//
// See RunSession for the cases, the crash case's one remaining duplicate
// window, and how a durable backend opts into the crash case.
package conformance
