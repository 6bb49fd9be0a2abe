package redis_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/redis"
)

// outageClient returns a client on a store of its own under prefix, that
// reconnects quickly, and counts its connections.
func outageClient(t *testing.T, broker, clientID string, st store.SessionStore, connects *atomic.Int32, sp *atomic.Bool) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{
		Servers:          []string{broker},
		ClientID:         clientID,
		Store:            st,
		SessionExpiry:    5 * time.Minute,
		ReconnectBackoff: client.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		OnConnect: func(ci *client.ConnectInfo) {
			connects.Add(1)
			sp.Store(ci.SessionPresent)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitStoreUp waits until st answers again after Redis came back (go-redis
// probes a server it failed to dial about once a second).
func waitStoreUp(t *testing.T, st store.SessionStore, k store.Key) {
	t.Helper()
	pollUntil(t, 10*time.Second, "the store answering again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := st.Load(ctx, k)
		return err == nil
	})
}

// TestClientRedisStopped publishes at QoS 1 and 2 while Redis is down. The
// QoS 2 publish fails with an error wrapping store.ErrUnavailable and
// never reaches the subscriber. The QoS 1 PUBLISH leaves while its record
// is being written (the server keeps nothing of a QoS 1 exchange): its
// publish either succeeds, when the PUBACK comes before the write fails,
// and then the message arrives once, or fails with ErrUnavailable, and
// then it arrives at most once. Once Redis is back the session goes on: a
// new publish succeeds and arrives once.
func TestClientRedisStopped(t *testing.T) {
	redisSrv := testenv.Redis(t)
	broker := testenv.Mosquitto(t)
	id := randomID(4)
	topic := "stopped/" + id
	coll := subscribe(t, broker.URL(), topic)
	st, err := redis.Open(redisSrv.URL(), &redis.Options{Prefix: "stopped-" + id})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var connects atomic.Int32
	var sp atomic.Bool
	c := outageClient(t, broker.URL(), "app-"+id, st, &connects, &sp)
	connect(t, c, 10*time.Second)
	if err := publish2(c, topic, "before", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	redisSrv.Stop()
	want, maybe := []string{"before", "after"}, []string(nil)
	for _, qos := range []byte{1, 2} {
		payload := "down" + strconv.Itoa(int(qos))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		err := c.Publish(ctx, &client.Message{Topic: topic, Payload: []byte(payload), QoS: qos})
		cancel()
		took := time.Since(start)
		switch {
		case qos == 1 && err == nil:
			want = append(want, payload)
		case qos == 1 && errors.Is(err, store.ErrUnavailable):
			maybe = append(maybe, payload)
		case !errors.Is(err, store.ErrUnavailable):
			t.Errorf("QoS %d publish with Redis down returned %v, want an error wrapping store.ErrUnavailable", qos, err)
		}
		if took > 5*time.Second {
			t.Errorf("QoS %d publish with Redis down took %v", qos, took)
		}
		t.Logf("QoS %d publish with Redis down: %v after %v", qos, err, took.Round(time.Millisecond))
	}

	redisSrv.Start()
	k := sessionKey(broker.URL(), "app-"+id)
	waitStoreUp(t, st, k)
	if err := publish2(c, topic, "after", 20*time.Second); err != nil {
		t.Fatalf("publish after Redis came back: %v", err)
	}
	// "after" went after "down1" and "down2" would have: the broker keeps
	// the order, so had they gone out they would be here by now.
	coll.waitFor(t, "after", 10*time.Second)
	checkExactlyOnce(t, coll, want, maybe...)
	if !sp.Load() {
		t.Errorf("the last connection had Session Present 0: the session did not go on")
	}
	waitNoOutbound(t, st, k, 5*time.Second)
	t.Logf("%d connections", connects.Load())
}

// TestClientRedisRestarted kills Redis (append-only file, fsync always) in
// the middle of a stream of QoS 2 publishes and starts it again. Publishes
// that fail meanwhile must fail with store.ErrUnavailable; the test
// publishes them again once Redis is back, and the subscriber must then
// have every message exactly once.
//
// What a failure guarantees: the client fails a publish whose first store
// write failed, and never sends it. The write itself may or may not have
// been applied by Redis (its reply may be what was lost), so a failed
// publish must also never be sent later, by this client or by another
// process that loads the session: the session must not keep its record.
// The test checks that the store holds nothing once the stream is over;
// TestClientStoreReplyLost makes the lost reply happen on purpose.
func TestClientRedisRestarted(t *testing.T) {
	redisSrv := testenv.Redis(t)
	broker := testenv.Mosquitto(t)
	id := randomID(4)
	topic := "restarted/" + id
	coll := subscribe(t, broker.URL(), topic)
	st, err := redis.Open(redisSrv.URL(), &redis.Options{Prefix: "restarted-" + id})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var connects atomic.Int32
	var sp atomic.Bool
	c := outageClient(t, broker.URL(), "app-"+id, st, &connects, &sp)
	connect(t, c, 10*time.Second)

	var (
		mu        sync.Mutex
		completed int
		failed    []int
		other     []error
		issued    int
		tokens    sync.WaitGroup
	)
	progress := make(chan struct{}, 1)
	// publish publishes the next message of the stream and records how it
	// ends; sem, when not nil, is released then.
	publish := func(sem chan struct{}) {
		mu.Lock()
		issued++
		n := issued
		tok := c.PublishAsync(&client.Message{Topic: topic, Payload: []byte("m" + strconv.Itoa(n)), QoS: 2})
		mu.Unlock()
		tokens.Add(1)
		go func() {
			defer tokens.Done()
			err := tok.Wait(context.Background())
			mu.Lock()
			switch {
			case err == nil:
				completed++
			case errors.Is(err, store.ErrUnavailable):
				failed = append(failed, n)
			default:
				other = append(other, err)
			}
			mu.Unlock()
			if sem != nil {
				<-sem
			}
			select {
			case progress <- struct{}{}:
			default:
			}
		}()
	}
	// The stream: up to 16 publishes in flight. Those in flight when Redis
	// dies are persisted and complete once it is back; the stream stalls
	// meanwhile, and the test publishes a few more itself.
	stop := make(chan struct{})
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		sem := make(chan struct{}, 16)
		for {
			select {
			case <-stop:
				return
			case sem <- struct{}{}:
			}
			publish(sem)
		}
	}()
	stopped := false
	stopStream := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-streamDone
			tokens.Wait()
		}
	}
	defer stopStream()
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return completed, len(failed)
	}
	waitUntil(t, progress, 20*time.Second, "100 completed publishes", func() bool { n, _ := counts(); return n >= 100 })
	redisSrv.Kill()
	for range 5 {
		publish(nil)
	}
	waitUntil(t, progress, 20*time.Second, "a failed publish", func() bool { _, f := counts(); return f > 0 })
	redisSrv.Start()
	before, _ := counts()
	waitUntil(t, progress, 30*time.Second, "100 more completed publishes", func() bool { n, _ := counts(); return n >= before+100 })
	stopStream()

	mu.Lock()
	defer mu.Unlock()
	if len(other) > 0 {
		t.Errorf("%d publishes failed with another error than store.ErrUnavailable; first: %v", len(other), other[0])
	}
	t.Logf("%d publishes issued: %d completed, %d failed while Redis was down %v, %d with other errors; publishing the failed ones again",
		issued, completed, len(failed), failed, len(other))
	for _, n := range failed {
		if err := publish2(c, topic, "m"+strconv.Itoa(n), 20*time.Second); err != nil {
			t.Fatalf("republish of m%d: %v", n, err)
		}
	}
	if err := publish2(c, topic, "end", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	coll.waitFor(t, "end", 20*time.Second)
	all := make([]string, issued)
	for i := range all {
		all[i] = "m" + strconv.Itoa(i+1)
	}
	checkExactlyOnce(t, coll, all, "end")
	k := sessionKey(broker.URL(), "app-"+id)
	// Nothing may stay behind, in particular no record of a publish that
	// failed: a later process would send it, a duplicate of its republish.
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		left := loadStored(t, st, k)
		if len(left.publishes)+left.pubrels == 0 {
			break
		}
		if time.Now().After(deadline) {
			wasFailed := make(map[string]bool, len(failed))
			for _, n := range failed {
				wasFailed["m"+strconv.Itoa(n)] = true
			}
			var orphans []string
			for _, p := range left.publishes {
				if wasFailed[p] {
					orphans = append(orphans, p)
				}
			}
			t.Errorf("after the stream the session still holds the PUBLISH of %v and %d PUBREL; "+
				"%v failed with store.ErrUnavailable though Redis had applied their write "+
				"(see TestClientStoreReplyLost)", short(left.publishes), left.pubrels, orphans)
			break
		}
		<-tick.C
	}
}

// TestClientStoreReplyLost makes Redis apply the batch that persists a
// publish and lose its reply (the connection drops before the reply, and
// go-redis's retries find Redis unreachable): the publish fails with
// store.ErrUnavailable though its record is in the store. The application,
// told it failed, publishes it again. Each message must still reach the
// subscriber once, now and after another process (a new client on the
// same store) continues the session.
func TestClientStoreReplyLost(t *testing.T) {
	redisSrv := testenv.Redis(t)
	broker := testenv.Mosquitto(t)
	id := randomID(4)
	topic := "replylost/" + id
	coll := subscribe(t, broker.URL(), topic)
	rp := startReplyProxy(t, redisSrv.Addr())
	prefix := "replylost-" + id
	open := func() *redis.Store {
		rdb := goredis.NewClient(&goredis.Options{Addr: rp.addr(), ContextTimeoutEnabled: true})
		s, err := redis.New(rdb, &redis.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = s.Close()
			_ = rdb.Close()
		})
		return s
	}
	st := open()
	clientID := "app-" + id
	k := sessionKey(broker.URL(), clientID)
	var connects atomic.Int32
	var sp atomic.Bool
	c := outageClient(t, broker.URL(), clientID, st, &connects, &sp)
	connect(t, c, 10*time.Second)
	if err := publish2(c, topic, "before", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	rp.downAfter([]byte("lost-reply"))
	err := publish2(c, topic, "lost-reply", 20*time.Second)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("publish whose store reply was lost returned %v, want store.ErrUnavailable", err)
	}
	rp.setDown(false)
	reader := newRedisAdmin(t, redisSrv.Addr()).open(prefix)
	s := loadStored(t, reader, k)
	t.Logf("the failed publish: %v; the store holds %+v", err, s)
	// The client deletes the record of a failed publish as soon as the
	// store answers again, so by now it may be gone already; the proxy
	// forwarded the batch to Redis before dropping the reply.
	if len(s.publishes) > 1 || (len(s.publishes) == 1 && s.publishes[0] != "lost-reply") {
		t.Fatalf("the store holds %+v, want at most the failed publish", s)
	}
	waitStoreUp(t, st, k)
	// The application was told the publish failed: it publishes again.
	if err := publish2(c, topic, "lost-reply", 20*time.Second); err != nil {
		t.Fatalf("republish: %v", err)
	}
	if err := publish2(c, topic, "end", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	coll.waitFor(t, "end", 10*time.Second)
	checkExactlyOnce(t, coll, []string{"before", "lost-reply"}, "end")
	// The failed publish must leave nothing in the session that a later
	// process would send: its record was written, so the client must
	// delete it (or keep the message and send it, and not fail it).
	waitNoOutbound(t, reader, k, 2*time.Second)

	// Another process continues the session from the store.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c2 := outageClient(t, broker.URL(), clientID, open(), &connects, &sp)
	connect(t, c2, 10*time.Second)
	if err := publish2(c2, topic, "end2", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	coll.waitFor(t, "end2", 10*time.Second)
	// A record left behind by the failed publish is resent by this new
	// process: "lost-reply" then arrives twice.
	checkExactlyOnce(t, coll, []string{"before", "lost-reply"}, "end", "end2")
	waitNoOutbound(t, reader, k, 5*time.Second)
}

// replyProxy is a TCP proxy in front of Redis that can lose replies: while
// down, it forwards commands but drops what Redis answers and closes the
// connection, and closes every new connection at once, as a network that
// fails right after a command went out. It goes down as it forwards the
// command that holds the trigger bytes.
type replyProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	down    bool              // guarded by mu
	trigger []byte            // guarded by mu
	conns   map[net.Conn]bool // guarded by mu: open sockets, both sides
	wg      sync.WaitGroup
}

func startReplyProxy(t *testing.T, target string) *replyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *replyProxy) addr() string { return p.ln.Addr().String() }

func (p *replyProxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// downAfter makes the proxy go down when a command holding trigger
// passes, so that Redis runs that command and its reply is lost.
func (p *replyProxy) downAfter(trigger []byte) {
	p.mu.Lock()
	p.trigger = trigger
	p.mu.Unlock()
}

// sees goes down if b holds the trigger.
func (p *replyProxy) sees(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.trigger != nil && bytes.Contains(b, p.trigger) {
		p.down, p.trigger = true, nil
	}
}

func (p *replyProxy) isDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

func (p *replyProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *replyProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *replyProxy) untrack(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *replyProxy) accept() {
	defer p.wg.Done()
	for {
		cl, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.isDown() {
			_ = cl.Close()
			continue
		}
		srv, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = cl.Close()
			continue
		}
		p.track(cl)
		p.track(srv)
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			defer p.untrack(srv)
			defer p.untrack(cl)
			// Commands always go through.
			buf := make([]byte, 32<<10)
			for {
				n, err := cl.Read(buf)
				if n > 0 {
					p.sees(buf[:n])
					if _, werr := srv.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() {
			defer p.wg.Done()
			defer p.untrack(srv)
			defer p.untrack(cl)
			buf := make([]byte, 32<<10)
			for {
				n, err := srv.Read(buf)
				if n > 0 {
					if p.isDown() {
						return // the reply is lost with the connection
					}
					if _, werr := cl.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}
