package redis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/redis"
)

// This file holds what the client-level tests of the Redis store share:
// store handles of their own (one Redis user each, so that a test can cut
// one off), a subscriber that counts what the broker delivers, and waits
// with deadlines.

// redisAdmin is a connection to one Redis as its default user, for the
// test's own inspection and for cutting handles off.
type redisAdmin struct {
	t    testing.TB
	addr string
	rdb  *goredis.Client
}

func newRedisAdmin(t testing.TB, addr string) *redisAdmin {
	t.Helper()
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return &redisAdmin{t: t, addr: addr, rdb: rdb}
}

// handle is a store on a Redis user of its own.
type handle struct {
	*redis.Store
	user string
	rdb  *goredis.Client
}

// open returns a store under prefix, logged in as a new Redis user; the
// test closes it (store first, then its client) when it ends.
func (a *redisAdmin) open(prefix string) *handle {
	a.t.Helper()
	ctx := context.Background()
	user, pass := "u-"+randomID(4), randomID(8)
	if err := a.rdb.Do(ctx, "acl", "setuser", user, "on", ">"+pass, "~*", "&*", "+@all").Err(); err != nil {
		a.t.Fatalf("acl setuser: %v", err)
	}
	rdb := goredis.NewClient(&goredis.Options{
		Addr: a.addr, Username: user, Password: pass, ContextTimeoutEnabled: true,
	})
	s, err := redis.New(rdb, &redis.Options{Prefix: prefix})
	if err != nil {
		_ = rdb.Close()
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() {
		_ = s.Close()
		_ = rdb.Close()
	})
	return &handle{Store: s, user: user, rdb: rdb}
}

// partition cuts the handle's user off, as a network partition would: its
// connections are killed and new ones refused at AUTH. heal lets it back.
func (a *redisAdmin) partition(h *handle) (heal func()) {
	a.t.Helper()
	ctx := context.Background()
	if err := a.rdb.Do(ctx, "acl", "setuser", h.user, "off").Err(); err != nil {
		a.t.Fatalf("partition: %v", err)
	}
	if err := a.rdb.Do(ctx, "client", "kill", "user", h.user).Err(); err != nil {
		a.t.Fatalf("partition: %v", err)
	}
	return func() {
		if err := a.rdb.Do(ctx, "acl", "setuser", h.user, "on").Err(); err != nil {
			a.t.Errorf("heal: %v", err)
		}
	}
}

// leaseKeys returns the Redis keys of the leases under prefix.
func (a *redisAdmin) leaseKeys(prefix string) []string {
	a.t.Helper()
	keys, err := a.rdb.Keys(context.Background(), prefix+":*:lease").Result()
	if err != nil {
		a.t.Fatalf("keys: %v", err)
	}
	return keys
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sessionKey is the store key of clientID's session on the broker at url,
// as the client names it (scheme://host:port).
func sessionKey(url, clientID string) store.Key {
	return store.Key{Server: url, ClientID: clientID}
}

// stored describes the outbound records of a session: the payloads of its
// PUBLISH records and the number of its PUBREL records.
type stored struct {
	publishes []string
	pubrels   int
	inbound   int
}

func loadStored(t testing.TB, s store.SessionStore, k store.Key) stored {
	t.Helper()
	recs, err := s.Load(context.Background(), k)
	if err != nil {
		t.Fatalf("Load(%s): %v", k, err)
	}
	var st stored
	for _, r := range recs {
		switch r.Dir {
		case store.Inbound:
			st.inbound++
		case store.Outbound:
			p, err := packets.Decode(r.Packet, 0)
			if err != nil {
				t.Fatalf("stored record %d does not decode: %v", r.Seq, err)
			}
			switch p := p.(type) {
			case *packets.Publish:
				st.publishes = append(st.publishes, string(p.Payload))
			case *packets.Ack:
				st.pubrels++
			default:
				t.Fatalf("stored record %d holds a %T", r.Seq, p)
			}
		}
	}
	return st
}

// waitNoOutbound waits until the session k holds no outbound records:
// every exchange is over and its deletion, which rides in the next batch,
// has been applied.
func waitNoOutbound(t testing.TB, s store.SessionStore, k store.Key, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		st := loadStored(t, s, k)
		if len(st.publishes)+st.pubrels == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v the session still holds outbound records: PUBLISH of %v and %d PUBREL",
				d, short(st.publishes), st.pubrels)
			return
		}
		<-tick.C
	}
}

// collector counts the messages a client receives, by payload.
type collector struct {
	mu     sync.Mutex
	counts map[string]int // guarded by mu
	order  []string       // guarded by mu: payloads in arrival order
	dups   []string       // guarded by mu: payloads that arrived more than once
	notify chan struct{}  // signalled after every message
}

func newCollector() *collector {
	return &collector{counts: make(map[string]int), notify: make(chan struct{}, 1)}
}

func (c *collector) add(payload string) {
	c.mu.Lock()
	c.counts[payload]++
	if c.counts[payload] == 2 {
		c.dups = append(c.dups, payload)
	}
	c.order = append(c.order, payload)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *collector) count(payload string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[payload]
}

func (c *collector) duplicates() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.dups...)
}

// snapshot returns a copy of the counts.
func (c *collector) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		m[k] = v
	}
	return m
}

// waitFor waits until payload has arrived, failing the test after d.
func (c *collector) waitFor(t testing.TB, payload string, d time.Duration) {
	t.Helper()
	waitUntil(t, c.notify, d, "message "+strconv.Quote(payload)+" at the subscriber",
		func() bool { return c.count(payload) > 0 })
}

// waitUntil waits until cond holds, checking it again every time notify
// is signalled, failing the test after d.
func waitUntil(t testing.TB, notify <-chan struct{}, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-notify:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// pollUntil waits, up to d, for cond to hold, polling every few
// milliseconds: for state that has no change notification (a store).
func pollUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// subscribe connects a client of its own (memory store) that subscribes
// to topic at QoS 2 and feeds a collector.
func subscribe(t testing.TB, broker, topic string) *collector {
	t.Helper()
	coll := newCollector()
	sub, err := client.New(client.Config{
		Servers:       []string{broker},
		ClientID:      "sub-" + randomID(4),
		SessionExpiry: time.Minute,
		OnMessage:     func(m *client.Message) { coll.add(string(m.Payload)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Connect(ctx); err != nil {
		t.Fatalf("subscriber: connect: %v", err)
	}
	sopts := packets.SubscribeOptions{QoS: 2}
	if _, err := sub.Subscribe(ctx, client.Subscription{Filter: topic, SubscribeOptions: sopts}); err != nil {
		t.Fatalf("subscriber: subscribe: %v", err)
	}
	return coll
}

// connect connects c, failing the test after d.
func connect(t testing.TB, c *client.Client, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
}

// publish2 publishes payload on topic at QoS 2 and waits, up to d.
func publish2(c *client.Client, topic, payload string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Publish(ctx, &client.Message{Topic: topic, Payload: []byte(payload), QoS: 2})
}

// checkExactlyOnce fails the test unless every payload in want arrived
// exactly once and nothing else arrived, end markers aside.
func checkExactlyOnce(t testing.TB, coll *collector, want []string, markers ...string) {
	t.Helper()
	got := coll.snapshot()
	var missing, dup, extra []string
	wanted := make(map[string]bool, len(want))
	for _, p := range want {
		wanted[p] = true
		switch n := got[p]; {
		case n == 0:
			missing = append(missing, p)
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s×%d", p, n))
		}
	}
	for _, m := range markers {
		wanted[m] = true
		if got[m] > 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", m, got[m]))
		}
	}
	for p := range got {
		if !wanted[p] {
			extra = append(extra, p)
		}
	}
	sort.Strings(extra)
	if len(missing)+len(dup)+len(extra) > 0 {
		t.Errorf("subscriber: %d of %d messages missing %v, duplicates %v, unexpected %v",
			len(missing), len(want), short(missing), short(dup), short(extra))
	}
}

// short abbreviates a long list for a message.
func short(s []string) string {
	if len(s) > 20 {
		return strings.Join(s[:20], " ") + fmt.Sprintf(" … (%d more)", len(s)-20)
	}
	return strings.Join(s, " ")
}

// errLog records the errors a callback reports, for checks after the
// fact, and signals each one.
type errLog struct {
	mu     sync.Mutex
	errs   []error // guarded by mu
	notify chan struct{}
}

func newErrLog() *errLog { return &errLog{notify: make(chan struct{}, 1)} }

func (l *errLog) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *errLog) all() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

func (l *errLog) has(target error) bool {
	for _, err := range l.all() {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
