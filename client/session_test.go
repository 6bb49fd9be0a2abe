package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// TestBacklogResentInOrder stores 1,000 messages without a connection,
// then has a new Client on the same store send them to a server whose
// Receive Maximum is 10: all arrive, in order, never more than 10 in flight
// (MQTT-3.3.4-7, MQTT-4.9.0-1, MQTT-4.9.0-2, MQTT-4.6.0-1).
func TestBacklogResentInOrder(t *testing.T) {
	b := broker(t, testenv.WithMaxInflight(10))
	col := subscriber(t, b.URL(), "backlog")
	st := memory.New()
	id := uniqueID(t)
	const n = 1000
	a, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		a.PublishAsync(&Message{Topic: "backlog", QoS: byte(1 + i%2), Payload: []byte(strconv.Itoa(i))})
	}
	a.Close() // the process ends with its messages stored
	if got := countDir(records(t, st, b.URL(), id), store.Outbound); got != n {
		t.Fatalf("%d records stored, want %d", got, n)
	}
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	checkOrder(t, col.waitFor(t, n, 30*time.Second), n)
	eventually(t, 10*time.Second, "records deleted", func() bool {
		return countDir(records(t, st, b.URL(), id), store.Outbound) == 0
	})
	c.mu.Lock()
	peak := c.eng.PeakInflight()
	c.mu.Unlock()
	if peak > 10 || peak < 2 {
		t.Errorf("peak in flight %d, want between 2 and the server's Receive Maximum 10", peak)
	}
}

// checkOrder checks that msgs holds payloads 0..n-1 once each, in order
// within each QoS: the spec orders messages of one QoS on one topic
// (§4.6); Mosquitto forwards a QoS 2 message at PUBREL, so QoS 1 and 2
// interleave differently from how they were published.
func checkOrder(t testing.TB, msgs []*Message, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("%d messages, want %d", len(msgs), n)
	}
	seen := make([]bool, n)
	last := map[byte]int{1: -1, 2: -1}
	for _, m := range msgs {
		i, err := strconv.Atoi(string(m.Payload))
		if err != nil || i < 0 || i >= n || seen[i] {
			t.Fatalf("unexpected or duplicate message %q", m.Payload)
		}
		seen[i] = true
		if i < last[m.QoS] {
			t.Fatalf("QoS %d message %d after %d: out of order", m.QoS, i, last[m.QoS])
		}
		last[m.QoS] = i
	}
}

// TestSessionPresentZero: the broker restarts without persistence, so the
// session is gone (MQTT-3.2.2-5). The client discards its state and reports
// exactly the messages that were in flight.
func TestSessionPresentZero(t *testing.T) {
	for _, republish := range []bool{false, true} {
		t.Run(fmt.Sprintf("Republish=%v", republish), func(t *testing.T) {
			b := broker(t)
			px := proxy(t, b.Addr())
			lostCh := make(chan []*Message, 4)
			st := memory.New()
			id := uniqueID(t)
			c := start(t, Config{Servers: []string{px.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour,
				RepublishLost: republish,
				OnSessionLost: func(lost []*Message, rep bool) {
					if rep != republish {
						t.Errorf("republished = %v", rep)
					}
					lostCh <- lost
				}})
			inj := px.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Nth: 1, Action: faultproxy.Blackhole})
			var toks []*Token
			for i := range 5 {
				toks = append(toks, c.PublishAsync(&Message{Topic: "spz", QoS: 1, Payload: []byte{byte(i)}}))
			}
			waitFired(t, inj)
			eventually(t, 5*time.Second, "5 messages handed to the network", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				// Only a PUBLISH that left the process counts as lost with
				// the session (the others are sent again as new).
				return c.eng.InFlight() == 5 && c.conn != nil && c.conn.handedOver() >= 5
			})
			// No CONNECT may reach the broker while it restarts: a CONNECT
			// whose CONNACK is cut would create a fresh session there, and
			// the next connection would (rightly) see Session Present 1.
			px.SetRefuse(true)
			px.CutAll()
			b.Restart()
			px.SetRefuse(false)
			var lost []*Message
			select {
			case lost = <-lostCh:
			case <-time.After(10 * time.Second):
				t.Fatal("OnSessionLost not called")
			}
			if len(lost) != 5 {
				t.Fatalf("%d messages reported lost, want 5", len(lost))
			}
			for i, m := range lost {
				if m.Topic != "spz" || len(m.Payload) != 1 || m.Payload[0] != byte(i) {
					t.Errorf("lost message %d: %q %v", i, m.Topic, m.Payload)
				}
			}
			for i, tok := range toks {
				err := tok.Wait(ctxT(t, 10*time.Second))
				if republish && err != nil {
					t.Errorf("token %d: %v, want nil after republishing", i, err)
				}
				if !republish && !errors.Is(err, ErrSessionLost) {
					t.Errorf("token %d: %v, want ErrSessionLost", i, err)
				}
			}
			eventually(t, 5*time.Second, "records deleted", func() bool {
				return countDir(records(t, st, px.URL(), id), store.Outbound) == 0
			})
		})
	}
}

// TestSessionExpiredLocally: a session whose Session Expiry Interval has
// passed since it was last connected is not resent but cleared, its
// in-flight messages reported, and the client connects with Clean Start 1.
func TestSessionExpiredLocally(t *testing.T) {
	b := broker(t)
	px := proxy(t, b.Addr())
	st := memory.New()
	id := uniqueID(t)
	a := start(t, Config{Servers: []string{px.URL()}, ClientID: id, Store: st, SessionExpiry: time.Minute})
	inj := px.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Nth: 1, Action: faultproxy.Blackhole})
	for i := range 3 {
		a.PublishAsync(&Message{Topic: "exp", QoS: 1, Payload: []byte{byte(i)}})
	}
	waitFired(t, inj)
	eventually(t, 5*time.Second, "3 messages in flight", func() bool {
		return countDir(records(t, st, px.URL(), id), store.Outbound) == 3
	})
	a.Close()

	// Age the meta record: last connected two minutes ago.
	k := store.Key{Server: px.URL(), ClientID: id}
	recs, _ := st.Load(context.Background(), k)
	md, err := engine.DecodeMeta(recs[0].Packet)
	if err != nil || recs[0].Dir != store.Meta {
		t.Fatalf("meta record: %v %+v", err, recs[0])
	}
	md.LastConnected = time.Now().Add(-2 * time.Minute)
	if err := st.Apply(context.Background(), k, store.Put(store.Record{Seq: 0, Dir: store.Meta, Packet: md.Encode()})); err != nil {
		t.Fatal(err)
	}

	lostCh := make(chan int, 1)
	infoCh := make(chan *ConnectInfo, 1)
	start(t, Config{Servers: []string{px.URL()}, ClientID: id, Store: st, SessionExpiry: time.Minute,
		OnSessionLost: func(lost []*Message, _ bool) { lostCh <- len(lost) },
		OnConnect:     func(ci *ConnectInfo) { infoCh <- ci }})
	if n := <-lostCh; n != 3 {
		t.Errorf("%d lost, want 3", n)
	}
	if ci := <-infoCh; ci.SessionPresent || ci.Resent != 0 {
		t.Errorf("connect info %+v: want a clean session, nothing resent", ci)
	}
	if got := countDir(records(t, st, px.URL(), id), store.Outbound); got != 0 {
		t.Errorf("%d outbound records left", got)
	}
}

// TestKeepAliveSilentPeer: a server that stops answering is detected by
// keep alive (MQTT-3.1.2-20) and the client reconnects.
func TestKeepAliveSilentPeer(t *testing.T) {
	b := broker(t)
	px := proxy(t, b.Addr())
	lost := make(chan error, 4)
	connected := make(chan struct{}, 4)
	start(t, Config{Servers: []string{px.URL()}, ClientID: uniqueID(t), KeepAlive: time.Second,
		OnConnectionLost: func(err error) { lost <- err },
		OnConnect:        func(*ConnectInfo) { connected <- struct{}{} }})
	<-connected
	px.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PINGRESP, Nth: 1, Action: faultproxy.Blackhole})
	err := waitLost(t, lost)
	if !errors.Is(err, ErrKeepAliveTimeout) {
		t.Fatalf("connection lost with %v, want ErrKeepAliveTimeout", err)
	}
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnection")
	}
}

// TestPacketIDExhaustion: with every packet identifier in use, publishing
// waits for one to be freed, never fails and never reuses one in use
// (MQTT-2.2.1-3).
func TestPacketIDExhaustion(t *testing.T) {
	old := maxPacketID
	maxPacketID = 4
	t.Cleanup(func() { maxPacketID = old })
	b := broker(t)
	col := subscriber(t, b.URL(), "ids")
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t)})
	const n = 60
	toks := make([]*Token, n)
	for i := range n {
		toks[i] = c.PublishAsync(&Message{Topic: "ids", QoS: byte(1 + i%2), Payload: []byte(strconv.Itoa(i))})
	}
	for i, tok := range toks {
		if err := tok.Wait(ctxT(t, 10*time.Second)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	checkOrder(t, col.waitFor(t, n, 10*time.Second), n)
	col.quiet(t, n, 200*time.Millisecond)
	c.mu.Lock()
	peak := c.eng.PeakInflight()
	c.mu.Unlock()
	// The subscriber holds one identifier at most for its SUBSCRIBE; the
	// publisher never has more than the 4 identifiers in flight.
	if peak > 4 {
		t.Errorf("peak in flight %d with 4 identifiers", peak)
	}
}

// TestManualAckAfterDisconnect: an Ack after the connection dropped
// returns ErrNotConnected for QoS 1 and corrupts nothing: the server
// redelivers, and the redelivery is acknowledged (MQTT-4.3.2-4). A QoS 2 message acknowledged late is recorded and its
// redelivery answered without delivering it again (MQTT-4.3.3-10).
func TestManualAckAfterDisconnect(t *testing.T) {
	b := broker(t)
	px := proxy(t, b.Addr())
	msgs := make(chan *Message, 10)
	lost := make(chan error, 10)
	st := memory.New()
	id := uniqueID(t)
	sub := start(t, Config{Servers: []string{px.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		ManualAck: true, OnMessage: func(m *Message) { msgs <- m },
		OnConnectionLost: func(err error) { lost <- err }})
	if _, err := sub.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "ack/#", SubscribeOptions: subOpts(2)}); err != nil {
		t.Fatal(err)
	}
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t) + "-pub"})
	next := func() *Message {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
		}
		return nil
	}

	// QoS 1.
	if err := pub.Publish(ctxT(t, 5*time.Second), &Message{Topic: "ack/1", QoS: 1, Payload: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	m := next()
	px.CutAll()
	waitLost(t, lost)
	if err := m.Ack(); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("late QoS 1 ack: %v, want ErrNotConnected", err)
	}
	m = next() // redelivered on the new connection
	if m.Topic != "ack/1" || !m.Dup {
		t.Fatalf("redelivery: %q dup=%v", m.Topic, m.Dup)
	}
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
	// A round trip after the PUBACK: once SUBACK is back, the broker has
	// processed the PUBACK, so the cut below cannot bring ack/1 back.
	if _, err := sub.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "sync", SubscribeOptions: subOpts(0)}); err != nil {
		t.Fatal(err)
	}

	// QoS 2.
	if err := pub.Publish(ctxT(t, 5*time.Second), &Message{Topic: "ack/2", QoS: 2, Payload: []byte("two")}); err != nil {
		t.Fatal(err)
	}
	m = next()
	px.CutAll()
	waitLost(t, lost)
	if err := m.Ack(); err != nil {
		t.Fatalf("late QoS 2 ack: %v", err)
	}
	eventually(t, 10*time.Second, "QoS 2 exchange finished", func() bool {
		return countDir(records(t, st, px.URL(), id), store.Inbound) == 0 && func() bool {
			sub.mu.Lock()
			defer sub.mu.Unlock()
			return sub.conn != nil && sub.eng.RecordedCount() == 0
		}()
	})
	select {
	case m := <-msgs:
		t.Fatalf("delivered again: %q", m.Topic)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestManualAckOrder: acknowledgements leave in the order the messages
// arrived (MQTT-4.6.0-2): acking a later message first sends nothing.
func TestManualAckOrder(t *testing.T) {
	b := broker(t)
	col := newCollector()
	sub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), ManualAck: true, OnMessage: col.handle})
	if _, err := sub.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "order", SubscribeOptions: subOpts(1)}); err != nil {
		t.Fatal(err)
	}
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t)})
	for i := range 2 {
		if err := pub.Publish(ctxT(t, 5*time.Second), &Message{Topic: "order", QoS: 1, Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	ms := col.waitFor(t, 2, 5*time.Second)
	unacked := func() int {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		n, _ := sub.eng.Unacked()
		return n
	}
	if err := ms[1].Ack(); err != nil {
		t.Fatal(err)
	}
	if n := unacked(); n != 2 {
		t.Fatalf("%d unacknowledged after acking the second message, want 2 (held back)", n)
	}
	if err := ms[0].Ack(); err != nil {
		t.Fatal(err)
	}
	if n := unacked(); n != 0 {
		t.Fatalf("%d unacknowledged after acking both", n)
	}
}

// TestResubscribeWhenSessionLost: after a broker restart without
// persistence, the client subscribes again by itself.
func TestResubscribeWhenSessionLost(t *testing.T) {
	b := broker(t)
	col := newCollector()
	connected := make(chan *ConnectInfo, 4)
	sub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), SessionExpiry: time.Hour,
		OnMessage: col.handle, OnConnect: func(ci *ConnectInfo) { connected <- ci }})
	<-connected
	if _, err := sub.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "rs/#", SubscribeOptions: subOpts(1)}); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	select {
	case ci := <-connected:
		if ci.SessionPresent {
			t.Fatal("session present after a restart without persistence")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnection")
	}
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t)})
	// The resubscription races with our publishes: publish until one
	// arrives.
	deadline := time.Now().Add(10 * time.Second)
	for col.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no message after resubscription")
		}
		if err := pub.Publish(ctxT(t, 5*time.Second), &Message{Topic: "rs/x", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-col.ch:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestServerLimits: the server's Maximum QoS, Retain Available and Maximum
// Packet Size are checked before sending (MQTT-3.2.2-11, MQTT-3.2.2-14,
// MQTT-3.2.2-15); an outbound PUBLISH never carries a Subscription
// Identifier (MQTT-3.3.4-6).
func TestServerLimits(t *testing.T) {
	b := broker(t, testenv.WithConfig(func(c *testenv.MosquittoConfig) {
		c.MaxPacketSize = 2000
		c.Extra = "max_qos 1\nretain_available false\n"
	}))
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t)})
	ctx := ctxT(t, 5*time.Second)
	if err := c.Publish(ctx, &Message{Topic: "l", QoS: 2}); !errors.Is(err, ErrQoSNotSupported) {
		t.Errorf("QoS 2: %v", err)
	}
	if err := c.Publish(ctx, &Message{Topic: "l", QoS: 1, Retain: true}); !errors.Is(err, ErrRetainNotSupported) {
		t.Errorf("retain: %v", err)
	}
	if err := c.Publish(ctx, &Message{Topic: "l", QoS: 1, Payload: make([]byte, 3000)}); !errors.Is(err, ErrPacketTooLarge) {
		t.Errorf("large: %v", err)
	}
	if err := c.Publish(ctx, &Message{Topic: "l", QoS: 1, Payload: make([]byte, 100)}); err != nil {
		t.Errorf("within limits: %v", err)
	}
	if err := c.Publish(ctx, &Message{Topic: "l/+", QoS: 1}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("wildcard topic: %v", err)
	}
	sid := &Message{Topic: "l", QoS: 1, Properties: packets.Properties{SubscriptionIdentifier: []uint32{1}}}
	if err := c.Publish(ctx, sid); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("subscription identifier: %v", err)
	}
}

// TestServerDisconnect: the DISCONNECT a server sends reaches the
// application with its reason code. Mosquitto 2.0 sends none on session
// takeover, so the test makes it send one: a PUBLISH with a topic alias
// above its maximum, written past the client's own checks.
func TestServerDisconnect(t *testing.T) {
	b := broker(t)
	discs := make(chan *packets.Disconnect, 4)
	lost := make(chan error, 4)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t),
		OnServerDisconnect: func(d *packets.Disconnect) { discs <- d },
		OnConnectionLost:   func(err error) { lost <- err }})
	c.mu.Lock()
	c.conn.write(&packets.Publish{Topic: "x", Properties: packets.Properties{TopicAlias: 1000}})
	c.mu.Unlock()
	var code packets.ReasonCode
	select {
	case d := <-discs:
		code = d.ReasonCode
		if !code.IsError() {
			t.Errorf("reason %v, want an error code", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DISCONNECT reported")
	}
	var re *ReasonError
	if err := waitLost(t, lost); !errors.As(err, &re) || re.Code != code || re.Packet != packets.DISCONNECT {
		t.Errorf("connection lost: %v", err)
	}
}

// TestTopicAliasesOutbound: repeated topics go out as aliases within the
// server's Topic Alias Maximum; subscribers see full topics.
func TestTopicAliasesOutbound(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "alias/#")
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), OutboundTopicAliases: true})
	const n = 30
	for i := range n {
		topic := fmt.Sprintf("alias/%d", i%15) // more topics than the server's 10 aliases
		if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: topic, QoS: 1, Payload: []byte(topic)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range col.waitFor(t, n, 5*time.Second) {
		if m.Topic != string(m.Payload) {
			t.Errorf("topic %q, want %q", m.Topic, m.Payload)
		}
	}
	c.mu.Lock()
	aliases, limit := c.eng.Aliases(), c.eng.Limits().AliasMax
	c.mu.Unlock()
	if aliases == 0 || aliases > int(limit) { // MQTT-3.3.2-9
		t.Errorf("%d aliases in use, server maximum %d", aliases, limit)
	}
	eventually(t, 5*time.Second, "records deleted", func() bool {
		return countDir(records(t, c.st, b.URL(), c.cfg.ClientID), store.Outbound) == 0
	})
}

// TestSubscriptionOptions: subscription identifiers come back on matching
// messages; No Local suppresses our own messages.
func TestSubscriptionOptions(t *testing.T) {
	b := broker(t)
	col := newCollector()
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), OnMessage: col.handle})
	codes, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "so/#", ID: 42, SubscribeOptions: packets.SubscribeOptions{QoS: 1}})
	if err != nil || len(codes) != 1 || codes[0] != packets.GrantedQoS1 {
		t.Fatalf("subscribe: %v %v", codes, err)
	}
	if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "nl/#", SubscribeOptions: packets.SubscribeOptions{QoS: 1, NoLocal: true}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "nl/x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "so/x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	m := col.waitFor(t, 1, 5*time.Second)[0]
	if m.Topic != "so/x" {
		t.Fatalf("got %q first: No Local not honoured", m.Topic)
	}
	if ids := m.Properties.SubscriptionIdentifier; len(ids) != 1 || ids[0] != 42 {
		t.Errorf("subscription identifiers %v, want [42]", ids)
	}
	if codes, err := c.Unsubscribe(ctxT(t, 5*time.Second), "so/#"); err != nil || codes[0] != packets.Success {
		t.Errorf("unsubscribe: %v %v", codes, err)
	}
	c.mu.Lock()
	md, _ := c.eng.Meta()
	subs := len(md.Subs)
	c.mu.Unlock()
	if subs != 1 {
		t.Errorf("%d subscriptions remembered, want 1", subs)
	}
}

// TestPublishWhileDisconnected: messages published before the connection
// exists are stored and sent in order once connected; QoS 0 only when
// QueueQoS0 is set.
func TestPublishWhileDisconnected(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "off")
	c, err := New(Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), QueueQoS0: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var toks []*Token
	for i := range 4 {
		toks = append(toks, c.PublishAsync(&Message{Topic: "off", QoS: byte(i % 3), Payload: []byte{byte(i)}}))
	}
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if err := tok.Wait(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	col.waitFor(t, 4, 5*time.Second)

	d, err := New(Config{Servers: []string{b.URL()}, ClientID: uniqueID(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Publish(ctxT(t, time.Second), &Message{Topic: "off", QoS: 0}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("QoS 0 while disconnected: %v, want ErrNotConnected", err)
	}
}

// TestFailover: the first server is down; the client connects to the
// second, under that server's own session key.
func TestFailover(t *testing.T) {
	b := broker(t)
	down := proxy(t, b.Addr())
	down.SetRefuse(true)
	infos := make(chan *ConnectInfo, 2)
	c := start(t, Config{Servers: []string{down.URL(), b.URL()}, ClientID: uniqueID(t), SessionExpiry: time.Hour,
		OnConnect: func(ci *ConnectInfo) { infos <- ci }})
	ci := <-infos
	if ci.Server != b.URL() {
		t.Fatalf("connected to %s, want %s", ci.Server, b.URL())
	}
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "fo", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if c.key.Server != b.URL() {
		t.Errorf("session key %v", c.key)
	}
}

// TestFailoverMovesMessages: messages in flight on a server that goes
// away are sent to the next server, and leave the first server's session.
func TestFailoverMovesMessages(t *testing.T) {
	b1, b2 := broker(t), broker(t)
	px := proxy(t, b1.Addr())
	col := subscriber(t, b2.URL(), "fom")
	st := memory.New()
	id := uniqueID(t)
	c := start(t, Config{Servers: []string{px.URL(), b2.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	inj := px.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Nth: 1, Action: faultproxy.Blackhole})
	var toks []*Token
	for i := range 3 {
		toks = append(toks, c.PublishAsync(&Message{Topic: "fom", QoS: 1, Payload: []byte(strconv.Itoa(i))}))
	}
	waitFired(t, inj)
	px.SetRefuse(true)
	px.CutAll()
	for i, tok := range toks {
		if err := tok.Wait(ctxT(t, 10*time.Second)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	checkOrder(t, col.waitFor(t, 3, 5*time.Second), 3)
	if n := countDir(records(t, st, px.URL(), id), store.Outbound); n != 0 {
		t.Errorf("%d records left in the first server's session", n)
	}
}

// fakeAuth is an Authenticator with a method the broker does not know.
type fakeAuth struct{}

func (fakeAuth) Method() string                  { return "TETHER-TEST" }
func (fakeAuth) Start() ([]byte, error)          { return []byte("hi"), nil }
func (fakeAuth) Continue([]byte) ([]byte, error) { return nil, nil }
func (fakeAuth) Finish([]byte) error             { return nil }

// TestAuth: an authentication method the server does not support is
// refused with 0x8C, returned by Connect; Reauthenticate needs an
// Authenticator.
func TestAuth(t *testing.T) {
	b := broker(t)
	c, err := New(Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Auth: fakeAuth{}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var re *ReasonError
	if err := c.Connect(ctxT(t, 5*time.Second)); !errors.As(err, &re) || re.Code != packets.BadAuthenticationMethod {
		t.Fatalf("connect: %v, want Bad authentication method", err)
	}
	d := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t)})
	if err := d.Reauthenticate(ctxT(t, time.Second)); !errors.Is(err, ErrNoAuthenticator) {
		t.Errorf("reauthenticate: %v", err)
	}
}

// failingStore fails Apply while fail is set, counting the failures.
type failingStore struct {
	*memory.Store
	fail   atomic.Bool
	failed atomic.Int32
}

var errDiskFull = errors.New("disk full")

func (s *failingStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	if s.fail.Load() {
		s.failed.Add(1)
		return errDiskFull
	}
	return s.Store.Apply(ctx, k, ops...)
}

// TestStoreFailure: a publish whose record could not be stored fails with
// the store's error; a QoS 2 one is never sent (a QoS 1 PUBLISH leaves
// alongside its record and may arrive: at least once), nor is any message
// published while the store is failing. The client recovers once the
// store does.
func TestStoreFailure(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "sf")
	st := &failingStore{Store: memory.New()}
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Store: st, SessionExpiry: time.Hour, Logger: testLogger(t)})
	st.fail.Store(true)
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "sf", QoS: 2, Payload: []byte("lost")}); !errors.Is(err, errDiskFull) {
		t.Fatalf("QoS 2 publish with a failing store: %v", err)
	}
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "sf", QoS: 1, Payload: []byte("lost")}); !errors.Is(err, errDiskFull) {
		t.Fatalf("QoS 1 publish while the store is failing: %v", err)
	}
	st.fail.Store(false) // the store is back
	if err := c.Publish(ctxT(t, 10*time.Second), &Message{Topic: "sf", QoS: 1, Payload: []byte("kept")}); err != nil {
		t.Fatalf("publish after recovery: %v", err)
	}
	ms := col.waitFor(t, 1, 5*time.Second)
	col.quiet(t, 1, 200*time.Millisecond)
	if string(ms[0].Payload) != "kept" {
		t.Errorf("got %q", ms[0].Payload)
	}
}

// TestStoreFailureBackoff: while the store fails, the committer retries
// with backoff (50 ms, doubling), not at once: a failing disk or Redis is
// not hammered, nor the log flooded, by a retry per wake-up.
func TestStoreFailureBackoff(t *testing.T) {
	st := &failingStore{Store: memory.New()}
	c, err := New(Config{Servers: []string{"mqtt://127.0.0.1:1"}, ClientID: uniqueID(t), Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st.fail.Store(true)
	for i := range 20 { // each publish wakes the committer
		c.PublishAsync(&Message{Topic: "bo", QoS: 2, Payload: []byte{byte(i)}})
		time.Sleep(20 * time.Millisecond)
	}
	// 400 ms: the first attempt, then retries at 50, 150 and 350 ms.
	if n := st.failed.Load(); n < 2 || n > 6 {
		t.Fatalf("%d failed Applies in 400 ms, want about 4", n)
	}
	st.fail.Store(false)
	tok := c.PublishAsync(&Message{Topic: "bo", QoS: 2, Payload: []byte("kept")})
	if err := tok.WaitStored(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("stored after recovery: %v", err)
	}
}

// gatedStore holds every Apply while held is set, until release.
type gatedStore struct {
	*memory.Store
	held    atomic.Bool
	gate    chan struct{}
	once    sync.Once
	waiting atomic.Int32 // Applies being held
}

func (s *gatedStore) release() { s.once.Do(func() { close(s.gate) }) }

func (s *gatedStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	if s.held.Load() {
		s.waiting.Add(1)
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Store.Apply(ctx, k, ops...)
}

// TestQoS1DoesNotWaitForStore: a QoS 1 publish completes while the store
// holds every write (its PUBLISH leaves alongside its record: the server
// keeps nothing of a QoS 1 exchange, MQTT-4.3.2-5), PublishStored returns
// on the PUBACK, and the message arrives once. A QoS 2 publish waits for
// its records (MQTT-4.3.3-10 on the server's side). Once the store
// moves again, nothing of the QoS 1 message is left in it.
func TestQoS1DoesNotWaitForStore(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "gated")
	st := &gatedStore{Store: memory.New(), gate: make(chan struct{})}
	id := uniqueID(t)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour, Logger: testLogger(t)})
	t.Cleanup(st.release) // before the client's Close, which waits for the store
	// A first message, with the store free, makes sure the connection's
	// meta record (its bound on what was sent) is durable.
	if err := c.Publish(ctxT(t, 10*time.Second), &Message{Topic: "gated", QoS: 1, Payload: []byte("zero")}); err != nil {
		t.Fatal(err)
	}
	st.held.Store(true)
	if _, err := c.PublishStored(ctxT(t, 10*time.Second), &Message{Topic: "gated", QoS: 1, Payload: []byte("one")}); err != nil {
		t.Fatalf("QoS 1 PublishStored while the store holds its writes: %v", err)
	}
	if err := c.Publish(ctxT(t, 10*time.Second), &Message{Topic: "gated", QoS: 1, Payload: []byte("two")}); err != nil {
		t.Fatalf("QoS 1 Publish while the store holds its writes: %v", err)
	}
	if st.waiting.Load() == 0 {
		t.Fatal("no Apply was held: the test did not hold the store")
	}
	tok := c.PublishAsync(&Message{Topic: "gated", QoS: 2, Payload: []byte("three")})
	col.waitFor(t, 3, 5*time.Second)
	select {
	case <-tok.Done():
		t.Fatalf("QoS 2 publish completed while the store held its record: %v", tok.Err())
	case <-time.After(100 * time.Millisecond):
	}
	st.release()
	if err := tok.Wait(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("QoS 2 publish once the store moves: %v", err)
	}
	ms := col.waitFor(t, 4, 5*time.Second)
	col.quiet(t, 4, 200*time.Millisecond)
	for i, want := range []string{"zero", "one", "two", "three"} {
		if string(ms[i].Payload) != want {
			t.Errorf("message %d: %q, want %q", i, ms[i].Payload, want)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := st.Load(ctxT(t, time.Second), store.Key{Server: b.URL(), ClientID: id})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Dir == store.Outbound {
			t.Errorf("record left after every exchange ended: seq %d id %d", r.Seq, r.ID)
		}
	}
}

// leaseStore is a memory store with a lease the test can take away.
type leaseStore struct {
	*memory.Store
	lost    chan struct{}
	refuse  bool // Acquire fails: another process holds the lease
	release atomic.Int32
}

type testLease struct {
	s    *leaseStore
	k    store.Key
	lost chan struct{}
}

func (l *testLease) Key() store.Key                    { return l.k }
func (l *testLease) Token() uint64                     { return 1 }
func (l *testLease) Lost() <-chan struct{}             { return l.lost }
func (l *testLease) Release(ctx context.Context) error { l.s.release.Add(1); return nil }

func (s *leaseStore) Acquire(ctx context.Context, k store.Key, _ store.LeaseOptions) (store.Lease, error) {
	if s.refuse {
		return nil, fmt.Errorf("test: %w", store.ErrSessionTaken)
	}
	return &testLease{s: s, k: k, lost: s.lost}, nil
}

// TestLeaseLost: losing the store's lease stops the client and reports
// ErrSessionTaken.
func TestLeaseLost(t *testing.T) {
	b := broker(t)
	st := &leaseStore{Store: memory.New(), lost: make(chan struct{})}
	lost := make(chan error, 2)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Store: st,
		OnConnectionLost: func(err error) { lost <- err }})
	close(st.lost)
	if err := waitLost(t, lost); !errors.Is(err, ErrSessionTaken) {
		t.Fatalf("connection lost: %v, want ErrSessionTaken", err)
	}
	if err := c.Publish(ctxT(t, time.Second), &Message{Topic: "x", QoS: 1}); !errors.Is(err, ErrSessionTaken) {
		t.Errorf("publish: %v, want ErrSessionTaken", err)
	}
}

// TestLeaseHeldElsewhere: Connect fails at once with ErrSessionTaken when
// another process holds the session's lease; a held lease is released on
// Close.
func TestLeaseHeldElsewhere(t *testing.T) {
	b := broker(t)
	st := &leaseStore{Store: memory.New(), lost: make(chan struct{}), refuse: true}
	c, err := New(Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctxT(t, 5*time.Second)); !errors.Is(err, ErrSessionTaken) {
		t.Errorf("connect: %v, want ErrSessionTaken", err)
	}
	c.Close()

	st.refuse = false
	d := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Store: st})
	d.Close()
	if n := st.release.Load(); n != 1 {
		t.Errorf("lease released %d times, want 1", n)
	}
}

// TestBlockingHandler: a handler that blocks stalls neither the reader
// (acknowledgements of our own publishes, keep alive) nor Subscribe.
func TestBlockingHandler(t *testing.T) {
	b := broker(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), OnMessage: func(*Message) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}})
	defer close(release)
	if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "blk/#", SubscribeOptions: subOpts(1)}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "blk/x", QoS: byte(1 + i%2)}); err != nil {
			t.Fatalf("publish %d while the handler blocks: %v", i, err)
		}
	}
	<-entered
	if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "other", SubscribeOptions: subOpts(1)}); err != nil {
		t.Fatal(err)
	}
}

// TestCleanStart: Config.CleanStart discards the stored session on the
// first connection, locally as well as on the server (MQTT-3.1.2-4), and
// reports the messages that were in flight.
func TestCleanStart(t *testing.T) {
	b := broker(t)
	px := proxy(t, b.Addr())
	st := memory.New()
	id := uniqueID(t)
	a := start(t, Config{Servers: []string{px.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	inj := px.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Nth: 1, Action: faultproxy.Blackhole})
	a.PublishAsync(&Message{Topic: "cs", QoS: 1, Payload: []byte("a")})
	a.PublishAsync(&Message{Topic: "cs", QoS: 2, Payload: []byte("b")})
	waitFired(t, inj)
	eventually(t, 5*time.Second, "2 messages in flight", func() bool {
		return countDir(records(t, st, px.URL(), id), store.Outbound) == 2
	})
	a.Close()
	lostCh := make(chan []*Message, 1)
	infoCh := make(chan *ConnectInfo, 1)
	start(t, Config{Servers: []string{px.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour, CleanStart: true,
		OnSessionLost: func(lost []*Message, _ bool) { lostCh <- lost },
		OnConnect:     func(ci *ConnectInfo) { infoCh <- ci }})
	if lost := <-lostCh; len(lost) != 2 || string(lost[0].Payload) != "a" || string(lost[1].Payload) != "b" {
		t.Errorf("lost %v", lost)
	}
	if ci := <-infoCh; ci.SessionPresent {
		t.Error("Session Present after Clean Start")
	}
	if n := countDir(records(t, st, px.URL(), id), store.Outbound); n != 0 {
		t.Errorf("%d records left", n)
	}
}

// TestNewClientPublishesBeforeConnect: a new process publishing before its
// first connection continues the stored session's sequence: its messages
// go after the stored ones and overwrite none of them.
func TestNewClientPublishesBeforeConnect(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "nc")
	st := memory.New()
	id := uniqueID(t)
	a, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		a.PublishAsync(&Message{Topic: "nc", QoS: 1, Payload: []byte(strconv.Itoa(i))})
	}
	a.Close()
	c, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 3; i < 6; i++ {
		c.PublishAsync(&Message{Topic: "nc", QoS: 1, Payload: []byte(strconv.Itoa(i))})
	}
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, col.waitFor(t, 6, 5*time.Second), 6)
}

// TestInboundBacklogAfterReconnect: a subscriber that comes back to 3,000
// messages the broker queued gets them all, once each and in order,
// without losing its connection. Mosquitto exceeds the client's Receive
// Maximum when it sends such a backlog; the client copes (see
// Config.StrictReceiveMaximum) instead of disconnecting on every
// reconnection.
func TestInboundBacklogAfterReconnect(t *testing.T) {
	b := broker(t)
	st := memory.New()
	id := uniqueID(t)
	away := start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if _, err := away.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "bl", SubscribeOptions: subOpts(2)}); err != nil {
		t.Fatal(err)
	}
	away.Close()
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t)})
	const n = 3000
	var toks []*Token
	for i := range n {
		toks = append(toks, pub.PublishAsync(&Message{Topic: "bl", QoS: byte(1 + i%2), Payload: []byte(strconv.Itoa(i))}))
	}
	for _, tok := range toks {
		if err := tok.Wait(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	col := newCollector()
	lost := make(chan error, 4)
	start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour, ReceiveMaximum: 100,
		OnMessage: col.handle, OnConnectionLost: func(err error) {
			select {
			case lost <- err:
			default:
			}
		}})
	checkOrder(t, col.waitFor(t, n, 20*time.Second), n)
	select {
	case err := <-lost:
		t.Fatalf("connection lost while draining the backlog: %v", err)
	default:
	}
}

// TestBacklogPaged: a Client resuming a stored backlog larger than
// Config.LoadWindow connects after the first pages of the session, holds
// no more than the window (and what is in flight) in memory, and sends
// every stored message once, in order, with messages published after the
// resume behind the backlog (MQTT-4.6.0-1). Pending lists the whole
// session, the messages still in the store included.
func TestBacklogPaged(t *testing.T) {
	b := broker(t, testenv.WithMaxInflight(10))
	col := subscriber(t, b.URL(), "paged")
	st := memory.New()
	id := uniqueID(t)
	const n, window, later = 3000, 50, 20
	a, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		a.PublishAsync(&Message{Topic: "paged", QoS: byte(1 + i%2), Payload: []byte(strconv.Itoa(i)), Ref: strconv.Itoa(i)})
	}
	a.Close()

	cfg := Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour, LoadWindow: window}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := p.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Fatalf("Pending lists %d messages, want %d", len(list), n)
	}
	for i, m := range list {
		if m.Ref != strconv.Itoa(i) || m.State != PendingQueued || m.Message == nil || string(m.Message.Payload) != m.Ref {
			t.Fatalf("Pending[%d] = ref %q state %v", i, m.Ref, m.State)
		}
	}
	p.mu.Lock()
	held := p.eng.Held()
	p.mu.Unlock()
	if held > window {
		t.Fatalf("holds %d messages after Pending, LoadWindow %d", held, window)
	}
	p.Close()

	c := start(t, cfg)
	var peak atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c.mu.Lock()
			h := c.eng.Held()
			c.mu.Unlock()
			if int64(h) > peak.Load() {
				peak.Store(int64(h))
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for i := n; i < n+later; i++ {
		c.PublishAsync(&Message{Topic: "paged", QoS: byte(1 + i%2), Payload: []byte(strconv.Itoa(i))})
	}
	checkOrder(t, col.waitFor(t, n+later, 60*time.Second), n+later)
	close(stop)
	wg.Wait()
	// The window, the server's Receive Maximum in flight, and the
	// messages published after the resume.
	if max := int64(window + 10 + later); peak.Load() > max {
		t.Errorf("held up to %d messages in memory, want at most %d", peak.Load(), max)
	}
	eventually(t, 10*time.Second, "records deleted", func() bool {
		return countDir(records(t, st, b.URL(), id), store.Outbound) == 0
	})
}
