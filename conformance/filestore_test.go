package conformance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
)

// fileStore is a small durable backend written for the suite's own tests:
// one file per session, rewritten whole (to a temporary file, synced, then
// renamed) by every Apply. Correct, it passes the whole suite; each bug
// below is one a backend author could plant, and TestBroken proves that
// the suite catches it.
//
//	keyjoin:  the file name hashes Server+":"+ClientID, so ("a:b", "c") and
//	          ("a", "b:c") share a file; the cache in memory is keyed
//	          correctly, so isolation holds until a reopen.
//	len16:    a 16-bit length on disk: a record over 65,535 bytes comes back
//	          truncated after a reopen.
//	trustlen: the decoder trusts the stored length, so a torn file panics.
//	nofsync:  nothing is synced before Apply returns.
//	writebehind: Apply returns before its data is written; a kill right
//	          after loses it (only a process kill shows it).
//	nochild:  (a harness bug) a Durable harness with no ChildConfig.
type fileStore struct {
	dir string
	bug string

	mu      sync.Mutex // guards the fields below
	closed  bool
	cache   map[store.Key]map[uint64]store.Record
	corrupt map[string]error // file name → why it could not be read
}

// fileMagic starts every session file.
const fileMagic = "TFS1"

func openFileStore(dir, bug string) (*fileStore, error) {
	s := &fileStore{dir: dir, bug: bug, cache: map[store.Key]map[uint64]store.Record{}, corrupt: map[string]error{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("filestore: open %s: %w", dir, err)
	}
	for _, ent := range entries {
		if filepath.Ext(ent.Name()) != ".session" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			return nil, fmt.Errorf("filestore: open: %w", err)
		}
		k, recs, err := s.decode(data)
		if err != nil {
			s.corrupt[ent.Name()] = err
			continue
		}
		s.cache[k] = recs
	}
	return s, nil
}

// name returns the file name of k's session.
func (s *fileStore) name(k store.Key) string {
	var sum [32]byte
	if s.bug == "keyjoin" {
		sum = sha256.Sum256([]byte(k.Server + ":" + k.ClientID))
	} else {
		sum = sha256.Sum256(appendKey(nil, k))
	}
	return hex.EncodeToString(sum[:16]) + ".session"
}

func appendKey(b []byte, k store.Key) []byte {
	b = binary.AppendUvarint(b, uint64(len(k.Server)))
	b = append(b, k.Server...)
	b = binary.AppendUvarint(b, uint64(len(k.ClientID)))
	return append(b, k.ClientID...)
}

// encode lays a session out: magic, key, then per record Seq (8), Dir (1),
// ID (2), length (4; 2 with the len16 bug), Packet, CRC-32 of all of it.
func (s *fileStore) encode(k store.Key, recs map[uint64]store.Record) []byte {
	b := appendKey([]byte(fileMagic), k)
	for _, seq := range slices.Sorted(maps.Keys(recs)) {
		r := recs[seq]
		start := len(b)
		b = binary.BigEndian.AppendUint64(b, r.Seq)
		b = append(b, byte(r.Dir))
		b = binary.BigEndian.AppendUint16(b, r.ID)
		p := r.Packet
		if s.bug == "len16" {
			p = p[:uint16(len(p))]
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		} else {
			b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		}
		b = append(b, p...)
		b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
	}
	return b
}

var errShort = errors.New("file ends inside a record")

// decode reads a session file.
func (s *fileStore) decode(data []byte) (store.Key, map[uint64]store.Record, error) {
	var k store.Key
	if !bytes.HasPrefix(data, []byte(fileMagic)) {
		return k, nil, errors.New("not a session file")
	}
	b := data[len(fileMagic):]
	var parts [2]string
	for i := range parts {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return k, nil, errors.New("bad key")
		}
		parts[i] = string(b[w : w+int(n)])
		b = b[w+int(n):]
	}
	k = store.Key{Server: parts[0], ClientID: parts[1]}
	lenSize := 4
	if s.bug == "len16" {
		lenSize = 2
	}
	head := 8 + 1 + 2 + lenSize
	recs := map[uint64]store.Record{}
	for len(b) > 0 {
		if len(b) < head && s.bug != "trustlen" {
			return k, nil, errShort
		}
		var n int
		if lenSize == 2 {
			n = int(binary.BigEndian.Uint16(b[11:]))
		} else {
			n = int(binary.BigEndian.Uint32(b[11:]))
		}
		if s.bug != "trustlen" && n > len(b)-head-4 {
			return k, nil, errShort
		}
		body := b[:head+n]
		if binary.BigEndian.Uint32(b[head+n:]) != crc32.ChecksumIEEE(body) {
			return k, nil, errors.New("checksum mismatch")
		}
		r := store.Record{
			Seq:    binary.BigEndian.Uint64(b),
			Dir:    store.Direction(b[8]),
			ID:     binary.BigEndian.Uint16(b[9:]),
			Packet: bytes.Clone(b[head : head+n]),
		}
		recs[r.Seq] = r
		b = b[head+n+4:]
	}
	return k, recs, nil
}

func (s *fileStore) check(ctx context.Context) error {
	if s.closed {
		return store.ErrClosed
	}
	return ctx.Err()
}

func (s *fileStore) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err, bad := s.corrupt[s.name(k)]; bad {
		return nil, &store.CorruptError{Key: k, Err: err}
	}
	recs := s.cache[k]
	out := make([]store.Record, 0, len(recs))
	for _, seq := range slices.Sorted(maps.Keys(recs)) {
		r := recs[seq]
		r.Packet = bytes.Clone(r.Packet)
		out = append(out, r)
	}
	return out, nil
}

func (s *fileStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	if err := store.Validate(0, ops); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	if err, bad := s.corrupt[s.name(k)]; bad {
		return &store.CorruptError{Key: k, Err: err}
	}
	if len(ops) == 0 {
		return nil
	}
	next := maps.Clone(s.cache[k])
	if next == nil {
		next = map[uint64]store.Record{}
	}
	for _, op := range ops {
		if op.Kind == store.OpPut {
			r := op.Record
			r.Packet = bytes.Clone(r.Packet)
			next[r.Seq] = r
		} else {
			delete(next, op.Record.Seq)
		}
	}
	prev := s.cache[k]
	s.cache[k] = next
	if s.bug == "writebehind" {
		// Acknowledged at once, written a little later.
		go func() {
			time.Sleep(100 * time.Millisecond) // the write-behind delay, not a wait for an event
			s.mu.Lock()
			defer s.mu.Unlock()
			_ = s.write(k, next)
		}()
		return nil
	}
	if err := s.write(k, next); err != nil {
		s.cache[k] = prev
		return err
	}
	return nil
}

// write replaces k's file with recs (or removes it when recs is empty).
func (s *fileStore) write(k store.Key, recs map[uint64]store.Record) error {
	path := filepath.Join(s.dir, s.name(k))
	if len(recs) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		delete(s.corrupt, s.name(k))
		return s.syncDir()
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(s.encode(k, recs)); err != nil {
		_ = f.Close()
		return err
	}
	if s.bug != "nofsync" {
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return s.syncDir()
}

func (s *fileStore) syncDir() error {
	if s.bug == "nofsync" {
		return nil
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *fileStore) Clear(ctx context.Context, k store.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.write(k, nil); err != nil {
		return err
	}
	delete(s.cache, k)
	return nil
}

func (s *fileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	s.closed = true
	return nil
}

// damageFile damages the file of session k in dir.
func damageFile(dir string, k store.Key, kind conformance.DamageKind) error {
	path := filepath.Join(dir, (&fileStore{}).name(k))
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	switch kind {
	case conformance.Truncate:
		return os.Truncate(path, int64(len(data)/2))
	case conformance.FlipBytes:
		data[len(data)/2] ^= 0xff
		data[len(data)/2+1] ^= 0x55
		return os.WriteFile(path, data, 0o600)
	case conformance.DropKey:
		return os.Remove(path)
	}
	return conformance.ErrCannotDamage
}

// newFileHarness prepares a directory for one check of a file store with
// bug ("" for none).
func newFileHarness(bug string) conformance.HarnessMaker {
	return func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
		dir := t.TempDir()
		child := dir
		if bug == "nochild" {
			child = "" // a Durable harness that forgot to let a child in
		}
		return &conformance.HarnessFuncs{
			Make:  func(context.Context) (store.SessionStore, error) { return openFileStore(dir, bug) },
			Caps:  conformance.Capabilities{Durable: true},
			Child: child,
			Damage: func(_ context.Context, k store.Key, kind conformance.DamageKind) error {
				// The keyjoin bug names files otherwise; its damage is not
				// what it is tested for.
				return damageFile(dir, k, kind)
			},
		}, nil
	}
}

// fileOptions lets a child process open the file store with bug.
func fileOptions(bug string) conformance.Options {
	return conformance.Options{OpenChild: func(_ context.Context, dir string) (store.SessionStore, error) {
		return openFileStore(dir, bug)
	}}
}

// TestFileStore runs the suite against the correct file store: it must
// pass, kill, trace and damage checks included.
func TestFileStore(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("running as the child of TestBroken")
	}
	conformance.Run(t, newFileHarness(""), fileOptions(""))
}
