// Package conformance is the shared test suite that every tether session
// store runs, so that all backends keep one contract (see package store).
//
// # For backend authors: the harness
//
// Write a HarnessMaker: a function that prepares fresh, empty storage for one
// check and returns a Harness whose MakeStore opens a handle on it. Calling
// MakeStore again must open another handle on the same storage, so the suite
// can check that data survives a reopen. Declare what the backend can do in
// Capabilities; checks of capabilities a backend lacks are skipped by name.
// For most backends HarnessFuncs is all the harness there is:
//
//	func newHarness(ctx context.Context, t testing.TB) (conformance.Harness, error) {
//		path := filepath.Join(t.TempDir(), "sessions.db")
//		return &conformance.HarnessFuncs{
//			Make:  func(ctx context.Context) (store.SessionStore, error) { return mystore.Open(path) },
//			Caps:  conformance.Capabilities{Durable: true},
//			Child: path, // what a child process needs to open the same storage
//			Damage: func(ctx context.Context, k store.Key, kind conformance.DamageKind) error {
//				return damageMyFile(path, k, kind) // optional: enables Damage/...
//			},
//		}, nil
//	}
//
//	func openChild(ctx context.Context, path string) (store.SessionStore, error) {
//		return mystore.Open(path)
//	}
//
//	func TestMain(m *testing.M)         { goleak.VerifyTestMain(m) }
//	func TestConformance(t *testing.T) { conformance.Run(t, newHarness, conformance.Options{OpenChild: openChild}) }
//	func TestSession(t *testing.T) {
//		sessiontest.Run(t, newHarness, sessiontest.Options{OpenChild: openChild})
//	}
//	func BenchmarkConformance(b *testing.B) { conformance.Bench(b, newHarness) }
//
// Step by step:
//
//  1. Make opens a handle. Each check gets a fresh harness, so use
//     t.TempDir, a fresh key prefix or a fresh database per call of the
//     HarnessMaker.
//  2. Caps.Durable: set it when the data outlives the handle and the
//     process (files, servers). A Durable harness gets the Reopen/... and
//     Damage/... checks and the checks that kill a process, and must let a
//     child process in: Child (or a ChildHarness of your own) names the
//     storage, and OpenChild (in Options for Run, in sessiontest.Options
//     for sessiontest.Run) opens it in the child. Without them
//     Store/KillAfterApply, Store/SyncOnApply and the session suite's Crash
//     fail, saying so: they are not skipped.
//  3. Caps.SharedHandles: set it when several handles may be open at once
//     (several processes on one file, several clients of one server); the
//     Owner/... checks need it. Caps.ServerDurability: set it when a server
//     makes an Apply durable (Redis), not the process's own file writes.
//     Caps.MaxPacketLen: the largest packet, if not store.MaxPacketLen.
//  4. Damage (or a Harness implementing Damager) damages the storage behind
//     the store's back, after the suite has closed every handle: Truncate
//     cuts the storage short (a file cut inside its data, a value on a
//     server shortened), FlipBytes changes bytes inside one record of the
//     session, DropKey removes one piece of it (a row, a record's value
//     without its index entry). Return ErrCannotDamage for a kind that does
//     not apply. A helper that needs the backend's internals can live in a
//     _test.go file of the backend's own package (see store/bolt,
//     store/sqlite).
//  5. The checks that kill or trace a process re-execute the test binary,
//     which runs the test that called Run (or sessiontest.Run) again; there Run
//     plays the child's role without calling the HarnessMaker. A test that
//     starts a service before calling Run should skip that when IsChild
//     reports true and pass a nil HarnessMaker.
//  6. Shared backends that implement store.Owner also implement Partitioner
//     on their harness, so that a lease can lapse while its holder runs.
//
// Run the suite with -race: several checks drive a store from many
// goroutines at once, and the race detector is what makes a data race in a
// backend visible. Use goleak (or equivalent) in the backend's TestMain: the
// suite closes every handle it opens and then the harness, so a goroutine
// left behind belongs to the backend.
//
// # What a failing check means
//
// Each check is a subtest with a stable name, so one can be run alone:
//
//	go test -race -run 'TestConformance/Reopen/KeyIsolation' ./store/bolt
//
// Store/... checks the SessionStore contract on open handles:
//
//   - EmptyLoad, EmptyBatch: an unknown or emptied session loads as no
//     records; an empty batch changes nothing.
//   - OrderBySeq: Load returns records in Seq order whatever the write order
//     (a failure: records kept in insertion, byte or string order).
//   - PutReplaces, ReplaceInBatch, LaterOpWins, DeleteIdempotent: a Put
//     replaces the whole record; ops of one batch apply in order; deleting
//     what is absent is not an error.
//   - LargeBatch: one batch of 3,000 puts, deletes and replacements applies
//     whole and in order (a store that splits it must keep both).
//   - Clear: drops one session and nothing else.
//   - KeyIsolation: keys that naive joining or escaping confuses (("a:b",
//     "c") and ("a", "b:c"), NUL bytes, invalid UTF-8...) stay apart.
//   - RoundTrip, NotRetained: every field comes back exactly; the store
//     keeps copies, not the caller's slices.
//   - PacketIDs, LongQueue: 65,535 records, 200,000 queued records.
//   - RecordSizes: empty, 1-byte, 255, 256, 65,535, 65,536 and 65,537-byte
//     packets and the largest the backend accepts (a failure after a
//     reopen, under Reopen/, is a length field too narrow on disk).
//   - TooLarge, UnknownOpKind: a bad batch is refused whole
//     (store.ErrTooLarge; an error) and applies nothing (a failure: a batch
//     applied op by op).
//   - ConcurrentOneKey, ConcurrentManyKeys: concurrent readers never see
//     half a batch; concurrent writers lose nothing.
//   - Reopen: what was written, deleted and cleared survives Close.
//   - KillAfterApply: a child process applies batches and is killed with
//     SIGKILL the moment Apply returns, or in the middle of a stream of
//     Applies; the parent reopens and finds every acknowledged batch whole
//     and the interrupted one whole or absent (a failure: write-behind
//     buffering in the process, or a batch that is not one transaction).
//   - SyncOnApply: a child applies batches under strace; each Apply must
//     make a sync call (fsync, fdatasync, ...) after its last write and
//     before it returns. A kill -9 cannot show a missing fsync, because
//     the page cache outlives the process; a power cut or kernel crash
//     would lose the data. It needs strace (Debian package strace) and
//     ptrace permission; without strace it is skipped, or fails under
//     TETHER_TEST_REQUIRE=1. Backends with Capabilities.ServerDurability
//     skip it: their durability is the server's documented policy.
//   - SharedHandles, Closed, ContextCancelled: handles see each other's
//     writes; a closed store answers store.ErrClosed; a cancelled context
//     is honoured and applies nothing.
//
// Reopen/<name> runs each Store/ check whose property must survive a
// restart again, closing the handle and opening a new one before every
// read (EmptyLoad, OrderBySeq, PutReplaces, ReplaceInBatch, LaterOpWins,
// LargeBatch, DeleteIdempotent, Clear, KeyIsolation, RoundTrip, PacketIDs,
// RecordSizes, TooLarge, UnknownOpKind). A check that passes under Store/
// and fails under Reopen/ points at the on-disk form: a key joined into a
// name, a truncated length, a lost order.
//
// Damage/Truncate, Damage/FlipBytes and Damage/DropKey write a victim
// session and two bystanders, close every handle, damage the victim's
// storage and open it again. No call may panic (a failure names the call:
// a decoder trusting a stored length), no damaged record may come back as
// good, and FlipBytes must be reported by Load as a *store.CorruptError.
// For FlipBytes and DropKey, Open succeeds, the bystanders load whole and
// take writes, and Clear removes the victim. Truncate may take the sessions
// that share the victim's file along, but only with an error.
//
// Lister/Sessions checks store.Lister; Owner/... checks store.Owner (the
// lease, its fencing token, waiting, renewal and takeover after its TTL).
//
// Scanner/... checks store.Scanner, the paged read in Seq order:
//
//   - Pages: for every page size from 1 to one past the session's length
//     (and the default), the pages put together are exactly what Load
//     returns; no page exceeds its limit, each is ordered, and next is 0
//     exactly on the last page, otherwise above the page and no further
//     than the first record not yet returned.
//   - Edges: from is inclusive; from 0 includes the Meta record and from 1
//     leaves it out; a page at Seq math.MaxUint64, a page exactly full at
//     the end of the session, and an unknown, emptied or cleared session
//     all end the scan.
//   - WritesBetweenPages: a batch between two pages shows in the later
//     pages for the Seqs they cover; a Clear ends the scan.
//   - KeyIsolation, NotRetained: the tricky keys of Store/KeyIsolation
//     scan apart; changing a page changes nothing stored, and reading a
//     page leaves the earlier ones intact (a failure: a reused buffer).
//   - ConsistentPage: a page read while batches are applied never holds
//     part of one.
//   - Large: 10,000 records written in reverse, paged by 100.
//   - Reopen: a scan after a reopen (Durable harnesses).
//   - FlipBytes, DropKey: after the damage of Damage/..., a scan with any
//     page size returns the records Load returns and reports the corrupt
//     Seqs Load reports, and goes on past them (harnesses with a Damager).
//   - Closed, ContextCancelled: store.ErrClosed, and the context's error.
//
// Pipeliner/... checks store.Pipeliner, batches begun with ApplyAsync
// before the ones before them have ended:
//
//   - Order: 200 batches that overwrite and delete each other's Seqs,
//     begun back to back: every done reports nil, once, in the order
//     begun, one at a time, and the session holds what applying them in
//     order gives (after a reopen too, for a Durable harness).
//   - FailurePrefix: a batch with an op of unknown kind among 40, all
//     begun before any done returns: the ones before it succeed, it and
//     every later one fail, and the session holds what the ones before it
//     made it; a batch begun afterwards starts a new chain and succeeds.
//   - Context: the same with a batch begun with a cancelled or expired
//     context, which reports the context's error.
//   - Keys: a failing chain on one Key fails nothing on another.
//   - Interleaved: chains with Apply, Clear, a refused Apply and (with
//     SharedHandles) another handle's write between them.
//   - Closed: ApplyAsync on a closed store reports store.ErrClosed.
//
// # Time limits: progress, not totals
//
// Every check runs under a limit that is a silence, not a total: the check
// fails once nothing new has happened for 60s (three times that for the
// heavy store checks): no store call returned; in the session suite, no
// message was delivered for the first time, no inbound record of the
// client changed, no child process reported something new. Packets alone
// are not progress, so a client stuck reconnecting and resending in a loop
// still fails. A slow or loaded machine makes the suite slow, not red. The check's context ends first, so a store that
// honours contexts fails with a readable error ("no progress for 1m0s"); a
// watchdog a little later ends the test binary with every goroutine's
// stack if the check still does not return, rather than letting it hang
// until go test's own timeout. Set the environment variable named by
// TimeoutEnv to change the limit.
//
// Some checks are heavy on purpose: Store/LongQueue writes 200,000 records,
// Store/PacketIDs 65,535, and Store/RecordSizes a record of
// store.MaxPacketLen bytes. They write in batches of thousands of records,
// so a backend that writes a batch in one transaction stays within seconds.
//
// # Environment
//
//   - TETHER_TEST_REQUIRE=1 (CI sets it) turns every skip for something
//     missing on the machine — Mosquitto, Redis, strace — into a failure.
//     Skips for a capability the backend does not declare stay skips.
//   - TETHER_CONFORMANCE_TIMEOUT (TimeoutEnv): the progress limit of a check.
//   - TETHER_SESSION_SEED (sessiontest.SeedEnv), TETHER_SESSION_SOAK
//     (sessiontest.SoakEnv): replay the session suite's chaos with a seed;
//     size its soak.
//
// # The session suite
//
// Run checks a store alone. The session suite, package
// conformance/sessiontest, checks the whole promise: real clients on the
// backend, driven through a fault-injecting proxy (faultproxy) to a real
// broker, cut at every packet of every QoS 1 and QoS 2 exchange,
// restarted, crashed with kill -9, must lose no message and deliver no
// QoS 2 message twice. A backend runs sessiontest.Run with the same
// HarnessMaker and the same OpenChild, as above. See sessiontest.Run for
// the cases and the crash case's one remaining duplicate window.
package conformance
