// Package redis is a session store kept in Redis (standalone, Sentinel or
// Cluster), for applications whose instances share MQTT sessions.
//
// # Layout
//
// Every key of one session carries the same Cluster hash tag, the hex
// SHA-256 of the session's Key, so that each operation is one Lua script on
// one slot:
//
//	<prefix>:{<tag>}:rec    hash: seq (16 hex digits) → record
//	<prefix>:{<tag>}:idx    sorted set of the seq fields, read in lexical order
//	<prefix>:{<tag>}:meta   hash: the Key in plain text, and a change counter
//	<prefix>:{<tag>}:lease  the ownership lease, with a PX expiry
//	<prefix>:{<tag>}:fence  the last fencing token handed out
//	<prefix>:{<tag>}:batch  the id of the last batch written (the batch fence)
//
// A record is stored as a version byte, its direction, its packet
// identifier, the packet and a CRC-32C over all of it and the seq; Load
// leaves out a record that fails the check and reports it in a
// *store.CorruptError. Records up to store.MaxPacketLen (16 MiB) are
// accepted; larger ones are refused with store.ErrTooLarge. Seq may be any
// uint64.
//
// # Durability
//
// Apply and Clear are one round trip each (an EVALSHA, pipelined with WAIT
// when Options.WaitReplicas asks for it) and are atomic:
// Redis runs the whole batch, fencing check included, as one script. They
// are as durable on return as the Redis deployment makes them: with
// appendonly yes and appendfsync always a batch survives a crash of Redis
// itself; with replication, Options.WaitReplicas makes Apply wait until
// that many replicas hold the batch, so that a Sentinel or Cluster failover
// keeps every acknowledged batch (replication is asynchronous otherwise: a
// failover may lose the last batches acknowledged). Redis 7.0 or later is
// required.
//
// # Ownership
//
// Store implements store.Owner: a lease per Key, renewed in the background
// every TTL/3, with a fencing token taken from a per-session counter, and
// checked by every Apply and Clear inside their script.
//
// The fence counter outlives Clear (so tokens keep growing across the life
// of a ClientID), and so does the batch id: they are the keys a session
// leaves behind, a few dozen bytes.
//
// # Pipelining
//
// Store implements store.Pipeliner: ApplyAsync sends a session's next batch
// without waiting for the reply to the one before, so two may be on their
// way at once, on two connections of the pool, and reach Redis in either
// order. The batch fence keeps them in order: each batch carries the id of
// the batch it follows (ids are the handle's holder and a counter), and its
// script writes it only while that is the id stored in the session's batch
// key, then stores its own. A batch that overtook the one before it writes
// nothing and is sent once more when that one is written; one that follows
// a failed batch fails. Apply and Clear store a fresh id, so a batch whose
// command outlived its context and lands after them writes nothing.
//
// # Failures
//
// When Redis cannot be reached or fails to answer, every method returns an
// error wrapping store.ErrUnavailable and the cause; the operation may or
// may not have been applied. The same Store works again once Redis is back:
// go-redis reconnects on its own (after a failed dial its pool probes the
// server about once a second). With go-redis's default options a call on a
// server that is down fails after its retries, under two seconds; a
// context deadline cuts that short.
//
// A refusal that waiting cannot cure (a wrong password, no password where
// one is required, an ACL denying a command or key the store needs, a
// database index the server lacks) fails at once with an error wrapping
// ErrRefused and saying which, not store.ErrUnavailable. go-redis's own
// "failed to dial" lines about a store's client go to Options.Logger,
// rate-limited, instead of stderr. Open names its URL in errors with the
// password replaced by "xxxxx".
//
// go-redis retries a command after a network error, so a batch whose reply
// was lost may run twice. A batch is idempotent (puts and deletes by seq,
// the same fencing check), so this is harmless as long as one writer at a
// time drives a session's batches, as the tether client's committer does;
// a batch of ApplyAsync that runs twice writes once, since its own id is
// then the last one stored.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/store"
)

var (
	_ store.SessionStore = (*Store)(nil)
	_ store.Lister       = (*Store)(nil)
	_ store.Owner        = (*Store)(nil)
	_ store.Scanner      = (*Store)(nil)
	_ store.Pipeliner    = (*Store)(nil)
)

// Defaults for Options fields left zero.
const (
	// DefaultPrefix starts every key when Options.Prefix is empty.
	DefaultPrefix = "tether"
	// DefaultLeaseTTL is the lease TTL when neither Options.LeaseTTL nor
	// store.LeaseOptions.TTL sets one.
	DefaultLeaseTTL = 10 * time.Second
	// DefaultWaitTimeout bounds the wait for replicas when
	// Options.WaitTimeout is zero.
	DefaultWaitTimeout = time.Second
)

// Load and Scan read a session in pages of at most loadPageRecords records
// or about loadPageBytes bytes, one script and one round trip each. A
// script holds up every other client of that Redis while it runs, and a
// page costs Redis about 2 to 4 µs per small record and 2 to 2.5 ms per MiB
// of values (a busy 2-core machine, Redis 7.0; BenchmarkPageBlocking
// measures it), so these bounds keep a page to a few milliseconds. Pages
// of 10,000 records held Redis up about 50 ms each; a Load of 100,000
// small records in 200 pages of 500 takes no longer in all (Redis spends
// less per record on small pages), but over a network each page costs a
// round trip.
const (
	loadPageRecords = 500
	loadPageBytes   = 1 << 20
	// loadAttempts is how many times Load restarts its pages when a batch
	// lands between two of them, before reading the session in one script:
	// atomic, but as long as the session, since it holds Redis up about
	// 4 µs per record (0.4 s for 100,000). Only a session that another
	// handle writes while it is read gets there: the client loads its own
	// session while its commits are idle.
	loadAttempts = 3
)

// Options tune a Store. The zero value (or nil) gives the defaults.
type Options struct {
	// Prefix starts every key the store writes, so that several
	// applications or environments can share one Redis. It must not hold
	// '{' or '}', which would break the Cluster hash tag. Default "tether".
	Prefix string
	// LeaseTTL is the lease TTL used when Acquire is given none. Default
	// 10s.
	LeaseTTL time.Duration
	// WaitReplicas, when above zero, makes every Apply and Clear wait (with
	// Redis's WAIT) until that many replicas acknowledged the batch. When
	// fewer do within WaitTimeout, the call returns an error wrapping
	// store.ErrUnavailable: the batch may have been applied on the primary
	// and may be lost if it fails over now.
	WaitReplicas int
	// WaitTimeout bounds the wait for replicas. Keep it below the client's
	// ReadTimeout. Default 1s.
	WaitTimeout time.Duration
	// Logger receives, at Warn, the lines go-redis logs during this
	// store's calls (chiefly "failed to dial" while Redis is down), at
	// most one line of a kind per LogInterval, with the number held back
	// in attribute held_back. Nil drops them. go-redis's logger is
	// process-wide: the first New or Open installs one that routes each
	// line about a failed dial of a store's client to that store (New
	// adds a hook to the client to see its dials) and writes every other
	// line to stderr, as go-redis does; an application that calls
	// goredis.SetLogger afterwards replaces it.
	Logger *slog.Logger
	// LogInterval is the least time between two lines of one kind passed
	// to Logger. Default DefaultLogInterval (10s).
	LogInterval time.Duration
}

// Store is a session store in Redis. It is safe for concurrent use. Create
// it with New or Open.
type Store struct {
	rdb      goredis.UniversalClient
	owned    bool // Close closes rdb: Open created it
	prefix   string
	ttl      time.Duration
	replicas int
	waitFor  time.Duration
	holder   string // this handle's identity in lease values
	// pageRecords and pageBytes size the pages of Load, and bound those of
	// Scan: loadPageRecords and loadPageBytes, smaller in tests.
	pageRecords, pageBytes int

	logs logLimiter // go-redis's lines about this store's calls

	mu      sync.Mutex
	closed  bool                 // guarded by mu
	leases  map[store.Key]*lease // guarded by mu: leases held (or lost) and not released
	pending map[store.Key]bool   // guarded by mu: keys an Acquire of this handle is taking
	// chains holds, per Key, the last batch this handle began with
	// ApplyAsync (see pipeline.go); guarded by mu.
	chains map[store.Key]*call
	// acquiring counts Acquire attempts in flight; Close waits for them.
	acquiring sync.WaitGroup
	// async counts the goroutines of ApplyAsync calls; Close waits for them.
	async   sync.WaitGroup
	batches atomic.Uint64 // the last batch id's counter (batchID)
}

// New returns a store that keeps its sessions in rdb: a *goredis.Client
// (standalone, or a failover client for Sentinel) or a *goredis.ClusterClient.
// The caller keeps ownership of rdb: Close leaves it open. New does not
// contact Redis. Enable the client's ContextTimeoutEnabled option so that
// contexts bound the network waits of every call.
func New(rdb goredis.UniversalClient, opts *Options) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("redis: nil client")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("redis: prefix %q holds a brace, which would break the cluster hash tag", o.Prefix)
	}
	if o.LeaseTTL < 0 || o.WaitTimeout < 0 || o.WaitReplicas < 0 || o.LogInterval < 0 {
		return nil, errors.New("redis: negative option")
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.LogInterval == 0 {
		o.LogInterval = DefaultLogInterval
	}
	installLogRouter()
	var id [16]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	s := &Store{
		rdb:      rdb,
		prefix:   o.Prefix,
		ttl:      o.LeaseTTL,
		replicas: o.WaitReplicas,
		waitFor:  o.WaitTimeout,
		holder:   hex.EncodeToString(id[:]),

		logs: logLimiter{log: o.Logger, interval: o.LogInterval, kinds: make(map[string]*logKind)},

		pageRecords: loadPageRecords,
		pageBytes:   loadPageBytes,
		leases:      make(map[store.Key]*lease),
		pending:     make(map[store.Key]bool),
		chains:      make(map[store.Key]*call),
	}
	rdb.AddHook(dialHook{s})
	return s, nil
}

// Open connects to the Redis server named by url (redis://, rediss:// or
// unix://, as goredis.ParseURL reads it) and returns a store on it; Close
// closes that connection. Contexts bound every network wait. Open does not
// wait for Redis to answer: an unreachable server shows as
// store.ErrUnavailable on the first call.
func Open(url string, opts *Options) (*Store, error) {
	o, err := goredis.ParseURL(url)
	if err != nil {
		// Neither the URL nor the parser's message (which may quote it)
		// reaches the error with its password.
		return nil, fmt.Errorf("redis: open %s: %w", redactURL(url), redactErr(url, err))
	}
	o.ContextTimeoutEnabled = true
	rdb := goredis.NewClient(o)
	s, err := New(rdb, opts)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// urlPassword returns the password of a URL's userinfo, as written (which
// may be percent-encoded), without relying on the URL being well formed.
func urlPassword(raw string) string {
	rest := raw
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return ""
	}
	user := rest[:at]
	if i := strings.IndexByte(user, ':'); i >= 0 {
		return user[i+1:]
	}
	return ""
}

// redactURL returns raw with the password of its userinfo replaced.
func redactURL(raw string) string {
	pw := urlPassword(raw)
	if pw == "" {
		return raw
	}
	return strings.ReplaceAll(raw, pw, "xxxxx")
}

// redactErr returns err's message with every form of raw's password
// replaced; the cause is not kept, since its own message holds it.
func redactErr(raw string, err error) error {
	msg := err.Error()
	if pw := urlPassword(raw); pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
		if dec, derr := neturl.PathUnescape(pw); derr == nil && dec != "" {
			msg = strings.ReplaceAll(msg, dec, "xxxxx")
		}
		if dec, derr := neturl.QueryUnescape(pw); derr == nil && dec != "" {
			msg = strings.ReplaceAll(msg, dec, "xxxxx")
		}
	}
	return errors.New(msg)
}

// Client returns the client the store uses.
func (s *Store) Client() goredis.UniversalClient { return s.rdb }

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// fenceArgs returns the fencing arguments of a write to k, and the lease
// this handle holds on it, if any.
func (s *Store) fenceArgs(k store.Key) (string, string, *lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", "", nil, store.ErrClosed
	}
	if l := s.leases[k]; l != nil {
		return l.value, s.holder + ":", l, nil
	}
	return "", s.holder + ":", nil, nil
}

// ErrRefused is returned (wrapped) when Redis refuses the store's request
// for a reason that waiting will not cure: a wrong user name or password
// (WRONGPASS), no credentials where the server wants them (NOAUTH), an ACL
// that denies a command or key the store needs (NOPERM), or a database
// index the server does not have. It does not match store.ErrUnavailable:
// retrying cannot succeed until the configuration changes. It matches
// store.ErrRefused.
var ErrRefused error = refusedError{}

type refusedError struct{}

func (refusedError) Error() string        { return "redis: refused by the server" }
func (refusedError) Is(target error) bool { return target == store.ErrRefused }

// refusal returns why Redis refused err for good, or "" when err is no
// such refusal.
func refusal(err error) string {
	var rerr goredis.Error
	if !errors.As(err, &rerr) {
		return ""
	}
	msg := rerr.Error()
	switch {
	case strings.HasPrefix(msg, "WRONGPASS"):
		return "wrong user name or password"
	case strings.HasPrefix(msg, "NOAUTH"), strings.Contains(msg, "unauthenticated"):
		// An unauthenticated connection may not even send a long
		// request: "Protocol error: unauthenticated multibulk length".
		return "the server requires a password and none was given"
	case strings.HasPrefix(msg, "NOPERM"), strings.Contains(msg, "can't access at least one of the keys"):
		return "the ACL user lacks a permission the store needs (scripts, SCAN and every key under the store's prefix)"
	case strings.Contains(msg, "DB index is out of range"), strings.Contains(msg, "invalid DB index"):
		return "the server has no database of the index the client selects"
	}
	return ""
}

// fail turns an error from Redis into the store's error for op on k.
func (s *Store) fail(ctx context.Context, op string, k store.Key, err error) error {
	if s.isClosed() {
		return fmt.Errorf("redis: %s %s: %w", op, k, store.ErrClosed)
	}
	if why := refusal(err); why != "" {
		return fmt.Errorf("redis: %s %s: %w: %s: %w", op, k, ErrRefused, why, err)
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("redis: %s %s: %w: %w (%w)", op, k, store.ErrUnavailable, err, cerr)
	}
	return fmt.Errorf("redis: %s %s: %w: %w", op, k, store.ErrUnavailable, err)
}

// Load returns the records of session k in seq order. Records failing their
// checksum are left out and reported in a *store.CorruptError, returned with
// the good ones.
func (s *Store) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("redis: load %s: %w", k, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	keys := s.keys(k)
	// A batch that lands between two pages would show a mix of before and
	// after; the meta hash's gen and ver change with every batch, so a
	// change between the first and the last page means: read again.
	for attempt := 0; ; attempt++ {
		count, budget := s.pageRecords, s.pageBytes
		if attempt == loadAttempts {
			count, budget = 0, 0 // one script: consistent by construction
		}
		recs, corrupt, stable, err := s.loadPages(ctx, k, keys, count, budget)
		if err != nil {
			return nil, err
		}
		if !stable {
			continue
		}
		if len(corrupt.Seqs) > 0 || corrupt.Err != nil {
			return recs, corrupt
		}
		return recs, nil
	}
}

// loadPages reads the whole session page by page. stable reports that no
// batch changed the session between the first and the last page.
func (s *Store) loadPages(ctx context.Context, k store.Key, keys sessionKeys, count, budget int) (recs []store.Record, corrupt *store.CorruptError, stable bool, err error) {
	corrupt = &store.CorruptError{Key: k}
	var version string
	var bad []error
	start := "-"
	for n := 0; ; n++ {
		p, err := s.readPage(ctx, "load", k, keys, start, count, budget)
		if err != nil {
			return nil, nil, false, err
		}
		if n == 0 {
			version = p.version
		} else if p.version != version {
			return nil, nil, false, nil
		}
		recs = append(recs, p.recs...)
		corrupt.Seqs = append(corrupt.Seqs, p.bad...)
		bad = append(bad, p.why...)
		if p.peek == "" {
			break
		}
		start = "(" + p.last
	}
	if len(bad) > 0 {
		corrupt.Err = errors.Join(bad...)
	}
	return recs, corrupt, true, nil
}

// page is one reply of loadScript.
type page struct {
	version string         // the session's gen and ver when the page was read
	recs    []store.Record // the readable records
	bad     []uint64       // the Seqs of the records that failed their check
	why     []error        // what was wrong, one error per bad record or member
	last    string         // the last index member of the page
	peek    string         // the first index member after the page, "" for none
}

// readPage reads one page of session k from the ZRANGEBYLEX start, with
// loadScript.
func (s *Store) readPage(ctx context.Context, op string, k store.Key, keys sessionKeys, start string, count, budget int) (*page, error) {
	res, err := loadScript.Run(ctx, s.rdb, []string{keys.rec, keys.idx, keys.meta}, start, count, budget).Slice()
	if err != nil {
		return nil, s.fail(ctx, op, k, err)
	}
	if len(res) < 3 || len(res)%2 != 1 {
		return nil, s.fail(ctx, op, k, fmt.Errorf("unexpected reply of %d elements", len(res)))
	}
	gen, _ := res[0].(string)
	ver, _ := res[1].(string)
	p := &page{version: gen + "/" + ver}
	p.peek, _ = res[2].(string)
	for i := 3; i+1 < len(res); i += 2 {
		member, _ := res[i].(string)
		p.last = member
		seq, ok := parseSeqField(member)
		if !ok {
			p.why = append(p.why, fmt.Errorf("index member %q is not a sequence number", member))
			continue
		}
		val, ok := res[i+1].(string)
		if !ok {
			p.bad = append(p.bad, seq)
			p.why = append(p.why, fmt.Errorf("seq %d: indexed but missing", seq))
			continue
		}
		r, err := decodeRecord(seq, []byte(val))
		if err != nil {
			p.bad = append(p.bad, seq)
			p.why = append(p.why, fmt.Errorf("seq %d: %w", seq, err))
			continue
		}
		p.recs = append(p.recs, r)
	}
	return p, nil
}

// Apply applies ops to session k as one atomic batch in one round trip.
// It fails with store.ErrSessionTaken when another holder owns k's lease,
// or when this handle's own lease on k was lost.
func (s *Store) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	if err := store.Validate(store.MaxPacketLen, ops); err != nil {
		return fmt.Errorf("redis: apply %s: %w", k, err)
	}
	expect, mine, l, err := s.fenceArgs(k)
	if err != nil {
		return fmt.Errorf("redis: apply %s: %w", k, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(ops) == 0 {
		return nil
	}
	if err := lostErr("apply", k, l); err != nil {
		return err
	}
	id := s.batchID()
	err = s.write(ctx, "apply", k, l, applyScript, s.keys(k).written(), applyArgs(expect, mine, anyBatch, id, k, ops))
	s.wrote(k, id, err)
	return err
}

// applyArgs returns the ARGV of applyScript: the fencing pair, the batch
// ids (see batchCheck), the Key, and a triple per op. The records are
// encoded, so the caller's slices are not kept.
func applyArgs(expect, mine, prev, id string, k store.Key, ops []store.Op) []any {
	args := make([]any, 0, 6+3*len(ops))
	args = append(args, expect, mine, prev, id, k.Server, k.ClientID)
	for _, op := range ops {
		if op.Kind == store.OpPut {
			args = append(args, "p", seqField(op.Record.Seq), encodeRecord(op.Record))
		} else {
			args = append(args, "d", seqField(op.Record.Seq), "")
		}
	}
	return args
}

// Clear removes every record of session k, under the same fencing as Apply.
// The lease and the fencing counter stay: Clear drops data, not ownership.
func (s *Store) Clear(ctx context.Context, k store.Key) error {
	expect, mine, l, err := s.fenceArgs(k)
	if err != nil {
		return fmt.Errorf("redis: clear %s: %w", k, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := lostErr("clear", k, l); err != nil {
		return err
	}
	id := s.batchID()
	err = s.write(ctx, "clear", k, l, clearScript, s.keys(k).written(), []any{expect, mine, anyBatch, id})
	s.wrote(k, id, err)
	return err
}

// lostErr refuses a write under a lease this handle has lost, without
// asking Redis: even when no one else took the lease yet, the holder was
// told through Lost that it no longer owns the session, and must Release
// and Acquire again before it writes.
func lostErr(op string, k store.Key, l *lease) error {
	if l != nil && l.isLost() {
		return fmt.Errorf("redis: %s %s: %w (this handle's lease was lost)", op, k, store.ErrSessionTaken)
	}
	return nil
}

// write runs a fenced writing script and, when asked, waits for replicas.
// A batch the batch fence refused fails with an error wrapping
// errOutOfOrder.
func (s *Store) write(ctx context.Context, op string, k store.Key, l *lease, script *goredis.Script, keys []string, args []any) error {
	res, err := s.runWrite(ctx, script, keys, args)
	if err != nil {
		return s.fail(ctx, op, k, err)
	}
	if len(res) != 2 {
		return s.fail(ctx, op, k, fmt.Errorf("unexpected reply %v", res))
	}
	switch code, _ := res[0].(int64); code {
	case 1:
	case 2:
		last, _ := res[1].(string)
		return fmt.Errorf("redis: %s %s: %w (the session's last batch is %q)", op, k, errOutOfOrder, last)
	default:
		if l != nil && !l.released.Load() {
			l.markLost() // the renewer would find out too, later
		}
		holder, _ := res[1].(string)
		return fmt.Errorf("redis: %s %s: %w (lease now %s)", op, k, store.ErrSessionTaken, describeLease(holder))
	}
	return nil
}

// describeLease renders a stored lease value for an error message.
func describeLease(v string) string {
	if v == "" {
		return "free"
	}
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		return "held with token " + v[i+1:]
	}
	return "held"
}

// runWrite runs script once. With WaitReplicas set, the script and WAIT go
// in one pipeline on the connection of the key's primary, since WAIT counts
// the replicas that caught up with the writes of its own connection.
func (s *Store) runWrite(ctx context.Context, script *goredis.Script, keys []string, args []any) ([]any, error) {
	if s.replicas <= 0 {
		return script.Run(ctx, s.rdb, keys, args...).Slice()
	}
	var node goredis.Cmdable = s.rdb
	if cc, ok := s.rdb.(*goredis.ClusterClient); ok {
		c, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		node = c
	}
	run := func() (*goredis.Cmd, *goredis.Cmd) {
		pipe := node.Pipeline()
		cmd := script.EvalSha(ctx, pipe, keys, args...)
		// Pipeliner has no Wait method; WAIT takes its timeout in ms.
		wait := pipe.Do(ctx, "wait", s.replicas, s.waitFor.Milliseconds())
		_, _ = pipe.Exec(ctx) // each command carries its own error
		return cmd, wait
	}
	cmd, wait := run()
	if goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		// Load the script and go again. The WAIT that followed the
		// refused EVALSHA waited for nothing: a cost paid once per script
		// and server (or after SCRIPT FLUSH), not per batch.
		if err := script.Load(ctx, node).Err(); err != nil {
			return nil, err
		}
		cmd, wait = run()
	}
	res, err := cmd.Slice()
	if err != nil {
		if cc, ok := s.rdb.(*goredis.ClusterClient); ok &&
			(goredis.HasErrorPrefix(err, "MOVED") || goredis.HasErrorPrefix(err, "ASK")) {
			// The node client does not follow redirections; let the cluster
			// client learn the new layout for the next call.
			cc.ReloadState(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	if len(res) == 0 {
		return res, nil // write reports the malformed reply
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return res, nil // refused: nothing was written, nothing to wait for
	}
	n, err := wait.Int64()
	if err != nil {
		return nil, fmt.Errorf("wait for %d replicas (the batch may have been applied): %w", s.replicas, err)
	}
	if n < int64(s.replicas) {
		return nil, fmt.Errorf("%d of %d replicas acknowledged within %v (the batch may have been applied)",
			n, s.replicas, s.waitFor)
	}
	return res, nil
}

// Sessions returns the key of every session that holds records. On Redis
// Cluster it scans every primary.
func (s *Store) Sessions(ctx context.Context) ([]store.Key, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("redis: sessions: %w", store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	seen := make(map[store.Key]bool)
	scan := func(ctx context.Context, c goredis.Cmdable) error {
		found, err := s.scanNode(ctx, c)
		mu.Lock()
		defer mu.Unlock()
		for _, k := range found {
			seen[k] = true
		}
		return err
	}
	var err error
	switch c := s.rdb.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error { return scan(ctx, n) })
	case *goredis.Ring:
		err = c.ForEachShard(ctx, func(ctx context.Context, n *goredis.Client) error { return scan(ctx, n) })
	default:
		err = scan(ctx, s.rdb)
	}
	if err != nil {
		if s.isClosed() {
			return nil, fmt.Errorf("redis: sessions: %w", store.ErrClosed)
		}
		if why := refusal(err); why != "" {
			return nil, fmt.Errorf("redis: sessions: %w: %s: %w", ErrRefused, why, err)
		}
		return nil, fmt.Errorf("redis: sessions: %w: %w", store.ErrUnavailable, err)
	}
	keys := make([]store.Key, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	return keys, nil
}

// scanNode lists the sessions whose meta hash lives on one node: a SCAN
// page, then one pipelined HMGET per page for their plain-text keys.
func (s *Store) scanNode(ctx context.Context, c goredis.Cmdable) ([]store.Key, error) {
	var out []store.Key
	pattern := metaPattern(s.prefix)
	var cursor uint64
	for {
		names, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return out, err
		}
		if len(names) > 0 {
			pipe := c.Pipeline()
			cmds := make([]*goredis.SliceCmd, len(names))
			for i, name := range names {
				cmds[i] = pipe.HMGet(ctx, name, "server", "client")
			}
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
				return out, err
			}
			for _, cmd := range cmds {
				v := cmd.Val()
				if len(v) != 2 {
					continue
				}
				server, ok1 := v[0].(string)
				client, ok2 := v[1].(string)
				if ok1 && ok2 { // else the session emptied since the SCAN
					out = append(out, store.Key{Server: server, ClientID: client})
				}
			}
		}
		if next == 0 {
			return out, nil
		}
		cursor = next
	}
}

// Close releases every lease this handle holds (best effort: a lease not
// released expires after its TTL), stops their renewers, and closes the
// client if Open created it. Later calls return store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	held := make([]*lease, 0, len(s.leases))
	for _, l := range s.leases {
		held = append(held, l)
	}
	s.leases = nil
	s.mu.Unlock()
	// An attempt in flight sees closed and releases what it took, while
	// the client still works.
	s.acquiring.Wait()
	// Batches on their way end with their contexts, under the leases.
	s.async.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = l.release(ctx)
		}()
	}
	wg.Wait()
	forgetDialFailures(s)
	if s.owned {
		if err := s.rdb.Close(); err != nil {
			return fmt.Errorf("redis: close: %w", err)
		}
	}
	return nil
}
