package client

// Tests of guarantees that MQTT clients commonly break, each through the
// wire auditor so that a spec violation on the wire fails the test too.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// auditedProxy starts a proxy to b with its auditor on, closed at the end of
// the test, which then fails on any violation by the client.
func auditedProxy(t *testing.T, addr string) (*faultproxy.Proxy, *faultproxy.Auditor) {
	t.Helper()
	p, err := faultproxy.Start(addr)
	if err != nil {
		t.Fatal(err)
	}
	a := p.Audit()
	t.Cleanup(func() {
		p.Close()
		if err := a.Err(); err != nil {
			t.Errorf("wire audit: %v", err)
		}
	})
	return p, a
}

// exactlyOnce checks that col received each of want exactly once, on the
// topic its payload names.
func exactlyOnce(t *testing.T, col *collector, want []string) {
	t.Helper()
	got := map[string]int{}
	for _, m := range col.snapshot() {
		got[string(m.Payload)]++
		if topic, _, ok := cutPayload(string(m.Payload)); ok && topic != m.Topic {
			t.Errorf("message %q arrived on topic %q", m.Payload, m.Topic)
		}
	}
	for _, w := range want {
		if got[w] != 1 {
			t.Errorf("message %q arrived %d times, want once", w, got[w])
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d distinct messages, want %d", len(got), len(want))
	}
}

// cutPayload splits a payload "topic|n".
func cutPayload(p string) (topic, n string, ok bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '|' {
			return p[:i], p[i+1:], true
		}
	}
	return "", "", false
}

// TestAliasedMessagesSurviveReconnect: with outbound topic aliases on,
// messages in flight and messages queued while offline are resent on a new
// connection with their full topic, since aliases belong to one connection
// (MQTT-3.3.2-7) and stored packets never carry one.
func TestAliasedMessagesSurviveReconnect(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "gal/#")
	p, _ := auditedProxy(t, b.Addr())
	st := memory.New()
	c := start(t, Config{Servers: []string{p.URL()}, ClientID: uniqueID(t), Store: st, SessionExpiry: time.Hour,
		OutboundTopicAliases: true})
	var want []string
	publish := func(i int) *Token {
		topic := fmt.Sprintf("gal/%d", i%3)
		payload := topic + "|" + strconv.Itoa(i)
		want = append(want, payload)
		return c.PublishAsync(&Message{Topic: topic, QoS: 2, Payload: []byte(payload)})
	}
	// Aliases get set up on the first connection.
	for i := range 6 {
		if err := publish(i).Wait(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	// The next PUBREC is lost with the connection: messages are in flight.
	cut := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBREC, Nth: 2, Action: faultproxy.CutBefore})
	var toks []*Token
	for i := 6; i < 12; i++ {
		toks = append(toks, publish(i))
	}
	<-cut.Fired()
	p.SetRefuse(true)
	for i := 12; i < 18; i++ { // queued while offline
		toks = append(toks, publish(i))
	}
	for _, r := range records(t, st, p.URL(), c.cfg.ClientID) {
		if r.Dir != store.Outbound {
			continue
		}
		pk, err := packets.Decode(r.Packet, 0)
		if err != nil {
			t.Fatalf("stored record %d: %v", r.Seq, err)
		}
		if pub, ok := pk.(*packets.Publish); ok && (pub.Topic == "" || pub.Properties.TopicAlias != 0) {
			t.Fatalf("stored PUBLISH %d carries alias %d and topic %q", r.Seq, pub.Properties.TopicAlias, pub.Topic)
		}
	}
	p.SetRefuse(false)
	for _, tok := range toks {
		if err := tok.Wait(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	col.waitFor(t, len(want), 10*time.Second)
	col.quiet(t, len(want), 200*time.Millisecond)
	exactlyOnce(t, col, want)
}

// TestOneStoreManySessions: one store keeps the sessions of several
// ClientIDs and several servers apart; each session's queued messages go
// to its own server, once.
func TestOneStoreManySessions(t *testing.T) {
	b1, b2 := broker(t), broker(t)
	col1 := subscriber(t, b1.URL(), "many/#")
	col2 := subscriber(t, b2.URL(), "many/#")
	st := memory.New()
	type session struct {
		p    *faultproxy.Proxy
		c    *Client
		id   string
		col  *collector
		want []string
	}
	var ss []*session
	for i, bk := range []string{b1.Addr(), b1.Addr(), b2.Addr()} {
		p, _ := auditedProxy(t, bk)
		id := "many-shared" // the same ClientID on two servers...
		if i == 1 {
			id = "many-other" // ...and another ClientID on the first
		}
		col := col1
		if i == 2 {
			col = col2
		}
		c := start(t, Config{Servers: []string{p.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
		ss = append(ss, &session{p: p, c: c, id: id, col: col})
	}
	for _, s := range ss {
		s.p.SetRefuse(true)
		s.p.CutAll()
	}
	var toks []*Token
	for i, s := range ss {
		for j := range 5 {
			topic := fmt.Sprintf("many/%d", i)
			payload := topic + "|" + strconv.Itoa(j)
			s.want = append(s.want, payload)
			toks = append(toks, s.c.PublishAsync(&Message{Topic: topic, QoS: 2, Payload: []byte(payload)}))
		}
	}
	for i, s := range ss {
		eventually(t, 5*time.Second, "messages stored", func() bool {
			return countDir(records(t, st, s.p.URL(), s.id), store.Outbound) == 5
		})
		for _, r := range records(t, st, s.p.URL(), s.id) {
			if r.Dir != store.Outbound {
				continue
			}
			pk, err := packets.Decode(r.Packet, 0)
			if err != nil {
				t.Fatal(err)
			}
			if topic := pk.(*packets.Publish).Topic; topic != fmt.Sprintf("many/%d", i) {
				t.Fatalf("session %d holds a message of topic %q", i, topic)
			}
		}
	}
	for _, s := range ss {
		s.p.SetRefuse(false)
	}
	for _, tok := range toks {
		if err := tok.Wait(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	col1.waitFor(t, 10, 10*time.Second)
	col2.waitFor(t, 5, 10*time.Second)
	col1.quiet(t, 10, 200*time.Millisecond)
	exactlyOnce(t, col1, append(append([]string(nil), ss[0].want...), ss[1].want...))
	exactlyOnce(t, col2, ss[2].want)
}

// TestPublishContextExpiredKeepsIdentifier: a Publish whose context ends
// while its message is in flight returns the context's error, but the
// message keeps its packet identifier until its exchange completes: a later
// message never reuses it (MQTT-2.2.1-3), and both arrive once.
func TestPublishContextExpiredKeepsIdentifier(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "ctx/#")
	p, _ := auditedProxy(t, b.Addr())
	c := start(t, Config{Servers: []string{p.URL()}, ClientID: uniqueID(t), SessionExpiry: time.Hour})
	held := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBREC, Action: faultproxy.Delay, Delay: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Publish(ctx, &Message{Topic: "ctx/a", QoS: 2, Payload: []byte("ctx/a|1")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish with an expiring context: %v, want DeadlineExceeded", err)
	}
	c.mu.Lock()
	inUse := c.eng.IDsInUse()
	c.mu.Unlock()
	if inUse != 1 {
		t.Fatalf("%d packet identifiers in use after the context expired, want 1 (the message is in flight)", inUse)
	}
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "ctx/b", QoS: 2, Payload: []byte("ctx/b|2")}); err != nil {
		t.Fatal(err)
	}
	<-held.Fired()
	col.waitFor(t, 2, 5*time.Second)
	col.quiet(t, 2, 200*time.Millisecond)
	exactlyOnce(t, col, []string{"ctx/a|1", "ctx/b|2"})
}
