package sim

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tethermq/tether/packets"
)

// show describes packets compactly, one string each, for comparisons.
func show(ps []packets.Packet) []string {
	var out []string
	for _, p := range ps {
		switch p := p.(type) {
		case *packets.Connack:
			out = append(out, fmt.Sprintf("CONNACK sp=%v %#x", p.SessionPresent, byte(p.ReasonCode)))
		case *packets.Publish:
			s := fmt.Sprintf("PUBLISH q%d id%d dup=%v %s", p.QoS, p.PacketID, p.Dup, p.Payload)
			out = append(out, s)
		case *packets.Ack:
			s := fmt.Sprintf("%v %d", p.Kind, p.PacketID)
			if p.ReasonCode != 0 {
				s += fmt.Sprintf(" %#x", byte(p.ReasonCode))
			}
			out = append(out, s)
		case *packets.Disconnect:
			out = append(out, fmt.Sprintf("DISCONNECT %#x", byte(p.ReasonCode)))
		default:
			out = append(out, p.Type().String())
		}
	}
	return out
}

// wire passes p through its encoding, as the simulation may: it proves
// that p is valid and that nothing depends on its identity.
func wire(t testing.TB, p packets.Packet) packets.Packet {
	t.Helper()
	b, err := packets.Append(nil, p)
	if err != nil {
		t.Fatalf("encode %s: %v", p.Type(), err)
	}
	q, err := packets.Decode(b, 0)
	if err != nil {
		t.Fatalf("decode %s: %v", p.Type(), err)
	}
	return q
}

func expect(t *testing.T, got []packets.Packet, want ...string) {
	t.Helper()
	for _, p := range got {
		wire(t, p)
	}
	if g := show(got); !slices.Equal(g, want) {
		t.Fatalf("broker sent\n\t%s\nwant\n\t%s", strings.Join(g, "\n\t"), strings.Join(want, "\n\t"))
	}
}

func noViolations(t *testing.T, b *Broker) {
	t.Helper()
	if v := b.Violations(); len(v) > 0 {
		t.Fatalf("violations: %q", v)
	}
}

func violated(t *testing.T, b *Broker, id string) {
	t.Helper()
	v := b.Violations()
	if len(v) == 0 || !strings.HasPrefix(v[len(v)-1], id+": ") {
		t.Fatalf("violations %q, want the last from %s", v, id)
	}
}

func newBroker(cfg Config) *Broker { return New(cfg, rand.New(rand.NewPCG(7, 7))) }

func u32(v uint32) *uint32 { return &v }

// connect is a CONNECT resuming session "c", which outlives connections.
func connect() *packets.Connect {
	return &packets.Connect{ClientID: "c", Properties: packets.Properties{SessionExpiry: u32(60)}}
}

func pub(qos byte, id uint16, payload string) *packets.Publish {
	return &packets.Publish{QoS: qos, PacketID: id, Topic: "t", Payload: []byte(payload)}
}

func ack(kind packets.Type, id uint16) *packets.Ack { return &packets.Ack{Kind: kind, PacketID: id} }

func TestQoS1FromClient(t *testing.T) {
	b := newBroker(Config{})
	expect(t, b.Connect(connect()), "CONNACK sp=false 0x0")
	expect(t, b.Receive(pub(1, 1, "a")), "PUBACK 1")
	// At least once: every PUBLISH is delivered, a resend as well.
	b.Drop()
	expect(t, b.Connect(connect()), "CONNACK sp=true 0x0")
	p := pub(1, 1, "a")
	p.Dup = true
	expect(t, b.Receive(p), "PUBACK 1")
	expect(t, b.Receive(pub(0, 0, "z")))
	if got := b.Received(); got["a"] != 2 || got["z"] != 1 {
		t.Fatalf("Received = %v", got)
	}
	noViolations(t, b)
}

func TestQoS2FromClient(t *testing.T) {
	b := newBroker(Config{Quirks: Quirks{NoDisconnectOnViolation: true}})
	b.Connect(connect())
	expect(t, b.Receive(pub(2, 5, "a")), "PUBREC 5")
	// A repeat before PUBREL, on the next connection: answered, not
	// delivered again (MQTT-4.3.3-10 on the receiver's side).
	b.Drop()
	b.Connect(connect())
	p := pub(2, 5, "a")
	p.Dup = true
	expect(t, b.Receive(p), "PUBREC 5")
	if n := b.Received()["a"]; n != 1 {
		t.Fatalf("delivered %d times before PUBREL, want 1", n)
	}
	expect(t, b.Receive(ack(packets.PUBREL, 5)), "PUBCOMP 5")
	noViolations(t, b)

	// The PUBCOMP was lost: the PUBREL comes again on the next connection.
	b.Drop()
	b.Connect(connect())
	got := b.Receive(ack(packets.PUBREL, 5))
	if s := show(got); len(s) != 1 || !strings.HasPrefix(s[0], "PUBCOMP 5") {
		t.Fatalf("repeated PUBREL answered with %v", s)
	}
	noViolations(t, b)

	// A repeat after PUBREL is a new message to the broker: delivered
	// again, and the client broke MQTT-4.3.3-6.
	expect(t, b.Receive(p), "PUBREC 5")
	if n := b.Received()["a"]; n != 2 {
		t.Fatalf("delivered %d times after a PUBLISH after PUBREL, want 2", n)
	}
	violated(t, b, "MQTT-4.3.3-6")
	expect(t, b.Receive(ack(packets.PUBREL, 5)), "PUBCOMP 5")

	// The identifier is free again for a new message.
	expect(t, b.Receive(pub(2, 5, "b")), "PUBREC 5")
	expect(t, b.Receive(ack(packets.PUBREL, 5)), "PUBCOMP 5")
	if n := b.Received()["b"]; n != 1 || len(b.Violations()) != 1 {
		t.Fatalf("b delivered %d times, violations %q", n, b.Violations())
	}
}

func TestQoS1ToClient(t *testing.T) {
	b := newBroker(Config{})
	b.Connect(connect())
	payload := []byte("a")
	expect(t, b.Inject("t", payload, 1), "PUBLISH q1 id1 dup=false a")
	payload[0] = 'x' // the broker keeps its own copy
	if b.Unacked() != 1 {
		t.Fatalf("Unacked = %d", b.Unacked())
	}
	expect(t, b.Receive(ack(packets.PUBACK, 1)))
	if b.Unacked() != 0 {
		t.Fatalf("Unacked = %d after PUBACK", b.Unacked())
	}
	expect(t, b.Inject("t", []byte("q0"), 0), "PUBLISH q0 id0 dup=false q0")
	noViolations(t, b)
}

func TestQoS2ToClient(t *testing.T) {
	b := newBroker(Config{})
	b.Connect(connect())
	expect(t, b.Inject("t", []byte("a"), 2), "PUBLISH q2 id1 dup=false a")
	expect(t, b.Receive(ack(packets.PUBREC, 1)), "PUBREL 1")
	expect(t, b.Receive(ack(packets.PUBCOMP, 1)))
	// A PUBREC with an error ends the flow: no PUBREL.
	expect(t, b.Inject("t", []byte("b"), 2), "PUBLISH q2 id2 dup=false b")
	expect(t, b.Receive(&packets.Ack{Kind: packets.PUBREC, PacketID: 2, ReasonCode: packets.QuotaExceeded}))
	if b.Unacked() != 0 || b.Lost()["b"] != LostRefused {
		t.Fatalf("Unacked = %d, Lost = %v", b.Unacked(), b.Lost())
	}
	noViolations(t, b)
}

func TestResendOrderAfterDrop(t *testing.T) {
	b := newBroker(Config{})
	b.Inject("t", []byte("lost"), 1) // no session yet
	b.Connect(connect())
	b.Inject("t", []byte("a"), 1)
	b.Inject("t", []byte("b"), 2)
	b.Inject("t", []byte("c"), 2)
	b.Inject("t", []byte("d"), 1)
	expect(t, b.Receive(ack(packets.PUBREC, 2)), "PUBREL 2")
	b.Drop()
	b.Inject("t", []byte("e"), 1) // queued while offline
	// MQTT-4.4.0-1, MQTT-4.6.0-1: original order and identifiers, DUP 1.
	expect(t, b.Connect(connect()),
		"CONNACK sp=true 0x0",
		"PUBLISH q1 id1 dup=true a",
		"PUBREL 2",
		"PUBLISH q2 id3 dup=true c",
		"PUBLISH q1 id4 dup=true d",
		"PUBLISH q1 id5 dup=false e")
	if b.Lost()["lost"] != LostSession {
		t.Fatalf("Lost = %v", b.Lost())
	}
	noViolations(t, b)
}

func TestSessionPresent(t *testing.T) {
	b := newBroker(Config{})
	b.Connect(connect())
	b.Receive(pub(2, 9, "in"))
	b.Inject("t", []byte("out"), 1)

	b.Restart(true)
	expect(t, b.Connect(connect()), "CONNACK sp=true 0x0", "PUBLISH q1 id1 dup=true out")

	// A restart without persistence loses the session both ways.
	b.Restart(false)
	expect(t, b.Connect(connect()), "CONNACK sp=false 0x0")
	if b.Lost()["out"] != LostSession || b.Unacked() != 0 {
		t.Fatalf("Lost = %v, Unacked = %d", b.Lost(), b.Unacked())
	}
	// So the client had to discard its session (MQTT-3.2.2-5).
	b.Receive(ack(packets.PUBREL, 9))
	violated(t, b, "MQTT-3.2.2-5")

	for _, tc := range []struct {
		name string
		end  func(b *Broker)
		next *packets.Connect
	}{
		{"Clean Start", func(b *Broker) { b.Drop() }, &packets.Connect{ClientID: "c", CleanStart: true}},
		{"another ClientID", func(b *Broker) { b.Drop() }, &packets.Connect{ClientID: "d"}},
		{"expiry 0", func(b *Broker) { b.Drop() }, &packets.Connect{ClientID: "c"}},
		{"DISCONNECT sets expiry 0", func(b *Broker) {
			b.Receive(&packets.Disconnect{Properties: packets.Properties{SessionExpiry: u32(0)}})
		}, connect()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker(Config{})
			first := connect()
			if tc.name == "expiry 0" {
				first.Properties.SessionExpiry = nil
			}
			b.Connect(first)
			b.Inject("t", []byte("x"), 2)
			tc.end(b)
			expect(t, b.Connect(tc.next)[:1], "CONNACK sp=false 0x0")
			if b.Lost()["x"] != LostSession {
				t.Fatalf("Lost = %v", b.Lost())
			}
			noViolations(t, b)
		})
	}
}

func TestClientReceiveMaximum(t *testing.T) {
	c := connect()
	c.Properties.ReceiveMaximum = 2
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprintf("ignore=%v", ignore), func(t *testing.T) {
			b := newBroker(Config{Quirks: Quirks{IgnoreClientReceiveMaximum: ignore}})
			b.Connect(c)
			var sent int
			for i := range 5 {
				sent += len(b.Inject("t", []byte{'a' + byte(i)}, byte(1+i%2)))
			}
			if want := map[bool]int{false: 2, true: 5}[ignore]; sent != want {
				t.Fatalf("sent %d PUBLISHes, want %d", sent, want)
			}
			if ignore {
				// And on the resend of the backlog.
				b.Drop()
				if got := b.Connect(c); len(got) != 6 {
					t.Fatalf("resend: %v", show(got))
				}
				return
			}
			// A PUBREL keeps its place in the window until PUBCOMP.
			expect(t, b.Receive(ack(packets.PUBACK, 1)), "PUBLISH q1 id3 dup=false c")
			expect(t, b.Receive(ack(packets.PUBREC, 2)), "PUBREL 2")
			expect(t, b.Receive(ack(packets.PUBCOMP, 2)), "PUBLISH q2 id4 dup=false d")
			// A smaller window on the next connection holds back the rest
			// of the resend, in order.
			b.Drop()
			c1 := connect()
			c1.Properties.ReceiveMaximum = 1
			expect(t, b.Connect(c1), "CONNACK sp=true 0x0", "PUBLISH q1 id3 dup=true c")
			expect(t, b.Receive(ack(packets.PUBACK, 3)), "PUBLISH q2 id4 dup=true d")
			noViolations(t, b)
		})
	}
}

func TestBrokerReceiveMaximum(t *testing.T) {
	b := newBroker(Config{ReceiveMaximum: 2})
	got := b.Connect(connect())
	if ca := got[0].(*packets.Connack); ca.Properties.ReceiveMaximum != 2 {
		t.Fatalf("CONNACK announces Receive Maximum %d", ca.Properties.ReceiveMaximum)
	}
	b.Receive(pub(2, 1, "a"))
	b.Receive(pub(2, 2, "b"))
	expect(t, b.Receive(pub(1, 3, "c")), "DISCONNECT 0x93")
	violated(t, b, "MQTT-3.3.4-7")
	if b.Connected() || b.Received()["c"] != 0 {
		t.Fatal("a PUBLISH over the Receive Maximum was processed")
	}
	// The quota starts afresh on each connection (§4.9): both resends and
	// one new message fit only once PUBCOMP frees room.
	b = newBroker(Config{ReceiveMaximum: 2})
	b.Connect(connect())
	b.Receive(pub(2, 1, "a"))
	b.Receive(pub(2, 2, "b"))
	b.Drop()
	b.Connect(connect())
	for id, s := range map[uint16]string{1: "a", 2: "b"} {
		p := pub(2, id, s)
		p.Dup = true
		b.Receive(p)
	}
	b.Receive(ack(packets.PUBREL, 1))
	expect(t, b.Receive(pub(1, 3, "c")), "PUBACK 3")
	noViolations(t, b)
}

func TestPublishAfterPubrel(t *testing.T) {
	b := newBroker(Config{Quirks: Quirks{PublishAfterPubrel: true}})
	b.Connect(connect())
	const n = 20
	for i := range n {
		b.Inject("t", []byte{'a' + byte(i)}, 2)
		b.Receive(ack(packets.PUBREC, uint16(i+1)))
	}
	b.Drop()
	got := b.Connect(connect())[1:]
	var again int
	for i, p := range got {
		id := uint16(i + 1)
		switch p := p.(type) {
		case *packets.Publish:
			if !p.Dup || p.PacketID != id || b.AfterPubrel()[string(p.Payload)] != 1 {
				t.Fatalf("quirk resend %v, AfterPubrel %v", show(got[i:i+1]), b.AfterPubrel())
			}
			again++
			expect(t, b.Receive(ack(packets.PUBREC, id)), fmt.Sprintf("PUBREL %d", id))
		case *packets.Ack:
			if p.Kind != packets.PUBREL || p.PacketID != id {
				t.Fatalf("resend %v", show(got[i:i+1]))
			}
		}
		b.Receive(ack(packets.PUBCOMP, id))
	}
	if len(got) != n || again == 0 || again == n || len(b.AfterPubrel()) != again {
		t.Fatalf("%d resent, %d of them as PUBLISH; AfterPubrel %v", len(got), again, b.AfterPubrel())
	}
	if b.Unacked() != 0 {
		t.Fatalf("Unacked = %d", b.Unacked())
	}
	noViolations(t, b)
}

func TestClientMaximumPacketSize(t *testing.T) {
	b := newBroker(Config{})
	c := connect()
	c.Properties.MaximumPacketSize = 20
	b.Connect(c)
	expect(t, b.Inject("t", bytes.Repeat([]byte("x"), 30), 1)) // MQTT-3.1.2-25
	expect(t, b.Inject("t", []byte("small"), 1), "PUBLISH q1 id1 dup=false small")
	expect(t, b.Inject("t", bytes.Repeat([]byte("y"), 30), 0))
	if b.Lost()[strings.Repeat("x", 30)] != LostTooLarge || b.Unacked() != 1 {
		t.Fatalf("Lost = %v, Unacked = %d", b.Lost(), b.Unacked())
	}
}

func TestTopicAliasesFromClient(t *testing.T) {
	b := newBroker(Config{TopicAliasMaximum: 3})
	got := b.Connect(connect())
	if ca := got[0].(*packets.Connack); ca.Properties.TopicAliasMaximum != 3 {
		t.Fatalf("CONNACK announces Topic Alias Maximum %d", ca.Properties.TopicAliasMaximum)
	}
	p := pub(0, 0, "a")
	p.Properties.TopicAlias = 3
	b.Receive(p)
	p = pub(0, 0, "b")
	p.Topic, p.Properties.TopicAlias = "", 3
	b.Receive(p)
	noViolations(t, b)
	// MQTT-3.3.2-7: the mapping ended with the connection.
	b.Drop()
	b.Connect(connect())
	expect(t, b.Receive(p), "DISCONNECT 0x82")
	violated(t, b, "MQTT-3.3.2-7")
}

func TestTopicAliasesToClient(t *testing.T) {
	b := newBroker(Config{SendTopicAliases: true})
	c := connect()
	c.Properties.TopicAliasMaximum = 2
	var aliases map[uint16]string
	var resolve func(ps []packets.Packet)
	resolve = func(ps []packets.Packet) {
		for _, p := range ps {
			if p, ok := wire(t, p).(*packets.Publish); ok {
				a := p.Properties.TopicAlias
				if a > 2 {
					t.Fatalf("alias %d above the client's maximum", a)
				}
				topic := p.Topic
				switch {
				case a != 0 && topic != "":
					aliases[a] = topic
				case a != 0:
					topic = aliases[a]
				}
				if want := "t/" + string(p.Payload[0]); topic != want {
					t.Fatalf("topic %q, want %q", topic, want)
				}
				if p.QoS == 1 {
					resolve(b.Receive(ack(packets.PUBACK, p.PacketID)))
				}
			}
		}
	}
	var used bool
	for conn := range 5 {
		aliases = map[uint16]string{}
		resolve(b.Connect(c))
		for i := range 50 {
			k := 'a' + byte(i%4)
			got := b.Inject("t/"+string(k), []byte{k, byte(conn), byte(i)}, byte(i%2))
			used = used || got[0].(*packets.Publish).Topic == ""
			resolve(got)
		}
		b.Drop()
	}
	if !used {
		t.Fatal("no topic alias used")
	}
}

func TestSubscribeAndPing(t *testing.T) {
	b := newBroker(Config{MaximumQoS: new(byte(1))})
	got := b.Connect(connect())
	if ca := got[0].(*packets.Connack); ca.Properties.MaximumQoS == nil || *ca.Properties.MaximumQoS != 1 {
		t.Fatal("CONNACK does not announce Maximum QoS 1")
	}
	got = b.Receive(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{
		{Filter: "a", SubscribeOptions: packets.SubscribeOptions{QoS: 2}},
		{Filter: "b/#", SubscribeOptions: packets.SubscribeOptions{QoS: 0}},
	}})
	if sa, ok := got[0].(*packets.Suback); !ok || !slices.Equal(sa.ReasonCodes, []packets.ReasonCode{1, 0}) {
		t.Fatalf("SUBACK %v", got)
	}
	got = b.Receive(&packets.Unsubscribe{PacketID: 2, Filters: []string{"a", "c"}})
	if ua, ok := got[0].(*packets.Unsuback); !ok || len(ua.ReasonCodes) != 2 || ua.PacketID != 2 {
		t.Fatalf("UNSUBACK %v", got)
	}
	expect(t, b.Receive(&packets.Pingreq{}), "PINGRESP")
	expect(t, b.Receive(&packets.Disconnect{ReasonCode: packets.DisconnectWithWill}))
	if b.Connected() {
		t.Fatal("still connected after DISCONNECT")
	}
	noViolations(t, b)
}

func TestInvalidConnect(t *testing.T) {
	b := newBroker(Config{})
	c := connect()
	c.Properties.ReceiveMaximum = 0
	c.Properties.SetPresent(packets.PropReceiveMaximum) // a protocol error
	expect(t, b.Connect(c), "CONNACK sp=false 0x82")
	violated(t, b, "MQTT-3.1.4-1")
	if b.Connected() {
		t.Fatal("connected after an invalid CONNECT")
	}
	c = connect()
	c.Properties.AuthMethod = "SCRAM-SHA-1"
	expect(t, b.Connect(c), "CONNACK sp=false 0x8c")
}

// violation is a scripted client violation: setup runs after a CONNECT
// of session "c" with Session Expiry 60, then p arrives.
type violation struct {
	name  string
	cfg   Config
	setup func(b *Broker)
	p     packets.Packet
	id    string
	code  packets.ReasonCode // of the DISCONNECT; 0 when none is sent
}

func withAlias(p *packets.Publish, a uint16, topic string) *packets.Publish {
	p.Properties.TopicAlias, p.Topic = a, topic
	return p
}

func dup(p *packets.Publish) *packets.Publish { p.Dup = true; return p }

func reconnect(b *Broker) { b.Drop(); b.Connect(connect()) }

var violations = []violation{
	{name: "DUP on QoS 0", p: dup(pub(0, 0, "a")), id: "MQTT-3.3.1-2", code: 0x81},
	{name: "identifier on QoS 0", p: pub(0, 1, "a"), id: "MQTT-2.2.1-2", code: 0x82},
	{name: "no identifier on QoS 1", p: pub(1, 0, "a"), id: "MQTT-2.2.1-3", code: 0x82},
	{name: "QoS 3", p: pub(3, 1, "a"), id: "MQTT-3.3.1-4", code: 0x81},
	{name: "above Maximum QoS", cfg: Config{MaximumQoS: new(byte(1))}, p: pub(2, 1, "a"), id: "MQTT-3.2.2-11", code: 0x9B},
	{name: "Subscription Identifier", p: &packets.Publish{Topic: "t", Properties: packets.Properties{SubscriptionIdentifier: []uint32{1}}},
		id: "MQTT-3.3.4-6", code: 0x82},
	{name: "above Maximum Packet Size", cfg: Config{MaximumPacketSize: 10}, p: pub(1, 1, "0123456789"), id: "MQTT-3.2.2-15", code: 0x95},
	{name: "topic alias 0", cfg: Config{TopicAliasMaximum: 5},
		p:  func() packets.Packet { p := pub(0, 0, "a"); p.Properties.SetPresent(packets.PropTopicAlias); return p }(),
		id: "MQTT-3.3.2-8", code: 0x94},
	{name: "topic alias none allowed", p: withAlias(pub(0, 0, "a"), 1, "t"), id: "MQTT-3.2.2-18", code: 0x94},
	{name: "topic alias above maximum", cfg: Config{TopicAliasMaximum: 5}, p: withAlias(pub(0, 0, "a"), 6, "t"), id: "MQTT-3.3.2-9", code: 0x94},
	{name: "topic alias unknown", cfg: Config{TopicAliasMaximum: 5}, p: withAlias(pub(0, 0, "a"), 1, ""), id: "§3.3.2.3.4", code: 0x82},
	{name: "empty topic", p: withAlias(pub(0, 0, "a"), 0, ""), id: "MQTT-4.7.3-1", code: 0x82},
	{name: "wildcard in topic", p: withAlias(pub(0, 0, "a"), 0, "a/+"), id: "MQTT-3.3.2-2", code: 0x82},
	{name: "over Receive Maximum", cfg: Config{ReceiveMaximum: 1},
		setup: func(b *Broker) { b.Receive(pub(2, 1, "a")) }, p: pub(2, 2, "b"), id: "MQTT-3.3.4-7", code: 0x93},
	{name: "new message under a waiting identifier",
		setup: func(b *Broker) { b.Receive(pub(2, 1, "a")); reconnect(b) }, p: dup(pub(2, 1, "b")), id: "MQTT-2.2.1-3", code: 0x82},
	{name: "QoS 1 under a waiting identifier",
		setup: func(b *Broker) { b.Receive(pub(2, 1, "a")) }, p: pub(1, 1, "b"), id: "MQTT-2.2.1-3", code: 0x82},
	{name: "SUBSCRIBE under a waiting identifier", setup: func(b *Broker) { b.Receive(pub(2, 1, "a")) },
		p: &packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "f"}}}, id: "MQTT-2.2.1-3", code: 0x82},
	{name: "resend on one connection",
		setup: func(b *Broker) { b.Receive(pub(2, 1, "a")) }, p: dup(pub(2, 1, "a")), id: "MQTT-4.4.0-1", code: 0x82},
	{name: "resend without DUP",
		setup: func(b *Broker) { b.Receive(pub(2, 1, "a")); reconnect(b) }, p: pub(2, 1, "a"), id: "MQTT-3.3.1-1", code: 0x82},
	{name: "PUBLISH after PUBREL",
		setup: func(b *Broker) { b.Receive(pub(2, 1, "a")); b.Receive(ack(packets.PUBREL, 1)); reconnect(b) },
		p:     dup(pub(2, 1, "a")), id: "MQTT-4.3.3-6", code: 0x82},
	{name: "PUBREL unknown", p: ack(packets.PUBREL, 1), id: "MQTT-2.2.1-5", code: 0x82},
	{name: "PUBREL again on one connection",
		setup: func(b *Broker) { b.Receive(pub(2, 1, "a")); b.Receive(ack(packets.PUBREL, 1)) },
		p:     ack(packets.PUBREL, 1), id: "MQTT-4.4.0-1", code: 0x82},
	{name: "PUBREL of a discarded session",
		setup: func(b *Broker) { b.Receive(pub(2, 1, "a")); b.Restart(false); b.Connect(connect()) },
		p:     ack(packets.PUBREL, 1), id: "MQTT-3.2.2-5", code: 0x82},
	{name: "PUBACK unknown", p: ack(packets.PUBACK, 1), id: "MQTT-2.2.1-5", code: 0x82},
	{name: "PUBACK for QoS 2", setup: func(b *Broker) { b.Inject("t", []byte("a"), 2) },
		p: ack(packets.PUBACK, 1), id: "MQTT-2.2.1-5", code: 0x82},
	{name: "PUBCOMP before PUBREL", setup: func(b *Broker) { b.Inject("t", []byte("a"), 2) },
		p: ack(packets.PUBCOMP, 1), id: "MQTT-2.2.1-5", code: 0x82},
	{name: "PUBREC after PUBREL", setup: func(b *Broker) { b.Inject("t", []byte("a"), 2); b.Receive(ack(packets.PUBREC, 1)) },
		p: ack(packets.PUBREC, 1), id: "MQTT-2.2.1-5", code: 0x82},
	{name: "PUBACK out of order", setup: func(b *Broker) { b.Inject("t", []byte("a"), 1); b.Inject("t", []byte("b"), 1) },
		p: ack(packets.PUBACK, 2), id: "MQTT-4.6.0-2", code: 0x82},
	{name: "PUBREC out of order", setup: func(b *Broker) { b.Inject("t", []byte("a"), 2); b.Inject("t", []byte("b"), 2) },
		p: ack(packets.PUBREC, 2), id: "MQTT-4.6.0-3", code: 0x82},
	{name: "PUBACK of a message not sent on this connection",
		setup: func(b *Broker) {
			b.Inject("t", []byte("a"), 1)
			b.Inject("t", []byte("b"), 1)
			b.Drop()
			c := connect()
			c.Properties.ReceiveMaximum = 1
			b.Connect(c)
		},
		p: ack(packets.PUBACK, 2), id: "MQTT-2.2.1-5", code: 0x82},
	{name: "second CONNECT", p: connect(), id: "MQTT-3.1.0-2", code: 0x82},
	{name: "AUTH", p: &packets.Auth{}, id: "§4.12", code: 0x82},
	{name: "server packet", p: &packets.Connack{}, id: "§2.1.2", code: 0x82},
	{name: "nil packet", p: nil, id: "§2.1.2", code: 0x81},
	{name: "malformed", p: &packets.Subscribe{PacketID: 1}, id: "§4.13", code: 0x82},
	{name: "after DISCONNECT", setup: func(b *Broker) { b.Receive(&packets.Disconnect{}) },
		p: &packets.Pingreq{}, id: "MQTT-3.14.4-1"},
	{name: "DISCONNECT raising expiry", setup: func(b *Broker) { reconnectWith(b, &packets.Connect{ClientID: "c"}) },
		p: &packets.Disconnect{Properties: packets.Properties{SessionExpiry: u32(5)}}, id: "§3.14.2.2.2", code: 0x82},
}

func reconnectWith(b *Broker, c *packets.Connect) { b.Drop(); b.Connect(c) }

func TestViolations(t *testing.T) {
	for _, tc := range violations {
		for _, carryOn := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/carryOn=%v", tc.name, carryOn), func(t *testing.T) {
				cfg := tc.cfg
				cfg.Quirks.NoDisconnectOnViolation = carryOn
				b := newBroker(cfg)
				b.Connect(connect())
				if tc.setup != nil {
					tc.setup(b)
				}
				noViolations(t, b)
				got := b.Receive(tc.p)
				violated(t, b, tc.id)
				if len(b.Violations()) != 1 {
					t.Fatalf("violations %q", b.Violations())
				}
				var disc *packets.Disconnect
				if n := len(got); n > 0 {
					disc, _ = got[n-1].(*packets.Disconnect)
				}
				switch {
				case carryOn || tc.code == 0:
					if disc != nil {
						t.Fatalf("sent %v", show(got))
					}
				case disc == nil || disc.ReasonCode != tc.code || len(got) != 1:
					t.Fatalf("sent %v, want only DISCONNECT %#x", show(got), byte(tc.code))
				case b.Connected() || b.Receive(&packets.Pingreq{}) != nil:
					t.Fatal("still reading after DISCONNECT")
				}
			})
		}
	}
}

// toyClient is a small, well-behaved client: it keeps its session across
// cuts, resends in order with DUP 1, acknowledges inbound messages in
// order but late, and respects the broker's Receive Maximum. A broker
// that finds a violation in it is wrong.
type toyClient struct {
	t        *testing.T
	rm       int // its Receive Maximum
	aliasMax uint16
	strict   bool // whether the broker must respect rm

	connected bool
	brokerRM  int
	out       []*toyOut // its session, outbound, in order
	in2       map[uint16]string
	inConn    map[uint16]bool // PUBLISHes of this connection not yet answered with PUBACK or PUBCOMP
	acks      []*packets.Ack  // PUBACKs and PUBRECs not sent yet, in order
	aliases   map[uint16]string
	toBroker  []packets.Packet

	published map[string]byte // payload → QoS
	completed map[string]bool
	delivered map[string]int
}

type toyOut struct {
	payload string
	qos     byte
	id      uint16
	rel     bool
}

func (c *toyClient) connect() *packets.Connect {
	p := connect()
	p.Properties.ReceiveMaximum = uint16(c.rm)
	p.Properties.TopicAliasMaximum = c.aliasMax
	return p
}

func (c *toyClient) send(p packets.Packet) { c.toBroker = append(c.toBroker, p) }

func (c *toyClient) publish(payload string, qos byte) {
	if !c.connected || len(c.out) >= c.brokerRM {
		return
	}
	c.published[payload] = qos
	if qos == 0 {
		c.send(&packets.Publish{Topic: "t", Payload: []byte(payload)})
		return
	}
	id := uint16(1)
	for slices.ContainsFunc(c.out, func(o *toyOut) bool { return o.id == id }) {
		id++
	}
	c.out = append(c.out, &toyOut{payload: payload, qos: qos, id: id})
	c.send(&packets.Publish{QoS: qos, PacketID: id, Topic: "t", Payload: []byte(payload)})
}

func (c *toyClient) find(id uint16) int {
	return slices.IndexFunc(c.out, func(o *toyOut) bool { return o.id == id })
}

func (c *toyClient) receive(p packets.Packet) {
	t := c.t
	switch p := p.(type) {
	case *packets.Connack:
		c.connected, c.brokerRM = true, 65535
		if p.Properties.ReceiveMaximum != 0 {
			c.brokerRM = int(p.Properties.ReceiveMaximum)
		}
		if !p.SessionPresent {
			c.out, c.in2 = nil, map[uint16]string{}
		}
		for _, o := range c.out {
			if o.rel {
				c.send(ack(packets.PUBREL, o.id))
			} else {
				c.send(&packets.Publish{Dup: true, QoS: o.qos, PacketID: o.id, Topic: "t", Payload: []byte(o.payload)})
			}
		}
	case *packets.Publish:
		c.inbound(p)
	case *packets.Ack:
		c.ackFromBroker(p)
	default:
		t.Fatalf("client got %v", show([]packets.Packet{p}))
	}
}

func (c *toyClient) inbound(p *packets.Publish) {
	t := c.t
	if a := p.Properties.TopicAlias; a != 0 {
		if p.Topic != "" {
			c.aliases[a] = p.Topic
		} else if p.Topic = c.aliases[a]; p.Topic == "" {
			t.Fatalf("unknown topic alias %d", a)
		}
	}
	if p.Topic != "t" {
		t.Fatalf("topic %q", p.Topic)
	}
	if p.QoS == 0 {
		c.delivered[string(p.Payload)]++
		return
	}
	if c.inConn[p.PacketID] {
		t.Fatalf("PUBLISH %d again on one connection", p.PacketID)
	}
	c.inConn[p.PacketID] = true
	if c.strict && len(c.inConn) > c.rm {
		t.Fatalf("broker exceeds the client's Receive Maximum %d", c.rm)
	}
	if p.QoS == 1 {
		c.delivered[string(p.Payload)]++
		c.acks = append(c.acks, ack(packets.PUBACK, p.PacketID))
		return
	}
	if s, ok := c.in2[p.PacketID]; ok {
		if s != string(p.Payload) {
			t.Fatalf("PUBLISH %d: %q under the identifier of %q", p.PacketID, p.Payload, s)
		}
	} else {
		c.in2[p.PacketID] = string(p.Payload)
		c.delivered[string(p.Payload)]++
	}
	c.acks = append(c.acks, ack(packets.PUBREC, p.PacketID))
}

func (c *toyClient) ackFromBroker(a *packets.Ack) {
	t := c.t
	if a.Kind == packets.PUBREL {
		delete(c.in2, a.PacketID)
		delete(c.inConn, a.PacketID)
		c.send(ack(packets.PUBCOMP, a.PacketID))
		return
	}
	i := c.find(a.PacketID)
	if i < 0 {
		t.Fatalf("%v %d for nothing", a.Kind, a.PacketID)
	}
	o := c.out[i]
	switch {
	case a.Kind == packets.PUBREC && !o.rel && !a.ReasonCode.IsError():
		o.rel = true
		c.send(ack(packets.PUBREL, o.id))
		return
	case a.Kind == packets.PUBACK && o.qos == 1, a.Kind == packets.PUBCOMP && o.rel:
		c.completed[o.payload] = true
	default:
		t.Fatalf("%v %d for %+v", a.Kind, a.PacketID, *o)
	}
	c.out = slices.Delete(c.out, i, i+1)
}

func (c *toyClient) flushAck() {
	if len(c.acks) == 0 {
		return
	}
	a := c.acks[0]
	c.acks = c.acks[1:]
	if a.Kind == packets.PUBACK {
		delete(c.inConn, a.PacketID)
	}
	c.send(a)
}

func (c *toyClient) cut() {
	c.connected, c.toBroker, c.acks = false, nil, nil
	c.inConn, c.aliases = map[uint16]bool{}, map[uint16]string{}
}

// simulate runs a seeded random exchange between a broker and a toyClient
// over a network that cuts, and returns a fingerprint of everything the
// broker sent.
func simulate(t *testing.T, seed uint64, cfg Config) uint64 {
	rnd := rand.New(rand.NewPCG(seed, 1))
	b := New(cfg, rand.New(rand.NewPCG(seed, 2)))
	c := &toyClient{t: t, rm: 1 + rnd.IntN(4), aliasMax: 3, strict: !cfg.Quirks.IgnoreClientReceiveMaximum,
		in2: map[uint16]string{}, published: map[string]byte{}, completed: map[string]bool{}, delivered: map[string]int{}}
	c.cut()
	fp := fnv.New64a()
	var toClient []packets.Packet
	take := func(ps []packets.Packet) {
		for _, p := range ps {
			enc, err := packets.Append(nil, p)
			if err != nil {
				t.Fatalf("broker sent an invalid %s: %v", p.Type(), err)
			}
			fp.Write(enc)
			toClient = append(toClient, wire(t, p))
		}
	}
	injected := map[string]byte{}
	var n int
	step := func(quiet bool) {
		// A cut never loses a CONNACK: a client that missed Session
		// Present 0 would rightly resend into the broker's new session,
		// and duplicates would follow. The simulation must allow for that.
		canCut := !quiet && (c.connected || !b.Connected())
		switch r := rnd.IntN(100); {
		case !b.Connected() && (quiet || r < 30):
			c.cut()
			toClient = nil
			take(b.Connect(c.connect()))
		case quiet && len(c.toBroker) == 0 && len(toClient) == 0:
			c.flushAck()
		case !quiet && r < 8:
			n++
			c.publish(fmt.Sprintf("c%d", n), byte(rnd.IntN(3)))
		case !quiet && r < 16:
			n++
			s, q := fmt.Sprintf("b%d", n), byte(rnd.IntN(3))
			injected[s] = q
			take(b.Inject("t", []byte(s), q))
		case canCut && r < 18 && r >= 16:
			b.Drop()
			c.cut()
			toClient = nil
		case canCut && r == 18:
			b.Restart(rnd.IntN(2) == 0)
			c.cut()
			toClient = nil
		case r < 40:
			c.flushAck()
		case r < 70 && len(c.toBroker) > 0:
			p := c.toBroker[0]
			c.toBroker = c.toBroker[1:]
			take(b.Receive(wire(t, p)))
		case len(toClient) > 0:
			p := toClient[0]
			toClient = toClient[1:]
			if _, ok := p.(*packets.Disconnect); ok {
				t.Fatalf("seed %d: broker disconnected: %q", seed, b.Violations())
			}
			c.receive(p)
		}
	}
	for range 3000 {
		step(false)
	}
	for i := 0; b.Unacked() > 0 || len(c.out) > 0 || len(c.acks) > 0 || len(c.toBroker) > 0 || len(toClient) > 0; i++ {
		if i > 100000 {
			t.Fatalf("no drain: broker Unacked %d, client out %d", b.Unacked(), len(c.out))
		}
		step(true)
	}
	noViolations(t, b)
	for s, q := range c.published {
		if got := b.Received()[s]; q == 2 && got > 1 || c.completed[s] && got == 0 {
			t.Fatalf("seed %d: %s (QoS %d, completed %v) received %d times", seed, s, q, c.completed[s], got)
		}
	}
	for s, q := range injected {
		_, lost := b.Lost()[s]
		if got := c.delivered[s]; q == 2 && got > 1+b.AfterPubrel()[s] || q > 0 && !lost && got == 0 {
			t.Fatalf("seed %d: %s (QoS %d, lost %v) delivered %d times", seed, s, q, lost, got)
		}
	}
	return fp.Sum64()
}

func TestWellBehavedClient(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"plain", Config{}},
		{"limits", Config{ReceiveMaximum: 3, MaximumQoS: new(byte(2)), NoSubscribersOneIn: 3}},
		{"aliases", Config{SendTopicAliases: true}},
		{"IgnoreClientReceiveMaximum", Config{Quirks: Quirks{IgnoreClientReceiveMaximum: true}}},
		{"PublishAfterPubrel", Config{Quirks: Quirks{PublishAfterPubrel: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(20) {
				if a, b := simulate(t, seed, tc.cfg), simulate(t, seed, tc.cfg); a != b {
					t.Fatalf("seed %d: two runs differ", seed)
				}
			}
		})
	}
}

// BenchmarkQoS2FromClient measures a QoS 2 exchange from the client:
// PUBLISH, PUBREC, PUBREL, PUBCOMP. Payloads are new each time, as in the
// simulation, so each costs its key in Received.
func BenchmarkQoS2FromClient(b *testing.B) {
	br := newBroker(Config{})
	br.Connect(connect())
	payloads := make([][]byte, 1<<16)
	for i := range payloads {
		payloads[i] = fmt.Appendf(nil, "m%d", i)
	}
	p := &packets.Publish{QoS: 2, Topic: "t"}
	rel := &packets.Ack{Kind: packets.PUBREL}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := uint16(i%32) + 1 // a client reuses few identifiers
		p.PacketID, p.Payload = id, payloads[i%len(payloads)]
		br.Receive(p)
		rel.PacketID = id
		br.Receive(rel)
	}
}

// BenchmarkQoS2ToClient measures a QoS 2 exchange to the client: Inject
// (with its PUBLISH), PUBREC, PUBREL, PUBCOMP.
func BenchmarkQoS2ToClient(b *testing.B) {
	br := newBroker(Config{})
	br.Connect(connect())
	payload := []byte("message")
	rec := &packets.Ack{Kind: packets.PUBREC}
	comp := &packets.Ack{Kind: packets.PUBCOMP}
	b.ReportAllocs()
	for b.Loop() {
		p := br.Inject("t", payload, 2)[0].(*packets.Publish)
		rec.PacketID, comp.PacketID = p.PacketID, p.PacketID
		br.Receive(rec)
		br.Receive(comp)
	}
}
