// Package bolt is a session store in one bbolt file: durable across crashes
// of the process, one writer process at a time.
//
// One file holds many sessions. Each session is a bucket, nested in the
// store's own top-level bucket, whose name is an unambiguous encoding of the
// Key (both strings length-prefixed, so no byte a Server or ClientID holds
// can make two keys collide). A session's records are keyed by their
// big-endian Seq, so bbolt's key order is Seq order, and each carries a
// CRC-32C that Load checks: a damaged record is reported in a
// *store.CorruptError while the rest of the session still loads.
//
// Every Apply is one bbolt transaction, synced to disk before Apply returns
// (unless Options.NoSync). bbolt locks the file: a second process opening it
// waits Options.Timeout and then gets an error wrapping store.ErrLocked.
package bolt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/tethermq/tether/store"
)

var (
	_ store.Transactor   = (*Store)(nil)
	_ store.SessionStore = (*Store)(nil)
	_ store.Lister       = (*Store)(nil)
	_ store.Scanner      = (*Store)(nil)
)

// DefaultTimeout is how long Open waits for a file locked by another
// process when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// MaxPacketLimit is the largest Options.MaxPacketLen accepted: bbolt keeps
// a value in one contiguous run of pages, and a gigabyte is already far
// beyond any MQTT session's needs.
const MaxPacketLimit = 1 << 30

// Options tune a Store. The zero value (or a nil *Options) gives the
// defaults documented on each field.
type Options struct {
	// Timeout bounds how long Open waits for the file lock when another
	// process holds the file. Zero means DefaultTimeout; a negative value
	// means do not wait. Used by Open only.
	Timeout time.Duration
	// NoSync skips the fsync at the end of every Apply and Clear. It is
	// faster, and survives a crash of the process, but a power loss or an
	// operating system crash can then lose the last batches that Apply
	// reported done, breaking the contract's durability. Used by Open only:
	// with New, the caller's bbolt.DB settings apply.
	NoSync bool
	// MaxPacketLen is the largest Packet accepted; a larger one is refused
	// with store.ErrTooLarge. Zero means store.MaxPacketLen (16 MiB); at
	// most MaxPacketLimit.
	MaxPacketLen int
}

// Store is a SessionStore in a bbolt database. Its methods may be called
// from many goroutines at once.
type Store struct {
	db        *bbolt.DB
	ownsDB    bool // Close closes db: it was opened by Open
	maxPacket int

	// mu guards closed. Every operation holds it for reading while it uses
	// db, so that Close (which takes it for writing) never closes the file
	// under a running transaction.
	mu     sync.RWMutex
	closed bool
}

// Layout names. The store keeps everything under one top-level bucket, so a
// caller's database given to New may hold other buckets of its own.
var (
	rootBucket     = []byte("tether")
	formatKey      = []byte("format")
	sessionsBucket = []byte("sessions")
)

// fileFormat is the layout version written under rootBucket/formatKey.
const fileFormat = 1

// Open opens (creating it if needed, with mode 0600) the bbolt file at path.
// Close closes it.
func Open(path string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	timeout := o.Timeout
	switch {
	case timeout == 0:
		timeout = DefaultTimeout
	case timeout < 0:
		// bbolt reads a zero Timeout as "wait forever": the closest to
		// "do not wait" is the shortest wait.
		timeout = time.Nanosecond
	}
	if err := checkLength(path); err != nil {
		return nil, err
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      timeout,
		NoSync:       o.NoSync,
		FreelistType: bbolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, openError(err, timeout))
	}
	s, err := newStore(db, &o, true)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// openError explains an error of bbolt.Open, which repeats the path when
// the operating system refused the file (the caller names it once) and says
// "invalid database" of a file that is no bolt database at all.
func openError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w (waited %v for the file lock: %w)", store.ErrLocked, timeout, err)
	case errors.Is(err, berrors.ErrInvalid):
		return fmt.Errorf("not a bolt database, or its header is damaged (%w): %w", store.ErrCorrupt, err)
	case errors.Is(err, berrors.ErrVersionMismatch):
		return fmt.Errorf("a bolt database of another format version (%w): %w", store.ErrCorrupt, err)
	case errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("damaged bolt database (%w): %w", store.ErrCorrupt, err)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case errors.Is(pe.Err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist: %w", filepath.Dir(pe.Path), pe.Err)
	case errors.Is(pe.Err, syscall.ENOTDIR):
		return fmt.Errorf("a component of directory %s is not a directory: %w", filepath.Dir(pe.Path), pe.Err)
	case errors.Is(pe.Err, syscall.EISDIR):
		return fmt.Errorf("the path is a directory, not a database file: %w", pe.Err)
	case errors.Is(pe.Err, fs.ErrPermission):
		return fmt.Errorf("no permission to read and write the file, or to create it in its directory: %w", pe.Err)
	}
	return pe.Err // the caller names the path
}

// New returns a store on a database the caller opened; the caller keeps
// control of its options and its lifetime (Close does not close db). The
// store keeps its data under a top-level bucket named "tether" and leaves
// every other bucket alone. Of opts, only MaxPacketLen applies.
func New(db *bbolt.DB, opts *Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("bolt: new: nil *bbolt.DB")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	return newStore(db, &o, false)
}

func newStore(db *bbolt.DB, o *Options, owns bool) (*Store, error) {
	maxPacket := o.MaxPacketLen
	switch {
	case maxPacket == 0:
		maxPacket = store.MaxPacketLen
	case maxPacket < 0 || maxPacket > MaxPacketLimit:
		return nil, fmt.Errorf("bolt: MaxPacketLen %d out of range (0 to %d)", maxPacket, MaxPacketLimit)
	}
	err := protect(func() error {
		return db.Update(func(tx *bbolt.Tx) error {
			root, err := tx.CreateBucketIfNotExists(rootBucket)
			if err != nil {
				return err
			}
			if v := root.Get(formatKey); v != nil {
				if len(v) != 1 || v[0] != fileFormat {
					return fmt.Errorf("layout format %x unknown to this version (which writes %d)", v, fileFormat)
				}
			} else if err := root.Put(formatKey, []byte{fileFormat}); err != nil {
				return err
			}
			_, err = root.CreateBucketIfNotExists(sessionsBucket)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: %s: %w", db.Path(), err)
	}
	return &Store{db: db, ownsDB: owns, maxPacket: maxPacket}, nil
}

// MaxPacketLen returns the largest Packet the store accepts.
func (s *Store) MaxPacketLen() int { return s.maxPacket }

// begin checks ctx and the closed flag and, on success, holds mu for
// reading until the returned func is called.
func (s *Store) begin(ctx context.Context, op string) (end func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bolt: %s: %w", op, err)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, fmt.Errorf("bolt: %s: %w", op, store.ErrClosed)
	}
	return s.mu.RUnlock, nil
}

// protect runs fn and turns a panic into an error. bbolt panics on some
// kinds of damage to its pages; the contract wants an error instead, and
// bbolt's View and Update roll their transaction back on the way out.
func protect(fn func() error) (err error) {
	// A page past the end of a file cut short faults in the mapping: a
	// fatal error unless the goroutine asks for a panic instead.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: bbolt failed on damaged data: %v", store.ErrCorrupt, p)
		}
	}()
	return fn()
}

// checkLength refuses a file shorter than its newest valid meta page says
// (a torn copy, a full disk): bbolt maps the file, and reading a page past
// its end is a fatal fault, not an error. A file whose meta pages do not
// validate is left to bbolt.Open, which reports it.
func checkLength(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt.Open creates it or reports why not
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil
	}
	// A meta page: a 16-byte page header, then magic, version, page size,
	// flags (4 bytes each), the root bucket (16), the freelist page, the
	// high-water page id, the transaction id and an FNV-64a checksum of
	// what precedes it (8 each), in the machine's byte order.
	const metaEnd = 16 + 64
	var newest struct{ txid, need uint64 }
	found := false
	read := func(off int64) (pageSize uint64, ok bool) {
		b := make([]byte, metaEnd)
		if _, err := f.ReadAt(b, off); err != nil {
			return 0, false
		}
		m, e := b[16:], binary.NativeEndian
		if e.Uint32(m[0:]) != 0xED0CDAED {
			return 0, false
		}
		sum := fnv.New64a()
		_, _ = sum.Write(m[:56])
		if sum.Sum64() != e.Uint64(m[56:]) {
			return 0, false
		}
		pageSize, pgid, txid := uint64(e.Uint32(m[8:])), e.Uint64(m[40:]), e.Uint64(m[48:])
		if !found || txid > newest.txid {
			newest.txid, newest.need, found = txid, pgid*pageSize, true
		}
		return pageSize, true
	}
	pageSize, ok := read(0)
	if !ok {
		pageSize = uint64(os.Getpagesize())
	}
	read(int64(pageSize))
	if found && uint64(fi.Size()) < newest.need {
		return fmt.Errorf("bolt: open %s: %w: the file holds %d bytes and its meta page needs %d: truncated",
			path, store.ErrCorrupt, fi.Size(), newest.need)
	}
	return nil
}

// Session bucket names. A name is a one-byte scheme and then:
//
//	nameDirect: uvarint len(Server) | Server | uvarint len(ClientID) | ClientID
//	nameHashed: SHA-256 of the direct form
//
// The hashed form serves keys too long for a bbolt key (MQTT allows a
// 65,535-byte ClientID); such a bucket also holds the direct form under
// fullKeyKey, which Load checks and Sessions reads. Record keys are always
// 8 bytes long, so fullKeyKey (of another length) never meets one.
const (
	nameDirect = 0
	nameHashed = 1
)

var fullKeyKey = []byte("key")

func encodeKey(k store.Key) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(k.Server)+len(k.ClientID))
	b = append(b, nameDirect)
	b = binary.AppendUvarint(b, uint64(len(k.Server)))
	b = append(b, k.Server...)
	b = binary.AppendUvarint(b, uint64(len(k.ClientID)))
	return append(b, k.ClientID...)
}

// bucketName returns the bucket name of k, and the direct form to store
// inside the bucket when the name is hashed (nil otherwise).
func bucketName(k store.Key) (name, full []byte) {
	direct := encodeKey(k)
	if len(direct) <= bbolt.MaxKeySize {
		return direct, nil
	}
	sum := sha256.Sum256(direct)
	return append([]byte{nameHashed}, sum[:]...), direct
}

// decodeKey parses a direct-form name.
func decodeKey(b []byte) (store.Key, bool) {
	if len(b) == 0 || b[0] != nameDirect {
		return store.Key{}, false
	}
	b = b[1:]
	var parts [2]string
	for i := range parts {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return store.Key{}, false
		}
		parts[i] = string(b[w : w+int(n)])
		b = b[w+int(n):]
	}
	if len(b) != 0 {
		return store.Key{}, false
	}
	return store.Key{Server: parts[0], ClientID: parts[1]}, true
}

// sessions returns the bucket holding the session buckets.
func sessions(tx *bbolt.Tx) (*bbolt.Bucket, error) {
	root := tx.Bucket(rootBucket)
	if root == nil {
		return nil, fmt.Errorf("%w: bucket %q is missing", store.ErrCorrupt, rootBucket)
	}
	b := root.Bucket(sessionsBucket)
	if b == nil {
		return nil, fmt.Errorf("%w: bucket %q is missing", store.ErrCorrupt, sessionsBucket)
	}
	return b, nil
}

// Load returns the records of session k in Seq order. Records failing their
// check are left out and reported in a *store.CorruptError, returned with
// the records that could be read.
func (s *Store) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	recs, _, err := s.read(ctx, "load", k, 0, 0)
	return recs, err
}

// Scan returns up to limit records of session k with Seq >= from, in Seq
// order, read in one read-only transaction, and where the next page starts
// (store.Scanner). A limit of zero or less means store.DefaultScanLimit.
// Records failing their check are reported as Load reports them.
func (s *Store) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	if limit <= 0 {
		limit = store.DefaultScanLimit
	}
	return s.read(ctx, "scan", k, from, limit)
}

// read returns up to limit records (limit <= 0: every one) of session k
// with Seq >= from, in one read-only transaction, and the Seq of the record
// after them, or 0. The records that fail their check count towards limit
// and are reported in a *store.CorruptError, returned with the others.
func (s *Store) read(ctx context.Context, op string, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	end, err := s.begin(ctx, op)
	if err != nil {
		return nil, 0, err
	}
	defer end()
	name, full := bucketName(k)
	var (
		recs []store.Record
		bad  []uint64
		why  error
		next uint64
	)
	err = protect(func() error {
		return s.db.View(func(tx *bbolt.Tx) error {
			all, err := sessions(tx)
			if err != nil {
				return err
			}
			b := all.Bucket(name)
			if b == nil {
				return nil
			}
			if full != nil && !bytes.Equal(b.Get(fullKeyKey), full) {
				// Another key with the same SHA-256: in practice, damage.
				return &store.CorruptError{Key: k, Err: errors.New("bolt: session bucket belongs to another key")}
			}
			c := b.Cursor()
			n := 0
			for key, v := c.Seek(seqKey(from)); key != nil; key, v = c.Next() {
				if len(key) != 8 {
					continue // bucket metadata such as fullKeyKey
				}
				seq := binary.BigEndian.Uint64(key)
				if limit > 0 && n == limit {
					next = seq
					break
				}
				n++
				if v == nil {
					bad, why = append(bad, seq), errNotARecord
					continue
				}
				r, err := decodeRecord(seq, v)
				if err != nil {
					bad, why = append(bad, seq), err
					continue
				}
				recs = append(recs, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("bolt: %s %s: %w", op, k, err)
	}
	if len(recs) == 0 {
		recs = nil
	}
	if len(bad) > 0 {
		return recs, next, &store.CorruptError{Key: k, Seqs: bad, Err: fmt.Errorf("bolt: %s: %w", s.db.Path(), why)}
	}
	return recs, next, nil
}

// Apply applies ops to session k as one transaction, synced to disk before
// it returns.
func (s *Store) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	return s.apply(ctx, "apply", k, nil, ops)
}

// DB returns the database the store keeps its sessions in, so an
// application using transactional handlers (ApplyTx) can read its own
// buckets. The store's own bucket is not the application's to change.
func (s *Store) DB() *bbolt.DB { return s.db }

// ApplyTx applies ops to session k in one transaction with fn, which runs
// first and gets the *bbolt.Tx (store.Transactor): the application may
// read and write its own buckets through it, but not the store's.
func (s *Store) ApplyTx(ctx context.Context, k store.Key, fn func(tx any) error, ops ...store.Op) error {
	return s.apply(ctx, "apply", k, fn, ops)
}

func (s *Store) apply(ctx context.Context, what string, k store.Key, fn func(tx any) error, ops []store.Op) error {
	end, err := s.begin(ctx, what)
	if err != nil {
		return err
	}
	defer end()
	if err := store.Validate(s.maxPacket, ops); err != nil {
		return fmt.Errorf("bolt: apply %s: %w", k, err)
	}
	if len(ops) == 0 && fn == nil {
		return nil
	}
	name, full := bucketName(k)
	err = protect(func() error {
		return s.db.Update(func(tx *bbolt.Tx) error {
			if fn != nil {
				if err := fn(tx); err != nil {
					return err
				}
			}
			all, err := sessions(tx)
			if err != nil {
				return err
			}
			b := all.Bucket(name)
			for _, op := range ops {
				switch op.Kind {
				case store.OpPut:
					if b == nil {
						if b, err = all.CreateBucket(name); err != nil {
							return err
						}
						if full != nil {
							if err := b.Put(fullKeyKey, full); err != nil {
								return err
							}
						}
					}
					if err := putRecord(b, op.Record); err != nil {
						return err
					}
				case store.OpDelete:
					if b != nil {
						if err := deleteRecord(b, op.Record.Seq); err != nil {
							return err
						}
					}
				}
			}
			if b != nil && !hasRecords(b) {
				// An empty session leaves no bucket behind, so Sessions
				// lists only sessions holding records.
				if err := all.DeleteBucket(name); err != nil {
					return err
				}
			}
			// A context that ended while the batch waited for the write
			// lock or was built: roll back rather than commit.
			return ctx.Err()
		})
	})
	if err != nil {
		return fmt.Errorf("bolt: apply %s: %w", k, err)
	}
	return nil
}

// putRecord stores r in b. A nested bucket where a record belongs (damage
// that Load reports) is replaced, so writing the record again repairs it.
func putRecord(b *bbolt.Bucket, r store.Record) error {
	key := seqKey(r.Seq)
	err := b.Put(key, encodeRecord(r))
	if errors.Is(err, berrors.ErrIncompatibleValue) {
		if err := b.DeleteBucket(key); err != nil {
			return err
		}
		err = b.Put(key, encodeRecord(r))
	}
	return err
}

// deleteRecord removes the record seq from b, or the nested bucket that
// damage left in its place.
func deleteRecord(b *bbolt.Bucket, seq uint64) error {
	key := seqKey(seq)
	err := b.Delete(key)
	if errors.Is(err, berrors.ErrIncompatibleValue) {
		err = b.DeleteBucket(key)
	}
	return err
}

// hasRecords reports whether b holds at least one record key.
func hasRecords(b *bbolt.Bucket) bool {
	c := b.Cursor()
	for key, _ := c.First(); key != nil; key, _ = c.Next() {
		if len(key) == 8 {
			return true
		}
	}
	return false
}

// Clear removes session k in one synced transaction.
func (s *Store) Clear(ctx context.Context, k store.Key) error {
	end, err := s.begin(ctx, "clear")
	if err != nil {
		return err
	}
	defer end()
	name, _ := bucketName(k)
	err = protect(func() error {
		return s.db.Update(func(tx *bbolt.Tx) error {
			all, err := sessions(tx)
			if err != nil {
				return err
			}
			if err := all.DeleteBucket(name); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
			return ctx.Err()
		})
	})
	if err != nil {
		return fmt.Errorf("bolt: clear %s: %w", k, err)
	}
	return nil
}

// Sessions returns the key of every session holding records. A session
// bucket whose name cannot be read is left out and reported with an error
// wrapping store.ErrCorrupt, returned with the keys that could be read.
func (s *Store) Sessions(ctx context.Context) ([]store.Key, error) {
	end, err := s.begin(ctx, "sessions")
	if err != nil {
		return nil, err
	}
	defer end()
	var (
		keys []store.Key
		bad  int
	)
	err = protect(func() error {
		return s.db.View(func(tx *bbolt.Tx) error {
			all, err := sessions(tx)
			if err != nil {
				return err
			}
			return all.ForEachBucket(func(name []byte) error {
				if len(name) > 0 && name[0] == nameHashed {
					if b := all.Bucket(name); b != nil {
						name = b.Get(fullKeyKey)
					}
				}
				k, ok := decodeKey(name)
				if !ok {
					bad++
					return nil
				}
				keys = append(keys, k)
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: sessions: %w", err)
	}
	if bad > 0 {
		return keys, fmt.Errorf("bolt: sessions: %w: %d session bucket name(s) unreadable", store.ErrCorrupt, bad)
	}
	return keys, nil
}

// Close closes the store, and the file if Open opened it. It waits for
// running operations to finish; later calls of every method return
// store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.ownsDB {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("bolt: close %s: %w", s.db.Path(), err)
		}
	}
	return nil
}
