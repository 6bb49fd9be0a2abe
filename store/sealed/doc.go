// Package sealed encrypts session records at rest, for every backend at
// once: it wraps any store.SessionStore and seals each record's Packet with
// an authenticated cipher under a key the application supplies.
//
// # What is sealed
//
// Every Packet (the PUBLISH with its topic and payload, the PUBREL, the
// inbound marker, the client's Meta record) is encrypted and authenticated
// with XAES-256-GCM: AES-256-GCM with a 192-bit random nonce, built from the
// standard library's AES and GCM (plain AES-GCM with random 96-bit nonces
// allows only 2^32 records per key, which a busy store can write in days).
// The stored form is
//
//	format (1 byte) | key id (4) | nonce (24) | ciphertext | tag (16)
//
// so a record grows by Overhead (45) bytes. The record's identity is bound
// to it as additional authenticated data: the session's Key, the Seq, the
// direction and the packet identifier. A record copied to another session
// or another Seq, or whose direction or identifier is changed, no longer
// opens, even by someone who can rewrite the inner store's own checksum.
//
// What stays visible to whoever reads the backend: each record's Seq,
// direction and packet identifier, the sizes of the packets, how many
// records a session holds and when they change, and, unless NameKey is set,
// the session's Key (the server address and the ClientID).
//
// # Corrupt, tampered and wrong-key records
//
// A record that does not open is reported exactly as a record that fails
// the backend's checksum: Load leaves it out, returns every other record,
// and reports its Seq in a *store.CorruptError (errors.Is(err,
// store.ErrCorrupt)) naming the session, merged with the inner store's own
// corrupt records. The error's cause tells why: ErrUnknownKey (a key id the
// keyring lacks), ErrAuth (the wrong key under a known id, changed bytes, a
// moved record) or ErrFormat (bytes that are no sealed record, such as a
// record written before encryption was turned on). Nothing is deleted; the
// records stay in the inner store until the session overwrites or clears
// them, so a keyring fixed afterwards reads them again.
//
// # Keys and rotation
//
// A Keyring holds keys by a 32-bit id: one, Current, seals every record
// written; all of them open records. Each record names the key that sealed
// it. To rotate, add a new key, make it Current, and keep the old one as
// long as records sealed with it may remain: the tether client rewrites a
// record whenever its exchange advances, but a message queued while offline
// keeps its first form until it is sent. Store.Reseal rewrites a session's
// records under the current key (while no client drives it), after which
// the old key can go; KeyID tells which key sealed a record of the inner
// store, for an audit. A record whose key was dropped is reported corrupt,
// not lost in silence.
//
// # The session Key
//
// Backends keep the session's Key to list sessions (the Redis store keeps
// the server and ClientID in a meta hash; bolt and SQLite keep them beside
// the records). With Options.NameKey set, the inner store never sees them:
// each Key is replaced by HiddenServer and an opaque ClientID, a
// deterministic, authenticated encryption of the real Key (an HMAC-SHA256
// synthetic IV and AES-256-CTR). Because the name carries the Key, Lister
// still returns the real Keys, with no extra record or round trip. What it
// costs:
//
//   - tools reading the backend directly (and a store opened without the
//     NameKey) see only opaque names, and the Redis store's keys and leases
//     are named after them;
//   - the NameKey cannot rotate: sessions written under one NameKey are
//     invisible under another (moving them means reading under the old and
//     writing under the new);
//   - equal Keys give equal names, so one can still tell that two writes
//     are to one session, and a Key's length shows, rounded up to 16 bytes;
//   - each call maps its Key once (an HMAC and an AES-CTR pass, about a
//     microsecond), and Sessions maps every name back.
//
// Sessions leaves out inner sessions whose names it cannot open (written in
// clear, or under another NameKey).
//
// Storing the real Key in a record of the wrapper's own was the other way
// to make names reversible; it was not taken because the record would have
// to take a Seq from the client's range, would keep a session listed after
// its last real record was deleted (the Lister contract lists only sessions
// that hold records), and would cost a write or a read per batch.
//
// # Capabilities
//
// New returns a store that implements store.Lister, store.Owner,
// store.Transactor and store.Scanner each exactly when the inner store
// does, so fencing is never hidden: leases and fencing tokens are the inner
// store's, taken on the same inner Key every Apply and Clear uses. ApplyTx
// seals the batch and runs the application's function in the inner store's
// transaction; what the function writes there is the application's and is
// not sealed. Scan opens each page of the inner store's Scan as Load opens
// a session, and reports records that do not open the same way, with the
// page. The largest Packet accepted is
// the inner store's limit less Overhead; to keep accepting
// store.MaxPacketLen, give a backend that can raise its limit (bolt,
// SQLite) a MaxPacketLen of store.MaxPacketLen + Overhead. The memory and
// Redis stores take 16 MiB, so sealed over them accept 45 bytes less.
//
// # What sealing does not cover
//
// Records are authenticated one by one, not as a set: someone who can write
// the backend can still delete a record whole, or put back an older sealed
// copy of the same record (its Seq, direction and identifier unchanged),
// and Load cannot tell. Detecting that needs state kept outside the
// backend, which this wrapper does not have.
//
// XAES-256-GCM uses GCM with a nonce of the application's choosing, which
// the standard library refuses in its FIPS 140-only mode (GODEBUG
// fips140=only): there, Apply fails with an error and writes nothing.
//
// # Cost
//
// Each handle seals under one derived key (its salt) and caches the derived
// keys it meets when opening, so a record costs one AES-GCM pass and a
// random nonce: about 0.5 to 1 µs per 100-byte record, sealed or opened, on
// the project's shared 2-core test machine. BenchmarkOverhead runs the
// shared store benchmarks bare and sealed: over the memory store sealing
// costs 1.5 to 4 times the bare figures (Load of 10,000 records 8.3 ms
// against 4.0 ms); over bolt and Redis the difference is lost in the
// run-to-run noise of an fsync or a round trip. NameKey adds one lookup
// per call (names are cached).
package sealed
