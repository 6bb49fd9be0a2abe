package client

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// TestResendOnReconnect checks the wire on a reconnection with Session
// Present 1: the unacknowledged PUBLISH comes again with DUP=1 and its
// original identifier (MQTT-3.3.1-1, MQTT-4.3.2-1 … -3, MQTT-4.4.0-1), and
// a QoS 2 message whose PUBREC arrived is resumed with PUBREL, never its
// PUBLISH (MQTT-4.3.3-4 … -6), all in the original order (MQTT-4.6.0-1).
func TestResendOnReconnect(t *testing.T) {
	var id1, id2 uint16
	url := scriptedServer(t,
		func(p *peer) {
			p.accept(&packets.Connack{})
			p1, _ := p.expect(packets.PUBLISH).(*packets.Publish)
			p2, _ := p.expect(packets.PUBLISH).(*packets.Publish)
			if p1 == nil || p2 == nil {
				return
			}
			if p1.Dup || p2.Dup || p1.PacketID == 0 || p2.PacketID == 0 || p1.PacketID == p2.PacketID {
				p.t.Errorf("first sends: dup %v/%v ids %d/%d", p1.Dup, p2.Dup, p1.PacketID, p2.PacketID) // MQTT-2.2.1-3
			}
			id1, id2 = p1.PacketID, p2.PacketID
			p.send(&packets.Ack{Kind: packets.PUBREC, PacketID: id2}) // the QoS 2 one
			if a, ok := p.expect(packets.PUBREL).(*packets.Ack); !ok || a.PacketID != id2 {
				p.t.Errorf("PUBREL %+v", a)
			}
			// cut: nothing acknowledged but the PUBREC
		},
		func(p *peer) {
			c := p.accept(&packets.Connack{SessionPresent: true})
			if c != nil && c.CleanStart {
				p.t.Error("reconnection with Clean Start 1")
			}
			p1, _ := p.expect(packets.PUBLISH).(*packets.Publish)
			if p1 == nil || !p1.Dup || p1.PacketID != id1 || string(p1.Payload) != "one" {
				p.t.Errorf("resent PUBLISH %+v", p1)
				return
			}
			a, _ := p.expect(packets.PUBREL).(*packets.Ack)
			if a == nil || a.PacketID != id2 {
				p.t.Errorf("resent PUBREL %+v", a)
				return
			}
			p.send(&packets.Ack{Kind: packets.PUBACK, PacketID: id1})
			p.send(&packets.Ack{Kind: packets.PUBCOMP, PacketID: id2})
			p3, _ := p.expect(packets.PUBLISH).(*packets.Publish) // the new message comes after
			if p3 == nil || p3.Dup || string(p3.Payload) != "three" {
				p.t.Errorf("new PUBLISH %+v", p3)
				return
			}
			p.send(&packets.Ack{Kind: packets.PUBACK, PacketID: p3.PacketID})
			p.expect(packets.DISCONNECT)
		})
	lost := make(chan error, 4)
	c := start(t, Config{Servers: []string{url}, ClientID: uniqueID(t), SessionExpiry: time.Hour,
		ReconnectBackoff: Backoff{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond},
		OnConnectionLost: func(err error) { lost <- err }})
	t1 := c.PublishAsync(&Message{Topic: "r", QoS: 1, Payload: []byte("one")})
	t2 := c.PublishAsync(&Message{Topic: "r", QoS: 2, Payload: []byte("two")})
	waitLost(t, lost)
	t3 := c.PublishAsync(&Message{Topic: "r", QoS: 1, Payload: []byte("three")})
	for i, tok := range []*Token{t1, t2, t3} {
		if err := tok.Wait(ctxT(t, 5*time.Second)); err != nil {
			t.Errorf("publish %d: %v", i+1, err)
		}
	}
}

// TestNegativeAck: a PUBACK or PUBREC with an error code ends the exchange
// (MQTT-4.4.0-2): the publisher gets the code, nothing is retransmitted,
// the record goes.
func TestNegativeAck(t *testing.T) {
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p1, _ := p.expect(packets.PUBLISH).(*packets.Publish)
		p.send(&packets.Ack{Kind: packets.PUBACK, PacketID: p1.PacketID, ReasonCode: packets.NotAuthorized,
			Properties: packets.Properties{ReasonString: "no"}})
		p2, _ := p.expect(packets.PUBLISH).(*packets.Publish)
		p.send(&packets.Ack{Kind: packets.PUBREC, PacketID: p2.PacketID, ReasonCode: packets.QuotaExceeded})
		p.expect(packets.DISCONNECT) // no PUBREL in between
	})
	st := memory.New()
	c, _ := peerClient(t, url, Config{Store: st})
	var re *ReasonError
	err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "n", QoS: 1})
	if !errors.As(err, &re) || re.Code != packets.NotAuthorized || re.Packet != packets.PUBACK || re.Reason != "no" {
		t.Errorf("QoS 1: %v", err)
	}
	err = c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "n", QoS: 2})
	if !errors.As(err, &re) || re.Code != packets.QuotaExceeded || re.Packet != packets.PUBREC {
		t.Errorf("QoS 2: %v", err)
	}
	eventually(t, 5*time.Second, "records deleted", func() bool {
		return countDir(records(t, st, url, c.cfg.ClientID), store.Outbound) == 0
	})
}

// TestQuotaDoesNotHoldBackOtherPackets: with the server's Receive Maximum
// used up, further PUBLISHes wait (MQTT-4.9.0-2) but SUBSCRIBE goes out
// (MQTT-3.3.4-8, MQTT-4.9.0-3).
func TestQuotaDoesNotHoldBackOtherPackets(t *testing.T) {
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{Properties: packets.Properties{ReceiveMaximum: 1}})
		p1, _ := p.expect(packets.PUBLISH).(*packets.Publish)
		s, _ := p.expect(packets.SUBSCRIBE).(*packets.Subscribe) // not the second PUBLISH
		if p1 == nil || s == nil {
			return
		}
		p.send(&packets.Suback{PacketID: s.PacketID, ReasonCodes: []packets.ReasonCode{packets.GrantedQoS1}})
		p.send(&packets.Ack{Kind: packets.PUBACK, PacketID: p1.PacketID})
		p2, _ := p.expect(packets.PUBLISH).(*packets.Publish)
		if p2 == nil || string(p2.Payload) != "2" {
			p.t.Errorf("second PUBLISH %+v", p2)
			return
		}
		p.send(&packets.Ack{Kind: packets.PUBACK, PacketID: p2.PacketID})
		p.expect(packets.DISCONNECT)
	})
	c, _ := peerClient(t, url, Config{})
	t1 := c.PublishAsync(&Message{Topic: "q", QoS: 1, Payload: []byte("1")})
	t2 := c.PublishAsync(&Message{Topic: "q", QoS: 1, Payload: []byte("2")})
	if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "s", SubscribeOptions: subOpts(1)}); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []*Token{t1, t2} {
		if err := tok.Wait(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOutboundAliasesOnTheWire: aliases are numbered from 1, never above
// the server's maximum (MQTT-3.3.2-8, MQTT-3.3.2-9), none when the server
// allows none (MQTT-3.2.2-18), and a new connection starts without them
// (MQTT-3.3.2-7).
func TestOutboundAliasesOnTheWire(t *testing.T) {
	type seen struct {
		topic string
		alias uint16
	}
	got := make(chan []seen, 2)
	script := func(max uint16, n int) func(p *peer) {
		return func(p *peer) {
			p.accept(&packets.Connack{Properties: packets.Properties{TopicAliasMaximum: max}})
			var s []seen
			for range n {
				pk, _ := p.expect(packets.PUBLISH).(*packets.Publish)
				if pk == nil {
					return
				}
				if pk.PacketID != 0 || pk.Dup { // MQTT-2.2.1-2, MQTT-3.3.1-2
					p.t.Errorf("QoS 0 PUBLISH with identifier %d, dup %v", pk.PacketID, pk.Dup)
				}
				s = append(s, seen{pk.Topic, pk.Properties.TopicAlias})
			}
			got <- s
		}
	}
	url := scriptedServer(t, script(2, 5), script(0, 1))
	lost := make(chan error, 2)
	c := start(t, Config{Servers: []string{url}, ClientID: uniqueID(t), OutboundTopicAliases: true,
		ReconnectBackoff: Backoff{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond},
		OnConnectionLost: func(err error) { lost <- err }})
	for _, topic := range []string{"a", "a", "b", "c", "b"} {
		c.PublishAsync(&Message{Topic: topic})
	}
	want := []seen{{"a", 1}, {"", 1}, {"b", 2}, {"c", 0}, {"", 2}}
	if s := <-got; len(s) != len(want) || s[0] != want[0] || s[1] != want[1] || s[2] != want[2] || s[3] != want[3] || s[4] != want[4] {
		t.Errorf("first connection sent %v, want %v", s, want)
	}
	waitLost(t, lost)
	eventually(t, 5*time.Second, "reconnection", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.conn != nil
	})
	c.PublishAsync(&Message{Topic: "a"})
	if s := <-got; len(s) != 1 || s[0] != (seen{"a", 0}) {
		t.Errorf("second connection sent %v, want the full topic and no alias", s)
	}
}

// TestAckWithoutHandler: messages are acknowledged even when the
// application has no handler (MQTT-4.5.0-2).
func TestAckWithoutHandler(t *testing.T) {
	acked := make(chan packets.Type, 2)
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p.send(&packets.Publish{Topic: "x", QoS: 1, PacketID: 1})
		p.send(&packets.Publish{Topic: "x", QoS: 2, PacketID: 2})
		acked <- p.expect(packets.PUBACK).Type()
		acked <- p.expect(packets.PUBREC).Type()
		p.expect(packets.DISCONNECT)
	})
	peerClient(t, url, Config{ManualAck: true})
	for range 2 {
		select {
		case <-acked:
		case <-time.After(5 * time.Second):
			t.Fatal("not acknowledged")
		}
	}
}

// TestSubscribeAvailability: wildcard, shared and subscription identifier
// support announced as absent in CONNACK are checked before sending.
func TestSubscribeAvailability(t *testing.T) {
	zero := byte(0)
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{Properties: packets.Properties{
			WildcardSubAvailable: &zero, SharedSubAvailable: &zero, SubIDAvailable: &zero}})
		s, _ := p.expect(packets.SUBSCRIBE).(*packets.Subscribe)
		if s == nil || s.Subscriptions[0].Filter != "plain" {
			p.t.Errorf("SUBSCRIBE %+v", s)
			return
		}
		p.send(&packets.Suback{PacketID: s.PacketID, ReasonCodes: []packets.ReasonCode{packets.GrantedQoS0}})
		p.expect(packets.DISCONNECT)
	})
	c, _ := peerClient(t, url, Config{})
	ctx := ctxT(t, 5*time.Second)
	if _, err := c.Subscribe(ctx, Subscription{Filter: "a/+"}); !errors.Is(err, ErrWildcardNotSupported) {
		t.Errorf("wildcard: %v", err)
	}
	if _, err := c.Subscribe(ctx, Subscription{Filter: "$share/g/a"}); !errors.Is(err, ErrSharedNotSupported) {
		t.Errorf("shared: %v", err)
	}
	if _, err := c.Subscribe(ctx, Subscription{Filter: "a", ID: 3}); !errors.Is(err, ErrSubIDNotSupported) {
		t.Errorf("subscription identifier: %v", err)
	}
	if _, err := c.Subscribe(ctx, Subscription{Filter: "plain"}); err != nil {
		t.Errorf("plain: %v", err)
	}
}

// TestConnectPacket: the CONNECT carries what the Config says, and the
// password never reaches the logs.
func TestConnectPacket(t *testing.T) {
	got := make(chan *packets.Connect, 1)
	url := scriptedServer(t, func(p *peer) {
		got <- p.accept(&packets.Connack{})
		p.expect(packets.DISCONNECT)
	})
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	wd := uint32(5)
	c, _ := peerClient(t, url, Config{ClientID: "cid", Username: "user", Password: []byte("s3cret-pw"),
		KeepAlive: 30 * time.Second, SessionExpiry: NeverExpire, ReceiveMaximum: 100, MaximumPacketSize: 1 << 20,
		TopicAliasMaximum: 7, Logger: logger,
		Will: &Will{Topic: "will", Payload: []byte("gone"), QoS: 1, Retain: true, Properties: packets.Properties{WillDelay: wd}}})
	cp := <-got
	c.Close()
	pr := cp.Properties
	switch {
	case cp.ClientID != "cid" || !cp.CleanStart || cp.KeepAlive != 30:
		t.Errorf("CONNECT %+v", cp)
	case !cp.HasUsername || cp.Username != "user" || !cp.HasPassword || string(cp.Password) != "s3cret-pw":
		t.Errorf("credentials %q %q", cp.Username, cp.Password)
	case pr.SessionExpiry == nil || *pr.SessionExpiry != 0xFFFFFFFF || pr.ReceiveMaximum != 100 ||
		pr.MaximumPacketSize != 1<<20 || pr.TopicAliasMaximum != 7:
		t.Errorf("properties %+v", pr)
	case cp.Will == nil || cp.Will.Topic != "will" || string(cp.Will.Payload) != "gone" || cp.Will.QoS != 1 ||
		!cp.Will.Retain || cp.Will.Properties.WillDelay != 5:
		t.Errorf("will %+v", cp.Will)
	}
	mu.Lock()
	defer mu.Unlock()
	if logs.Len() == 0 || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("logs empty or holding the password:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestInboundQoS0Bound: QoS 0 messages beyond Config.MaxQueuedQoS0 wait
// for no handler: they are dropped, and QoS 1 messages still come through.
func TestInboundQoS0Bound(t *testing.T) {
	release := make(chan struct{})
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		for range 10 {
			p.send(&packets.Publish{Topic: "z"})
		}
		p.send(&packets.Publish{Topic: "one", QoS: 1, PacketID: 1})
		// PUBCOMP for an unknown PUBREL: the client has read all the above.
		p.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 9})
		p.expect(packets.PUBCOMP)
		close(release)
		for {
			if pk := p.read(); pk == nil || pk.Type() == packets.DISCONNECT {
				return
			}
		}
	})
	col := newCollector()
	entered := make(chan struct{})
	var once sync.Once
	peerClient(t, url, Config{MaxQueuedQoS0: 3, OnMessage: func(m *Message) {
		once.Do(func() { close(entered); <-release })
		col.handle(m)
	}})
	<-entered
	// At most 3 queued behind the one being handled (whether that one had
	// left the queue when the others came is timing), then the QoS 1.
	eventually(t, 5*time.Second, "the QoS 1 message", func() bool {
		ms := col.snapshot()
		return len(ms) > 0 && ms[len(ms)-1].Topic == "one"
	})
	if n := col.count(); n < 4 || n > 5 {
		t.Errorf("%d messages handled, want 4 or 5", n)
	}
}

// TestWill: the server publishes the Will when the connection ends without
// DISCONNECT, and on a DISCONNECT with reason 0x04.
func TestWill(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "will/#")
	px := proxy(t, b.Addr())
	start(t, Config{Servers: []string{px.URL()}, ClientID: uniqueID(t), Will: &Will{Topic: "will/cut", Payload: []byte("x"), QoS: 1},
		ReconnectBackoff: Backoff{Min: time.Minute, Max: time.Minute}})
	px.CutAll()
	if m := col.waitFor(t, 1, 5*time.Second)[0]; m.Topic != "will/cut" {
		t.Errorf("will %q", m.Topic)
	}
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), Will: &Will{Topic: "will/asked", QoS: 1}})
	if err := c.Disconnect(ctxT(t, 5*time.Second), packets.DisconnectWithWill); err != nil {
		t.Fatal(err)
	}
	if m := col.waitFor(t, 2, 5*time.Second)[1]; m.Topic != "will/asked" {
		t.Errorf("will %q", m.Topic)
	}
}
