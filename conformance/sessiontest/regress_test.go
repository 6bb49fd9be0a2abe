package sessiontest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/conformance/internal/limit"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// The tests in this file reproduce, in isolation, client faults that the
// session suite found (and that are fixed): each failed while its fault
// stood, and guards against its return.

// newRegressionSess returns a case environment on a fresh Mosquitto whose
// max_inflight_messages is inflight.
func newRegressionSess(t *testing.T, inflight int) *sess {
	// Like a case of Run: no progress for 30s fails, however long
	// the test runs.
	ctx, prog, stop := limit.Start(context.Background(), 30*time.Second)
	t.Cleanup(stop)
	r := &sessRunner{impl: MosquittoBroker, root: t.Name()}
	s := &sess{t: t, ctx: ctx, prog: prog, r: r, broker: MosquittoBroker.Start(t, BrokerConfig{ReceiveMaximum: inflight})}
	t.Cleanup(s.closeAll)
	return s
}

// slowStore delays every Apply, as a store on a device with a slow fsync
// does (bolt or SQLite under load).
type slowStore struct {
	store.SessionStore
	delay time.Duration
}

func (s *slowStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	time.Sleep(s.delay) // simulated device latency, not a wait for an event
	return s.SessionStore.Apply(ctx, k, ops...)
}

// TestSessionRegressionCrashWindowBeyondReceiveMaximum: the crash window of
// inbound QoS 2 (a message handled, its record not yet durable, so a crash
// redelivers it) must stay within the client's Receive Maximum, as the
// client's and Run's docs say. Mosquitto 2.0.11 does not stop at
// the client's Receive Maximum of 10 unacknowledged QoS 2 PUBLISHes, and
// the client (StrictReceiveMaximum off, the default) keeps handing them
// to the application while its PUBRECs wait for the store: with a store
// taking 20ms a batch, the handler sees all 60 messages while only 10 are
// recorded. A crash then redelivers 50. Found by the Crash case, which
// measured up to 50 messages back with bolt and SQLite. Either the client
// stops delivering once Receive Maximum handled messages await their
// records (back-pressure without disconnecting), or the window is
// documented as unbounded.
func TestSessionRegressionCrashWindowBeyondReceiveMaximum(t *testing.T) {
	s := newRegressionSess(t, 10)
	topic := s.newID("tether/bug")
	p, aud := s.proxy()
	st := &slowStore{SessionStore: memory.New(), delay: 20 * time.Millisecond}
	id := s.newID("bug")
	ws, w := s.watch(st, p.URL(), id)
	const recvMax, n = 10, 60
	var mu sync.Mutex
	handled, ahead := 0, 0
	got := s.newInbox()
	cfg := s.clientConfig(p.URL(), id, ws, false)
	cfg.ReceiveMaximum = recvMax
	cfg.OnMessage = func(m *client.Message) {
		w.mu.Lock()
		durable := w.puts
		w.mu.Unlock()
		mu.Lock()
		handled++
		ahead = max(ahead, handled-durable) // this one included
		mu.Unlock()
		got.handler(m)
	}
	c := s.start(cfg)
	s.subscribe(c, topic)
	pub := s.peer(s.newID("pub"), nil)
	for i := range n {
		pub.PublishAsync(&client.Message{Topic: topic, Payload: fmt.Appendf(nil, "%d", i), QoS: 2})
	}
	got.waitFor(s, "every message", func(g []string) bool { return len(g) >= n })
	s.waitInbound(w, n)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("wire: server PUBLISH %d, client PUBREC %d", aud.Count(s2c, packets.PUBLISH), aud.Count(c2s, packets.PUBREC))
	if ahead > recvMax {
		t.Errorf("the handler got up to %d messages whose inbound records were not durable, above the Receive Maximum %d: a crash then delivers them all again", ahead, recvMax)
	}
}

// TestSessionRegressionPubrecOrder: MQTT-4.6.0-3 asks for PUBRECs in the order
// the QoS 2 PUBLISHes arrived. A server (mochi does, on resume) sends a new
// message 3, then the redelivery (DUP 1) of message 2 that the client
// recorded on the previous connection. The client answers the redelivery
// with PUBREC 2 at once, while message 3 is still with the handler, so
// PUBREC 2 leaves before PUBREC 3. Found by the mochi run of the suite
// (Inbound/QoS2/CutBeforePUBREL, CutBeforePUBCOMP); a scripted server
// makes it deterministic here.
func TestSessionRegressionPubrecOrder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	c, err := client.New(client.Config{
		Servers:          []string{"mqtt://" + ln.Addr().String()},
		ClientID:         "pubrec-order",
		SessionExpiry:    time.Hour,
		ReconnectBackoff: client.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond},
		OnMessage: func(m *client.Message) {
			if string(m.Payload) == "m3" {
				<-release // the application is still busy with m3
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer free() // before Close, which waits for the handler
	go func() { _ = c.Connect(context.Background()) }()

	readAck := func(r *packets.Reader) *packets.Ack {
		t.Helper()
		for {
			p, err := r.Read()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if a, ok := p.(*packets.Ack); ok {
				return a
			}
		}
	}

	// Connection 1: message 2 arrives, is handled and recorded (PUBREC),
	// then the connection drops before the PUBREL.
	nc, r := accept(t, ln, false)
	send(t, nc, &packets.Publish{Topic: "t", QoS: 2, PacketID: 2, Payload: []byte("m2")})
	if a := readAck(r); a.Kind != packets.PUBREC || a.PacketID != 2 {
		t.Fatalf("connection 1: got %v %d, want PUBREC 2", a.Kind, a.PacketID)
	}
	_ = nc.Close()

	// Connection 2: new message 3, then the redelivery of 2.
	nc, r = accept(t, ln, true)
	defer nc.Close()
	send(t, nc, &packets.Publish{Topic: "t", QoS: 2, PacketID: 3, Payload: []byte("m3")})
	send(t, nc, &packets.Publish{Topic: "t", QoS: 2, PacketID: 2, Dup: true, Payload: []byte("m2")})
	_ = nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	first, err := r.Read()
	free()
	if err == nil {
		if a, ok := first.(*packets.Ack); ok && a.Kind == packets.PUBREC && a.PacketID == 2 {
			t.Errorf("PUBREC 2 sent while message 3, which arrived first, still awaits its PUBREC (MQTT-4.6.0-3)")
		}
	}
}

// accept takes the client's next connection on ln, reads its CONNECT and
// answers with a CONNACK carrying sessionPresent.
func accept(t *testing.T, ln net.Listener, sessionPresent bool) (net.Conn, *packets.Reader) {
	t.Helper()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := packets.NewReader(nc, 0)
	if p, err := r.Read(); err != nil || p.Type() != packets.CONNECT {
		t.Fatalf("expected CONNECT, got %v, %v", p, err)
	}
	send(t, nc, &packets.Connack{SessionPresent: sessionPresent})
	return nc, r
}

// send writes one packet.
func send(t *testing.T, nc net.Conn, p packets.Packet) {
	t.Helper()
	b, err := packets.Append(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestSessionRegressionManualAckStranded: with ManualAck, the application acks
// QoS 2 message b before message a, which arrived first; b's record and
// PUBREC wait behind a (MQTT-4.6.0-3). The connection drops. b was
// acknowledged by the application while the connection was up, so it is
// neither recorded nor still "with the application": when the server
// resends b (DUP 1) on the next connection, the client delivers it again,
// a duplicate of a QoS 2 message within one process (MQTT-4.3.3-10). The
// client's doc promises that a QoS 2 message acknowledged after its
// connection dropped is recorded; one acknowledged before, whose PUBREC
// was still queued, is lost track of.
func TestSessionRegressionManualAckStranded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan *client.Message, 16)
	c, err := client.New(client.Config{
		Servers:          []string{"mqtt://" + ln.Addr().String()},
		ClientID:         "manual-ack",
		SessionExpiry:    time.Hour,
		ManualAck:        true,
		ReconnectBackoff: client.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond},
		OnMessage:        func(m *client.Message) { msgs <- m },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _ = c.Connect(context.Background()) }()
	next := func() *client.Message {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message delivered")
			return nil
		}
	}

	nc, _ := accept(t, ln, false)
	send(t, nc, &packets.Publish{Topic: "t", QoS: 2, PacketID: 1, Payload: []byte("a")})
	send(t, nc, &packets.Publish{Topic: "t", QoS: 2, PacketID: 2, Payload: []byte("b")})
	a, b := next(), next()
	if err := b.Ack(); err != nil { // out of order: waits behind a
		t.Fatalf("Ack b: %v", err)
	}
	_ = nc.Close()

	nc, r := accept(t, ln, true)
	defer nc.Close()
	send(t, nc, &packets.Publish{Topic: "t", QoS: 2, PacketID: 1, Dup: true, Payload: []byte("a")})
	send(t, nc, &packets.Publish{Topic: "t", QoS: 2, PacketID: 2, Dup: true, Payload: []byte("b")})
	if err := a.Ack(); err != nil {
		t.Fatalf("Ack a: %v", err)
	}
	// A correct client now answers both with PUBREC; a client that lost
	// track of b delivers it again and answers only a.
	_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	recs := map[uint16]bool{}
	for len(recs) < 2 {
		p, err := r.Read()
		if err != nil {
			break
		}
		if ack, ok := p.(*packets.Ack); ok && ack.Kind == packets.PUBREC {
			recs[ack.PacketID] = true
		}
	}
	select {
	case m := <-msgs:
		t.Errorf("QoS 2 message %q delivered again after the application acknowledged it (DUP %v); PUBRECs seen: %v", m.Payload, m.Dup, recs)
		_ = m.Ack()
	default:
		if !recs[1] || !recs[2] {
			t.Errorf("PUBRECs seen: %v, want 1 and 2", recs)
		}
	}
}
