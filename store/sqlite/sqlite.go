// Package sqlite is a session store in an SQLite database (through the pure
// Go driver modernc.org/sqlite): durable across crashes, and shareable by
// several processes that open the same file.
//
// Records live in one table keyed by (server, client_id, seq), three
// separate columns, so no byte a Server or ClientID holds can make two keys
// collide. Each record carries a CRC-32C that Load checks: a damaged record
// is reported in a *store.CorruptError while the rest of the session still
// loads. The store creates its schema and records its version in the table
// tether_schema_migrations, so a later version can upgrade an older file and
// an older version refuses a newer file (ErrSchemaVersion) instead of
// misreading it.
//
// The database runs in WAL mode with synchronous=FULL, so a batch is on disk
// when Apply returns. Every Apply is one BEGIN IMMEDIATE transaction: taking
// the write lock at the start means two writers never deadlock upgrading
// read locks, and a writer kept waiting by another process retries within
// Options.BusyTimeout before it fails with an error wrapping store.ErrLocked.
// A store from Open writes on one connection of its own, keeping its
// statements prepared there; its own writes take turns on it in the order
// they come, each waiting no longer than the busy timeout either.
//
// # Ownership
//
// Store implements store.Owner, as the Redis store does: a lease per Key
// in the table tether_leases, renewed in the background every TTL/3, with a
// fencing token that grows with every acquisition. Every Apply and Clear
// checks the lease inside its own transaction, so that once one process
// (one Store handle) holds a session, the writes of every other handle to
// that session fail with store.ErrSessionTaken. The tether client takes
// the lease before it connects: a second process with the same ClientID on
// the same file waits for it (client.Config.WaitForLease) or fails with
// ErrSessionTaken. Lease expiry uses the wall clock of the processes
// sharing the file, which SQLite requires to be on one machine.
//
// # Files
//
// Open creates the database file readable and writable by its owner only
// (0600); SQLite creates the -wal and -shm files beside it with the same
// mode. An existing file keeps its mode.
//
// # Space
//
// Deleted records leave free pages in the file, which SQLite reuses for
// later records but never gives back by itself: after a large backlog
// drains, the file would stay at its peak size. A new database is
// therefore created in SQLite's incremental auto-vacuum mode, and once
// more than Options.MaxFreePages of its pages are free (fewer are left for
// the next records to reuse), a goroutine of the Store gives them all back
// to the file system. It runs after the writes that freed the pages have
// committed, never inside them, in transactions of a few hundred pages,
// pausing between them so that waiting writers take the lock: an Apply
// waits for at most one such step. At the end it copies the WAL back and
// truncates it, if no reader or writer is in the way at that moment;
// otherwise the WAL is trimmed to WALSizeLimit whenever it starts over, so
// a large batch never leaves a WAL of its size behind.
//
// The auto-vacuum mode of a database is fixed when its first table is
// created: a file created by an earlier version of this package (or a
// caller's database given to New that already had pages) keeps its mode,
// usually none, and only Compact, a one-off VACUUM, gives its free pages
// back and converts it.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"

	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	msqlite "modernc.org/sqlite"

	"github.com/tethermq/tether/store"
)

var (
	_ store.SessionStore = (*Store)(nil)
	_ store.Lister       = (*Store)(nil)
	_ store.Owner        = (*Store)(nil)
	_ store.Transactor   = (*Store)(nil)
	_ store.Scanner      = (*Store)(nil)
)

// DefaultBusyTimeout is how long a write waits for another connection or
// process holding the database's write lock when Options.BusyTimeout is
// zero.
const DefaultBusyTimeout = 5 * time.Second

// MaxPacketLimit is the largest Options.MaxPacketLen accepted; SQLite's
// default limit on a value is 1,000,000,000 bytes, and the record header
// takes a few.
const MaxPacketLimit = 512 << 20

// SchemaVersion is the schema version this package writes and reads.
const SchemaVersion = 2

// ErrSchemaVersion is returned (wrapped) by Open and New when the database
// was written by a newer version of the store, with a schema this version
// does not know.
var ErrSchemaVersion = errors.New("sqlite: database schema is newer than this version supports")

// Options tune a Store. The zero value (or a nil *Options) gives the
// defaults documented on each field.
type Options struct {
	// Synchronous is SQLite's synchronous setting: "FULL" (the default)
	// syncs the WAL on every commit, so an acknowledged batch survives a
	// power loss. "NORMAL" syncs only at checkpoints: faster, still safe
	// against a crash of the process, but a power loss or an operating
	// system crash can lose the last commits that Apply reported done.
	// "EXTRA" is also accepted.
	Synchronous string
	// BusyTimeout bounds how long a write waits for the write lock held
	// by another connection or process, or for the handle's other writes,
	// before failing with an error wrapping store.ErrLocked. Zero means
	// DefaultBusyTimeout.
	BusyTimeout time.Duration
	// MaxPacketLen is the largest Packet accepted; a larger one is refused
	// with store.ErrTooLarge. Zero means store.MaxPacketLen (16 MiB); at
	// most MaxPacketLimit.
	MaxPacketLen int
	// LeaseTTL is the lease TTL used when Acquire is given none. Zero
	// means DefaultLeaseTTL (10s).
	LeaseTTL time.Duration
	// MaxFreePages is how many free pages the database file may keep
	// before the store gives the free pages back to the file system (see
	// the package doc, Space). Zero means DefaultMaxFreePages; a negative
	// value turns this off, leaving the file at its largest size unless
	// Compact is called.
	MaxFreePages int
}

// Store is a SessionStore in an SQLite database. Its methods may be called
// from many goroutines at once, and several processes may use one file.
type Store struct {
	db          *sql.DB
	ownsDB      bool   // Close closes db: it was opened by Open
	connPragmas string // run on every write connection of a caller's db (New)
	busyTimeout time.Duration
	maxPacket   int
	leaseTTL    time.Duration
	holder      string // this handle's identity in tether_leases
	maxFree     int    // Options.MaxFreePages, resolved
	// reclaim gives free pages back (reclaim.go); nil when MaxFreePages
	// is negative. Set before the Store is returned, then never changed.
	reclaim *reclaimer
	// w is the connection writes take turns on (writer.go); nil on a
	// caller's database (New). Set before the Store is returned.
	w *writer

	// closeMu serialises Close.
	closeMu sync.Mutex
	// mu guards closed. Operations hold it for reading while they use db,
	// so Close (which takes it for writing) never closes db under them.
	// Lock order: mu (for reading) before lmu.
	mu     sync.RWMutex
	closed bool

	// lmu guards leases, pending and leasesClosed.
	lmu          sync.Mutex
	leases       map[store.Key]*lease // leases held (or lost) and not released
	pending      map[store.Key]bool   // keys an Acquire of this handle is taking
	leasesClosed bool                 // set by Close: no more acquisitions
}

// newStore returns a Store on db with the resolved options o.
func newStore(db *sql.DB, o Options) *Store {
	var id [16]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return &Store{
		db:          db,
		busyTimeout: o.BusyTimeout,
		maxPacket:   o.MaxPacketLen,
		leaseTTL:    o.LeaseTTL,
		maxFree:     o.MaxFreePages,
		holder:      hex.EncodeToString(id[:]),
		leases:      make(map[store.Key]*lease),
		pending:     make(map[store.Key]bool),
	}
}

// resolve applies the defaults to opts and checks them.
func resolve(opts *Options) (Options, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Synchronous == "" {
		o.Synchronous = "FULL"
	}
	o.Synchronous = strings.ToUpper(o.Synchronous)
	switch o.Synchronous {
	case "FULL", "NORMAL", "EXTRA":
	default:
		return o, fmt.Errorf("sqlite: Synchronous %q unsupported (FULL, NORMAL or EXTRA)", opts.Synchronous)
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.BusyTimeout < 0 {
		return o, fmt.Errorf("sqlite: negative BusyTimeout %v", o.BusyTimeout)
	}
	switch {
	case o.MaxPacketLen == 0:
		o.MaxPacketLen = store.MaxPacketLen
	case o.MaxPacketLen < 0 || o.MaxPacketLen > MaxPacketLimit:
		return o, fmt.Errorf("sqlite: MaxPacketLen %d out of range (0 to %d)", o.MaxPacketLen, MaxPacketLimit)
	}
	switch {
	case o.LeaseTTL == 0:
		o.LeaseTTL = DefaultLeaseTTL
	case o.LeaseTTL < 0:
		return o, fmt.Errorf("sqlite: negative LeaseTTL %v", o.LeaseTTL)
	}
	if o.MaxFreePages == 0 {
		o.MaxFreePages = DefaultMaxFreePages
	}
	return o, nil
}

// Open opens (creating it if needed) the database file at path and brings
// its schema up to date. Close closes it.
//
// A new file is created readable and writable by its owner only (0600),
// and SQLite gives the -wal and -shm files it creates beside it the mode of
// the database file; an existing file keeps its mode. Several processes may
// call Open on one new file at once: creating the schema and switching to
// WAL mode wait for each other within Options.BusyTimeout.
func Open(path string, opts *Options) (*Store, error) {
	o, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := createFile(abs); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// A file: URI, so that any character of the path (a '?' included)
	// reaches SQLite escaped; the _pragma keys are the driver's, run on
	// every new connection, busy_timeout first. None takes a lock; the
	// switch to WAL mode, which does, is made once below, where busy
	// errors are retried.
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", o.BusyTimeout.Milliseconds()))
	q.Add("_pragma", "synchronous("+o.Synchronous+")")
	q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", WALSizeLimit))
	dsn := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s := newStore(db, o)
	s.ownsDB = true
	s.w = newWriter()
	ctx := context.Background()
	// One deadline for the whole preparation: SQLite's busy handler does
	// not run for every lock a first open takes (the switch to WAL mode
	// needs the file to itself, and reading a WAL another process is
	// recovering fails at once), so every step is retried on busy.
	if err := s.retryBusy(ctx, func() error {
		if err := s.walMode(ctx); err != nil {
			return err
		}
		return s.setup(ctx)
	}); err != nil {
		s.w.close()
		_ = db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, explain(abs, err))
	}
	s.startReclaimer()
	return s, nil
}

// createFile creates the database file, owner-only, unless it exists.
// Opening it here also names the cause when it cannot be opened, which
// SQLite does not ("unable to open database file").
func createFile(abs string) error {
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fileError(abs, err)
	}
	return f.Close()
}

// fileError explains an error of the operating system opening the
// database file at abs; errors.Is still finds its cause (fs.ErrNotExist,
// fs.ErrPermission, ...).
func fileError(abs string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the caller's message names the path already
	}
	dir := filepath.Dir(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist: %w", dir, err)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("a component of directory %s is not a directory: %w", dir, err)
	case errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("the path is a directory, not a database file: %w", err)
	case errors.Is(err, fs.ErrPermission):
		if _, serr := os.Stat(abs); serr == nil {
			return fmt.Errorf("no permission to read and write the file: %w", err)
		}
		return fmt.Errorf("no permission to create a file in directory %s: %w", dir, err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("the file system is read-only: %w", err)
	}
	return err
}

// explain classifies an error of Open, saying what SQLite's own message
// leaves out: that a file is not a database at all, and why it could not be
// opened ("unable to open database file" names no cause: most often the
// -wal or -shm file beside the database cannot be created).
func explain(abs string, err error) error {
	switch sqliteCode(err) {
	case codeNotADB:
		return fmt.Errorf("not an SQLite database, or a damaged one (%w): %w", store.ErrCorrupt, err)
	case codeCantOpen, codeReadOnly:
	default:
		return classify(err)
	}
	for _, companion := range []string{abs + "-wal", abs + "-shm"} {
		f, ferr := os.OpenFile(companion, os.O_RDWR, 0)
		if ferr == nil {
			_ = f.Close()
			continue
		}
		if !errors.Is(ferr, fs.ErrNotExist) {
			return fmt.Errorf("%w (cannot open %s: %w)", err, filepath.Base(companion), fileError(companion, ferr))
		}
	}
	dir := filepath.Dir(abs)
	probe, perr := os.CreateTemp(dir, ".tether-probe-*")
	if perr != nil {
		return fmt.Errorf("%w (cannot create the -wal and -shm files beside it: %w)", err, fileError(filepath.Join(dir, ".tether-probe"), perr))
	}
	_ = probe.Close()
	_ = os.Remove(probe.Name())
	return err
}

// walMode switches the database to WAL mode (a no-op once it is), and a
// database without pages yet (a new file) to incremental auto-vacuum first:
// the switch to WAL mode writes the first page, whose header fixes the
// auto-vacuum mode, so both run on one connection, which holds the mode
// until then.
func (s *Store) walMode(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var pages int64
	if err := conn.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return err
	}
	if pages == 0 {
		if _, err := conn.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
			return err
		}
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("cannot switch the database to WAL mode (journal mode stays %q)", mode)
	}
	return nil
}

// New returns a store on a database the caller opened with the "sqlite"
// driver of modernc.org/sqlite; the caller keeps its lifetime (Close does not
// close db). New switches the database to WAL mode and brings the store's
// tables up to date; every other table is left alone. A database with no
// pages yet is switched to incremental auto-vacuum first (see the package
// doc, Space). Since a caller's pool may open connections without the
// store's settings, each write sets busy_timeout, synchronous and
// journal_size_limit on its connection first.
func New(db *sql.DB, opts *Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlite: new: nil *sql.DB")
	}
	o, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	s := newStore(db, o)
	s.connPragmas = fmt.Sprintf("PRAGMA busy_timeout = %d; PRAGMA synchronous = %s; PRAGMA journal_size_limit = %d",
		o.BusyTimeout.Milliseconds(), o.Synchronous, WALSizeLimit)
	ctx := context.Background()
	if err := s.retryBusy(ctx, func() error { return s.walMode(ctx) }); err != nil {
		return nil, fmt.Errorf("sqlite: new: set WAL mode: %w", classify(err))
	}
	if err := s.retryBusy(ctx, func() error { return s.setup(ctx) }); err != nil {
		return nil, fmt.Errorf("sqlite: new: %w", classify(err))
	}
	s.startReclaimer()
	return s, nil
}

// migrations[i] brings the schema from version i to version i+1. Once
// released, a migration never changes: a new schema is a new entry.
var migrations = []string{
	// Version 1. seq holds Seq with its top bit flipped, so that SQLite's
	// signed integer order is Seq's unsigned order. value holds the
	// record (see record.go). server and client_id are BLOBs, compared
	// byte for byte whatever they hold (NUL, invalid UTF-8).
	`CREATE TABLE tether_records (
		server    BLOB    NOT NULL,
		client_id BLOB    NOT NULL,
		seq       INTEGER NOT NULL,
		value     BLOB    NOT NULL,
		PRIMARY KEY (server, client_id, seq)
	) WITHOUT ROWID`,
	// Version 2: session leases with fencing (see lease.go). A version
	// that knows only version 1, and so would write without the fencing
	// check, refuses the file.
	`CREATE TABLE tether_leases (
		server    BLOB    NOT NULL,
		client_id BLOB    NOT NULL,
		holder    TEXT    NOT NULL,
		token     INTEGER NOT NULL,
		expires   INTEGER NOT NULL,
		PRIMARY KEY (server, client_id)
	) WITHOUT ROWID`,
}

// setup creates or upgrades the schema, in one transaction so that
// processes opening a new file at once do it exactly once.
func (s *Store) setup(ctx context.Context) error {
	return s.write(ctx, func(conn *sql.Conn) error {
		if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS tether_schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at TEXT    NOT NULL
		)`); err != nil {
			return err
		}
		var current int64
		if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM tether_schema_migrations`).Scan(&current); err != nil {
			return err
		}
		if current > int64(len(migrations)) {
			return fmt.Errorf("%w: the file has schema version %d, this version knows up to %d", ErrSchemaVersion, current, len(migrations))
		}
		for v := current; v < int64(len(migrations)); v++ {
			if _, err := conn.ExecContext(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
			}
			if _, err := conn.ExecContext(ctx, `INSERT INTO tether_schema_migrations (version, applied_at) VALUES (?, ?)`,
				v+1, time.Now().UTC().Format(time.RFC3339)); err != nil {
				return fmt.Errorf("record schema version %d: %w", v+1, err)
			}
		}
		return nil
	})
}

// begin checks ctx and the closed flag and, on success, holds mu for
// reading until the returned func is called.
func (s *Store) begin(ctx context.Context, op string) (end func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, fmt.Errorf("sqlite: %s: %w", op, store.ErrClosed)
	}
	return s.mu.RUnlock, nil
}

// SQLite primary result codes the store tells apart.
const (
	codeBusy     = 5
	codeLocked   = 6
	codeReadOnly = 8
	codeCorrupt  = 11
	codeCantOpen = 14
	codeNotADB   = 26
)

func sqliteCode(err error) int {
	var se *msqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

func isBusy(err error) bool {
	c := sqliteCode(err)
	return c == codeBusy || c == codeLocked
}

// classify wraps errors the contract names: a damaged file as
// store.ErrCorrupt.
func classify(err error) error {
	switch sqliteCode(err) {
	case codeCorrupt, codeNotADB:
		return fmt.Errorf("%w: %w", store.ErrCorrupt, err)
	}
	return err
}

// retryBusy runs fn until it succeeds, fails other than busy, or the busy
// timeout passes. SQLite's own busy handler already waits busy_timeout in
// most cases; this loop covers those it does not (a WAL being recovered, a
// snapshot gone stale) and turns the final failure into store.ErrLocked.
func (s *Store) retryBusy(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(s.busyTimeout)
	pause := time.Millisecond
	for {
		err := fn()
		if err == nil || !isBusy(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			if errors.Is(err, store.ErrLocked) {
				return err // an inner retry said so already
			}
			return fmt.Errorf("%w: database busy for over %v: %w", store.ErrLocked, s.busyTimeout, err)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// poolConn returns a connection of the pool with the store's settings,
// which the caller closes.
func (s *Store) poolConn(ctx context.Context) (*sql.Conn, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if s.connPragmas != "" {
		if _, err := conn.ExecContext(ctx, s.connPragmas); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// write runs fn in a BEGIN IMMEDIATE transaction on one connection and
// commits it, or rolls it back if fn or the context fails.
func (s *Store) write(ctx context.Context, fn func(conn *sql.Conn) error) (err error) {
	conn, done, err := s.writeConn(ctx)
	if err != nil {
		return err
	}
	bad := false
	defer func() { done(bad || connGone(err)) }()
	if err := s.retryBusy(ctx, func() error {
		_, err := s.exec(ctx, conn, "BEGIN IMMEDIATE")
		return err
	}); err != nil {
		return err
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		// Rolled back whatever the caller's context says: a connection
		// left inside a transaction would hold the write lock. If even
		// that fails, the connection is dropped.
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			bad = true
		}
	}()
	if err := fn(conn); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Once the batch is complete it is committed even if the context ends
	// meanwhile: an interrupted COMMIT would leave the caller unsure
	// whether the batch is there.
	if err := s.retryBusy(context.WithoutCancel(ctx), func() error {
		_, err := s.exec(context.WithoutCancel(ctx), conn, "COMMIT")
		return err
	}); err != nil {
		return err
	}
	committed = true
	return nil
}

// seqValue maps Seq to the stored integer: top bit flipped, so that the
// signed order SQLite sorts by is the unsigned order of Seq.
func seqValue(seq uint64) int64 { return int64(seq ^ 1<<63) }

func seqFromValue(v int64) uint64 { return uint64(v) ^ 1<<63 }

// Load returns the records of session k in Seq order. Records failing their
// check are left out and reported in a *store.CorruptError, returned with
// the records that could be read.
func (s *Store) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	recs, _, err := s.read(ctx, "load", k, 0, 0)
	return recs, err
}

// Scan returns up to limit records of session k with Seq >= from, in Seq
// order, and where the next page starts (store.Scanner): one range read of
// the table's primary key, which is ordered by (server, client_id, seq). A
// limit of zero or less means store.DefaultScanLimit. Records failing their
// check are reported as Load reports them.
func (s *Store) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	if limit <= 0 {
		limit = store.DefaultScanLimit
	}
	return s.read(ctx, "scan", k, from, limit)
}

// read returns up to limit records (limit <= 0: every one) of session k
// with Seq >= from, and the Seq of the record after them, or 0.
func (s *Store) read(ctx context.Context, op string, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	end, err := s.begin(ctx, op)
	if err != nil {
		return nil, 0, err
	}
	defer end()
	recs, next, bad, why, err := s.query(ctx, k, from, limit)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, 0, fmt.Errorf("sqlite: %s %s: %w", op, k, classify(err))
	}
	if len(bad) > 0 || why != nil {
		return recs, next, &store.CorruptError{Key: k, Seqs: bad, Err: fmt.Errorf("sqlite: %w", why)}
	}
	return recs, next, nil
}

// query reads the rows of read in one statement, so that they are one
// snapshot. Rows that fail their check count towards limit; a row whose
// seq is no integer (damage, or a hand edit) is reported in why alone,
// having no Seq to report.
func (s *Store) query(ctx context.Context, k store.Key, from uint64, limit int) (recs []store.Record, next uint64, bad []uint64, why, err error) {
	const where = `WHERE server = CAST(?1 AS BLOB) AND client_id = CAST(?2 AS BLOB)`
	q, args := `SELECT seq, value FROM tether_records `+where, []any{k.Server, k.ClientID}
	if from > 0 {
		q += ` AND seq >= ?3`
		args = append(args, seqValue(from))
	}
	q += ` ORDER BY seq`
	if limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, 0, nil, nil, err
	}
	defer rows.Close()
	var (
		n    int
		last any // the seq column of the last row, as stored
	)
	for rows.Next() {
		// Scanned loosely, so that a value of the wrong type (damage, or
		// a hand edit) is one corrupt record rather than a failed read.
		var value sql.RawBytes
		if err := rows.Scan(&last, &value); err != nil {
			return nil, 0, nil, nil, err
		}
		n++
		sv, ok := last.(int64)
		if !ok {
			why = errBadSeq
			continue
		}
		seq := seqFromValue(sv)
		r, err := decodeRecord(seq, value)
		if err != nil {
			bad, why = append(bad, seq), err
			continue
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, nil, nil, err
	}
	if limit > 0 && n == limit {
		// A full page: the next integer seq after the last row read, if
		// any. Checked by a second statement rather than by one more row,
		// which would read that row's value (up to the largest packet) for
		// nothing. A batch committed in between only moves next within
		// what the contract allows: above this page, at most the first
		// record after it.
		var nv int64
		err := s.db.QueryRowContext(ctx, `SELECT seq FROM tether_records `+where+
			` AND seq > ?3 AND typeof(seq) = 'integer' ORDER BY seq LIMIT 1`, k.Server, k.ClientID, last).Scan(&nv)
		switch {
		case err == nil:
			next = seqFromValue(nv)
		case !errors.Is(err, sql.ErrNoRows):
			return nil, 0, nil, nil, err
		}
	}
	return recs, next, bad, why, nil
}

// Apply applies ops to session k as one transaction, on disk before it
// returns.
func (s *Store) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	return s.apply(ctx, k, nil, ops)
}

// DB returns the database the store keeps its sessions in, so an
// application using transactional handlers (ApplyTx) can query its own
// tables.
func (s *Store) DB() *sql.DB { return s.db }

// ApplyTx applies ops to session k in one transaction with fn, which runs
// first and gets the *sql.Conn the transaction (BEGIN IMMEDIATE) runs on
// (store.Transactor): the application's statements on it commit or roll
// back with the batch. It must not end the transaction itself, and should
// leave the store's tether_* tables alone.
func (s *Store) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	return s.apply(ctx, k, fn, ops)
}

func (s *Store) apply(ctx context.Context, k store.Key, fn func(tx any) error, ops []store.Op) error {
	end, err := s.begin(ctx, "apply")
	if err != nil {
		return err
	}
	defer end()
	if err := store.Validate(s.maxPacket, ops); err != nil {
		return fmt.Errorf("sqlite: apply %s: %w", k, err)
	}
	if len(ops) == 0 && fn == nil {
		return nil
	}
	l := s.heldLease(k)
	if err := lostErr(l); err != nil {
		return fmt.Errorf("sqlite: apply %s: %w", k, err)
	}
	puts, dels := collapse(ops)
	var renewed time.Time
	err = s.write(ctx, func(conn *sql.Conn) error {
		if err := s.fence(ctx, conn, k, l); err != nil {
			return err
		}
		// A busy session renews its lease in its own writes: under a
		// steady stream of them the renewer's separate transaction can
		// wait for the write lock longer than the TTL.
		if now := time.Now(); l != nil && l.renewDue(now) {
			if err := s.extendIn(ctx, conn, l, now); err != nil {
				return err
			}
			renewed = now
		}
		if fn != nil {
			if err := fn(conn); err != nil {
				return err
			}
		}
		// A statement is parsed once, not once a write: parsing costs
		// more than it looks, under the race detector most of all. The
		// writer's connection (Open) keeps the statements of up to
		// keptRows rows and of chunk rows prepared; without it, one of
		// chunk rows is prepared for the batch and run for every full
		// chunk.
		run := func(sqlFor func(int) string, total int, end func(lo int) int, args func(lo, hi int) []any) error {
			var full *sql.Stmt // prepared for this batch
			defer func() {
				if full != nil {
					_ = full.Close()
				}
			}()
			for lo, hi := 0, 0; lo < total; lo = hi {
				hi = end(lo)
				n := hi - lo
				var st *sql.Stmt
				if n <= keptRows || n == chunk {
					st = s.prepared(ctx, conn, sqlFor(n))
				}
				if st == nil && n == chunk {
					if full == nil {
						var err error
						if full, err = conn.PrepareContext(ctx, sqlFor(chunk)); err != nil {
							return err
						}
					}
					st = full
				}
				var err error
				if st != nil {
					_, err = st.ExecContext(ctx, args(lo, hi)...)
				} else {
					_, err = conn.ExecContext(ctx, sqlFor(n), args(lo, hi)...)
				}
				if err != nil {
					return err
				}
			}
			return nil
		}
		err := run(deleteSQL, len(dels), func(lo int) int { return min(lo+chunk, len(dels)) }, func(lo, hi int) []any {
			a := make([]any, 0, 2+hi-lo)
			a = append(a, k.Server, k.ClientID)
			for _, q := range dels[lo:hi] {
				a = append(a, seqValue(q))
			}
			return a
		})
		if err != nil {
			return err
		}
		return run(putSQL, len(puts), func(lo int) int {
			// Up to chunk rows, and fewer when the packets are large, so a
			// batch of big messages is not copied whole into one statement.
			hi, size := lo, 0
			for hi < len(puts) && hi-lo < chunk && (hi == lo || size+len(puts[hi].Packet) <= chunkBytes) {
				size += len(puts[hi].Packet)
				hi++
			}
			return hi
		}, func(lo, hi int) []any {
			a := make([]any, 0, 2+2*(hi-lo))
			a = append(a, k.Server, k.ClientID)
			for _, r := range puts[lo:hi] {
				a = append(a, seqValue(r.Seq), encodeRecord(r))
			}
			return a
		})
	})
	if err != nil {
		refused(err, l)
		if ctx.Err() != nil {
			err = ctx.Err() // the driver's "interrupted" says less
		}
		return fmt.Errorf("sqlite: apply %s: %w", k, classify(err))
	}
	if !renewed.IsZero() {
		l.renewed(renewed)
	}
	if len(dels) > 0 {
		s.freed()
	}
	return nil
}

// chunk is how many rows one statement writes or deletes: statements of
// many rows cost far less per row than one statement per row (SQLite limits
// a statement to 32,766 parameters).
const chunk = 128

// keptRows is the most rows of a statement that the writer keeps
// prepared besides those of chunk rows: a group commit of a few messages
// is the common one, and each statement kept holds SQLite's program for
// it.
const keptRows = 16

// chunkBytes bounds the packet bytes of one statement (but a statement
// always holds at least one row).
const chunkBytes = 4 << 20

// collapse reduces a batch to its effect: the records to put and the Seqs to
// delete, each Seq once, by its last op. Inside one transaction only the
// final state of each Seq matters, and distinct Seqs do not interact, so the
// statements need not follow the batch's order.
func collapse(ops []store.Op) (puts []store.Record, dels []uint64) {
	last := make(map[uint64]int, len(ops))
	for i, op := range ops {
		last[op.Record.Seq] = i
	}
	for i, op := range ops {
		if last[op.Record.Seq] != i {
			continue
		}
		if op.Kind == store.OpPut {
			puts = append(puts, op.Record)
		} else {
			dels = append(dels, op.Record.Seq)
		}
	}
	return puts, dels
}

// Statement texts by row count, built once: the driver caches nothing, but
// the texts are reused by every batch.
var (
	sqlMu   sync.Mutex
	putSQLs = map[int]string{}
	delSQLs = map[int]string{}
)

// putSQL returns an upsert of n rows of session (?1, ?2): parameters 2i+3
// and 2i+4 are the seq and value of row i. The rows' parameters are plain
// "?", numbered in order after ?2: the driver looks up the name of every
// parameter, and SQLite finds the names of numbered ones by a linear search,
// which would make a statement of many "?NNN" quadratic.
func putSQL(n int) string {
	sqlMu.Lock()
	defer sqlMu.Unlock()
	if q, ok := putSQLs[n]; ok {
		return q
	}
	var b strings.Builder
	b.WriteString("INSERT INTO tether_records (server, client_id, seq, value) " +
		"SELECT CAST(?1 AS BLOB), CAST(?2 AS BLOB), column1, column2 FROM (VALUES ")
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?)")
	}
	// "WHERE true" is SQLite's required disambiguation of an upsert whose
	// rows come from a SELECT.
	b.WriteString(") WHERE true ON CONFLICT (server, client_id, seq) DO UPDATE SET value = excluded.value")
	putSQLs[n] = b.String()
	return putSQLs[n]
}

// deleteSQL returns a delete of n rows of session (?1, ?2): parameter i+3
// is the seq of row i.
func deleteSQL(n int) string {
	sqlMu.Lock()
	defer sqlMu.Unlock()
	if q, ok := delSQLs[n]; ok {
		return q
	}
	var b strings.Builder
	b.WriteString("DELETE FROM tether_records WHERE server = CAST(?1 AS BLOB) AND client_id = CAST(?2 AS BLOB) AND seq IN (")
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("?")
	}
	b.WriteString(")")
	delSQLs[n] = b.String()
	return delSQLs[n]
}

// Clear removes every record of session k in one transaction.
func (s *Store) Clear(ctx context.Context, k store.Key) error {
	end, err := s.begin(ctx, "clear")
	if err != nil {
		return err
	}
	defer end()
	l := s.heldLease(k)
	if err := lostErr(l); err != nil {
		return fmt.Errorf("sqlite: clear %s: %w", k, err)
	}
	err = s.write(ctx, func(conn *sql.Conn) error {
		if err := s.fence(ctx, conn, k, l); err != nil {
			return err
		}
		_, err := conn.ExecContext(ctx, `DELETE FROM tether_records
			WHERE server = CAST(?1 AS BLOB) AND client_id = CAST(?2 AS BLOB)`, k.Server, k.ClientID)
		return err
	})
	if err != nil {
		refused(err, l)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("sqlite: clear %s: %w", k, classify(err))
	}
	s.freed()
	return nil
}

// Sessions returns the key of every session holding records.
func (s *Store) Sessions(ctx context.Context) ([]store.Key, error) {
	end, err := s.begin(ctx, "sessions")
	if err != nil {
		return nil, err
	}
	defer end()
	keys, err := s.sessions(ctx)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("sqlite: sessions: %w", classify(err))
	}
	return keys, nil
}

func (s *Store) sessions(ctx context.Context) ([]store.Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT server, client_id FROM tether_records`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []store.Key
	for rows.Next() {
		var server, client sql.RawBytes
		if err := rows.Scan(&server, &client); err != nil {
			return nil, err
		}
		keys = append(keys, store.Key{Server: string(server), ClientID: string(client)})
	}
	return keys, rows.Err()
}

// Close releases every lease this handle holds (a lease that cannot be
// released expires after its TTL), stops giving free pages back (a step
// under way is rolled back) and closes the store, and the database if Open
// opened it. It waits for running operations to finish; later calls of
// every method return store.ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.releaseAll()
	s.stopReclaimer()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.w != nil {
		s.w.close() // no write runs: each holds mu for reading
	}
	if s.ownsDB {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("sqlite: close: %w", err)
		}
	}
	return nil
}
