package faultproxy_test

import (
	"context"
	"fmt"
	"log"
	"slices"
	"testing"

	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
)

// auditReceiveMaximum is the Receive Maximum the audit tests' Mosquitto
// announces.
const auditReceiveMaximum = 3

// auditProxy starts an auditing proxy in front of target.
func auditProxy(t *testing.T, target string) (*faultproxy.Proxy, *faultproxy.Auditor) {
	t.Helper()
	p, err := faultproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, p.Audit()
}

// session connects with Session Expiry, so that the session outlives the
// connection, and returns the CONNACK.
func (c *client) session(id string, clean bool, props packets.Properties) *packets.Connack {
	c.t.Helper()
	expiry := uint32(600)
	props.SessionExpiry = &expiry
	c.mustSend(&packets.Connect{CleanStart: clean, KeepAlive: 60, ClientID: id, Properties: props})
	ack, ok := c.mustRead().(*packets.Connack)
	if !ok || ack.ReasonCode != packets.Success {
		c.t.Fatalf("CONNACK: %#v", ack)
	}
	return ack
}

// raw writes bytes as they are.
func (c *client) raw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// encode encodes packets back to back.
func encode(t *testing.T, ps ...packets.Packet) []byte {
	t.Helper()
	var b []byte
	for _, p := range ps {
		var err error
		if b, err = packets.Append(b, p); err != nil {
			t.Fatalf("encode %v: %v", p.Type(), err)
		}
	}
	return b
}

// expectAck reads an acknowledgement of the given kind for id.
func (c *client) expectAck(kind packets.Type, id uint16) {
	c.t.Helper()
	ack, ok := c.mustRead().(*packets.Ack)
	if !ok || ack.Kind != kind || ack.PacketID != id || ack.ReasonCode >= 0x80 {
		c.t.Fatalf("want %v %d, got %#v", kind, id, ack)
	}
}

// subscribeQoS subscribes at qos and waits for the SUBACK.
func (c *client) subscribeQoS(filter string, qos byte) {
	c.t.Helper()
	c.mustSend(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{
		{Filter: filter, SubscribeOptions: packets.SubscribeOptions{QoS: qos}},
	}})
	if ack, ok := c.mustRead().(*packets.Suback); !ok || len(ack.ReasonCodes) != 1 || byte(ack.ReasonCodes[0]) != qos {
		c.t.Fatalf("SUBACK: %#v", ack)
	}
}

// readPublish reads a PUBLISH.
func (c *client) readPublish() *packets.Publish {
	c.t.Helper()
	p, ok := c.mustRead().(*packets.Publish)
	if !ok {
		c.t.Fatalf("want PUBLISH, got %#v", p)
	}
	return p
}

// ping makes a PINGREQ round trip: once it returns, the proxy has audited
// everything the client sent before.
func (c *client) ping() {
	c.t.Helper()
	c.mustSend(&packets.Pingreq{})
	if p, ok := c.mustRead().(*packets.Pingresp); !ok {
		c.t.Fatalf("want PINGRESP, got %#v", p)
	}
}

// bye sends DISCONNECT and waits for the broker to close the connection.
func (c *client) bye() {
	c.t.Helper()
	c.mustSend(&packets.Disconnect{})
	c.expectClosed()
}

// expectViolation waits for a violation of rule by the client and checks
// that it is the only rule the client was found to break.
func expectViolation(t *testing.T, a *faultproxy.Auditor, rule string) faultproxy.Violation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	v, err := a.WaitFor(ctx, rule)
	if err != nil {
		t.Fatalf("%v; recorded: %v", err, a.Violations())
	}
	if v.By != faultproxy.ClientToServer {
		t.Errorf("%v charged to the server", v)
	}
	for _, o := range a.Violations() {
		if o.Rule != rule {
			t.Errorf("unexpected violation %v", o)
		}
	}
	if err := a.Err(); err == nil {
		t.Error("Err() = nil with a violation recorded")
	}
	t.Logf("recorded: %v", v)
	return v
}

// TestAudit runs clients that break one rule each, and one that breaks
// none, through auditing proxies to one Mosquitto.
func TestAudit(t *testing.T) {
	b := testenv.Mosquitto(t, testenv.WithMaxInflight(auditReceiveMaximum))

	t.Run("WellBehaved", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		sub := dial(t, p.Addr())
		sub.session("good-sub", true, packets.Properties{ReceiveMaximum: 5})
		sub.subscribeQoS("good/in", 2)

		pub := dial(t, p.Addr())
		ack := pub.session("good-pub", true, packets.Properties{})
		if ack.Properties.TopicAliasMaximum == 0 {
			t.Fatal("the broker allows no topic alias")
		}
		pub.mustSend(&packets.Publish{Topic: "good/in", Payload: []byte("q0"), Properties: packets.Properties{TopicAlias: 1}})
		pub.mustSend(&packets.Publish{Payload: []byte("q0 alias"), Properties: packets.Properties{TopicAlias: 1}})
		pub.mustSend(&packets.Publish{QoS: 1, PacketID: 1, Topic: "good/in", Payload: []byte("q1")})
		pub.expectAck(packets.PUBACK, 1)
		pub.mustSend(&packets.Publish{QoS: 2, PacketID: 2, Topic: "good/in", Payload: []byte("q2")})
		pub.expectAck(packets.PUBREC, 2)
		pub.mustSend(&packets.Ack{Kind: packets.PUBREL, PacketID: 2})
		pub.expectAck(packets.PUBCOMP, 2)

		for _, want := range []string{"q0", "q0 alias", "q1", "q2"} {
			m := sub.readPublish()
			if string(m.Payload) != want {
				t.Fatalf("subscriber got %q, want %q", m.Payload, want)
			}
			switch m.QoS {
			case 1:
				sub.mustSend(&packets.Ack{Kind: packets.PUBACK, PacketID: m.PacketID})
			case 2:
				sub.mustSend(&packets.Ack{Kind: packets.PUBREC, PacketID: m.PacketID})
				sub.expectAck(packets.PUBREL, m.PacketID)
				sub.mustSend(&packets.Ack{Kind: packets.PUBCOMP, PacketID: m.PacketID})
			}
		}
		sub.bye()

		// A QoS 1 message whose PUBACK is lost, resent with DUP on the
		// next connection; a QoS 2 message whose PUBCOMP is lost, its
		// PUBREL resent on the next connection.
		cut := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Action: faultproxy.CutBefore})
		q1 := &packets.Publish{QoS: 1, PacketID: 3, Topic: "good/out", Payload: []byte("again")}
		pub.mustSend(q1)
		waitFired(t, cut)
		pub = dial(t, p.Addr())
		if ack := pub.session("good-pub", false, packets.Properties{}); !ack.SessionPresent {
			t.Fatal("session not present")
		}
		q1.Dup = true
		pub.mustSend(q1)
		pub.expectAck(packets.PUBACK, 3)

		cut = p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBCOMP, Action: faultproxy.CutBefore})
		pub.mustSend(&packets.Publish{QoS: 2, PacketID: 4, Topic: "good/out", Payload: []byte("once")})
		pub.expectAck(packets.PUBREC, 4)
		pub.mustSend(&packets.Ack{Kind: packets.PUBREL, PacketID: 4})
		waitFired(t, cut)
		pub = dial(t, p.Addr())
		pub.session("good-pub", false, packets.Properties{})
		pub.mustSend(&packets.Ack{Kind: packets.PUBREL, PacketID: 4})
		pub.expectAck(packets.PUBCOMP, 4)
		// The identifiers are free again.
		pub.mustSend(&packets.Publish{QoS: 1, PacketID: 4, Topic: "good/out", Payload: []byte("new")})
		pub.expectAck(packets.PUBACK, 4)
		pub.bye()

		if v := a.Violations(); len(v) != 0 {
			t.Errorf("violations in a well-behaved exchange: %v", v)
		}
		if err := a.Err(); err != nil {
			t.Error(err)
		}
		if got := []int{a.Published(0), a.Published(1), a.Published(2), a.Redelivered()}; !slices.Equal(got, []int{2, 4, 2, 1}) {
			t.Errorf("Published(0..2), Redelivered() = %v, want [2 4 2 1]", got)
		}
		if n := a.Count(faultproxy.ClientToServer, packets.PUBREL); n != 3 {
			t.Errorf("Count(ClientToServer, PUBREL) = %d, want 3", n)
		}
	})

	t.Run("MQTT-3.1.0-1", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.mustSend(&packets.Pingreq{})
		expectViolation(t, a, "MQTT-3.1.0-1")
	})

	t.Run("MQTT-3.1.0-2", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("connect-twice")
		c.mustSend(&packets.Connect{CleanStart: true, KeepAlive: 60, ClientID: "connect-twice"})
		expectViolation(t, a, "MQTT-3.1.0-2")
	})

	t.Run("MQTT-4.3.2-2", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("new-with-dup")
		c.mustSend(&packets.Publish{QoS: 1, PacketID: 1, Dup: true, Topic: "a/b", Payload: []byte("x")})
		expectViolation(t, a, "MQTT-4.3.2-2")
	})

	t.Run("Decode", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("malformed")
		c.raw([]byte{0x82, 0x03, 0x00, 0x01, 0x00}) // SUBSCRIBE without a subscription
		v := expectViolation(t, a, "decode")
		if v.Packet != "SUBSCRIBE" {
			t.Errorf("flagged %q, want SUBSCRIBE", v.Packet)
		}
	})

	t.Run("MQTT-3.14.4-1", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("after-disconnect")
		c.raw(encode(t, &packets.Disconnect{}, &packets.Pingreq{}))
		expectViolation(t, a, "MQTT-3.14.4-1")
	})

	t.Run("MQTT-3.3.1-2", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("dup-qos0")
		pkt := encode(t, &packets.Publish{Topic: "a/b", Payload: []byte("x")})
		pkt[0] |= 0x08 // DUP
		c.raw(pkt)
		expectViolation(t, a, "MQTT-3.3.1-2")
	})

	t.Run("MQTT-2.2.1-2", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("id-qos0")
		pkt := encode(t, &packets.Publish{QoS: 1, PacketID: 0x1234, Topic: "a/b", Payload: []byte("x")})
		pkt[0] &^= 0x06 // QoS 0, packet identifier kept
		c.raw(pkt)
		expectViolation(t, a, "MQTT-2.2.1-2")
	})

	t.Run("MQTT-2.2.1-3", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("id-in-use")
		c.raw(encode(t,
			&packets.Publish{QoS: 2, PacketID: 9, Topic: "a/b", Payload: []byte("first")},
			&packets.Publish{QoS: 2, PacketID: 9, Topic: "a/b", Payload: []byte("second")},
		))
		expectViolation(t, a, "MQTT-2.2.1-3")
	})

	t.Run("MQTT-4.4.0-1", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("resend-same-conn")
		m := &packets.Publish{QoS: 2, PacketID: 5, Topic: "a/b", Payload: []byte("m")}
		c.mustSend(m)
		c.expectAck(packets.PUBREC, 5)
		m.Dup = true
		c.mustSend(m)
		expectViolation(t, a, "MQTT-4.4.0-1")
	})

	t.Run("MQTT-3.3.1-1", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.session("resend-no-dup", true, packets.Properties{})
		cut := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Action: faultproxy.CutBefore})
		m := &packets.Publish{QoS: 1, PacketID: 6, Topic: "a/b", Payload: []byte("m")}
		c.mustSend(m)
		waitFired(t, cut)
		c = dial(t, p.Addr())
		c.session("resend-no-dup", false, packets.Properties{})
		c.mustSend(m) // DUP 0
		v := expectViolation(t, a, "MQTT-3.3.1-1")
		if v.Conn != 2 {
			t.Errorf("violation on connection %d, want 2", v.Conn)
		}
	})

	t.Run("MQTT-4.3.3-6", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.session("publish-after-pubrel", true, packets.Properties{})
		cut := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBCOMP, Action: faultproxy.CutBefore})
		m := &packets.Publish{QoS: 2, PacketID: 7, Topic: "a/b", Payload: []byte("m")}
		c.mustSend(m)
		c.expectAck(packets.PUBREC, 7)
		c.mustSend(&packets.Ack{Kind: packets.PUBREL, PacketID: 7})
		waitFired(t, cut)
		c = dial(t, p.Addr())
		c.session("publish-after-pubrel", false, packets.Properties{})
		m.Dup = true
		c.mustSend(m) // should have been the PUBREL
		expectViolation(t, a, "MQTT-4.3.3-6")
	})

	t.Run("MQTT-3.3.4-7", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("over-quota")
		var ps []packets.Packet
		for i := range auditReceiveMaximum + 1 {
			ps = append(ps, &packets.Publish{QoS: 2, PacketID: uint16(i + 1), Topic: "a/b", Payload: []byte("m")})
		}
		c.raw(encode(t, ps...))
		v := expectViolation(t, a, "MQTT-3.3.4-7")
		if v.Packet != `PUBLISH qos=2 id=4 dup=0 topic="a/b"` {
			t.Errorf("flagged %s, want the fourth PUBLISH", v.Packet)
		}
	})

	t.Run("MQTT-3.3.2-8", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("alias-zero")
		pkt := encode(t, &packets.Publish{Topic: "a/b", Payload: []byte("x"), Properties: packets.Properties{TopicAlias: 0x0101}})
		i := slices.Index(pkt, 0x23) // the Topic Alias property
		if i < 0 || pkt[i+1] != 1 || pkt[i+2] != 1 {
			t.Fatalf("no topic alias in % x", pkt)
		}
		pkt[i+1], pkt[i+2] = 0, 0
		c.raw(pkt)
		expectViolation(t, a, "MQTT-3.3.2-8")
	})

	t.Run("MQTT-3.3.2-9", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.mustSend(&packets.Connect{CleanStart: true, KeepAlive: 60, ClientID: "alias-too-big"})
		ack := c.mustRead().(*packets.Connack)
		c.mustSend(&packets.Publish{Topic: "a/b", Payload: []byte("x"), Properties: packets.Properties{TopicAlias: ack.Properties.TopicAliasMaximum + 1}})
		expectViolation(t, a, "MQTT-3.3.2-9")
	})

	t.Run("MQTT-3.3.2-7", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.session("alias-carried", true, packets.Properties{})
		c.mustSend(&packets.Publish{Topic: "a/b", Payload: []byte("x"), Properties: packets.Properties{TopicAlias: 1}})
		c.ping()
		c.bye()
		c = dial(t, p.Addr())
		c.session("alias-carried", false, packets.Properties{})
		c.mustSend(&packets.Publish{Payload: []byte("y"), Properties: packets.Properties{TopicAlias: 1}})
		v := expectViolation(t, a, "MQTT-3.3.2-7")
		if v.Conn != 2 {
			t.Errorf("violation on connection %d, want 2", v.Conn)
		}
	})

	t.Run("MQTT-3.3.4-6", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("sub-id")
		c.mustSend(&packets.Publish{Topic: "a/b", Payload: []byte("x"), Properties: packets.Properties{SubscriptionIdentifier: []uint32{5}}})
		expectViolation(t, a, "MQTT-3.3.4-6")
	})

	// Acknowledgements out of order: the subscriber receives two messages
	// and acknowledges the second first.
	for _, tc := range []struct {
		rule string
		qos  byte
		ack  packets.Type
	}{
		{"MQTT-4.6.0-2", 1, packets.PUBACK},
		{"MQTT-4.6.0-3", 2, packets.PUBREC},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			p, a := auditProxy(t, b.Addr())
			topic := "order/" + tc.rule
			sub := dial(t, p.Addr())
			sub.connect("order-sub-" + tc.rule)
			sub.subscribeQoS(topic, tc.qos)
			pub := dial(t, b.Addr()) // not audited
			pub.connect("order-pub-" + tc.rule)
			for i := range 2 {
				id := uint16(i + 1)
				pub.mustSend(&packets.Publish{QoS: tc.qos, PacketID: id, Topic: topic, Payload: []byte{byte(i)}})
				if tc.qos == 1 {
					pub.expectPuback(id)
					continue
				}
				pub.expectAck(packets.PUBREC, id)
				pub.mustSend(&packets.Ack{Kind: packets.PUBREL, PacketID: id})
				pub.expectAck(packets.PUBCOMP, id)
			}
			first, second := sub.readPublish(), sub.readPublish()
			sub.mustSend(&packets.Ack{Kind: tc.ack, PacketID: second.PacketID})
			sub.mustSend(&packets.Ack{Kind: tc.ack, PacketID: first.PacketID})
			expectViolation(t, a, tc.rule)
		})
	}

	t.Run("MQTT-4.6.0-4", func(t *testing.T) {
		p, a := auditProxy(t, b.Addr())
		c := dial(t, p.Addr())
		c.connect("pubrel-order")
		c.mustSend(&packets.Publish{QoS: 2, PacketID: 1, Topic: "a/b", Payload: []byte("1")})
		c.expectAck(packets.PUBREC, 1)
		c.mustSend(&packets.Publish{QoS: 2, PacketID: 2, Topic: "a/b", Payload: []byte("2")})
		c.expectAck(packets.PUBREC, 2)
		c.mustSend(&packets.Ack{Kind: packets.PUBREL, PacketID: 2})
		c.mustSend(&packets.Ack{Kind: packets.PUBREL, PacketID: 1})
		expectViolation(t, a, "MQTT-4.6.0-4")
	})
}

// TestAuditServerReceiveMaximum resumes a session whose client announces a
// Receive Maximum of 1 while three QoS 1 messages wait for it. Mosquitto
// sends them one at a time; the embedded broker (mochi) sends them all at
// once, which the auditor charges to the server, not the client.
func TestAuditServerReceiveMaximum(t *testing.T) {
	brokers := []struct {
		name     string
		addr     string
		violates bool
	}{
		{"mosquitto", testenv.Mosquitto(t).Addr(), false},
		{"mochi", testenv.Mochi(t).Addr(), true},
	}
	for _, br := range brokers {
		t.Run(br.name, func(t *testing.T) {
			props := packets.Properties{ReceiveMaximum: 1}
			sub := dial(t, br.addr)
			sub.session("slow-sub", true, props)
			sub.subscribe("slow/#")
			sub.bye()
			pub := dial(t, br.addr)
			pub.connect("slow-pub")
			for i := range 3 {
				pub.mustSend(&packets.Publish{QoS: 1, PacketID: uint16(i + 1), Topic: "slow/x", Payload: []byte{byte(i)}})
				pub.expectPuback(uint16(i + 1))
			}
			// mochi acknowledges a PUBLISH before queueing it; it handles a
			// connection's packets in order, so after a PINGRESP all three
			// are queued.
			pub.ping()

			p, a := auditProxy(t, br.addr)
			sub = dial(t, p.Addr())
			if ack := sub.session("slow-sub", false, props); !ack.SessionPresent {
				t.Fatal("session not present")
			}
			// Read all three before acknowledging any: a server that
			// honours the Receive Maximum of 1 cannot send the second.
			var ids []uint16
			for range 3 {
				ids = append(ids, sub.readPublish().PacketID)
				if !br.violates {
					break // it rightly waits for the PUBACK
				}
			}
			for _, id := range ids {
				sub.mustSend(&packets.Ack{Kind: packets.PUBACK, PacketID: id})
			}
			for len(ids) < 3 {
				m := sub.readPublish()
				ids = append(ids, m.PacketID)
				sub.mustSend(&packets.Ack{Kind: packets.PUBACK, PacketID: m.PacketID})
			}
			sub.mustSend(&packets.Pingreq{})
			for {
				p := sub.mustRead()
				if _, ok := p.(*packets.Pingresp); ok {
					break
				}
				// mochi also sends a message it has just resent again.
				if m, ok := p.(*packets.Publish); ok {
					t.Logf("and again: PUBLISH id=%d dup=%v", m.PacketID, m.Dup)
					sub.mustSend(&packets.Ack{Kind: packets.PUBACK, PacketID: m.PacketID})
					continue
				}
				t.Fatalf("want PINGRESP, got %#v", p)
			}
			if err := a.Err(); err != nil {
				t.Errorf("client violations: %v", err)
			}
			err := a.ServerErr()
			switch {
			case br.violates && err == nil:
				t.Error("no server violation recorded")
			case !br.violates && err != nil:
				t.Errorf("server violation: %v", err)
			}
			for _, v := range a.Violations() {
				if v.Rule != "MQTT-3.3.4-7" || v.By != faultproxy.ServerToClient {
					t.Errorf("unexpected %v", v)
				}
			}
			t.Logf("server violations: %v", err)
		})
	}
}

// A test of the client turns auditing on before the client connects, runs
// its scenario, and fails on any rule the client broke.
func ExampleProxy_Audit() {
	brokerAddr := "127.0.0.1:1883" // the broker the test started
	p, err := faultproxy.Start(brokerAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	audit := p.Audit()

	fmt.Println("connect the client to", p.URL())
	// ... publish, cut connections, reconnect ...

	if err := audit.Err(); err != nil {
		log.Fatal(err) // t.Error(err) in a test
	}
	fmt.Println("QoS 1 PUBLISHes sent:", audit.Published(1))
}
