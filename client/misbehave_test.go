package client

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// TestAliasNeverExceedsMaximumPacketSize: a PUBLISH that fits the server's
// Maximum Packet Size only without a Topic Alias goes out without one
// (MQTT-3.2.2-15). It used to get the alias, be disconnected with 0x95 and
// loop on every reconnection with the message stuck in the store.
func TestAliasNeverExceedsMaximumPacketSize(t *testing.T) {
	const limit = 1000
	b := broker(t, testenv.WithConfig(func(c *testenv.MosquittoConfig) { c.MaxPacketSize = limit }))
	col := subscriber(t, b.URL(), "big/#")
	lost := make(chan error, 8)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), OutboundTopicAliases: true,
		OnConnectionLost: func(err error) { lost <- err }})
	c.mu.Lock()
	announced := c.lim.maxPacket
	c.mu.Unlock()
	if announced != limit {
		t.Fatalf("server announced Maximum Packet Size %d, want %d", announced, limit)
	}
	// A payload that makes the alias-less packet exactly the limit.
	p := &packets.Publish{Topic: "big/one", QoS: 1, PacketID: 1}
	base, _ := packets.Size(p)
	payload := []byte(strings.Repeat("x", limit-base-1)) // the length field grows by a byte
	p.Payload = payload
	if n, _ := packets.Size(p); n != limit {
		t.Fatalf("test packet is %d bytes, want %d", n, limit)
	}
	for i := range 3 { // the first use of a topic, then a repeat
		if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "big/one", QoS: 1, Payload: payload}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// A short topic is still aliased.
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "big/two", QoS: 1, Payload: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, 4, 5*time.Second)
	select {
	case err := <-lost:
		t.Fatalf("connection lost: %v", err)
	default:
	}
	c.mu.Lock()
	_, aliased := c.conn.aliasOut["big/two"]
	_, bigAliased := c.conn.aliasOut["big/one"]
	c.mu.Unlock()
	if !aliased || bigAliased {
		t.Errorf("aliases: big/two %v (want true), big/one %v (want false)", aliased, bigAliased)
	}
}

// TestStoredMessageTooLargeFailsOnce: a message stored while offline that
// the server's Maximum Packet Size turns out to refuse fails once with
// ErrPacketTooLarge and leaves the store; the messages around it are sent,
// and the connection is never dropped for it.
func TestStoredMessageTooLargeFailsOnce(t *testing.T) {
	const limit = 1000
	b := broker(t, testenv.WithConfig(func(c *testenv.MosquittoConfig) { c.MaxPacketSize = limit }))
	col := subscriber(t, b.URL(), "stored/#")
	st := memory.New()
	id := uniqueID(t)
	lost := make(chan error, 8)
	c, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		OnConnectionLost: func(err error) { lost <- err }, ReconnectBackoff: Backoff{Min: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var toks []*Token
	for i, size := range []int{10, 5000, 10, 2 * limit, 10} {
		toks = append(toks, c.PublishAsync(&Message{Topic: fmt.Sprintf("stored/%d", i), QoS: byte(1 + i%2),
			Payload: make([]byte, size)}))
	}
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks {
		err := tok.Wait(ctxT(t, 5*time.Second))
		if big := i == 1 || i == 3; big != errors.Is(err, ErrPacketTooLarge) {
			t.Errorf("message %d: %v", i, err)
		}
	}
	col.waitFor(t, 3, 5*time.Second)
	col.quiet(t, 3, 200*time.Millisecond)
	eventually(t, 5*time.Second, "records deleted", func() bool {
		return countDir(records(t, st, b.URL(), id), store.Outbound) == 0
	})
	select {
	case err := <-lost:
		t.Fatalf("connection lost: %v", err)
	default:
	}
}

// TestPublishesOnDyingConnectionNotLost: publishes accepted while the
// connection is failing (the server sends a malformed packet right after
// SUBACK) are never reported lost unless they reached the network: with
// Session Expiry 0 the next connection starts a new session, and every
// message the first connection did not carry is sent on it, with DUP 0
// (MQTT-3.3.1-1); only those it did carry are reported lost.
func TestPublishesOnDyingConnectionNotLost(t *testing.T) {
	for round := range 6 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			var mu sync.Mutex
			first := map[string]bool{}
			second := map[string]bool{}
			dup := false
			done := make(chan struct{})
			url := scriptedServer(t, func(p *peer) {
				p.accept(&packets.Connack{})
				s, _ := p.expect(packets.SUBSCRIBE).(*packets.Subscribe)
				if s == nil {
					return
				}
				ack, _ := packets.Append(nil, &packets.Suback{PacketID: s.PacketID, ReasonCodes: []packets.ReasonCode{1}})
				p.nc.Write(append(ack, 0x00, 0x00)) // packet type 0: malformed
				for {
					pk, err := p.r.Read()
					if err != nil {
						return
					}
					if pub, ok := pk.(*packets.Publish); ok {
						mu.Lock()
						first[string(pub.Payload)] = true
						mu.Unlock()
					}
				}
			}, func(p *peer) {
				p.accept(&packets.Connack{})
				for {
					pk, err := p.r.Read()
					if err != nil {
						return
					}
					if pub, ok := pk.(*packets.Publish); ok {
						mu.Lock()
						second[string(pub.Payload)] = true
						dup = dup || pub.Dup
						n := len(second)
						mu.Unlock()
						p.send(&packets.Ack{Kind: packets.PUBACK, PacketID: pub.PacketID})
						if n == 1 {
							close(done)
						}
					}
				}
			})
			var lostMu sync.Mutex
			var reported []string
			c, err := New(Config{Servers: []string{url}, ClientID: uniqueID(t),
				ReconnectBackoff: Backoff{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond},
				OnSessionLost: func(lost []*Message, _ bool) {
					lostMu.Lock()
					for _, m := range lost {
						reported = append(reported, string(m.Payload))
					}
					lostMu.Unlock()
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "x"}); err != nil {
				t.Fatal(err)
			}
			toks := map[string]*Token{}
			for i := range 10 {
				m := fmt.Sprint(i)
				toks[m] = c.PublishAsync(&Message{Topic: "t", QoS: 1, Payload: []byte(m)})
			}
			for m, tok := range toks {
				if err := tok.Wait(ctxT(t, 10*time.Second)); err != nil && !errors.Is(err, ErrSessionLost) {
					t.Fatalf("message %s: %v", m, err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			lostMu.Lock()
			defer lostMu.Unlock()
			for m, tok := range toks {
				wasLost := errors.Is(tok.Err(), ErrSessionLost)
				if wasLost != first[m] {
					t.Errorf("message %s: carried by the first connection %v, reported lost %v", m, first[m], wasLost)
				}
				if !first[m] && !second[m] {
					t.Errorf("message %s never sent", m)
				}
			}
			if len(reported) != len(first) {
				t.Errorf("OnSessionLost reported %v, the first connection carried %v", reported, first)
			}
			if dup {
				t.Error("a first transmission carried DUP 1")
			}
			t.Logf("first connection carried %d, second %d", len(first), len(second))
		})
	}
}
