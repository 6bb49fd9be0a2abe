package redis_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// staleEnv is what the stale-owner tests share: a broker behind a fault
// proxy (both instances connect through it, so that they share one session
// key), Redis, a subscriber, and instance A holding the session with one
// QoS 2 exchange in flight: the broker's PUBREC never reaches A, so A's
// store holds the PUBLISH when B takes over.
type staleEnv struct {
	admin    *redisAdmin
	proxy    *faultproxy.Proxy
	coll     *collector
	prefix   string
	clientID string
	topic    string
	key      store.Key
	reader   *handle // a third handle, for the test's own reads

	a        *client.Client
	ha       *handle
	lostA    *errLog
	connA    atomic.Int32
	inflight *client.Token // A's publish of "inflight"
}

func newStaleEnv(t *testing.T, leaseTTL time.Duration) *staleEnv {
	t.Helper()
	redisSrv := testenv.Redis(t)
	broker := testenv.Mosquitto(t)
	id := randomID(4)
	e := &staleEnv{
		admin:    newRedisAdmin(t, redisSrv.Addr()),
		prefix:   "stale-" + id,
		clientID: "app-" + id,
		topic:    "stale/" + id,
		lostA:    newErrLog(),
	}
	p, err := faultproxy.Start(broker.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	e.proxy = p
	e.key = sessionKey(p.URL(), e.clientID)
	e.coll = subscribe(t, broker.URL(), e.topic)
	e.reader = e.admin.open(e.prefix)
	e.ha = e.admin.open(e.prefix)
	e.a, err = client.New(client.Config{
		Servers:          []string{p.URL()},
		ClientID:         e.clientID,
		Store:            e.ha,
		SessionExpiry:    5 * time.Minute,
		LeaseTTL:         leaseTTL,
		ReconnectBackoff: client.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		OnConnect:        func(*client.ConnectInfo) { e.connA.Add(1) },
		OnConnectionLost: e.lostA.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.a.Close() })
	connect(t, e.a, 10*time.Second)
	if err := publish2(e.a, e.topic, "before", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	inj := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBREC, Action: faultproxy.Blackhole})
	e.inflight = e.a.PublishAsync(&client.Message{Topic: e.topic, Payload: []byte("inflight"), QoS: 2})
	select {
	case <-inj.Fired():
	case <-time.After(10 * time.Second):
		t.Fatal("the broker's PUBREC never came")
	}
	if st := loadStored(t, e.reader, e.key); len(st.publishes) != 1 || st.publishes[0] != "inflight" {
		t.Fatalf("A's store holds %+v, want the PUBLISH of \"inflight\"", st)
	}
	return e
}

// startB starts instance B, waiting for the lease, and returns once it is
// connected.
func (e *staleEnv) startB(t *testing.T) (*client.Client, *errLog) {
	t.Helper()
	b, lostB := e.newB(t)
	connect(t, b, 30*time.Second)
	return b, lostB
}

// newB returns instance B, not yet connected.
func (e *staleEnv) newB(t *testing.T) (*client.Client, *errLog) {
	t.Helper()
	lostB := newErrLog()
	b, err := client.New(client.Config{
		Servers:          []string{e.proxy.URL()},
		ClientID:         e.clientID,
		Store:            e.admin.open(e.prefix),
		SessionExpiry:    5 * time.Minute,
		WaitForLease:     true,
		LeaseTTL:         time.Second,
		ConnectTimeout:   20 * time.Second,
		ReconnectBackoff: client.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		OnConnectionLost: lostB.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, lostB
}

// finish checks B's side after the takeover: B completed A's exchange,
// publishes one more message, and nothing of A's after the takeover
// reached the broker or the store.
func (e *staleEnv) finish(t *testing.T, b *client.Client, lostB *errLog) {
	t.Helper()
	e.coll.waitFor(t, "inflight", 10*time.Second)
	if err := publish2(b, e.topic, "after", 10*time.Second); err != nil {
		t.Fatalf("B's publish: %v", err)
	}
	e.coll.waitFor(t, "after", 10*time.Second)
	// A writes nothing any more, whether it knows it or not.
	err := e.ha.Apply(context.Background(), e.key, store.Put(store.Record{Seq: 1 << 40, Dir: store.Outbound, ID: 1, Packet: []byte{0x62, 2, 0, 1}}))
	if !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("A's store write after the takeover returned %v, want store.ErrSessionTaken", err)
	}
	// A never reconnects, so it never kicks B off the broker.
	if err := e.a.Connect(context.Background()); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("A's Connect after the takeover returned %v, want ErrSessionTaken", err)
	}
	if n := e.connA.Load(); n != 1 {
		t.Errorf("A connected %d times, want once", n)
	}
	if errs := lostB.all(); len(errs) > 0 {
		t.Errorf("B lost its connection: %v", errs)
	}
	checkExactlyOnce(t, e.coll, []string{"before", "inflight", "after"})
	waitNoOutbound(t, e.reader, e.key, 5*time.Second)
	// A's own publish of "inflight" was finished by B: A cannot know how
	// it ended, and must not report it delivered.
	select {
	case <-e.inflight.Done():
		if err := e.inflight.Err(); err == nil {
			t.Errorf("A's publish of \"inflight\" completed without error after B took over")
		} else {
			t.Logf("A's publish of \"inflight\": %v", err)
		}
	default:
		t.Logf("A's publish of \"inflight\" is still pending (it ends with A's Close)")
	}
}

// TestClientStaleOwnerPartitioned cuts instance A off from Redis while it
// holds the session with a QoS 2 exchange in flight. A cannot renew its
// lease, gives the session up when the lease runs out (no later than Redis
// expires it), disconnects from the broker and reports ErrSessionTaken. B,
// waiting for the lease, takes over and completes A's exchange. Once A's
// link to Redis is healed, its writes are still refused and it does not
// reconnect.
func TestClientStaleOwnerPartitioned(t *testing.T) {
	e := newStaleEnv(t, time.Second)
	heal := e.admin.partition(e.ha)
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()
	b, lostB := e.startB(t)
	waitUntil(t, e.lostA.notify, 10*time.Second, "A reporting ErrSessionTaken", func() bool {
		return e.lostA.has(store.ErrSessionTaken)
	})
	heal()
	healed = true
	err := publish2(e.a, e.topic, "stale", 5*time.Second)
	if !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("A's publish after the takeover returned %v, want ErrSessionTaken", err)
	}
	e.finish(t, b, lostB)
	t.Logf("A reported: %v", e.lostA.all())
}

// TestClientStaleOwnerFenced takes the lease from instance A behind its
// back, as when A stalls (a long GC or VM pause) past its TTL and B takes
// the session over meanwhile: A's lease is deleted and its TTL is long, so
// that its renewer does not notice for a while, and B acquires the lease
// at once; the proxy holds B's CONNECT back, so that the broker does not
// drop A's connection yet. A's next store write, a publish, is refused by
// the fencing: the publish fails with ErrSessionTaken, A disconnects,
// reports ErrSessionTaken, and never reconnects; B connects and completes
// the exchange A had in flight.
func TestClientStaleOwnerFenced(t *testing.T) {
	e := newStaleEnv(t, 30*time.Second)
	leases := e.admin.leaseKeys(e.prefix)
	if len(leases) != 1 {
		t.Fatalf("lease keys: %v, want one", leases)
	}
	ctx := context.Background()
	leaseA := e.admin.rdb.Get(ctx, leases[0]).Val()
	if err := e.admin.rdb.Del(ctx, leases[0]).Err(); err != nil {
		t.Fatal(err)
	}
	e.proxy.Inject(faultproxy.Fault{Dir: faultproxy.ClientToServer, Type: packets.CONNECT, Action: faultproxy.Delay, Delay: 2 * time.Second})
	b, lostB := e.newB(t)
	connected := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		connected <- b.Connect(ctx)
	}()
	pollUntil(t, 10*time.Second, "B taking the lease", func() bool {
		v := e.admin.rdb.Get(ctx, leases[0]).Val()
		return v != "" && v != leaseA
	})
	if n := len(e.lostA.all()); n > 0 {
		t.Fatalf("A noticed the takeover before its next write: %v", e.lostA.all())
	}
	err := publish2(e.a, e.topic, "stale", 5*time.Second)
	if !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("A's publish after the takeover returned %v, want ErrSessionTaken", err)
	}
	waitUntil(t, e.lostA.notify, 5*time.Second, "A reporting ErrSessionTaken", func() bool {
		return e.lostA.has(store.ErrSessionTaken)
	})
	if err := <-connected; err != nil {
		t.Fatalf("B's connect: %v", err)
	}
	e.finish(t, b, lostB)
	t.Logf("A reported: %v", e.lostA.all())
}

// TestClientStaleOwnerKicked is TestClientStaleOwnerFenced with A's
// connection to the broker alive: B's CONNECT makes the broker drop A's
// connection (Session taken over, 0x8E) before A writes anything. A must
// not reconnect (it would take the session back on the broker and drop
// B), and must report ErrSessionTaken through OnConnectionLost, as
// Config.OnConnectionLost documents for a lost lease.
func TestClientStaleOwnerKicked(t *testing.T) {
	e := newStaleEnv(t, 30*time.Second)
	leases := e.admin.leaseKeys(e.prefix)
	if len(leases) != 1 {
		t.Fatalf("lease keys: %v, want one", leases)
	}
	// Unfreeze A's connection: drop it, and let A reconnect, resend the
	// exchange and finish it.
	e.proxy.CutAll()
	e.coll.waitFor(t, "inflight", 10*time.Second)
	waitTok(t, e.inflight, 10*time.Second)
	// A's last write (the deletion after PUBCOMP) must land before the
	// lease goes, or that write finds the lease gone and A learns of the
	// takeover from the store before the broker drops it.
	waitNoOutbound(t, e.reader, e.key, 5*time.Second)
	if err := e.admin.rdb.Del(context.Background(), leases[0]).Err(); err != nil {
		t.Fatal(err)
	}
	b, lostB := e.startB(t)
	waitUntil(t, e.lostA.notify, 5*time.Second, "A reporting a lost connection", func() bool {
		return len(e.lostA.all()) >= 2 // the cut, then B's takeover on the broker
	})
	if err := publish2(b, e.topic, "after", 10*time.Second); err != nil {
		t.Fatalf("B's publish: %v", err)
	}
	e.coll.waitFor(t, "after", 10*time.Second)
	if err := publish2(e.a, e.topic, "stale", 5*time.Second); !errors.Is(err, store.ErrSessionTaken) {
		t.Errorf("A's publish after the takeover returned %v, want ErrSessionTaken", err)
	}
	if n := e.connA.Load(); n != 2 {
		t.Errorf("A connected %d times, want twice (before and after the cut)", n)
	}
	if errs := lostB.all(); len(errs) > 0 {
		t.Errorf("B lost its connection: %v", errs)
	}
	if !e.lostA.has(store.ErrSessionTaken) {
		t.Errorf("A's OnConnectionLost never reported ErrSessionTaken; it reported %v", e.lostA.all())
	}
	checkExactlyOnce(t, e.coll, []string{"before", "inflight", "after"})
	t.Logf("A reported: %v", e.lostA.all())
}

func waitTok(t *testing.T, tok *client.Token, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := tok.Wait(ctx); err != nil {
		t.Fatalf("publish: %v", err)
	}
}
