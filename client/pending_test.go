package client

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// TestPendingAfterRestart: a new Client on the store of one that stopped
// mid-stream lists, before it connects, every message the library will
// still deliver — queued, sent, and released (PUBREL sent, PUBCOMP
// awaited) — each with the Ref the application gave it; the released one
// stays identifiable although its record no longer holds the payload.
func TestPendingAfterRestart(t *testing.T) {
	const pendingLast = 100 // the last row published
	stopped := make(chan struct{})
	resumed := make(chan []string, 1)
	url := scriptedServer(t, func(p *peer) {
		rm := uint16(2)
		p.accept(&packets.Connack{Properties: packets.Properties{ReceiveMaximum: rm}})
		// a gets PUBREC, and its PUBREL no PUBCOMP; b gets nothing.
		rel, pubs := false, 0
		for !rel || pubs < 2 {
			switch pk := p.read().(type) {
			case *packets.Publish:
				pubs++
				if string(pk.Payload) == "a" {
					p.send(&packets.Ack{Kind: packets.PUBREC, PacketID: pk.PacketID})
				}
			case *packets.Ack:
				rel = rel || pk.Kind == packets.PUBREL
			case nil:
				return
			}
		}
		close(stopped)
		p.expect(packets.DISCONNECT)
	}, func(p *peer) {
		p.accept(&packets.Connack{SessionPresent: true})
		var seen []string
		rels, qos1 := 0, 0
		for rels < 2 || qos1 < pendingLast-2 {
			pk := p.read()
			switch pk := pk.(type) {
			case *packets.Publish:
				seen = append(seen, string(pk.Payload))
				if pk.QoS == 1 {
					qos1++
				}
				kind := packets.PUBACK
				if pk.QoS == 2 {
					kind = packets.PUBREC
				}
				p.send(&packets.Ack{Kind: kind, PacketID: pk.PacketID})
			case *packets.Ack:
				if pk.Kind == packets.PUBREL {
					seen = append(seen, "rel")
					rels++
					p.send(&packets.Ack{Kind: packets.PUBCOMP, PacketID: pk.PacketID})
				}
			case nil:
				return
			}
		}
		resumed <- seen
		p.expect(packets.DISCONNECT)
	})
	st := memory.New()
	id := uniqueID(t)
	cfg := Config{Servers: []string{url}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		ReconnectBackoff: Backoff{Min: time.Minute, Max: time.Minute}}
	a := start(t, cfg)
	tokA := a.PublishAsync(&Message{Topic: "p", QoS: 2, Payload: []byte("a"), Ref: "row-1"})
	a.PublishAsync(&Message{Topic: "p", QoS: 2, Payload: []byte("b"), Ref: "row-2"})
	for i := 3; i <= pendingLast; i++ { // beyond the server's Receive Maximum of 2: queued
		a.PublishAsync(&Message{Topic: "p", QoS: 1, Payload: []byte(fmt.Sprint(i)), Ref: fmt.Sprintf("row-%d", i)})
	}
	<-stopped
	eventually(t, 5*time.Second, "the PUBREL stored", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.eng.Idle()
	})
	a.Close()
	select {
	case <-tokA.Done():
		if tokA.Err() == nil {
			t.Fatal("row-1 completed without its PUBCOMP")
		}
	default:
	}

	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		ref   string
		state PendingState
	}{{"row-1", PendingReleased}, {"row-2", PendingSent}}
	// The meta record bounds what may have been sent: it runs ahead of
	// what was, so a few queued messages count as maybe sent (README:
	// What a crash leaves of "sent").
	c.mu.Lock()
	meta, _ := c.eng.Meta()
	c.mu.Unlock()
	if meta.Sent < 2 || meta.Sent >= pendingLast {
		t.Fatalf("Meta.Sent %d: want the two messages sent covered, and not the whole queue of %d", meta.Sent, pendingLast)
	}
	for i := 3; i <= pendingLast; i++ {
		w := want[0]
		w.ref, w.state = fmt.Sprintf("row-%d", i), PendingQueued
		if uint64(i) <= meta.Sent {
			w.state = PendingSent
		}
		want = append(want, w)
	}
	if len(got) != len(want) {
		t.Fatalf("%d pending, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Ref != w.ref || g.State != w.state {
			t.Errorf("pending %d: %s %s, want %s %s", i, g.Ref, g.State, w.ref, w.state)
		}
		if w.state != PendingQueued && g.PacketID == 0 {
			t.Errorf("%s: no packet identifier", g.Ref)
		}
		if w.state != PendingReleased && (g.Message == nil || g.Message.Ref != w.ref) {
			t.Errorf("%s: message %+v", g.Ref, g.Message)
		}
	}
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case seen := <-resumed:
		if seen[0] != "rel" || seen[1] != "b" { // MQTT-4.6.0-1: in the original order
			t.Errorf("resumed in the order %v", seen)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("session not resumed")
	}
	eventually(t, 10*time.Second, "all completed", func() bool {
		got, err := c.Pending(context.Background())
		return err == nil && len(got) == 0
	})
}

// TestDescribeRecord: tools see what the session load sees: the Ref of a
// PUBREL-stage message, and an error for each record the load would leave
// out.
func TestDescribeRecord(t *testing.T) {
	pub, _ := packets.Append(nil, &packets.Publish{Topic: "a/b", QoS: 1, PacketID: 1, Payload: []byte("x")})
	rel, _ := packets.Append(nil, &packets.Ack{Kind: packets.PUBREL, PacketID: 7})
	for _, tc := range []struct {
		r     store.Record
		kind  string
		ref   string
		valid bool
	}{
		{store.Record{Seq: 1, Dir: store.Outbound, Packet: engine.AppendRef(pub, "row-9")}, "publish", "row-9", true},
		{store.Record{Seq: 2, Dir: store.Outbound, ID: 7, Packet: engine.AppendRef(rel, "row-10")}, "pubrel", "row-10", true},
		{store.Record{Seq: 3, Dir: store.Outbound, ID: 7, Packet: rel}, "pubrel", "", true},
		{store.Record{Seq: 4, Dir: store.Inbound, ID: 3, Packet: engine.InboundRecord(0, 0).Packet}, "inbound", "", true},
		{store.Record{Seq: 0, Dir: store.Meta, Packet: craftedMeta()}, "meta", "", false},
		{store.Record{Seq: 5, Dir: store.Outbound, Packet: append(pub, 0x00)}, "outbound", "", false},
		{store.Record{Seq: 6, Dir: store.Outbound, Packet: append(engine.AppendRef(pub, "r"), 1)}, "outbound", "", false},
	} {
		got := DescribeRecord(tc.r)
		if got.Kind != tc.kind || got.Ref != tc.ref || (got.Err == nil) != tc.valid {
			t.Errorf("seq %d: %+v", tc.r.Seq, got)
		}
	}

	// In a session, the meta record's Sent tells a queued message holding
	// an identifier from one that may have been sent.
	meta := engine.Meta{Expiry: 60, Sent: 2}
	recs := []store.Record{
		{Seq: 0, Dir: store.Meta, Packet: meta.Encode()},
		{Seq: 2, Dir: store.Outbound, ID: 1, Packet: pub},
		{Seq: 3, Dir: store.Outbound, ID: 2, Packet: pub},
		{Seq: 4, Dir: store.Outbound, Packet: pub},
	}
	want := []string{"nothing beyond seq 2 sent", "sent, awaiting PUBACK", "queued, not sent (packet identifier given)", "queued, not sent"}
	for i, info := range DescribeRecords(recs) {
		if !strings.Contains(info.State, want[i]) {
			t.Errorf("seq %d: %q, want %q", recs[i].Seq, info.State, want[i])
		}
	}
	if got := DescribeRecord(recs[2]).State; got != "sent, awaiting PUBACK" {
		t.Errorf("alone, a record holding an identifier: %q", got)
	}
}
