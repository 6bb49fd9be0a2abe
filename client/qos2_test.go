package client

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// eventually waits, up to d, for cond to hold; it polls, since the
// condition is state in a store that has no change notification.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func waitLost(t testing.TB, lost <-chan error) error {
	t.Helper()
	select {
	case err := <-lost:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("connection loss not reported")
	}
	return nil
}

func proxy(t testing.TB, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func waitFired(t testing.TB, inj *faultproxy.Injection) {
	t.Helper()
	select {
	case <-inj.Fired():
	case <-time.After(10 * time.Second):
		t.Fatalf("fault %+v never fired", inj.Fault())
	}
}

func countDir(recs []store.Record, d store.Direction) int {
	n := 0
	for _, r := range recs {
		if r.Dir == d {
			n++
		}
	}
	return n
}

type cutPoint struct {
	name string
	dir  faultproxy.Direction
	typ  packets.Type
	act  faultproxy.Action
	// what the store holds after the cut, before a new process continues:
	// the outbound record's packet type, or the number of inbound records
	stored packets.Type
	in     int
}

// storedType decodes the only outbound record of a session.
func storedType(t testing.TB, recs []store.Record) packets.Type {
	t.Helper()
	var typ packets.Type
	for _, r := range recs {
		if r.Dir != store.Outbound {
			continue
		}
		if typ != 0 {
			t.Fatalf("more than one outbound record: %+v", recs)
		}
		p, err := packets.Decode(r.Packet, 0)
		if err != nil {
			t.Fatal(err)
		}
		typ = p.Type()
	}
	return typ
}

var outboundCuts = []cutPoint{
	{"CutBeforePUBLISH", faultproxy.ClientToServer, packets.PUBLISH, faultproxy.CutBefore, packets.PUBLISH, 0},
	{"CutAfterPUBLISH", faultproxy.ClientToServer, packets.PUBLISH, faultproxy.CutAfter, 0, 0}, // PUBREC may overtake the cut
	{"CutBeforePUBREC", faultproxy.ServerToClient, packets.PUBREC, faultproxy.CutBefore, packets.PUBLISH, 0},
	{"CutAfterPUBREC", faultproxy.ServerToClient, packets.PUBREC, faultproxy.CutAfter, packets.PUBREL, 0},
	{"CutBeforePUBREL", faultproxy.ClientToServer, packets.PUBREL, faultproxy.CutBefore, packets.PUBREL, 0},
	// The broker's PUBCOMP may overtake the cut: either state is right.
	{"CutAfterPUBREL", faultproxy.ClientToServer, packets.PUBREL, faultproxy.CutAfter, 0, 0},
	{"CutBeforePUBCOMP", faultproxy.ServerToClient, packets.PUBCOMP, faultproxy.CutBefore, packets.PUBREL, 0},
}

// TestOutboundQoS2Cut cuts the connection at each point of an outbound
// QoS 2 exchange; the message must arrive exactly once (MQTT-4.3.3-6:
// never the PUBLISH again after PUBREL; MQTT-4.4.0-1: resend with the
// original identifier on reconnect; MQTT-4.3.3-5: PUBREL unacknowledged
// until PUBCOMP). The NewClient variant ends the process at the cut and
// continues with a new Client on the same store: the session outlives the
// connection (MQTT-3.1.2-23).
func TestOutboundQoS2Cut(t *testing.T) {
	b := broker(t)
	for _, cp := range outboundCuts {
		for _, mode := range []string{"Reconnect", "NewClient"} {
			t.Run(cp.name+"/"+mode, func(t *testing.T) {
				topic := "cut/" + cp.name + "/" + mode
				col := subscriber(t, b.URL(), topic)
				px := proxy(t, b.Addr())
				st := memory.New()
				id := uniqueID(t)
				cfg := Config{Servers: []string{px.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour}
				lost := make(chan error, 10)
				cfgA := cfg
				cfgA.OnConnectionLost = func(err error) { lost <- err }
				a := start(t, cfgA)
				inj := px.Inject(faultproxy.Fault{Dir: cp.dir, Type: cp.typ, Nth: 1, Action: cp.act})
				if mode == "Reconnect" {
					if err := a.Publish(ctxT(t, 10*time.Second), &Message{Topic: topic, QoS: 2, Payload: []byte("once")}); err != nil {
						t.Fatalf("publish: %v", err)
					}
					waitFired(t, inj)
				} else {
					px.SetRefuse(true) // the cut is the end of this process
					tok := a.PublishAsync(&Message{Topic: topic, QoS: 2, Payload: []byte("once")})
					waitFired(t, inj)
					waitLost(t, lost) // A has read all it was sent
					a.Close()
					if err := tok.Err(); err != nil && !errors.Is(err, ErrClosed) {
						t.Fatalf("publish: %v", err)
					}
					if got := storedType(t, records(t, st, px.URL(), id)); cp.stored != 0 && got != cp.stored {
						t.Fatalf("stored record after the cut is %s, want %s", engine.TypeName(got), engine.TypeName(cp.stored))
					}
					px.SetRefuse(false)
					start(t, cfg) // a new process, same store
				}
				col.waitFor(t, 1, 10*time.Second)
				eventually(t, 10*time.Second, "outbound records deleted", func() bool {
					return countDir(records(t, st, px.URL(), id), store.Outbound) == 0
				})
				col.quiet(t, 1, 300*time.Millisecond)
			})
		}
	}
}

var inboundCuts = []cutPoint{
	{"CutAfterPUBLISH", faultproxy.ServerToClient, packets.PUBLISH, faultproxy.CutAfter, 0, 1},
	{"CutBeforePUBREC", faultproxy.ClientToServer, packets.PUBREC, faultproxy.CutBefore, 0, 1},
	{"CutAfterPUBREC", faultproxy.ClientToServer, packets.PUBREC, faultproxy.CutAfter, 0, -1}, // PUBREL may overtake the cut
	{"CutBeforePUBREL", faultproxy.ServerToClient, packets.PUBREL, faultproxy.CutBefore, 0, 1},
	{"CutAfterPUBREL", faultproxy.ServerToClient, packets.PUBREL, faultproxy.CutAfter, 0, 0},
	{"CutBeforePUBCOMP", faultproxy.ClientToServer, packets.PUBCOMP, faultproxy.CutBefore, 0, 0},
	{"CutAfterPUBCOMP", faultproxy.ClientToServer, packets.PUBCOMP, faultproxy.CutAfter, 0, 0},
}

// TestInboundQoS2Cut cuts the subscriber's connection at each point of an
// inbound QoS 2 exchange; the handler must see the message exactly once
// (MQTT-4.3.3-8 … -12).
func TestInboundQoS2Cut(t *testing.T) {
	b := broker(t)
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t) + "-pub"})
	for _, cp := range inboundCuts {
		for _, mode := range []string{"Reconnect", "NewClient"} {
			t.Run(cp.name+"/"+mode, func(t *testing.T) {
				topic := "in/" + cp.name + "/" + mode
				px := proxy(t, b.Addr())
				st := memory.New()
				id := uniqueID(t)
				col := newCollector()
				cfg := Config{Servers: []string{px.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour, OnMessage: col.handle}
				lost := make(chan error, 10)
				cfgA := cfg
				cfgA.OnConnectionLost = func(err error) { lost <- err }
				a := start(t, cfgA)
				if _, err := a.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: topic, SubscribeOptions: subOpts(2)}); err != nil {
					t.Fatal(err)
				}
				if mode == "NewClient" {
					px.SetRefuse(true)
				}
				inj := px.Inject(faultproxy.Fault{Dir: cp.dir, Type: cp.typ, Nth: 1, Action: cp.act})
				if err := pub.Publish(ctxT(t, 5*time.Second), &Message{Topic: topic, QoS: 2, Payload: []byte("once")}); err != nil {
					t.Fatal(err)
				}
				waitFired(t, inj)
				if mode == "NewClient" {
					col.waitFor(t, 1, 5*time.Second)
					waitLost(t, lost)
					a.Close()
					if got := countDir(records(t, st, px.URL(), id), store.Inbound); cp.in >= 0 && got != cp.in {
						t.Fatalf("%d inbound records after the cut, want %d", got, cp.in)
					}
					px.SetRefuse(false)
					start(t, cfg)
				}
				col.waitFor(t, 1, 10*time.Second)
				eventually(t, 10*time.Second, "inbound records deleted", func() bool {
					return countDir(records(t, st, px.URL(), id), store.Inbound) == 0
				})
				col.quiet(t, 1, 300*time.Millisecond)
			})
		}
	}
}

var _ = fmt.Sprint
