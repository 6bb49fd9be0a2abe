package sessiontest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store/memory"
)

// cutPoint is a fault at one packet of an exchange. Its Nth is set by the
// case.
type cutPoint struct {
	name   string
	dir    faultproxy.Direction
	typ    packets.Type
	action faultproxy.Action
}

const (
	c2s = faultproxy.ClientToServer
	s2c = faultproxy.ServerToClient
)

// The cut points of each exchange, in the order its packets travel.
var (
	// Outbound QoS 1: the PUBLISH is lost on its way (the broker never
	// has it), arrives (its PUBACK is lost with the connection), or its
	// PUBACK is lost.
	outQoS1 = []cutPoint{
		{"CutBeforePUBLISH", c2s, packets.PUBLISH, faultproxy.CutBefore},
		{"CutAfterPUBLISH", c2s, packets.PUBLISH, faultproxy.CutAfter},
		{"CutBeforePUBACK", s2c, packets.PUBACK, faultproxy.CutBefore},
	}
	// Outbound QoS 2: as QoS 1 up to the PUBREC; then the PUBREL is lost
	// or arrives (and its PUBCOMP is lost with the connection), or the
	// PUBCOMP itself is lost.
	outQoS2 = []cutPoint{
		{"CutBeforePUBLISH", c2s, packets.PUBLISH, faultproxy.CutBefore},
		{"CutAfterPUBLISH", c2s, packets.PUBLISH, faultproxy.CutAfter},
		{"CutBeforePUBREC", s2c, packets.PUBREC, faultproxy.CutBefore},
		{"CutBeforePUBREL", c2s, packets.PUBREL, faultproxy.CutBefore},
		{"CutAfterPUBREL", c2s, packets.PUBREL, faultproxy.CutAfter},
		{"CutBeforePUBCOMP", s2c, packets.PUBCOMP, faultproxy.CutBefore},
		{"BlackholePUBREC", s2c, packets.PUBREC, faultproxy.Blackhole},
	}
	// Inbound QoS 1: the broker's PUBLISH is lost, arrives just before
	// the cut, or the client's PUBACK is lost.
	inQoS1 = []cutPoint{
		{"CutBeforePUBLISH", s2c, packets.PUBLISH, faultproxy.CutBefore},
		{"CutAfterPUBLISH", s2c, packets.PUBLISH, faultproxy.CutAfter},
		{"CutBeforePUBACK", c2s, packets.PUBACK, faultproxy.CutBefore},
	}
	// Inbound QoS 2: the same, then the client's PUBREC is lost, the
	// broker's PUBREL is lost or arrives just before the cut, or the
	// client's PUBCOMP is lost.
	inQoS2 = []cutPoint{
		{"CutBeforePUBLISH", s2c, packets.PUBLISH, faultproxy.CutBefore},
		{"CutAfterPUBLISH", s2c, packets.PUBLISH, faultproxy.CutAfter},
		{"CutBeforePUBREC", c2s, packets.PUBREC, faultproxy.CutBefore},
		{"CutBeforePUBREL", s2c, packets.PUBREL, faultproxy.CutBefore},
		{"CutAfterPUBREL", s2c, packets.PUBREL, faultproxy.CutAfter},
		{"CutBeforePUBCOMP", c2s, packets.PUBCOMP, faultproxy.CutBefore},
	}
)

// cutNth is the message of each exchange case whose packet is cut: the
// second of three, so that one completed before and one follows.
const cutNth = 2

func (r *sessRunner) outbound(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		cuts := outQoS1
		if qos == 2 {
			cuts = outQoS2
		}
		t.Run(fmt.Sprintf("QoS%d", qos), func(t *testing.T) {
			for _, cp := range cuts {
				t.Run(cp.name, func(t *testing.T) {
					for _, v := range variants {
						r.run(t, v.name, func(s *sess) { s.outboundCut(qos, cp, v.newClient) })
					}
				})
			}
		})
	}
}

func (r *sessRunner) inbound(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		cuts := inQoS1
		if qos == 2 {
			cuts = inQoS2
		}
		t.Run(fmt.Sprintf("QoS%d", qos), func(t *testing.T) {
			for _, cp := range cuts {
				t.Run(cp.name, func(t *testing.T) {
					for _, v := range variants {
						r.run(t, v.name, func(s *sess) { s.inboundCut(qos, cp, v.newClient) })
					}
				})
			}
		})
	}
}

// outboundCut publishes m1, m2, m3 at qos through the proxy, cuts the
// connection at cp's packet of m2's exchange, comes back (the same client,
// or a new one on the reopened store), publishes m4, and checks what a
// subscriber got: each message exactly once in order for QoS 2
// (MQTT-4.3.3-6: no PUBLISH resent after its PUBREL; MQTT-4.4.0-1: resend
// PUBLISH and PUBREL with their original identifiers on reconnection), at
// least once in order for QoS 1 (MQTT-4.3.2-3, MQTT-4.6.0-1). The store is
// empty once every exchange has completed.
func (s *sess) outboundCut(qos byte, cp cutPoint, newClient bool) {
	topic := s.newID("tether/out")
	sub := s.newInbox()
	s.subscribe(s.peer(s.newID("sub"), sub.handler), topic)

	p, aud := s.proxy()
	st := s.open()
	id := s.newID("out")
	cfg := s.clientConfig(s.url(p), id, st, newClient)
	if cp.action == faultproxy.Blackhole {
		// Only keep alive can find a black hole (MQTT-3.1.2-20).
		cfg.KeepAlive = time.Second
	}
	c := s.start(cfg)

	inj := p.Inject(faultproxy.Fault{Dir: cp.dir, Type: cp.typ, Nth: cutNth, Action: cp.action})
	want := []string{"m1", "m2", "m3", "m4"}
	var toks []*client.Token
	for _, m := range want[:3] {
		toks = append(toks, c.PublishAsync(&client.Message{Topic: topic, Payload: []byte(m), QoS: qos}))
	}
	s.wait(inj.Fired(), "the cut")
	if newClient {
		_ = c.Close()
		st = s.reopen(st)
		cfg = s.clientConfig(s.url(p), id, st, false)
		c = s.start(cfg)
	} else {
		for i, tok := range toks {
			if err := s.waitToken(tok, want[i]); err != nil {
				s.fatalf("publish %s: %v", want[i], err)
			}
		}
	}
	s.mustPublish(c, topic, "m4", qos)
	got := sub.waitHas(s, "m4")
	check := exactlyOnce
	if qos == 1 {
		check = atLeastOnce
	}
	if msg := check(got, want); msg != "" {
		s.fatalf("subscriber: %s", msg)
	}
	_ = c.Close()
	s.checkAudit(aud)
	s.expectNoState(s.reopen(st), s.url(p), id)
}

// inboundCut has a peer publish m1, m2, m3 at qos to the client under
// test, cuts the connection at cp's packet of m2's exchange, comes back
// (the same client, or a new one on the reopened store), has m4 published,
// and checks what the handler saw: each QoS 2 message exactly once in
// order (MQTT-4.3.3-10: a repeated PUBLISH before PUBREL is not delivered
// again; MQTT-4.3.3-12: after PUBCOMP an identifier is a new message), each
// QoS 1 message at least once in order.
func (s *sess) inboundCut(qos byte, cp cutPoint, newClient bool) {
	topic := s.newID("tether/in")
	got := s.newInbox()
	p, aud := s.proxy()
	st := s.open()
	id := s.newID("in")
	ws, w := s.watch(st, s.url(p), id)
	cfg := s.clientConfig(s.url(p), id, ws, newClient)
	cfg.OnMessage = got.handler
	c := s.start(cfg)
	s.subscribe(c, topic)
	pub := s.peer(s.newID("pub"), nil)

	inj := p.Inject(faultproxy.Fault{Dir: cp.dir, Type: cp.typ, Nth: cutNth, Action: cp.action})
	want := []string{"m1", "m2", "m3", "m4"}
	mark := 0 // messages handled before the current client started
	for _, m := range want[:3] {
		s.mustPublish(pub, topic, m, qos)
	}
	s.wait(inj.Fired(), "the cut")
	if newClient {
		_ = c.Close()
		st = s.reopen(st)
		ws, w = s.watch(st, s.url(p), id)
		mark = len(got.snapshot())
		cfg = s.clientConfig(s.url(p), id, ws, false)
		cfg.OnMessage = got.handler
		c = s.start(cfg)
	}
	s.mustPublish(pub, topic, "m4", qos)
	all := got.waitHas(s, "m4")
	check := exactlyOnce
	if qos == 1 {
		check = atLeastOnce
	}
	if msg := check(all, want); msg != "" {
		s.fatalf("handler: %s", msg)
	}
	if qos == 2 {
		s.waitInbound(w, len(all)-mark)
	}
	_ = c.Close()
	s.checkAudit(aud)
	s.expectNoState(s.reopen(st), s.url(p), id)
}

// backlog stores more QoS 2 messages than the broker's Receive Maximum
// while the client is offline, brings it back (the same client or a new
// one), cuts the connection again in the middle of the resend, and checks
// that the subscriber gets each message exactly once, in order, and that
// the client never had more than Receive Maximum in flight (MQTT-3.3.4-7,
// MQTT-4.9.0-1, MQTT-4.6.0-1).
func (s *sess) backlog(newClient bool) {
	n := 6 * sharedReceiveMax
	topic := s.newID("tether/backlog")
	sub := s.newInbox()
	s.subscribe(s.peer(s.newID("sub"), sub.handler), topic)

	p, aud := s.proxy()
	st := s.open()
	id := s.newID("backlog")
	lost := make(chan struct{})
	cfg := s.clientConfig(s.url(p), id, st, newClient)
	var once sync.Once
	cfg.OnConnectionLost = func(error) { once.Do(func() { close(lost) }) }
	c := s.start(cfg)
	p.SetRefuse(true)
	p.CutAll()
	s.wait(lost, "the client to see its connection lost")

	want := make([]string, n)
	toks := make([]*client.Token, n)
	for i := range n {
		want[i] = fmt.Sprintf("b%03d", i)
		toks[i] = c.PublishAsync(&client.Message{Topic: topic, Payload: []byte(want[i]), QoS: 2})
	}
	inj := p.Inject(faultproxy.Fault{Dir: s2c, Type: packets.PUBREC, Nth: n / 2, Action: faultproxy.CutBefore})
	if newClient {
		_ = c.Close()
		st = s.reopen(st)
		p.SetRefuse(false)
		c = s.start(s.clientConfig(s.url(p), id, st, false))
	} else {
		p.SetRefuse(false)
	}
	s.wait(inj.Fired(), "the cut in the middle of the backlog")
	// One more message, through the client now running: when it has
	// completed, so has every exchange before it.
	s.mustPublish(c, topic, "end", 2)
	want = append(want, "end")
	all := sub.waitHas(s, "end")
	if msg := exactlyOnce(all, want); msg != "" {
		s.fatalf("subscriber: %s", msg)
	}
	if !newClient {
		for i, tok := range toks {
			if err := s.waitToken(tok, want[i]); err != nil {
				s.fatalf("publish %s: %v", want[i], err)
			}
		}
	}
	_ = c.Close()
	s.checkAudit(aud)
	s.expectNoState(s.reopen(st), s.url(p), id)
}

// sessionLost: the broker restarts without persistence while a QoS 2
// message is in flight (its PUBREC lost). The client reconnects, gets
// Session Present 0, discards its session (MQTT-3.2.2-5) and reports the
// message lost; with RepublishLost it publishes it again. The store holds
// nothing of the old session afterwards.
func (s *sess) sessionLost(republish bool) {
	s.broker = s.r.impl.Start(s.t, BrokerConfig{ReceiveMaximum: sharedReceiveMax})
	topic := s.newID("tether/lost")
	p, aud := s.proxy()
	st := s.open()
	id := s.newID("lost")
	type report struct {
		lost        []*client.Message
		republished bool
	}
	reports := make(chan report, 4)
	cfg := s.clientConfig(s.url(p), id, st, false)
	cfg.RepublishLost = republish
	cfg.OnSessionLost = func(lost []*client.Message, republished bool) {
		reports <- report{lost, republished}
	}
	c := s.start(cfg)

	inj := p.Inject(faultproxy.Fault{Dir: s2c, Type: packets.PUBREC, Nth: 1, Action: faultproxy.CutBefore})
	p.SetRefuse(true)
	tok := c.PublishAsync(&client.Message{Topic: topic, Payload: []byte("m1"), QoS: 2})
	s.wait(inj.Fired(), "the cut")
	s.broker.Stop()
	s.broker.Start()
	sub := s.newInbox()
	s.subscribe(s.peer(s.newID("sub"), sub.handler), topic)
	p.SetRefuse(false)

	var rep report
	select {
	case rep = <-reports:
	case <-s.ctx.Done():
		s.fatalf("OnSessionLost was not called after the broker lost the session (%s)", s.timedOut())
	}
	var lost []string
	for _, m := range rep.lost {
		lost = append(lost, string(m.Payload))
	}
	if !slices.Equal(lost, []string{"m1"}) || rep.republished != republish {
		s.fatalf("OnSessionLost(%q, republished=%v), want ([m1], %v)", lost, rep.republished, republish)
	}
	s.mustPublish(c, topic, "m2", 2)
	all := sub.waitHas(s, "m2")
	terr := s.waitToken(tok, "m1")
	if republish {
		// At least once: the old session may have delivered it already.
		if msg := atLeastOnce(all, []string{"m1", "m2"}); msg != "" {
			s.fatalf("subscriber (RepublishLost): %s", msg)
		}
		s.t.Logf("publish of the lost m1 returned %v", terr)
	} else {
		if !errors.Is(terr, client.ErrSessionLost) {
			s.fatalf("publish of the lost m1 returned %v, want ErrSessionLost", terr)
		}
		if msg := exactlyOnce(all, []string{"m2"}); msg != "" {
			s.fatalf("subscriber: %s", msg)
		}
	}
	_ = c.Close()
	s.checkAudit(aud)
	s.expectNoState(s.reopen(st), s.url(p), id)
}

// brokerRestart: a persistent broker restarts (cleanly) while the client
// is offline with a PUBREL unanswered and an inbound message queued. The
// session continues: Session Present 1, the PUBREL is resent and
// completed, the queued message delivered, each exactly once.
func (s *sess) brokerRestart() {
	if !s.r.impl.Persistence {
		s.t.Skipf("%s keeps no session across a restart", s.r.impl.Name)
	}
	s.broker = s.r.impl.Start(s.t, BrokerConfig{Persistence: true, ReceiveMaximum: sharedReceiveMax})
	out, in := s.newID("tether/out"), s.newID("tether/in")

	// The subscriber's session must itself be saved: Mosquitto saves a
	// session only once its client has connected with Clean Start 0, so
	// it subscribes, leaves, and comes back on the same store.
	sub := s.newInbox()
	subID, subStore := s.newID("sub"), memory.New()
	first := s.peerOn(subID, subStore, sub.handler)
	s.subscribe(first, out)
	_ = first.Close()
	s.peerOn(subID, subStore, sub.handler)
	pub := s.peer(s.newID("pub"), nil)

	p, aud := s.proxy()
	st := s.open()
	id := s.newID("restart")
	got := s.newInbox()
	conns := make(chan *client.ConnectInfo, 8)
	ws, w := s.watch(st, s.url(p), id)
	cfg := s.clientConfig(s.url(p), id, ws, false)
	cfg.OnMessage = got.handler
	cfg.OnConnect = func(ci *client.ConnectInfo) { conns <- ci }
	c := s.start(cfg)
	<-conns
	s.subscribe(c, in)
	p.CutAll() // so that its latest CONNECT has Clean Start 0 (see above)
	select {
	case ci := <-conns:
		if !ci.SessionPresent {
			s.fatalf("reconnection before the restart: Session Present 0")
		}
	case <-s.ctx.Done():
		s.fatalf("no reconnection (%s)", s.timedOut())
	}

	inj := p.Inject(faultproxy.Fault{Dir: s2c, Type: packets.PUBCOMP, Nth: 1, Action: faultproxy.CutBefore})
	p.SetRefuse(true)
	tok := c.PublishAsync(&client.Message{Topic: out, Payload: []byte("m1"), QoS: 2})
	s.wait(inj.Fired(), "the cut")
	s.mustPublish(pub, in, "i1", 2)
	s.broker.Stop()
	s.broker.Start()
	p.SetRefuse(false)
	select {
	case ci := <-conns:
		if !ci.SessionPresent {
			s.fatalf("after the persistent broker's restart: Session Present 0, the session was lost")
		}
	case <-s.ctx.Done():
		s.fatalf("no reconnection after the broker's restart (%s)", s.timedOut())
	}
	if err := s.waitToken(tok, "m1"); err != nil {
		s.fatalf("publish m1: %v", err)
	}
	s.mustPublish(c, out, "m2", 2)
	if msg := exactlyOnce(sub.waitHas(s, "m2"), []string{"m1", "m2"}); msg != "" {
		s.fatalf("subscriber: %s", msg)
	}
	s.mustPublish(pub, in, "i2", 2)
	if msg := exactlyOnce(got.waitHas(s, "i2"), []string{"i1", "i2"}); msg != "" {
		s.fatalf("handler: %s", msg)
	}
	s.waitInbound(w, 2)
	_ = c.Close()
	s.checkAudit(aud)
	s.expectNoState(s.reopen(st), s.url(p), id)
}
