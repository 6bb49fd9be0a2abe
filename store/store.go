// Package store defines the session store contract that tether's client
// writes its MQTT session state to, and that every storage backend implements.
//
// A store is a durable, ordered map of opaque records per session. It knows
// nothing of MQTT beyond the bytes it keeps: the client decides what is
// written and when. A session is named by a Key (server, ClientID); its
// records are named and ordered by a sequence number that the client assigns
// and never reuses within the session.
//
// # The contract
//
// Every SessionStore implementation MUST keep these rules; the conformance
// package checks each of them.
//
//   - Durable on return: when Apply or Clear returns nil, the change survives
//     the end of the process that made it (a kill -9 included), to the extent
//     the backend documents. A backend that keeps state only in memory says
//     so; it then survives reconnects, not process crashes.
//   - Atomic: the operations of one Apply are applied all together or not at
//     all. A reader never sees part of a batch, and a crash never leaves one.
//   - Ordered: Load returns a session's records in ascending Seq order,
//     whatever order they were written in.
//   - Isolated: operations on one Key never see or change another Key's
//     records, whatever bytes the Server or ClientID strings hold (empty
//     strings, separators, braces and non-ASCII included).
//   - Concurrency-safe: every method may be called from many goroutines at
//     once, on one Key or on many.
//   - Context honoured: a method whose context is done returns the context's
//     error (wrapped or not, so that errors.Is finds it) and, for Apply,
//     applies nothing. A store never hangs past its context.
//   - Clear errors: after Close every method returns ErrClosed; a record
//     that fails its integrity check is reported as a *CorruptError; an
//     unreachable backend is reported with ErrUnavailable; a record larger
//     than the backend accepts is refused with ErrTooLarge. Errors are
//     testable with errors.Is and errors.As. A store never panics on bad
//     stored data.
//
// # Optional capabilities
//
// A backend may implement further interfaces, which callers find by type
// assertion, in the manner of database/sql/driver:
//
//   - Lister: enumerate the sessions a store holds (for tools and expiry).
//   - Owner: a lease per Key with a fencing token, for backends shared by
//     several processes. While one handle holds the lease, writes from any
//     other handle to that Key fail with ErrSessionTaken.
//   - Transactor: run the application's own code inside the transaction
//     of a batch, so that its writes and the session's commit together.
//   - Scanner: read a session in pages, in Seq order, so that a client can
//     stream a long backlog instead of loading it whole.
//   - Pipeliner: take a session's next batch while the one before it is
//     still on its way, so that a client's commits overlap.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Key names one session: the server it lives on and the ClientID it was
// opened with. Server is canonical (scheme://host:port, host in lower case),
// since MQTT sessions belong to one server.
type Key struct {
	Server   string
	ClientID string
}

// String returns a readable, unambiguous form of k, for logs and errors.
func (k Key) String() string {
	return strconv.Quote(k.Server) + "/" + strconv.Quote(k.ClientID)
}

// Direction tells which way the packet of a record flows.
type Direction uint8

// Record directions.
const (
	// Meta records hold the client's own session metadata (for example the
	// Session Expiry Interval and when the session was last connected).
	// They use sequence number MetaSeq.
	Meta Direction = iota
	// Outbound records hold packets this client sends: PUBLISH and PUBREL.
	Outbound
	// Inbound records hold state of messages this client receives: the
	// marker of an inbound QoS 2 message awaiting PUBREL.
	Inbound
)

// String returns the direction's name.
func (d Direction) String() string {
	switch d {
	case Meta:
		return "meta"
	case Outbound:
		return "outbound"
	case Inbound:
		return "inbound"
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

// MetaSeq is the sequence number reserved for a session's Meta record.
// Message records start at sequence number 1.
const MetaSeq = 0

// MaxPacketLen is the largest Packet every backend must accept: the largest
// MQTT packet (a 1 byte type, a 4 byte length and 268,435,455 bytes) is
// larger than any store needs in practice, so backends must accept at least
// 16 MiB and may document a larger maximum.
const MaxPacketLen = 16 << 20

// Record is one stored element of a session.
type Record struct {
	// Seq is the record's identity and its place in the session's order.
	// The client assigns it and never reuses it within a session.
	Seq uint64
	// Dir tells which way the record's packet flows.
	Dir Direction
	// ID is the MQTT packet identifier of the record's packet: the one it
	// was sent with, or was given while queued; 0 for a queued message
	// given none yet. ID is the truth: such a PUBLISH is encoded with a
	// placeholder identifier, since a QoS 1 or 2 PUBLISH cannot be encoded
	// without one. Whether the packet was ever sent is the client's own
	// knowledge, kept in the Meta record.
	ID uint16
	// Packet is the encoded MQTT packet, or the client's own encoding for
	// Meta and Inbound records. A store keeps these bytes exactly; it never
	// retains the caller's slice after Apply returns.
	Packet []byte
}

// OpKind says what an Op does.
type OpKind uint8

// Operation kinds.
const (
	// OpPut stores Record, replacing any record with the same Seq.
	OpPut OpKind = iota + 1
	// OpDelete removes the record with Record.Seq. Deleting a record that
	// does not exist is not an error.
	OpDelete
)

// Op is one operation of an atomic batch.
type Op struct {
	Kind   OpKind
	Record Record // for OpDelete only Record.Seq is read
}

// Put returns an Op that stores r.
func Put(r Record) Op { return Op{Kind: OpPut, Record: r} }

// Delete returns an Op that removes the record with sequence number seq.
func Delete(seq uint64) Op { return Op{Kind: OpDelete, Record: Record{Seq: seq}} }

// SessionStore is the interface every backend implements. See the package
// documentation for the rules each method keeps.
type SessionStore interface {
	// Load returns every record of session k in ascending Seq order, or no
	// records and a nil error when the session is empty or unknown.
	//
	// A record that fails its integrity check is left out and reported in
	// a *CorruptError; the records that could be read are still returned
	// alongside that error, so one bad record never costs a whole session.
	// Callers own the returned slices.
	Load(ctx context.Context, k Key) ([]Record, error)

	// Apply applies ops to session k as one atomic batch, in the order
	// given (so a later op on the same Seq wins), and returns once the
	// batch is durable. An empty batch is a no-op. A batch with an Op of
	// unknown kind or a Packet over the backend's maximum applies nothing
	// and returns an error (ErrTooLarge for the latter).
	Apply(ctx context.Context, k Key, ops ...Op) error

	// Clear removes every record of session k. Clearing an empty or unknown
	// session is not an error.
	Clear(ctx context.Context, k Key) error

	// Close releases the store's resources. Later calls of any method
	// return ErrClosed; Close itself may be called more than once.
	Close() error
}

// Lister is implemented by stores that can enumerate their sessions.
type Lister interface {
	// Sessions returns the key of every session that holds at least one
	// record, in no particular order.
	Sessions(ctx context.Context) ([]Key, error)
}

// Owner is implemented by stores shared by several processes (Redis). It
// gives one holder at a time the right to write a session, so two instances
// of an application never drive one MQTT session at once.
//
// A lease carries a fencing token that grows with every acquisition of the
// Key. Once a handle holds a lease on a Key, its Apply and Clear on that
// Key check, atomically with the write, that the lease is still its own,
// and fail with ErrSessionTaken once another holder has taken it over. A
// write from a handle that holds no lease on a Key whose lease another
// holder has is refused the same way.
type Owner interface {
	// Acquire takes the lease on k for this handle. When another holder has
	// it, Acquire waits until the lease is free (bounded by ctx) if
	// opts.Wait is set, and otherwise fails at once with ErrSessionTaken.
	Acquire(ctx context.Context, k Key, opts LeaseOptions) (Lease, error)
}

// Transactor is implemented by stores whose backend has transactions the
// application can write to as well (bolt, sqlite). The client uses it for
// transactional handlers: the application's writes for an inbound message
// and the message's inbound record commit together, so the message
// reaches the application's data exactly once across crashes.
type Transactor interface {
	// ApplyTx applies ops to session k as Apply does, in one transaction
	// with fn, which runs first, inside it, and gets the backend's
	// transaction handle (documented by the backend: a *bbolt.Tx, a
	// *sql.Conn inside BEGIN IMMEDIATE). When fn returns an error the
	// transaction is rolled back, nothing is applied, and ApplyTx returns
	// an error for which errors.Is(err, fn's error) holds. Durable on
	// return, as Apply.
	ApplyTx(ctx context.Context, k Key, fn func(tx any) error, ops ...Op) error
}

// DefaultScanLimit is the page size of Scanner.Scan when its limit is zero
// or negative, unless the backend documents another.
const DefaultScanLimit = 1000

// Scanner is implemented by stores that can read a session in pages, in
// ascending Seq order, so that a caller holds one page at a time instead of
// the whole session: a backlog of a million queued messages costs what its
// window needs, not a gigabyte.
//
// A whole session is read by Scan from 0 (MetaSeq is 0, so the Meta record
// comes first) and then from each next returned, until next is 0:
//
//	from := uint64(0)
//	for {
//		recs, next, err := sc.Scan(ctx, k, from, 0)
//		// handle err: with a *CorruptError, recs and next still hold
//		// use recs
//		if next == 0 {
//			break
//		}
//		from = next
//	}
//
// When no write comes between the calls, the pages put together are
// exactly what Load returns, records and corrupt Seqs alike.
//
// Each page is read atomically with respect to Apply and Clear: it never
// holds part of a batch. The pages are not one snapshot together: a batch
// applied between two calls shows in the pages read after it, for the Seqs
// they cover. A record put with a Seq at or above next appears in a later
// page; a record deleted before its page was read does not. The tether
// client scans a session that only it writes, and the records it adds while
// it scans take Seqs above every stored one, so it meets them at the end of
// its scan (or stops at the last Seq it knew when it started).
type Scanner interface {
	// Scan returns one page of session k: records with Seq >= from, in
	// ascending Seq order, at most limit of them, counting those reported
	// corrupt (limit <= 0 means DefaultScanLimit, or the backend's
	// documented default), and next, where the following page starts, or
	// 0 when no record follows.
	//
	// When next is not 0 it is greater than the Seq of every record the
	// page covered (returned, or reported corrupt) and no greater than the
	// Seq of the first record after them; next is 0 exactly when no record
	// follows the page, so a scan needs no extra call to find its end, and
	// a page that ends at Seq math.MaxUint64 ends the scan.
	//
	// A page may hold fewer than limit records, or none while next is not
	// 0: a backend may end a page early to bound its size in bytes, and
	// corrupt records are left out. Callers loop until next is 0, not
	// until a short page. A page covers at least one record whenever one
	// has a Seq at or after from; an unknown or empty session, or a from
	// past its last record, gives no records, next 0 and a nil error.
	//
	// A record that fails its integrity check is left out and reported in
	// a *CorruptError listing its Seq, as Load reports it; the page's
	// readable records and a valid next come with that error, so the scan
	// can go on past the bad record. With any other error, recs is nil and
	// next 0. Callers own the returned slices: they share no memory with
	// the store or with other pages.
	Scan(ctx context.Context, k Key, from uint64, limit int) (recs []Record, next uint64, err error)
}

// Pipeliner is implemented by stores that can take a session's next batch
// while the one before it is still on its way (Redis: a script per batch,
// sent before the reply to the one before). A client whose store is one
// overlaps its commits: a QoS 2 PUBLISH or PUBREL that becomes ready while
// a batch is being applied goes into a batch of its own at once, instead of
// waiting for that one to end.
type Pipeliner interface {
	// ApplyAsync applies ops to session k as Apply does, without waiting
	// for the outcome: done is called once with it, nil once the batch is
	// durable, from a goroutine of the store's.
	//
	// The batches one handle begins on one Key take effect in the order
	// they were begun, each only if every one begun before it did: the
	// stored session is always what some prefix of them made it, a crash
	// or a lost connection included. done is called in that order too,
	// one call at a time, and never before the done of an earlier batch
	// has returned. An error means, as for Apply, that the batch may or may
	// not have taken effect; every batch begun after it then fails too,
	// unless the failed one did take effect. A batch begun once an error
	// has been reported starts a new chain.
	//
	// The store reads ops, and the slices of their records, only until
	// done is called. Apply and Clear on the same Key by the same handle
	// must not overlap batches still on their way; once their done has
	// been called, they may.
	ApplyAsync(ctx context.Context, k Key, ops []Op, done func(error))
}

// LeaseOptions tune Owner.Acquire.
type LeaseOptions struct {
	// TTL is how long the lease outlives its holder's last renewal. The
	// holder renews it in the background every TTL/3. Zero means the
	// backend's default (documented by the backend, typically 10s).
	TTL time.Duration
	// Wait makes Acquire wait for a lease held by someone else to be
	// released or to expire, instead of failing at once.
	Wait bool
}

// Lease is a held ownership of one Key.
type Lease interface {
	// Key returns the session the lease is for.
	Key() Key
	// Token returns the fencing token: larger for every later acquisition
	// of the same Key.
	Token() uint64
	// Lost is closed when the lease has been lost: it could not be renewed
	// before its TTL ran out, or another holder took it over. It is not
	// closed by Release.
	Lost() <-chan struct{}
	// Release gives the lease up, so another holder can acquire it at once.
	// Releasing a lease that was lost or already released is not an error.
	Release(ctx context.Context) error
}

// Sentinel errors. Backends return them wrapped, with context, so that
// errors.Is finds them.
var (
	// ErrClosed is returned by every method of a closed store.
	ErrClosed = errors.New("store: closed")
	// ErrCorrupt is matched by *CorruptError.
	ErrCorrupt = errors.New("store: corrupt record")
	// ErrLocked is returned when the backing file is held by another
	// process and could not be opened within the backend's wait.
	ErrLocked = errors.New("store: locked by another process")
	// ErrSessionTaken is returned when another holder owns the session's
	// lease: the write was refused and changed nothing.
	ErrSessionTaken = errors.New("store: session taken over by another owner")
	// ErrTooLarge is returned for a record larger than the backend accepts.
	ErrTooLarge = errors.New("store: record too large")
	// ErrRefused is returned when the backend refuses the store for a
	// reason that waiting will not cure (wrong credentials, a denied
	// permission, a database that does not exist): retrying cannot succeed
	// until the configuration changes. The client stops connecting on it.
	ErrRefused = errors.New("store: refused by the backend")
	// ErrUnavailable is returned when the backend cannot be reached or
	// failed to answer: the operation may not have been applied.
	ErrUnavailable = errors.New("store: backend unavailable")
)

// CorruptError reports records of one session that failed their integrity
// check and were left out of a Load.
type CorruptError struct {
	Key  Key
	Seqs []uint64 // sequence numbers of the bad records, when known
	Err  error    // the underlying cause, if any
}

// Error describes the corrupt records and the session they belong to.
func (e *CorruptError) Error() string {
	msg := fmt.Sprintf("store: session %s: %d corrupt record(s)", e.Key, len(e.Seqs))
	if len(e.Seqs) > 0 {
		msg += fmt.Sprintf(" %v", e.Seqs)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Unwrap returns the underlying cause.
func (e *CorruptError) Unwrap() error { return e.Err }

// Validate checks a batch against the rules every backend applies before
// writing: known kinds and packets no larger than maxPacket bytes (zero means
// MaxPacketLen). Backends call it first, so that a bad batch applies nothing.
func Validate(maxPacket int, ops []Op) error {
	if maxPacket <= 0 {
		maxPacket = MaxPacketLen
	}
	for i, op := range ops {
		switch op.Kind {
		case OpPut:
			if n := len(op.Record.Packet); n > maxPacket {
				return fmt.Errorf("%w: op %d (seq %d) holds %d bytes, maximum %d",
					ErrTooLarge, i, op.Record.Seq, n, maxPacket)
			}
		case OpDelete:
		default:
			return fmt.Errorf("store: op %d (seq %d): unknown kind %d", i, op.Record.Seq, op.Kind)
		}
	}
	return nil
}
