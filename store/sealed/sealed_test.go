package sealed_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/memory"
	"github.com/tethermq/tether/store/sealed"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testKey returns key n of the tests: fixed bytes, so that a failure
// reproduces.
func testKey(n int) []byte {
	k := sha256.Sum256(fmt.Appendf(nil, "sealed test key %d", n))
	return k[:]
}

// ring returns a keyring of the given key ids, sealing with current.
func ring(current uint32, ids ...uint32) sealed.Keyring {
	kr := sealed.Keyring{Current: current, Keys: make(map[uint32][]byte)}
	for _, id := range ids {
		kr.Keys[id] = testKey(int(id))
	}
	return kr
}

// modes are the two ways of keeping the session Key: in clear, or hidden
// under a NameKey. Every check runs in both.
var modes = []struct {
	name    string
	nameKey []byte
}{
	{"ClearKeys", nil},
	{"HiddenKeys", testKey(1000)},
}

// durableModes are the modes the suite runs over the durable backends: the
// wrapper's handling of clear keys is the same whatever is under it, and
// the memory run covers it; each full suite over a durable backend costs
// a minute or more under -race.
var durableModes = modes[1:]

func opts(nameKey []byte) sealed.Options {
	return sealed.Options{Keyring: ring(1, 1), NameKey: nameKey}
}

func mustNew(t testing.TB, inner store.SessionStore, o sealed.Options) store.SessionStore {
	t.Helper()
	s, err := sealed.New(inner, o)
	if err != nil {
		t.Fatalf("sealed.New: %v", err)
	}
	return s
}

func TestConformanceMemory(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			conformance.Run(t, func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
				// One memory store is the storage; every handle wraps it.
				inner := memory.New()
				return &conformance.HarnessFuncs{
					Make: func(context.Context) (store.SessionStore, error) { return sealed.New(inner, opts(m.nameKey)) },
					Caps: conformance.Capabilities{MaxPacketLen: store.MaxPacketLen - sealed.Overhead},
				}, nil
			})
		})
	}
}

// boltOptions raise bolt's limit by the sealing overhead, so that the
// sealed store takes the whole store.MaxPacketLen the contract asks for.
var boltOptions = &bolt.Options{MaxPacketLen: store.MaxPacketLen + sealed.Overhead}

// modeOf returns the mode named name.
func modeOf(name string) (nameKey []byte, err error) {
	for _, m := range modes {
		if m.name == name {
			return m.nameKey, nil
		}
	}
	return nil, fmt.Errorf("unknown mode %q", name)
}

// openSealedBolt opens the sealed store a child configuration names:
// "mode:path".
func openSealedBolt(config string) (store.SessionStore, error) {
	mode, path, _ := strings.Cut(config, ":")
	nameKey, err := modeOf(mode)
	if err != nil {
		return nil, err
	}
	inner, err := bolt.Open(path, boltOptions)
	if err != nil {
		return nil, err
	}
	s, err := sealed.New(inner, opts(nameKey))
	if err != nil {
		_ = inner.Close()
	}
	return s, err
}

func boltHarness(mode string) conformance.HarnessMaker {
	return func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
		config := mode + ":" + filepath.Join(t.TempDir(), "sessions.db")
		return &conformance.HarnessFuncs{
			Make:  func(context.Context) (store.SessionStore, error) { return openSealedBolt(config) },
			Caps:  conformance.Capabilities{Durable: true},
			Child: config,
			Damage: func(ctx context.Context, k store.Key, kind conformance.DamageKind) error {
				return damageSealed(ctx, config, k, kind)
			},
		}, nil
	}
}

// damageSealed damages session k as someone who can write the backend
// would: through the inner store, whose own checksum then holds, so that
// only sealing can tell. FlipBytes changes one byte of a sealed record,
// Truncate cuts one short. A record deleted whole (DropKey) is not
// something sealing can detect, since it authenticates records one by one.
func damageSealed(ctx context.Context, config string, k store.Key, kind conformance.DamageKind) error {
	return damageThrough(ctx, func() (store.SessionStore, error) { return openSealedBolt(config) }, k, kind)
}

// damageThrough is damageSealed on the sealed store that open returns.
func damageThrough(ctx context.Context, open func() (store.SessionStore, error), k store.Key, kind conformance.DamageKind) error {
	if kind != conformance.FlipBytes && kind != conformance.Truncate {
		return fmt.Errorf("%w: sealing authenticates each record, not which records a session holds", conformance.ErrCannotDamage)
	}
	s, err := open()
	if err != nil {
		return err
	}
	defer s.Close()
	sk := s.(interface{ InnerKey(store.Key) store.Key }).InnerKey(k)
	inner := s.(interface{ Inner() store.SessionStore }).Inner()
	recs, err := inner.Load(ctx, sk)
	if err != nil {
		return err
	}
	if len(recs) < 2 {
		return fmt.Errorf("session %v holds %d records", k, len(recs))
	}
	r := recs[1]
	if kind == conformance.FlipBytes {
		r.Packet[len(r.Packet)/2] ^= 0x10
	} else {
		r.Packet = r.Packet[:len(r.Packet)/2]
	}
	return inner.Apply(ctx, sk, store.Put(r))
}

var childOptions = conformance.Options{
	OpenChild: func(_ context.Context, config string) (store.SessionStore, error) { return openSealedBolt(config) },
}

func TestConformanceBolt(t *testing.T) {
	for _, m := range durableModes {
		t.Run(m.name, func(t *testing.T) { conformance.Run(t, boltHarness(m.name), childOptions) })
	}
}

// publish returns an encoded QoS 1 PUBLISH, as the client stores it.
func publish(t testing.TB, topic, payload string) []byte {
	t.Helper()
	b, err := packets.Append(nil, &packets.Publish{QoS: 1, Topic: topic, PacketID: 1, Payload: []byte(payload)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	secretKey     = store.Key{Server: "tcp://secret-broker.example:1883", ClientID: "secret-client-id"}
	secretTopic   = "plant/secret-topic/valve"
	secretPayload = "secret-payload-0123456789"
)

// TestAtRestBolt writes a session through the sealed store and reads the
// bolt file byte by byte: neither the topic nor the payload is in it, nor,
// with a NameKey, the server or ClientID.
func TestAtRestBolt(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "sessions.db")
			inner, err := bolt.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := mustNew(t, inner, opts(m.nameKey))
			pub := publish(t, secretTopic, secretPayload)
			if err := s.Apply(ctx, secretKey,
				store.Put(store.Record{Seq: 0, Dir: store.Meta, Packet: []byte("secret-meta-record")}),
				store.Put(store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: pub}),
				store.Put(store.Record{Seq: 2, Dir: store.Inbound, ID: 9, Packet: []byte(secretPayload + "-inbound")}),
			); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			expectAbsent(t, raw, m.nameKey != nil)

			// And the sealed store reads it all back.
			inner, err = bolt.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			s = mustNew(t, inner, opts(m.nameKey))
			defer s.Close()
			recs, err := s.Load(ctx, secretKey)
			if err != nil || len(recs) != 3 || !bytes.Equal(recs[1].Packet, pub) {
				t.Fatalf("Load after reopen = %d records, %v", len(recs), err)
			}
		})
	}
}

// expectAbsent fails when raw holds any secret of the test session: its
// topic, payload or meta record, and with hiddenKeys its server or ClientID.
func expectAbsent(t *testing.T, raw []byte, hiddenKeys bool) {
	t.Helper()
	secrets := []string{secretTopic, "secret-topic", secretPayload, "secret-payload", "secret-meta"}
	if hiddenKeys {
		secrets = append(secrets, secretKey.Server, "secret-broker", secretKey.ClientID, "secret-client")
	} else if !bytes.Contains(raw, []byte(secretKey.ClientID)) {
		// The search must be able to find what is there in clear.
		t.Errorf("the ClientID, kept in clear, is not found in the raw data: the search is broken")
	}
	for _, s := range secrets {
		if i := bytes.Index(raw, []byte(s)); i >= 0 {
			t.Errorf("%q is stored in plain text at offset %d", s, i)
		}
	}
}

// innerKey returns the Key under which the inner store keeps k, and checks
// that it is k only when Keys are kept in clear.
func innerKey(t *testing.T, s store.SessionStore, k store.Key, hidden bool) store.Key {
	t.Helper()
	ik := s.(interface{ InnerKey(store.Key) store.Key }).InnerKey(k)
	if hidden != (ik != k) || hidden && ik.Server != sealed.HiddenServer {
		t.Fatalf("InnerKey(%v) = %v with hidden keys %v", k, ik, hidden)
	}
	return ik
}

// expectCorrupt loads k and checks that exactly the records of wantSeqs are
// reported corrupt, with cause, and that want are returned beside them.
func expectCorrupt(t *testing.T, s store.SessionStore, k store.Key, cause error, wantSeqs []uint64, want ...store.Record) {
	t.Helper()
	recs, err := s.Load(context.Background(), k)
	var ce *store.CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Load(%v) returned %v, want a *store.CorruptError", k, err)
	}
	if ce.Key != k {
		t.Errorf("CorruptError names %v, want %v", ce.Key, k)
	}
	if !slices.Equal(ce.Seqs, wantSeqs) {
		t.Errorf("CorruptError.Seqs = %v, want %v", ce.Seqs, wantSeqs)
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Errorf("CorruptError %v does not wrap %v", err, cause)
	}
	expectRecords(t, recs, want)
}

func expectRecords(t *testing.T, got, want []store.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d: %v", len(got), len(want), got)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Dir != w.Dir || g.ID != w.ID || !bytes.Equal(g.Packet, w.Packet) {
			t.Fatalf("record %d is %+v, want %+v", i, g, w)
		}
	}
}

func rec(seq uint64, body string) store.Record {
	return store.Record{Seq: seq, Dir: store.Outbound, ID: uint16(seq), Packet: []byte(body)}
}

func apply(t *testing.T, s store.SessionStore, k store.Key, ops ...store.Op) {
	t.Helper()
	if err := s.Apply(context.Background(), k, ops...); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func load(t *testing.T, s store.SessionStore, k store.Key) []store.Record {
	t.Helper()
	recs, err := s.Load(context.Background(), k)
	if err != nil {
		t.Fatalf("Load(%v): %v", k, err)
	}
	return recs
}

var (
	keyA = store.Key{Server: "tcp://broker.test:1883", ClientID: "a"}
	keyB = store.Key{Server: "tcp://broker.test:1883", ClientID: "b"}
)

// TestWrongKey opens a session with a keyring whose key under the same id
// is another, and with one that lacks the id: every record is reported
// corrupt, as a failed checksum is, and nothing is returned in clear.
func TestWrongKey(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			inner := memory.New()
			s := mustNew(t, inner, opts(m.nameKey))
			defer s.Close()
			apply(t, s, keyA, store.Put(rec(1, "one")), store.Put(rec(2, "two")))

			wrong := sealed.Keyring{Current: 1, Keys: map[uint32][]byte{1: testKey(99)}}
			s2 := mustNew(t, inner, sealed.Options{Keyring: wrong, NameKey: m.nameKey})
			expectCorrupt(t, s2, keyA, sealed.ErrAuth, []uint64{1, 2})

			s3 := mustNew(t, inner, sealed.Options{Keyring: ring(2, 2), NameKey: m.nameKey})
			expectCorrupt(t, s3, keyA, sealed.ErrUnknownKey, []uint64{1, 2})

			// The records are left in place: the right keyring still reads them.
			expectRecords(t, load(t, s, keyA), []store.Record{rec(1, "one"), rec(2, "two")})
		})
	}
}

// TestPlainRecords: records an unencrypted store wrote before encryption was
// turned on are reported corrupt (ErrFormat), never passed through.
func TestPlainRecords(t *testing.T) {
	inner := memory.New()
	apply(t, inner, keyA, store.Put(rec(1, "written in clear")), store.Put(rec(2, "x")))
	s := mustNew(t, inner, opts(nil))
	defer s.Close()
	expectCorrupt(t, s, keyA, sealed.ErrFormat, []uint64{1, 2})
	apply(t, s, keyA, store.Put(rec(3, "sealed")))
	expectCorrupt(t, s, keyA, sealed.ErrFormat, []uint64{1, 2}, rec(3, "sealed"))
}

// TestRotation moves a store from key 1 to key 2: records sealed with key 1
// stay readable, new ones carry key id 2, and once key 1 is dropped only
// the records it sealed are reported.
func TestRotation(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			inner := memory.New()
			ctx := context.Background()
			old := mustNew(t, inner, sealed.Options{Keyring: ring(1, 1), NameKey: m.nameKey})
			apply(t, old, keyA, store.Put(rec(1, "old")))

			rotated := mustNew(t, inner, sealed.Options{Keyring: ring(2, 1, 2), NameKey: m.nameKey})
			apply(t, rotated, keyA, store.Put(rec(2, "new")))
			expectRecords(t, load(t, rotated, keyA), []store.Record{rec(1, "old"), rec(2, "new")})

			raw, err := inner.Load(ctx, innerKey(t, rotated, keyA, m.nameKey != nil))
			if err != nil || len(raw) != 2 {
				t.Fatalf("inner Load = %d records, %v", len(raw), err)
			}
			for i, want := range []uint32{1, 2} {
				if id, ok := sealed.KeyID(raw[i].Packet); !ok || id != want {
					t.Errorf("record %d is sealed with key %d (%v), want %d", raw[i].Seq, id, ok, want)
				}
			}

			// The old store, which lacks key 2, reads its own record only.
			expectCorrupt(t, old, keyA, sealed.ErrUnknownKey, []uint64{2}, rec(1, "old"))
			// Key 1 retired: the record it sealed is reported, the rest read.
			retired := mustNew(t, inner, sealed.Options{Keyring: ring(2, 2), NameKey: m.nameKey})
			expectCorrupt(t, retired, keyA, sealed.ErrUnknownKey, []uint64{1}, rec(2, "new"))
			// Rewriting the record under the current key ends that.
			apply(t, rotated, keyA, store.Put(rec(1, "old")))
			expectRecords(t, load(t, retired, keyA), []store.Record{rec(1, "old"), rec(2, "new")})
		})
	}
}

// TestTamper changes each byte of a stored record in turn, and its
// direction and packet identifier, through the inner store (which computes
// its checksum afresh, as anyone with write access to Redis can): each
// change is reported as a corrupt record, and the session's other records
// still load.
func TestTamper(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			inner := memory.New()
			ctx := context.Background()
			s := mustNew(t, inner, opts(m.nameKey))
			defer s.Close()
			good := rec(2, "keep")
			apply(t, s, keyA, store.Put(rec(1, "tamper with me")), store.Put(good))
			ik := innerKey(t, s, keyA, m.nameKey != nil)
			raw, err := inner.Load(ctx, ik)
			if err != nil {
				t.Fatal(err)
			}
			orig := raw[0]
			variants := []store.Record{}
			for i := range orig.Packet {
				v := orig
				v.Packet = bytes.Clone(orig.Packet)
				v.Packet[i] ^= 0x01
				variants = append(variants, v)
			}
			d, id := orig, orig
			d.Dir = store.Inbound
			id.ID++
			truncated := orig
			truncated.Packet = orig.Packet[:len(orig.Packet)-1]
			variants = append(variants, d, id, truncated)
			for i, v := range variants {
				apply(t, inner, ik, store.Put(v))
				expectCorrupt(t, s, keyA, store.ErrCorrupt, []uint64{1}, good)
				if t.Failed() {
					t.Fatalf("variant %d: %+v", i, v)
				}
			}
			// Put back, the original opens again.
			apply(t, inner, ik, store.Put(orig))
			expectRecords(t, load(t, s, keyA), []store.Record{rec(1, "tamper with me"), good})
		})
	}
}

// TestMove copies a sealed record to another Seq of its session and to
// another session: neither copy opens, since the record's identity is part
// of what its tag authenticates.
func TestMove(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			inner := memory.New()
			ctx := context.Background()
			s := mustNew(t, inner, opts(m.nameKey))
			defer s.Close()
			apply(t, s, keyA, store.Put(rec(1, "a1")))
			apply(t, s, keyB, store.Put(rec(7, "b7")))
			ikA, ikB := innerKey(t, s, keyA, m.nameKey != nil), innerKey(t, s, keyB, m.nameKey != nil)
			raw, err := inner.Load(ctx, ikA)
			if err != nil {
				t.Fatal(err)
			}
			r := raw[0]

			// To another Seq (the direction and identifier kept, so only the
			// Seq differs) of the same session.
			moved := r
			moved.Seq = 5
			apply(t, inner, ikA, store.Put(moved))
			expectCorrupt(t, s, keyA, sealed.ErrAuth, []uint64{5}, rec(1, "a1"))

			// To the same Seq of another session.
			apply(t, inner, ikB, store.Put(r))
			expectCorrupt(t, s, keyB, sealed.ErrAuth, []uint64{1}, rec(7, "b7"))

			// To a session of its own.
			keyC := store.Key{Server: keyA.Server, ClientID: "c"}
			apply(t, inner, innerKey(t, s, keyC, m.nameKey != nil), store.Put(r))
			expectCorrupt(t, s, keyC, sealed.ErrAuth, []uint64{1})
		})
	}
}

// TestSessionsReveal: with a NameKey, Lister shows the real Keys, and the
// inner store none of them; sessions under another NameKey are left out.
func TestSessionsReveal(t *testing.T) {
	ctx := context.Background()
	inner := memory.New()
	s := mustNew(t, inner, opts(testKey(1000)))
	defer s.Close()
	other := mustNew(t, inner, opts(testKey(1001)))
	apply(t, s, keyA, store.Put(rec(1, "x")))
	apply(t, s, keyB, store.Put(rec(1, "x")))
	apply(t, other, store.Key{Server: "tcp://x:1", ClientID: "other"}, store.Put(rec(1, "x")))
	apply(t, inner, store.Key{Server: "tcp://x:1", ClientID: "clear"}, store.Put(rec(1, "x")))

	keys, err := s.(store.Lister).Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(keys, func(a, b store.Key) int { return cmpKey(a, b) })
	if want := []store.Key{keyA, keyB}; !slices.Equal(keys, want) {
		t.Errorf("Sessions = %v, want %v", keys, want)
	}
	raw, err := inner.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range raw {
		if k == keyA || k == keyB {
			t.Errorf("the inner store holds %v in clear", k)
		}
	}
}

func cmpKey(a, b store.Key) int {
	if a.Server != b.Server {
		if a.Server < b.Server {
			return -1
		}
		return 1
	}
	switch {
	case a.ClientID < b.ClientID:
		return -1
	case a.ClientID > b.ClientID:
		return 1
	}
	return 0
}

// TestInnerCorruptMerged: records the inner store itself finds corrupt are
// reported in the same error as those that do not open.
func TestInnerCorruptMerged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	inner, err := bolt.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, inner, opts(nil))
	apply(t, s, keyA, store.Put(rec(1, "one")), store.Put(rec(2, "two")), store.Put(rec(3, "three")))
	// Seq 3 is sealed under a key the store lacks.
	other := mustNew(t, inner, sealed.Options{Keyring: ring(5, 5)})
	apply(t, other, keyA, store.Put(rec(3, "three")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Seq 2's bytes are changed in the file under bolt's checksum.
	flipInFile(t, path)
	inner, err = bolt.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s = mustNew(t, inner, opts(nil))
	defer s.Close()
	expectCorrupt(t, s, keyA, sealed.ErrUnknownKey, []uint64{2, 3}, rec(1, "one"))
}

// flipInFile changes a byte of every stored copy of the sealed record of
// keyA at seq 2 (bbolt may keep stale copies in free pages), found by its
// plain header: bolt's record version, direction and identifier, then the
// sealed format byte and key id 1.
func flipInFile(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte{1, byte(store.Outbound), 0, 2, 1, 0, 0, 0, 1}
	n := 0
	for off := 0; ; {
		i := bytes.Index(raw[off:], marker)
		if i < 0 {
			break
		}
		raw[off+i+len(marker)+3] ^= 0xff // inside the nonce
		off += i + len(marker)
		n++
	}
	if n == 0 {
		t.Fatal("the record of seq 2 is not in the file")
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Stores with every combination of the optional interfaces, for
// TestCapabilities; their optional methods are never called.
type (
	plain struct{ store.SessionStore } // hides the memory store's Lister
	cL    struct {
		store.SessionStore
		store.Lister
	}
	cO struct {
		store.SessionStore
		store.Owner
	}
	cT struct {
		store.SessionStore
		store.Transactor
	}
	cLO struct {
		store.SessionStore
		store.Lister
		store.Owner
	}
	cLT struct {
		store.SessionStore
		store.Lister
		store.Transactor
	}
	cOT struct {
		store.SessionStore
		store.Owner
		store.Transactor
	}
	cLOT struct {
		store.SessionStore
		store.Lister
		store.Owner
		store.Transactor
	}
)

// TestApplyTx: over bolt (a store.Transactor) the sealed store runs the
// application's code in the batch's transaction: the records are sealed,
// the application's own writes are committed with them, and an error from
// fn applies neither.
func TestApplyTx(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctx := context.Background()
			inner, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), nil)
			if err != nil {
				t.Fatal(err)
			}
			s := mustNew(t, inner, opts(m.nameKey))
			defer s.Close()
			tr, ok := s.(store.Transactor)
			if !ok {
				t.Fatal("the sealed bolt store is not a store.Transactor")
			}
			write := func(v string) func(any) error {
				return func(tx any) error {
					b, err := tx.(*bbolt.Tx).CreateBucketIfNotExists([]byte("app"))
					if err != nil {
						return err
					}
					return b.Put([]byte("k"), []byte(v))
				}
			}
			put := store.Put(store.Record{Seq: 1, Dir: store.Inbound, ID: 5, Packet: []byte("inbound marker")})
			boom := errors.New("boom")
			err = tr.ApplyTx(ctx, keyA, func(tx any) error {
				if err := write("rolled back")(tx); err != nil {
					return err
				}
				return boom
			}, put)
			if !errors.Is(err, boom) {
				t.Fatalf("ApplyTx with a failing fn returned %v, want boom", err)
			}
			if recs := load(t, s, keyA); len(recs) != 0 {
				t.Fatalf("the batch was applied although fn failed: %v", recs)
			}
			if err := tr.ApplyTx(ctx, keyA, write("committed"), put); err != nil {
				t.Fatal(err)
			}
			expectRecords(t, load(t, s, keyA), []store.Record{put.Record})
			raw, err := inner.Load(ctx, innerKey(t, s, keyA, m.nameKey != nil))
			if err != nil || len(raw) != 1 {
				t.Fatalf("inner Load = %v, %v", raw, err)
			}
			if _, ok := sealed.KeyID(raw[0].Packet); !ok || bytes.Contains(raw[0].Packet, []byte("marker")) {
				t.Errorf("the record ApplyTx wrote is not sealed: %q", raw[0].Packet)
			}
			err = inner.DB().View(func(tx *bbolt.Tx) error {
				if v := tx.Bucket([]byte("app")).Get([]byte("k")); string(v) != "committed" {
					t.Errorf("the application's value is %q, want committed", v)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// A batch over the sealed limit applies nothing and runs no fn.
			ran := false
			big := store.Put(store.Record{Seq: 2, Dir: store.Outbound, ID: 2, Packet: make([]byte, store.MaxPacketLen)})
			err = tr.ApplyTx(ctx, keyA, func(any) error { ran = true; return nil }, big)
			if !errors.Is(err, store.ErrTooLarge) || ran {
				t.Errorf("ApplyTx of a too large batch: %v (fn ran: %v), want store.ErrTooLarge", err, ran)
			}
		})
	}
}

func TestMaxPacketLen(t *testing.T) {
	inner, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), &bolt.Options{MaxPacketLen: 1000})
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, inner, opts(nil))
	defer s.Close()
	if got := s.(interface{ MaxPacketLen() int }).MaxPacketLen(); got != 1000-sealed.Overhead {
		t.Fatalf("MaxPacketLen = %d, want %d", got, 1000-sealed.Overhead)
	}
	ctx := context.Background()
	max := 1000 - sealed.Overhead
	apply(t, s, keyA, store.Put(store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: make([]byte, max)}))
	err = s.Apply(ctx, keyA, store.Put(store.Record{Seq: 2, Dir: store.Outbound, ID: 2, Packet: make([]byte, max+1)}))
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Apply of %d bytes returned %v, want store.ErrTooLarge", max+1, err)
	}
	if _, err := sealed.New(memory.New(), sealed.Options{Keyring: ring(1, 1), InnerMaxPacketLen: sealed.Overhead}); err == nil {
		t.Error("New accepted an inner limit that leaves no room")
	}
}

func TestOptionErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		o    sealed.Options
	}{
		{"no keys", sealed.Options{}},
		{"current missing", sealed.Options{Keyring: sealed.Keyring{Current: 2, Keys: map[uint32][]byte{1: testKey(1)}}}},
		{"short key", sealed.Options{Keyring: sealed.Keyring{Current: 1, Keys: map[uint32][]byte{1: make([]byte, 16)}}}},
		{"short other key", sealed.Options{Keyring: sealed.Keyring{Current: 1, Keys: map[uint32][]byte{1: testKey(1), 2: nil}}}},
		{"short name key", sealed.Options{Keyring: ring(1, 1), NameKey: make([]byte, 31)}},
	} {
		if s, err := sealed.New(memory.New(), c.o); err == nil {
			_ = s.Close()
			t.Errorf("%s: New succeeded", c.name)
		}
	}
	if _, err := sealed.New(nil, opts(nil)); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// TestKeyringCopied: changing the caller's key bytes after New changes
// nothing.
func TestKeyringCopied(t *testing.T) {
	kr := ring(1, 1)
	inner := memory.New()
	s := mustNew(t, inner, sealed.Options{Keyring: kr})
	defer s.Close()
	apply(t, s, keyA, store.Put(rec(1, "x")))
	clear(kr.Keys[1])
	delete(kr.Keys, 1)
	expectRecords(t, load(t, s, keyA), []store.Record{rec(1, "x")})
}

type resealer interface {
	Reseal(ctx context.Context, k store.Key) (int, error)
}

// TestReseal retires key 1: Reseal rewrites the records key 1 sealed under
// key 2, leaves those already under key 2 alone, reports (and keeps) one
// it cannot open, and a keyring without key 1 then reads the session.
func TestReseal(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctx := context.Background()
			inner := memory.New()
			old := mustNew(t, inner, sealed.Options{Keyring: ring(1, 1), NameKey: m.nameKey})
			apply(t, old, keyA, store.Put(rec(1, "one")), store.Put(rec(2, "two")), store.Put(store.Record{Seq: 0, Dir: store.Meta, Packet: []byte("meta")}))
			stray := mustNew(t, inner, sealed.Options{Keyring: ring(5, 5), NameKey: m.nameKey})
			apply(t, stray, keyA, store.Put(rec(4, "under a key nobody has")))
			rotated := mustNew(t, inner, sealed.Options{Keyring: ring(2, 1, 2), NameKey: m.nameKey})
			apply(t, rotated, keyA, store.Put(rec(3, "three")))
			ik := innerKey(t, rotated, keyA, m.nameKey != nil)
			before, err := inner.Load(ctx, ik)
			if err != nil {
				t.Fatal(err)
			}

			n, err := rotated.(resealer).Reseal(ctx, keyA)
			if n != 3 {
				t.Errorf("Reseal rewrote %d records, want 3", n)
			}
			var ce *store.CorruptError
			if !errors.As(err, &ce) || !slices.Equal(ce.Seqs, []uint64{4}) || !errors.Is(err, sealed.ErrUnknownKey) {
				t.Errorf("Reseal returned %v, want seq 4 reported with ErrUnknownKey", err)
			}
			after, err := inner.Load(ctx, ik)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range after {
				id, _ := sealed.KeyID(r.Packet)
				switch {
				case r.Seq == 4 && (id != 5 || !bytes.Equal(r.Packet, before[i].Packet)):
					t.Errorf("the record Reseal could not open was changed")
				case r.Seq == 3 && !bytes.Equal(r.Packet, before[i].Packet):
					t.Errorf("a record already under the current key was rewritten")
				case r.Seq != 4 && id != 2:
					t.Errorf("seq %d is under key %d after Reseal, want 2", r.Seq, id)
				}
			}
			retired := mustNew(t, inner, sealed.Options{Keyring: ring(2, 2), NameKey: m.nameKey})
			expectCorrupt(t, retired, keyA, sealed.ErrUnknownKey, []uint64{4},
				store.Record{Seq: 0, Dir: store.Meta, Packet: []byte("meta")}, rec(1, "one"), rec(2, "two"), rec(3, "three"))
			if n, err := retired.(resealer).Reseal(ctx, keyB); n != 0 || err != nil {
				t.Errorf("Reseal of an empty session = %d, %v", n, err)
			}
		})
	}
}
