package client

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
)

// Mosquitto never breaks the protocol and supports no enhanced
// authentication, so the tests in this file talk to a scripted peer: a
// listener that plays the server's side packet by packet. They check how
// the client reacts to what only a faulty or exotic server would send.

// peer is one scripted server connection.
type peer struct {
	t  *testing.T
	nc net.Conn
	r  *packets.Reader
}

// scriptedServer accepts connections one after the other and runs
// scripts[i] on the i-th; connections beyond the scripts are closed at once.
func scriptedServer(t *testing.T, scripts ...func(p *peer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; ; n++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if n >= len(scripts) {
				nc.Close()
				continue
			}
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			p := &peer{t: t, nc: nc, r: packets.NewReader(nc, 0)}
			func() {
				defer nc.Close()
				scripts[n](p)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return "mqtt://" + ln.Addr().String()
}

func (p *peer) read() packets.Packet {
	pk, err := p.r.Read()
	if err != nil {
		p.t.Errorf("peer read: %v", err)
		return nil
	}
	return pk
}

// expect reads packets until one of type typ arrives (PINGREQs skipped).
func (p *peer) expect(typ packets.Type) packets.Packet {
	for {
		pk := p.read()
		if pk == nil {
			return nil
		}
		if pk.Type() == typ {
			return pk
		}
		if pk.Type() != packets.PINGREQ {
			p.t.Errorf("peer: got %s, want %s", engine.TypeName(pk.Type()), engine.TypeName(typ))
			return nil
		}
	}
}

func (p *peer) send(pk packets.Packet) {
	b, err := packets.Append(nil, pk)
	if err != nil {
		p.t.Errorf("peer encode: %v", err)
		return
	}
	if _, err := p.nc.Write(b); err != nil {
		p.t.Errorf("peer write: %v", err)
	}
}

// accept reads the CONNECT and answers with CONNACK ca.
func (p *peer) accept(ca *packets.Connack) *packets.Connect {
	c, _ := p.expect(packets.CONNECT).(*packets.Connect) // MQTT-3.1.0-1: CONNECT comes first
	p.send(ca)
	return c
}

func peerClient(t *testing.T, url string, cfg Config) (*Client, chan error) {
	t.Helper()
	lost := make(chan error, 4)
	cfg.Servers = []string{url}
	if cfg.ClientID == "" {
		cfg.ClientID = uniqueID(t)
	}
	cfg.OnConnectionLost = func(err error) { lost <- err }
	cfg.ReconnectBackoff = Backoff{Min: time.Minute, Max: time.Minute}
	return start(t, cfg), lost
}

// TestProtocolViolations: each violation by the server ends the connection
// with a DISCONNECT carrying the right reason code, after which the client
// sends nothing and closes (MQTT-3.14.4-1, MQTT-3.14.4-2), and the error
// reaches OnConnectionLost.
func TestProtocolViolations(t *testing.T) {
	big := make([]byte, 500)
	cases := []struct {
		name string
		cfg  Config
		ca   packets.Connack
		bad  func(p *peer)
		want packets.ReasonCode
	}{
		{"UnknownTopicAlias", Config{TopicAliasMaximum: 5}, packets.Connack{}, func(p *peer) {
			p.send(&packets.Publish{Properties: packets.Properties{TopicAlias: 1}})
		}, packets.ProtocolError},
		{"TopicAliasAboveMaximum", Config{TopicAliasMaximum: 5}, packets.Connack{}, func(p *peer) { // MQTT-3.3.2-10
			p.send(&packets.Publish{Topic: "a", Properties: packets.Properties{TopicAlias: 6}})
		}, packets.TopicAliasInvalid},
		{"ReceiveMaximumExceeded", Config{ReceiveMaximum: 2, StrictReceiveMaximum: true, ManualAck: true, OnMessage: func(*Message) {}}, packets.Connack{}, func(p *peer) {
			for id := uint16(1); id <= 3; id++ {
				p.send(&packets.Publish{Topic: "a", QoS: 1, PacketID: id})
			}
		}, packets.ReceiveMaximumExceeded},
		{"PacketTooLarge", Config{MaximumPacketSize: 100}, packets.Connack{}, func(p *peer) {
			p.send(&packets.Publish{Topic: "a", Payload: big})
		}, packets.PacketTooLarge},
		{"Malformed", Config{}, packets.Connack{}, func(p *peer) { // MQTT-1.5.5-1: a five-byte length
			p.nc.Write([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f})
		}, packets.MalformedPacket},
		{"SessionPresentToCleanStart", Config{}, packets.Connack{SessionPresent: true}, nil, packets.ProtocolError}, // MQTT-3.2.2-4
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan packets.ReasonCode, 1)
			url := scriptedServer(t, func(p *peer) {
				p.accept(&tc.ca)
				if tc.bad != nil {
					tc.bad(p)
				}
				if d, ok := p.expect(packets.DISCONNECT).(*packets.Disconnect); ok {
					got <- d.ReasonCode
				}
			})
			if tc.bad == nil {
				// The client refuses the connection during Connect.
				c, err := New(Config{Servers: []string{url}, ClientID: uniqueID(t)})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				var pe *protoError
				if err := c.Connect(ctxT(t, 5*time.Second)); !errors.As(err, &pe) {
					t.Fatalf("connect: %v, want a protocol error", err)
				}
			} else {
				_, lost := peerClient(t, url, tc.cfg)
				if err := waitLost(t, lost); err == nil {
					t.Fatal("no error reported")
				}
			}
			select {
			case code := <-got:
				if code != tc.want {
					t.Errorf("DISCONNECT %v, want %v", code, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no DISCONNECT")
			}
		})
	}
}

// TestInboundTopicAlias: aliases set by the server are resolved before the
// handler sees the message (MQTT-3.3.2-10).
func TestInboundTopicAlias(t *testing.T) {
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p.send(&packets.Publish{Topic: "a/b", Payload: []byte("1"), Properties: packets.Properties{TopicAlias: 3}})
		p.send(&packets.Publish{Payload: []byte("2"), Properties: packets.Properties{TopicAlias: 3}})
		p.expect(packets.DISCONNECT)
	})
	col := newCollector()
	peerClient(t, url, Config{TopicAliasMaximum: 3, OnMessage: col.handle})
	for _, m := range col.waitFor(t, 2, 5*time.Second) {
		if m.Topic != "a/b" || m.Properties.TopicAlias != 0 {
			t.Errorf("topic %q alias %d", m.Topic, m.Properties.TopicAlias)
		}
	}
}

// TestInboundQoS2Duplicates: a QoS 2 message repeated while the handler
// runs, and after PUBREC, is delivered once; repeats after PUBREC are
// answered with PUBREC (MQTT-4.3.3-10), PUBREL with PUBCOMP (MQTT-4.3.3-11),
// and after PUBCOMP the identifier is a new message (MQTT-4.3.3-12).
func TestInboundQoS2Duplicates(t *testing.T) {
	release := make(chan struct{})
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p.send(&packets.Publish{Topic: "q", QoS: 2, PacketID: 7, Payload: []byte("first")})
		p.send(&packets.Publish{Topic: "q", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("first")})
		// A PUBREL for an unknown identifier is answered with PUBCOMP 0x92:
		// once it is back, the client has read the duplicate above.
		p.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 9})
		if a, ok := p.expect(packets.PUBCOMP).(*packets.Ack); !ok || a.PacketID != 9 || a.ReasonCode != packets.PacketIdentifierNotFound {
			p.t.Errorf("PUBCOMP for an unknown identifier %+v", a)
		}
		close(release)
		if a, ok := p.expect(packets.PUBREC).(*packets.Ack); !ok || a.PacketID != 7 {
			p.t.Errorf("PUBREC %+v", a)
		}
		p.send(&packets.Publish{Topic: "q", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("first")})
		if a, ok := p.expect(packets.PUBREC).(*packets.Ack); !ok || a.PacketID != 7 {
			p.t.Errorf("second PUBREC %+v", a)
		}
		p.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 7})
		if a, ok := p.expect(packets.PUBCOMP).(*packets.Ack); !ok || a.PacketID != 7 || a.ReasonCode != packets.Success {
			p.t.Errorf("PUBCOMP %+v", a)
		}
		p.send(&packets.Publish{Topic: "q", QoS: 2, PacketID: 7, Payload: []byte("second")})
		p.expect(packets.PUBREC)
		p.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 7})
		p.expect(packets.PUBCOMP)
		p.expect(packets.DISCONNECT)
	})
	col := newCollector()
	peerClient(t, url, Config{OnMessage: func(m *Message) {
		<-release // the duplicate arrives while the handler runs
		col.handle(m)
	}})
	msgs := col.waitFor(t, 2, 5*time.Second)
	col.quiet(t, 2, 200*time.Millisecond)
	if string(msgs[0].Payload) != "first" || string(msgs[1].Payload) != "second" {
		t.Errorf("payloads %q %q", msgs[0].Payload, msgs[1].Payload)
	}
}

// TestManualAckWireOrder: acks go out in arrival order whatever order the
// application acknowledges in (MQTT-4.6.0-2, MQTT-4.6.0-3).
func TestManualAckWireOrder(t *testing.T) {
	order := make(chan []uint16, 1)
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p.send(&packets.Publish{Topic: "o", QoS: 1, PacketID: 1})
		p.send(&packets.Publish{Topic: "o", QoS: 2, PacketID: 2})
		p.send(&packets.Publish{Topic: "o", QoS: 1, PacketID: 3})
		var ids []uint16
		for range 3 {
			pk := p.read()
			if a, ok := pk.(*packets.Ack); ok {
				ids = append(ids, a.PacketID)
			}
		}
		order <- ids
		p.expect(packets.DISCONNECT)
	})
	col := newCollector()
	peerClient(t, url, Config{ManualAck: true, OnMessage: col.handle})
	ms := col.waitFor(t, 3, 5*time.Second)
	for _, i := range []int{2, 1, 0} {
		if err := ms[i].Ack(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ids := <-order:
		if len(ids) != 3 || ids[0] != 1 || ids[1] != 2 || ids[2] != 3 {
			t.Errorf("acks in order %v, want [1 2 3]", ids)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no acks")
	}
}

// TestServerKeepAlive: the client uses the server's Server Keep Alive and
// sends PINGREQ when idle (MQTT-3.1.2-20, MQTT-3.2.2-21).
func TestServerKeepAlive(t *testing.T) {
	one := uint16(1)
	pinged := make(chan time.Duration, 1)
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{Properties: packets.Properties{ServerKeepAlive: &one}})
		t0 := time.Now()
		pk := p.read()
		if pk != nil && pk.Type() == packets.PINGREQ {
			pinged <- time.Since(t0)
			p.send(&packets.Pingresp{})
		}
		p.expect(packets.DISCONNECT)
	})
	peerClient(t, url, Config{KeepAlive: time.Hour})
	select {
	case d := <-pinged:
		if d > time.Second {
			t.Errorf("first PINGREQ after %v, beyond the server's keep alive of 1s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no PINGREQ")
	}
}

// scriptAuth is a challenge/response Authenticator for the scripted peer.
type scriptAuth struct{ finished chan []byte }

func (scriptAuth) Method() string                     { return "SCRIPT" }
func (scriptAuth) Start() ([]byte, error)             { return []byte("hello"), nil }
func (scriptAuth) Continue(ch []byte) ([]byte, error) { return append([]byte("re:"), ch...), nil }
func (a scriptAuth) Finish(data []byte) error         { a.finished <- data; return nil }

// TestEnhancedAuth: a challenge during CONNECT, then a re-authentication
// (MQTT v5 §4.12).
func TestEnhancedAuth(t *testing.T) {
	url := scriptedServer(t, func(p *peer) {
		c, _ := p.expect(packets.CONNECT).(*packets.Connect)
		if c == nil || c.Properties.AuthMethod != "SCRIPT" || string(c.Properties.AuthData) != "hello" {
			p.t.Errorf("CONNECT auth %+v", c)
			return
		}
		p.send(&packets.Auth{ReasonCode: packets.ContinueAuthentication, Properties: packets.Properties{AuthMethod: "SCRIPT", AuthData: []byte("c1")}})
		a, _ := p.expect(packets.AUTH).(*packets.Auth)
		if a == nil || string(a.Properties.AuthData) != "re:c1" {
			p.t.Errorf("AUTH %+v", a)
		}
		p.send(&packets.Connack{Properties: packets.Properties{AuthMethod: "SCRIPT", AuthData: []byte("ok1")}})
		a, _ = p.expect(packets.AUTH).(*packets.Auth)
		if a == nil || a.ReasonCode != packets.ReAuthenticate {
			p.t.Errorf("re-auth AUTH %+v", a)
		}
		p.send(&packets.Auth{ReasonCode: packets.ContinueAuthentication, Properties: packets.Properties{AuthMethod: "SCRIPT", AuthData: []byte("c2")}})
		a, _ = p.expect(packets.AUTH).(*packets.Auth)
		if a == nil || string(a.Properties.AuthData) != "re:c2" {
			p.t.Errorf("AUTH %+v", a)
		}
		p.send(&packets.Auth{ReasonCode: packets.Success, Properties: packets.Properties{AuthMethod: "SCRIPT", AuthData: []byte("ok2")}})
		p.expect(packets.DISCONNECT)
	})
	fin := make(chan []byte, 2)
	c, _ := peerClient(t, url, Config{Auth: scriptAuth{finished: fin}})
	if d := <-fin; string(d) != "ok1" {
		t.Errorf("finish data %q", d)
	}
	if err := c.Reauthenticate(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if d := <-fin; string(d) != "ok2" {
		t.Errorf("finish data %q", d)
	}
}

// TestReceiveMaximumTolerated: without StrictReceiveMaximum, a server that
// exceeds our Receive Maximum is logged and served, not disconnected.
func TestReceiveMaximumTolerated(t *testing.T) {
	acks := make(chan int, 1)
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		for id := uint16(1); id <= 3; id++ {
			p.send(&packets.Publish{Topic: "a", QoS: 1, PacketID: id})
		}
		n := 0
		for n < 3 {
			if _, ok := p.expect(packets.PUBACK).(*packets.Ack); !ok {
				break
			}
			n++
		}
		acks <- n
		p.expect(packets.DISCONNECT)
	})
	col := newCollector()
	peerClient(t, url, Config{ReceiveMaximum: 2, OnMessage: col.handle})
	col.waitFor(t, 3, 5*time.Second)
	if n := <-acks; n != 3 {
		t.Errorf("%d PUBACKs, want 3", n)
	}
}
