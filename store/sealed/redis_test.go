package sealed_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/redis"
	"github.com/tethermq/tether/store/sealed"
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// redisHandle is a Redis store on a client of its own, as one Redis user;
// closing it closes the client too.
type redisHandle struct {
	*redis.Store
	rdb  goredis.UniversalClient
	once sync.Once
}

func (h *redisHandle) Close() error {
	err := h.Store.Close()
	h.once.Do(func() {
		if cerr := h.rdb.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// redisHarness is one check's storage: a fresh key prefix on one Redis
// server. Each handle logs in as a Redis user of its own, so that
// Partition can cut one handle off by disabling its user.
type redisHarness struct {
	addr   string
	admin  *goredis.Client
	prefix string
	mode   string

	mu    sync.Mutex                    // guards users
	users map[store.SessionStore]string // sealed handle → its Redis user
}

var (
	_ conformance.Partitioner  = (*redisHarness)(nil)
	_ conformance.ChildHarness = (*redisHarness)(nil)
	_ conformance.Damager      = (*redisHarness)(nil)
)

// redisConfig is a child configuration: "mode|addr|prefix".
func (h *redisHarness) ChildConfig() string { return h.mode + "|" + h.addr + "|" + h.prefix }

func openSealedRedis(config string) (store.SessionStore, error) {
	parts := strings.SplitN(config, "|", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("bad child config %q", config)
	}
	nameKey, err := modeOf(parts[0])
	if err != nil {
		return nil, err
	}
	inner, err := redis.Open("redis://"+parts[1], &redis.Options{Prefix: parts[2]})
	if err != nil {
		return nil, err
	}
	s, err := sealed.New(inner, opts(nameKey))
	if err != nil {
		_ = inner.Close()
	}
	return s, err
}

func (h *redisHarness) MakeStore(ctx context.Context) (store.SessionStore, error) {
	user, pass := "h-"+randomHex(4), randomHex(8)
	if err := h.admin.Do(ctx, "acl", "setuser", user, "on", ">"+pass, "~*", "&*", "+@all").Err(); err != nil {
		return nil, err
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: h.addr, Username: user, Password: pass, ContextTimeoutEnabled: true})
	inner, err := redis.New(rdb, &redis.Options{Prefix: h.prefix})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	nameKey, err := modeOf(h.mode)
	if err != nil {
		return nil, err
	}
	s, err := sealed.New(&redisHandle{Store: inner, rdb: rdb}, opts(nameKey))
	if err != nil {
		_ = inner.Close()
		_ = rdb.Close()
		return nil, err
	}
	h.mu.Lock()
	h.users[s] = user
	h.mu.Unlock()
	return s, nil
}

func (h *redisHarness) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{
		Durable: true, SharedHandles: true, ServerDurability: true,
		MaxPacketLen: store.MaxPacketLen - sealed.Overhead,
	}
}

func (h *redisHarness) Close() {}

// Damage changes or cuts a sealed record of session k through the Redis
// store, as someone with write access to Redis could (see damageSealed).
func (h *redisHarness) Damage(ctx context.Context, k store.Key, kind conformance.DamageKind) error {
	return damageThrough(ctx, func() (store.SessionStore, error) { return openSealedRedis(h.ChildConfig()) }, k, kind)
}

// Partition cuts the handle's user off: its connections are killed and
// new ones refused, as a network partition would.
func (h *redisHarness) Partition(s store.SessionStore) (heal func()) {
	h.mu.Lock()
	user, ok := h.users[s]
	h.mu.Unlock()
	ctx := context.Background()
	if !ok {
		panic("Partition of a handle the harness did not make")
	}
	_ = h.admin.Do(ctx, "acl", "setuser", user, "off").Err()
	_ = h.admin.Do(ctx, "client", "kill", "user", user).Err()
	return func() { _ = h.admin.Do(ctx, "acl", "setuser", user, "on").Err() }
}

func redisServer(t testing.TB) (addr string, admin *goredis.Client) {
	srv := testenv.Redis(t)
	admin = goredis.NewClient(&goredis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = admin.Close() })
	return srv.Addr(), admin
}

func TestConformanceRedis(t *testing.T) {
	var addr string
	var admin *goredis.Client
	if !conformance.IsChild() {
		addr, admin = redisServer(t)
	}
	childOpts := conformance.Options{
		OpenChild: func(_ context.Context, config string) (store.SessionStore, error) { return openSealedRedis(config) },
	}
	for _, m := range durableModes {
		t.Run(m.name, func(t *testing.T) {
			conformance.Run(t, func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
				return &redisHarness{
					addr: addr, admin: admin, prefix: "sealed-" + randomHex(6), mode: m.name,
					users: make(map[store.SessionStore]string),
				}, nil
			}, childOpts)
		})
	}
}

// TestAtRestRedis reads every key the sealed store wrote to Redis, names
// and values: neither the topic nor the payload is there, nor, with a
// NameKey, the server or ClientID (which the Redis store otherwise keeps
// in its meta hash for Sessions).
func TestAtRestRedis(t *testing.T) {
	addr, admin := redisServer(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := "atrest-" + randomHex(6)
			inner, err := redis.Open("redis://"+addr, &redis.Options{Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			s := mustNew(t, inner, opts(m.nameKey))
			defer s.Close()
			pub := publish(t, secretTopic, secretPayload)
			apply(t, s, secretKey,
				store.Put(store.Record{Seq: 0, Dir: store.Meta, Packet: []byte("secret-meta-record")}),
				store.Put(store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: pub}),
				store.Put(store.Record{Seq: 2, Dir: store.Inbound, ID: 9, Packet: []byte(secretPayload + "-inbound")}))
			// A lease, so its keys are read too.
			l, err := s.(store.Owner).Acquire(ctx, secretKey, store.LeaseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(ctx)
			if l.Key() != secretKey {
				t.Errorf("Lease.Key() = %v, want %v", l.Key(), secretKey)
			}

			raw := dumpRedis(t, admin, prefix)
			if len(raw) == 0 {
				t.Fatal("nothing was written under the prefix")
			}
			expectAbsent(t, raw, m.nameKey != nil)
			recs := load(t, s, secretKey)
			if len(recs) != 3 || !bytes.Equal(recs[1].Packet, pub) {
				t.Fatalf("Load = %d records", len(recs))
			}
			keys, err := s.(store.Lister).Sessions(ctx)
			if err != nil || len(keys) != 1 || keys[0] != secretKey {
				t.Errorf("Sessions = %v, %v; want [%v]", keys, err, secretKey)
			}
		})
	}
}

// dumpRedis returns the names and values of every key under prefix, as
// one byte string to search.
func dumpRedis(t *testing.T, admin *goredis.Client, prefix string) []byte {
	t.Helper()
	ctx := context.Background()
	var out bytes.Buffer
	iter := admin.Scan(ctx, 0, prefix+":*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		out.WriteString(k + "\n")
		typ, err := admin.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "string":
			v, err := admin.Get(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			out.WriteString(v)
		case "hash":
			m, err := admin.HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			for f, v := range m {
				out.WriteString(f + "=" + v + "\n")
			}
		case "zset":
			vs, err := admin.ZRange(ctx, k, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			out.WriteString(strings.Join(vs, "\n"))
		default:
			t.Fatalf("key %s of type %s", k, typ)
		}
		out.WriteString("\n")
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestResealRedis: over a store.Owner, Reseal takes the session's lease, so
// it refuses to run while a client (another handle) holds it, and runs once
// the lease is released.
func TestResealRedis(t *testing.T) {
	addr, _ := redisServer(t)
	ctx := context.Background()
	prefix := "reseal-" + randomHex(6)
	openWith := func(kr sealed.Keyring) store.SessionStore {
		inner, err := redis.Open("redis://"+addr, &redis.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		s := mustNew(t, inner, sealed.Options{Keyring: kr})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	holder := openWith(ring(1, 1))
	apply(t, holder, keyA, store.Put(rec(1, "one")))
	l, err := holder.(store.Owner).Acquire(ctx, keyA, store.LeaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rotated := openWith(ring(2, 1, 2))
	if n, err := rotated.(resealer).Reseal(ctx, keyA); !errors.Is(err, store.ErrSessionTaken) || n != 0 {
		t.Fatalf("Reseal while another handle holds the lease = %d, %v; want store.ErrSessionTaken", n, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := rotated.(resealer).Reseal(ctx, keyA); n != 1 || err != nil {
		t.Fatalf("Reseal = %d, %v; want 1 record rewritten", n, err)
	}
	expectRecords(t, load(t, openWith(ring(2, 2)), keyA), []store.Record{rec(1, "one")})
}

// TestApplyAsyncSealFailure: a batch of ApplyAsync that does not seal (a
// packet the inner store would take, but not with the sealing's overhead)
// reports the sealing error, and the batches begun after it fail with it,
// ordered by the inner store's chain.
func TestApplyAsyncSealFailure(t *testing.T) {
	addr, _ := redisServer(t)
	inner, err := redis.Open("redis://"+addr, &redis.Options{Prefix: "sealed-async"})
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, inner, opts(nil))
	defer s.Close()
	p := s.(store.Pipeliner)
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "async"}
	big := store.Record{Seq: 2, Dir: store.Outbound, Packet: make([]byte, s.(interface{ MaxPacketLen() int }).MaxPacketLen()+1)}
	errs := make(chan error, 3)
	ctx := context.Background()
	for _, ops := range [][]store.Op{{store.Put(rec(1, "one"))}, {store.Put(big)}, {store.Put(rec(3, "three"))}} {
		p.ApplyAsync(ctx, k, ops, func(err error) { errs <- err })
	}
	if err := <-errs; err != nil {
		t.Fatalf("the first batch: %v", err)
	}
	if err := <-errs; !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("the batch that does not seal reported %v, want store.ErrTooLarge", err)
	}
	if err := <-errs; err == nil {
		t.Fatal("the batch begun after the one that did not seal reported nil, want an error")
	}
	got := load(t, s, k)
	if len(got) != 1 || got[0].Seq != 1 || string(got[0].Packet) != "one" {
		t.Fatalf("Load after the failed chain: %v, want seq 1 alone", got)
	}
}
