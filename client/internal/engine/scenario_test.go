package engine

import (
	"errors"
	"slices"
	"testing"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

var present = packets.Connack{SessionPresent: true}

// TestPublishWaitsForItsRecord: a QoS 1 or 2 PUBLISH is written only once
// its record is durable (DESIGN: what must be durable before which
// packet), and a PUBREL only once the PUBLISH→PUBREL replacement is.
func TestPublishWaitsForItsRecord(t *testing.T) {
	r := newRig(t, Config{})
	r.connect(packets.Connack{})
	r.commit()
	r.take()
	r.publish(1, 2, "a", []byte("x"))
	if w := r.take(); len(w) != 0 {
		t.Fatalf("written before the record is durable: %v", kinds(w))
	}
	r.commit()
	w := r.take()
	if len(w) != 1 || w[0].(*packets.Publish).PacketID == 0 || !r.stored[1] {
		t.Fatalf("after the commit: %v, stored %v", kinds(w), r.stored[1])
	}
	id := w[0].(*packets.Publish).PacketID
	if err := r.receive(ack(packets.PUBREC, id)); err != nil {
		t.Fatal(err)
	}
	if w := r.take(); len(w) != 0 {
		t.Fatalf("PUBREL written before its record is durable: %v", kinds(w))
	}
	r.commit()
	if w := r.take(); !slices.Equal(kinds(w), []string{"PUBREL"}) {
		t.Fatalf("after the commit: %v", kinds(w))
	}
	if rec := r.st[1]; rec.Dir != store.Outbound || rec.ID != id {
		t.Fatalf("stored %+v, want the PUBREL of id %d", rec, id)
	}
	r.receive(ack(packets.PUBCOMP, id))
	r.commit()
	if err, ok := r.outcome[1]; !ok || err != nil {
		t.Fatalf("outcome %v %v", ok, err)
	}
	if len(r.st) != 1 { // the meta record only
		t.Fatalf("records left after the exchange: %v", r.st)
	}
}

// TestDyingConnectionWrites: PUBLISHes written into a buffer the network
// never took did not reach the server: they are resent with DUP 0
// (MQTT-3.3.1-1) and, when the server has lost the session, kept rather
// than reported lost. The one that did go out is resent with DUP 1.
func TestDyingConnectionWrites(t *testing.T) {
	r := newRig(t, Config{SessionExpiry: 3600})
	r.connect(packets.Connack{})
	r.commit()
	for i := 1; i <= 3; i++ {
		r.publish(i, 1, "a", []byte{byte(i)})
	}
	r.commit()
	w := r.take()
	if len(w) != 3 {
		t.Fatalf("wrote %v", kinds(w))
	}
	r.cut(r.nums[len(r.nums)-3]) // only the first reached the network
	r.connect(present)
	r.commit()
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBLISH(dup)", "PUBLISH", "PUBLISH"}) {
		t.Fatalf("resent %v, want the first with DUP 1, the others DUP 0", got)
	}
	r.cut(r.nums[len(r.nums)-3])
	r.connect(packets.Connack{}) // the server lost the session
	r.commit()
	if err := r.outcome[1]; !errors.Is(err, ErrSessionLost) {
		t.Fatalf("message 1: %v, want ErrSessionLost", err)
	}
	for i := 2; i <= 3; i++ {
		if _, done := r.outcome[i]; done {
			t.Fatalf("message %d reported %v, though it never left the process", i, r.outcome[i])
		}
	}
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBLISH", "PUBLISH"}) {
		t.Fatalf("sent %v, want messages 2 and 3 as new", got)
	}
}

// TestPubrelOvertakingQueuedPubrec: a repeat of a recorded QoS 2 message
// queues its PUBREC behind an unacknowledged message (MQTT-4.6.0-3); when
// the server's PUBREL overtakes that PUBREC, the exchange ends, and the
// queued PUBREC must not record the identifier again — or the next message
// with it would be taken for a duplicate and lost.
func TestPubrelOvertakingQueuedPubrec(t *testing.T) {
	r := newRig(t, Config{ReceiveMaximum: 10})
	r.load(InboundRecord(7, 5)) // id 5 recorded by an earlier process
	r.connect(present)
	r.commit()
	r.receive(&packets.Publish{Topic: "a", QoS: 1, PacketID: 1, Payload: []byte("one")})
	r.receive(&packets.Publish{Topic: "a", QoS: 2, PacketID: 5, Dup: true, Payload: []byte("old")})
	if len(r.delivered) != 1 {
		t.Fatalf("delivered %d, want only the QoS 1 message", len(r.delivered))
	}
	r.receive(ack(packets.PUBREL, 5))
	r.commit()
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBCOMP"}) {
		t.Fatalf("wrote %v, want PUBCOMP", got)
	}
	if err := r.e.Ack(r.delivered[0]); err != nil {
		t.Fatal(err)
	}
	r.effects()
	r.commit()
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBACK"}) {
		t.Fatalf("wrote %v, want PUBACK alone (the overtaken PUBREC dropped)", got)
	}
	if r.e.Recorded(5) {
		t.Fatal("identifier 5 recorded again by the overtaken PUBREC")
	}
	r.receive(&packets.Publish{Topic: "a", QoS: 2, PacketID: 5, Payload: []byte("new")})
	if len(r.delivered) != 2 || r.delivered[1].App != "new" {
		t.Fatal("the next message with identifier 5 was not delivered")
	}
}

// TestHeldMessagesKeepOrder: with the crash window full, later messages
// wait; once the connection has closed they stay held, so that a message
// the reader still hands over never overtakes them.
func TestHeldMessagesKeepOrder(t *testing.T) {
	r := newRig(t, Config{ReceiveMaximum: 10, CrashWindow: 1})
	r.load()
	r.connect(present)
	r.commit()
	for i := uint16(1); i <= 3; i++ {
		r.receive(&packets.Publish{Topic: "a", QoS: 1, PacketID: i, Payload: []byte{byte('0' + i)}})
	}
	if len(r.delivered) != 1 {
		t.Fatalf("delivered %d with a crash window of 1", len(r.delivered))
	}
	r.link.closed = true // closing; the engine has not heard yet
	if err := r.e.Ack(r.delivered[0]); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("ack after the connection closed: %v", err)
	}
	r.effects()
	if len(r.delivered) != 1 || len(r.take()) != 0 {
		t.Fatalf("delivered %d and wrote on a closed connection", len(r.delivered))
	}
}

// TestStoredMessageTooLarge: a stored message the server's Maximum Packet
// Size will never let through fails once and leaves the session; a QoS 2
// one that may have reached the server keeps its identifier reserved
// (MQTT-3.2.2-15, MQTT-4.3.3-10).
func TestStoredMessageTooLarge(t *testing.T) {
	big := make([]byte, 2000)
	enc := func(qos byte, id uint16) []byte {
		b, err := packets.Append(nil, &packets.Publish{Topic: "big", QoS: qos, PacketID: id, Payload: big})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r := newRig(t, Config{})
	r.load(
		store.Record{Seq: 1, Dir: store.Outbound, ID: 0, Packet: enc(1, 1)}, // queued
		store.Record{Seq: 2, Dir: store.Outbound, ID: 9, Packet: enc(2, 9)}, // sent
	)
	r.connect(packets.Connack{SessionPresent: true, Properties: packets.Properties{MaximumPacketSize: 1000}})
	r.commit()
	if w := r.take(); len(w) != 0 {
		t.Fatalf("wrote %v to a server whose maximum is 1000 bytes", kinds(w))
	}
	if _, ok := r.st[1]; ok {
		t.Fatal("the too-large record stayed in the store")
	}
	if _, ok := r.st[2]; ok {
		t.Fatal("the too-large QoS 2 record stayed in the store")
	}
	if !r.e.IDInUse(9) {
		t.Fatal("the QoS 2 message's identifier was freed though the server may hold its exchange")
	}
}

// TestStaleInboundRecord: a recorded inbound QoS 2 identifier answers a
// redelivery (DUP 1) without delivering it again (MQTT-4.3.3-10), but a
// first transmission (DUP 0, MQTT-3.3.1-1) with that identifier is a new
// message: the record belonged to a session the server no longer has (a
// process stopped after Session Present 0 before its discard was
// durable), and taking the message for a repeat would lose it.
func TestStaleInboundRecord(t *testing.T) {
	r := newRig(t, Config{})
	r.load(InboundRecord(7, 5), InboundRecord(8, 6))
	r.connect(present)
	r.commit()
	r.receive(&packets.Publish{Topic: "a", QoS: 2, PacketID: 5, Dup: true, Payload: []byte("repeat")})
	r.receive(&packets.Publish{Topic: "a", QoS: 2, PacketID: 6, Payload: []byte("new")})
	if len(r.delivered) != 1 || r.delivered[0].App != "new" {
		t.Fatalf("delivered %d, want only the DUP 0 message", len(r.delivered))
	}
	r.commit()
	if _, ok := r.st[8]; ok {
		t.Fatal("the stale record of identifier 6 is still stored")
	}
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBREC"}) {
		t.Fatalf("wrote %v, want the PUBREC answering the repeat", got)
	}
}

// TestCrashWindowAcrossConnections: a message delivered on a connection
// that dropped, still with the application, counts in the crash window on
// the next connection too: a crash would deliver it again just the same.
// (Found by the simulation: the window was counted per connection.)
func TestCrashWindowAcrossConnections(t *testing.T) {
	r := newRig(t, Config{ReceiveMaximum: 10, CrashWindow: 1})
	r.load()
	r.connect(present)
	r.commit()
	r.receive(&packets.Publish{Topic: "a", QoS: 2, PacketID: 1, Payload: []byte("one")})
	r.cut(0)
	r.connect(present)
	r.commit()
	r.receive(&packets.Publish{Topic: "a", QoS: 2, PacketID: 1, Dup: true, Payload: []byte("one")})
	r.receive(&packets.Publish{Topic: "a", QoS: 2, PacketID: 2, Payload: []byte("two")})
	if len(r.delivered) != 1 {
		t.Fatalf("delivered %d while the first is still handled, crash window 1", len(r.delivered))
	}
	if err := r.e.Ack(r.delivered[0]); err != nil {
		t.Fatal(err)
	}
	r.effects()
	r.commit()
	if len(r.delivered) != 2 || r.delivered[1].App != "two" {
		t.Fatalf("the held message did not follow the acknowledgement: %d delivered", len(r.delivered))
	}
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBREC"}) {
		t.Fatalf("wrote %v, want the PUBREC of the first", got)
	}
}

// TestFailoverKeepsSessionsApart: moving to another server's session, a
// sent QoS 2 message leaves a PUBREL in the old session (the old server
// may hold its identifier), and an inbound QoS 2 message still with the
// application is recorded in the session it came from — or, once the
// client is back there, in the loaded session — so that its redelivery is
// never delivered again.
func TestFailoverKeepsSessionsApart(t *testing.T) {
	a := store.Key{Server: "mqtt://a:1883", ClientID: "c"}
	b := store.Key{Server: "mqtt://b:1883", ClientID: "c"}
	r := newRig(t, Config{SessionExpiry: 3600})
	r.e.Load(a, nil, nil)
	r.connect(packets.Connack{})
	r.commit()
	r.publish(1, 2, "t", []byte("out"))
	r.commit()
	id := r.take()[0].(*packets.Publish).PacketID
	r.receive(&packets.Publish{Topic: "t", QoS: 2, PacketID: 9, Payload: []byte("in")})
	r.receive(&packets.Publish{Topic: "t", QoS: 2, PacketID: 8, Payload: []byte("in2")})
	r.cut(r.nums[len(r.nums)-1])

	mv := r.e.Detach()
	r.e.Load(b, nil, nil)
	r.e.Attach(mv)
	r.effects()
	old := mv.OldOps()
	if len(old) != 1 || old[0].Kind != store.OpPut || old[0].Record.ID != id {
		t.Fatalf("old session ops %+v, want the PUBREL of identifier %d", old, id)
	}
	if pr, err := ParseRecord(old[0].Record); err != nil || !pr.Pubrel {
		t.Fatalf("old record: %+v %v, want a PUBREL", pr, err)
	}

	if err := r.e.Ack(r.delivered[0]); err != nil { // "in", acknowledged while at b
		t.Fatal(err)
	}
	r.effects()
	if len(r.elsewhere) != 1 || r.elsewhere[0].Key != a || r.elsewhere[0].Ops[0].Record.ID != 9 {
		t.Fatalf("StoreAt effects %+v, want identifier 9 recorded in a's session", r.elsewhere)
	}

	// Back at a, "in2" still with the application.
	m := Meta{Expiry: 3600, LastConnected: r.now}
	r.e.Load(a, []store.Record{{Seq: store.MetaSeq, Dir: store.Meta, Packet: m.Encode()},
		old[0].Record, r.elsewhere[0].Ops[0].Record}, nil)
	r.effects()
	r.connect(present)
	r.commit()
	r.receive(&packets.Publish{Topic: "t", QoS: 2, PacketID: 8, Dup: true, Payload: []byte("in2")})
	if len(r.delivered) != 2 {
		t.Fatalf("%d deliveries: the redelivery of a message still handled was delivered again", len(r.delivered))
	}
	if err := r.e.Ack(r.delivered[1]); err != nil {
		t.Fatal(err)
	}
	r.effects()
	r.commit()
	if !r.e.Recorded(8) {
		t.Fatal("identifier 8 not recorded in the session it came from")
	}
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBREL", "PUBREC"}) {
		t.Fatalf("wrote %v, want the PUBREL ending the moved message's old exchange, then the PUBREC", got)
	}
}

// TestDurablePublishGoesAtOnce: a PUBLISH whose record is durable already
// does not wait behind store writes that have nothing to do with it (the
// deletion a PUBACK queued), but the outbound flow keeps its order: on a
// resend, a PUBREL waiting for a batch holds back the PUBLISHes after it.
func TestDurablePublishGoesAtOnce(t *testing.T) {
	enc := func(id uint16, b string) []byte {
		p, err := packets.Append(nil, &packets.Publish{Topic: "t", QoS: 1, PacketID: id, Payload: []byte(b)})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	rel, _ := packets.Append(nil, &packets.Ack{Kind: packets.PUBREL, PacketID: 1})
	r := newRig(t, Config{})
	r.load(
		store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: rel},
		store.Record{Seq: 2, Dir: store.Outbound, ID: 2, Packet: enc(2, "b")},
		store.Record{Seq: 3, Dir: store.Outbound, ID: 3, Packet: enc(3, "c")},
	)
	r.connect(packets.Connack{SessionPresent: true, Properties: packets.Properties{ReceiveMaximum: 2}})
	if w := r.take(); len(w) != 0 {
		t.Fatalf("wrote %v before the meta record's batch, ahead of the waiting PUBREL", kinds(w))
	}
	r.commit()
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBREL", "PUBLISH(dup)"}) {
		t.Fatalf("resent %v, want the PUBREL, then b, in Seq order", got)
	}
	r.receive(ack(packets.PUBCOMP, 1)) // queues the PUBREL record's deletion
	if got := kinds(r.take()); !slices.Equal(got, []string{"PUBLISH(dup)"}) {
		t.Fatalf("after PUBCOMP wrote %v, want c at once, not after the deletion's batch", got)
	}
}

// TestLoadedMessagesStayEncoded: a resumed session holds its records'
// bytes, not decoded packets, until the window reaches them; listing the
// session decodes without keeping.
func TestLoadedMessagesStayEncoded(t *testing.T) {
	var recs []store.Record
	for i := uint16(1); i <= 10; i++ {
		b, err := packets.Append(nil, &packets.Publish{Topic: "t", QoS: 1, PacketID: i, Payload: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, store.Record{Seq: uint64(i), Dir: store.Outbound, ID: i, Packet: b})
	}
	r := newRig(t, Config{})
	r.load(recs...)
	decoded := func() int {
		n := 0
		for _, m := range r.e.msgs.all() {
			if m.pub != nil {
				n++
			}
		}
		return n
	}
	if n := decoded(); n != 0 {
		t.Fatalf("%d messages decoded at load", n)
	}
	if out := r.e.Outbound(); len(out) != 10 || out[9].Pub == nil || out[9].Pub.Payload[0] != 10 {
		t.Fatalf("listing: %+v", out)
	}
	if n := decoded(); n != 0 {
		t.Fatalf("%d messages kept decoded after a listing", n)
	}
	r.connect(packets.Connack{SessionPresent: true, Properties: packets.Properties{ReceiveMaximum: 3}})
	r.commit()
	if got := len(r.take()); got != 3 {
		t.Fatalf("resent %d, want the window of 3", got)
	}
	if n := decoded(); n != 3 {
		t.Fatalf("%d messages decoded, want the 3 resent", n)
	}
}
