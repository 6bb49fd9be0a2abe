package client

import (
	"errors"
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
