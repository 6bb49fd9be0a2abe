package engine

import (
	"cmp"
	"maps"
	"slices"
	"testing"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// windowOf returns a CONNACK with the server's Receive Maximum n.
func windowOf(n uint16) packets.Connack {
	var ca packets.Connack
	ca.Properties.ReceiveMaximum = n
	return ca
}

// restart loads what is durable into a new engine, as a process starting
// after a crash does.
func (r *rig) restart(cfg Config) {
	var recs []store.Record
	for _, rec := range r.st {
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b store.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	r.e = New(cfg)
	r.e.Load(store.Key{Server: "mqtt://sim:1883", ClientID: "c"}, recs, nil)
	r.link = nil
	r.wire, r.nums = nil, nil
	r.effects()
}

// TestQueuedMessageWrittenOnce: a message queued behind the server's
// Receive Maximum (MQTT-4.9.0-2) is stored once, with the packet
// identifier it is given as it is queued, and its PUBLISH goes on the wire
// as the acknowledgement that frees its slot arrives, without waiting for
// a store write. A QoS 1 message costs one Put and one Delete; a QoS 2
// message one Put for the PUBLISH and one for the PUBREL.
func TestQueuedMessageWrittenOnce(t *testing.T) {
	r := newRig(t, Config{})
	puts := r.countPuts()
	r.connect(windowOf(1))
	r.commit()
	r.publish(1, 1, "a", []byte("1"))
	r.commit()
	first := r.take()
	if len(first) != 1 {
		t.Fatalf("wrote %v", kinds(first))
	}
	r.publish(2, 1, "a", []byte("2"))
	r.publish(3, 2, "a", []byte("3"))
	r.commit()
	if w := r.take(); len(w) != 0 {
		t.Fatalf("wrote %v beyond the server's Receive Maximum of 1", kinds(w))
	}
	if !r.stored[2] || !r.stored[3] || r.st[2].ID == 0 || r.st[3].ID == 0 {
		t.Fatalf("queued messages stored %v %v with identifiers %d, %d", r.stored[2], r.stored[3], r.st[2].ID, r.st[3].ID)
	}

	// The PUBACK of the first frees the slot: the second goes at once.
	r.receive(ack(packets.PUBACK, first[0].(*packets.Publish).PacketID))
	w := r.take()
	if len(w) != 1 || w[0].(*packets.Publish).PacketID != r.st[2].ID || w[0].(*packets.Publish).Dup {
		t.Fatalf("after the PUBACK, before any commit: wrote %v, want the second PUBLISH under id %d", kinds(w), r.st[2].ID)
	}
	r.commit()
	r.receive(ack(packets.PUBACK, r.st[2].ID))
	w = r.take()
	if len(w) != 1 || w[0].(*packets.Publish).QoS != 2 {
		t.Fatalf("after the second PUBACK, before any commit: wrote %v, want the QoS 2 PUBLISH", kinds(w))
	}
	id3 := w[0].(*packets.Publish).PacketID
	r.commit()
	r.receive(ack(packets.PUBREC, id3))
	r.commit()
	r.receive(ack(packets.PUBCOMP, id3))
	r.commit()
	for i := 1; i <= 3; i++ {
		if err, ok := r.outcome[i]; !ok || err != nil {
			t.Fatalf("publish %d: outcome %v %v", i, ok, err)
		}
	}
	if want := map[uint64]int{1: 1, 2: 1, 3: 2}; !maps.Equal(puts, want) {
		t.Fatalf("Puts per record %v, want %v", puts, want)
	}
	if len(r.st) != 1 {
		t.Fatalf("records left: %v", r.st)
	}
}

// TestQueuedIdentifierNotAcknowledged: an acknowledgement for the
// identifier of a message that is queued, not sent, is not its
// acknowledgement (MQTT-4.3.2-4): the message stays, and is sent.
func TestQueuedIdentifierNotAcknowledged(t *testing.T) {
	r := newRig(t, Config{})
	r.connect(windowOf(1))
	r.commit()
	r.publish(1, 1, "a", []byte("1"))
	r.publish(2, 1, "a", []byte("2"))
	r.publish(3, 2, "a", []byte("3"))
	r.commit()
	first := r.take()[0].(*packets.Publish)
	r.receive(ack(packets.PUBACK, r.st[2].ID))
	r.receive(ack(packets.PUBREC, r.st[3].ID))
	r.commit()
	if _, done := r.outcome[2]; done {
		t.Fatal("a queued message completed by a PUBACK for its identifier")
	}
	// The stray PUBREC is answered (0x92), nothing else.
	if w := r.take(); len(w) != 1 || w[0].(*packets.Ack).ReasonCode != packets.PacketIdentifierNotFound {
		t.Fatalf("wrote %v", kinds(w))
	}
	r.receive(ack(packets.PUBACK, first.PacketID))
	r.commit()
	if w := r.take(); len(w) != 1 || string(w[0].(*packets.Publish).Payload) != "2" {
		t.Fatalf("after the PUBACK of the first: %v", kinds(w))
	}
}

// TestSentBoundAfterCrash: after a crash, a stored message that holds an
// identifier but lies beyond Meta.Sent never left the process: it goes
// with DUP 0 (MQTT-3.3.1-1), and a session the server lost keeps it to be
// sent, rather than reporting it lost. Those within Meta.Sent may have
// been sent: DUP 1, and reported lost with the session.
func TestSentBoundAfterCrash(t *testing.T) {
	cfg := Config{SessionExpiry: 3600}
	r := newRig(t, cfg)
	r.connect(windowOf(1))
	r.commit()
	const n = 200
	for i := 1; i <= n; i++ {
		r.publish(i, byte(1+i%2), "a", []byte{byte(i)})
	}
	r.commit()
	if w := r.take(); len(w) != 1 {
		t.Fatalf("wrote %v", kinds(w))
	}
	meta, err := DecodeMeta(r.st[store.MetaSeq].Packet)
	if err != nil {
		t.Fatal(err)
	}
	// Receive Maximum 1: Sent runs 64 ahead of the first message.
	if meta.Sent < 1 || meta.Sent >= n {
		t.Fatalf("Meta.Sent %d, want it to cover the message sent and not the whole queue of %d", meta.Sent, n)
	}
	for seq := uint64(1); seq <= n; seq++ {
		if r.st[seq].ID == 0 {
			t.Fatalf("record %d stored without an identifier", seq)
		}
	}

	// Restart on the store; the server still has the session.
	crashed := maps.Clone(r.st)
	r.restart(cfg)
	r.connect(packets.Connack{SessionPresent: true, Properties: packets.Properties{ReceiveMaximum: n}})
	r.commit()
	w := r.take()
	if len(w) != n {
		t.Fatalf("resent %d packets, want %d", len(w), n)
	}
	for i, p := range w {
		pub := p.(*packets.Publish)
		seq := uint64(i + 1)
		if want := seq <= meta.Sent; pub.Dup != want {
			t.Fatalf("message %d (seq %d, Sent %d): DUP %v, want %v", pub.Payload[0], seq, meta.Sent, pub.Dup, want)
		}
	}

	// The same crash, but now the server has lost the session.
	r.st = crashed
	r.restart(cfg)
	clean, lost := r.e.Prepare(r.now, false)
	if clean || len(lost) != 0 {
		t.Fatalf("Prepare: clean %v, lost %d", clean, len(lost))
	}
	r.link = &link{}
	conn, err := r.e.Connected(r.link, &packets.Connack{Properties: packets.Properties{ReceiveMaximum: n}}, false, r.now)
	if err != nil {
		t.Fatal(err)
	}
	r.effects()
	r.commit()
	if len(conn.Lost) != int(meta.Sent) {
		t.Fatalf("%d reported lost, want the %d within Meta.Sent", len(conn.Lost), meta.Sent)
	}
	w = r.take()
	if len(w) != n-int(meta.Sent) {
		t.Fatalf("sent %d, want the %d beyond Meta.Sent", len(w), n-int(meta.Sent))
	}
	for _, p := range w {
		if pub := p.(*packets.Publish); pub.Dup || uint64(pub.Payload[0]) <= meta.Sent {
			t.Fatalf("sent message %d with DUP %v", pub.Payload[0], pub.Dup)
		}
	}
}

// TestNoMetaNothingSent: records without a meta record were never sent
// (one is durable before the first PUBLISH): a process that crashed
// before its first connection sends its queue as new messages, none
// reported lost. A meta record of the first version, without Sent, makes
// every record with an identifier maybe sent.
func TestNoMetaNothingSent(t *testing.T) {
	r := newRig(t, Config{SessionExpiry: 3600})
	for i := 1; i <= 3; i++ {
		r.publish(i, 2, "a", []byte{byte(i)})
	}
	r.commit()
	if _, ok := r.st[store.MetaSeq]; ok {
		t.Fatal("a meta record before any connection")
	}
	r.restart(Config{SessionExpiry: 3600})
	r.connect(packets.Connack{})
	r.commit()
	for _, p := range r.take() {
		if pub := p.(*packets.Publish); pub.Dup {
			t.Fatalf("message %d sent with DUP 1", pub.Payload[0])
		}
	}
	if len(r.outcome) != 0 {
		t.Fatalf("outcomes %v", r.outcome)
	}

	m := Meta{Expiry: 3600, LastConnected: r.now}
	v1 := m.Encode()
	v1 = append([]byte{metaVersionV1}, append(v1[1:metaSentAt], v1[metaSentAt+8:]...)...)
	got, err := DecodeMeta(v1)
	if err != nil || got.Sent != 0 || got.Expiry != 3600 {
		t.Fatalf("version 1 meta: %+v, %v", got, err)
	}
	rec := store.Record{Seq: 5, Dir: store.Outbound, ID: 9}
	if !MaybeSent(got, true, rec) || MaybeSent(got, false, rec) || MaybeSent(Meta{Sent: 4}, true, rec) || !MaybeSent(Meta{Sent: 5}, true, rec) {
		t.Fatal("MaybeSent")
	}
	if MaybeSent(got, true, store.Record{Seq: 5, Dir: store.Outbound}) {
		t.Fatal("a record without an identifier taken for maybe sent")
	}
	if _, err := DecodeMeta(m.Encode()[:metaSentAt+3]); err == nil {
		t.Fatal("a meta record cut inside Sent decoded")
	}
}
