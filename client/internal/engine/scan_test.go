package engine

import (
	"slices"
	"strconv"
	"testing"
	"unsafe"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// storedPublish returns the record of a QoS 1 message with payload p,
// holding packet identifier id (0: queued without one).
func storedPublish(t *testing.T, seq uint64, id uint16, p string) store.Record {
	t.Helper()
	pub := &packets.Publish{Topic: "t", QoS: 1, PacketID: max(id, 1), Payload: []byte(p)}
	b, err := packets.Append(nil, pub)
	if err != nil {
		t.Fatal(err)
	}
	return store.Record{Seq: seq, Dir: store.Outbound, ID: id, Packet: AppendRef(b, "")}
}

// scanFrom reads the rig's durable records as store.Scanner does.
func (r *rig) scanFrom(from uint64, limit int) ([]store.Record, uint64) {
	var seqs []uint64
	for seq := range r.st {
		if seq >= from {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var next uint64
	if len(seqs) > limit {
		next, seqs = seqs[limit], seqs[:limit]
	}
	recs := make([]store.Record, len(seqs))
	for i, s := range seqs {
		recs[i] = r.st[s]
	}
	return recs, next
}

// page hands the engine the next page of its scan.
func (r *rig) page(limit int) {
	from, _ := r.e.Scanning()
	recs, next := r.scanFrom(from, limit)
	r.e.Page(recs, nil, next)
	r.effects()
}

// backlog stores a session of n QoS 1 messages, m1 to mn, under a meta
// record with Sent; those up to given hold their Seq as packet identifier.
func (r *rig) backlog(sent, given, n uint64) {
	meta := Meta{Expiry: 3600, LastConnected: r.now, Sent: sent}
	r.st[store.MetaSeq] = store.Record{Seq: store.MetaSeq, Dir: store.Meta, Packet: meta.Encode()}
	for seq := uint64(1); seq <= n; seq++ {
		id := uint16(0)
		if seq <= given {
			id = uint16(seq)
		}
		r.st[seq] = storedPublish(r.t, seq, id, "m"+strconv.FormatUint(seq, 10))
	}
}

// resume starts a process with cfg on the rig's store: it begins a paged
// load and takes the first page, of limit records.
func (r *rig) resume(cfg Config, limit int) {
	r.e = New(cfg)
	r.e.LoadStart(store.Key{Server: "mqtt://sim:1883", ClientID: "c"}, false)
	r.page(limit)
}

// scanning reports whether the paged load has pages to come.
func (r *rig) scanning() bool {
	_, ok := r.e.Scanning()
	return ok
}

// serveTail answers the ReadTail effects the engine asked for.
func (r *rig) serveTail() {
	for len(r.tailReqs) > 0 {
		f := r.tailReqs[0]
		r.tailReqs = r.tailReqs[1:]
		recs, next := r.scanFrom(f.Num, f.Limit)
		r.e.Tail(f.Num, recs, next)
		r.effects()
	}
}

// TestPagedLoad: a process restarting on a backlog reads the session in
// pages and connects once it holds the meta record and the records holding
// packet identifiers, which come first; it resends those (DUP 1,
// MQTT-3.3.1-1) and sends the next ones before the scan has ended. It
// holds no more than LoadWindow queued messages, reads the rest from the
// store as the queue drains, and sends every message once, in order
// (MQTT-4.6.0-1), with messages published meanwhile after the backlog.
func TestPagedLoad(t *testing.T) {
	const window, backlog = 10, 300
	r := newRig(t, Config{})
	r.backlog(3, 3, backlog)          // 3 in flight when the last process stopped
	r.st[150] = InboundRecord(150, 7) // an inbound QoS 2 message awaiting PUBREL
	delete(r.st, 151)

	r.resume(Config{LoadWindow: window}, 7)
	if !r.e.CanConnect() {
		t.Fatal("cannot connect after the page holding the meta record, the identifiers and the first queued message")
	}
	ca := windowOf(5)
	ca.SessionPresent = true
	r.connect(ca)
	r.commit()
	w := r.take()
	if got := kinds(w); !slices.Equal(got, []string{"PUBLISH(dup)", "PUBLISH(dup)", "PUBLISH(dup)", "PUBLISH", "PUBLISH"}) {
		t.Fatalf("wrote %v before the scan's end, want the 3 in flight again and 2 more", got)
	}
	if r.e.Recorded(7) {
		t.Fatal("inbound record known before the scan reached it")
	}
	for r.scanning() {
		r.page(7)
		if r.e.msgs.live > window+3 {
			t.Fatalf("holds %d messages while scanning, LoadWindow %d", r.e.msgs.live, window)
		}
	}
	if !r.e.Recorded(7) {
		t.Fatal("inbound record not known after the scan")
	}
	if n, _ := r.e.Queued(); n != backlog-2 { // 300 - seq 150 (inbound) - seq 151 (gone)
		t.Fatalf("Queued = %d after the scan, want %d", n, backlog-2)
	}

	// Drain, acknowledging every PUBLISH; publish two more on the way.
	var order []string
	for len(w) > 0 {
		for _, p := range w {
			pub := p.(*packets.Publish)
			order = append(order, string(pub.Payload))
			r.receive(ack(packets.PUBACK, pub.PacketID))
		}
		if len(order) == 50 {
			r.publish(1, 1, "t", []byte("new1"))
			r.publish(2, 1, "t", []byte("new2"))
		}
		r.commit()
		r.serveTail()
		r.commit()
		if r.e.msgs.live > 2*window+5+2 {
			t.Fatalf("holds %d messages while draining, LoadWindow %d", r.e.msgs.live, window)
		}
		w = r.take()
	}
	var want []string
	for seq := 1; seq <= backlog; seq++ {
		if seq != 150 && seq != 151 {
			want = append(want, "m"+strconv.Itoa(seq))
		}
	}
	want = append(want, "new1", "new2")
	if !slices.Equal(order, want) {
		t.Fatalf("sent %d messages:\n%v\nwant %d:\n%v", len(order), order, len(want), want)
	}
	if n, _ := r.e.Queued(); n != 0 || r.outcome[1] != nil || r.outcome[2] != nil {
		t.Fatalf("after the drain: Queued %d, outcomes %v", n, r.outcome)
	}
	for seq, rec := range r.st {
		if rec.Dir == store.Outbound {
			t.Errorf("record %d left in the store", seq)
		}
	}
}

// TestPagedLoadDiscard: a session the server no longer has (Session
// Present 0, MQTT-3.2.2-5) while the scan runs loses the inbound records
// the scan reaches later too, and keeps the queued messages, which were
// never sent.
func TestPagedLoadDiscard(t *testing.T) {
	r := newRig(t, Config{})
	r.backlog(1, 1, 20) // m1 sent, the rest queued
	r.st[21] = InboundRecord(21, 9)
	r.resume(Config{LoadWindow: 4}, 3)
	r.link = &link{}
	ca := windowOf(5) // Session Present 0
	res, err := r.e.Connected(r.link, &ca, false, r.now)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Lost) != 1 || string(res.Lost[0].Pub.Payload) != "m1" {
		t.Fatalf("lost %v, want the one message sent", res.Lost)
	}
	r.effects()
	if !r.e.Discarding() {
		t.Fatal("Discarding false with the scan still to reach the inbound record")
	}
	for r.scanning() {
		r.page(3)
	}
	r.commit()
	if _, ok := r.st[21]; ok || r.e.Recorded(9) || r.e.Discarding() {
		t.Fatalf("inbound record of the discarded session: stored %v, recorded %v", ok, r.e.Recorded(9))
	}
	if n, _ := r.e.Queued(); n != 19 {
		t.Fatalf("Queued = %d, want the 19 queued messages", n)
	}
}

// TestPagedLoadConnectsWithinSent: a process that stopped while connected
// with a deep queue left identifiers given ahead to queued messages far
// beyond what it sent. The next one connects once the scan has passed the
// meta record's Sent: the messages beyond it were never sent (DUP 0) and
// go out under the identifiers they hold as the scan reaches them, and no
// new identifier is given until the scan has met the first record without
// one (MQTT-2.2.1-3: an identifier a stored record holds is not reused).
func TestPagedLoadConnectsWithinSent(t *testing.T) {
	const sent, given, backlog = 5, 200, 300
	r := newRig(t, Config{})
	r.backlog(sent, given, backlog)
	r.resume(Config{LoadWindow: 10}, 7)
	if !r.e.CanConnect() {
		t.Fatal("cannot connect after the page holding every record within Sent")
	}
	ca := windowOf(20)
	ca.SessionPresent = true
	r.connect(ca)
	var order []string
	for {
		r.commit()
		w := r.take()
		pos, scanning := r.e.Scanning()
		for _, p := range w {
			pub := p.(*packets.Publish)
			seq, _ := strconv.Atoi(string(pub.Payload[1:]))
			switch {
			case seq <= given && pub.PacketID != uint16(seq):
				t.Fatalf("message %d sent under identifier %d, its record holds %d", seq, pub.PacketID, seq)
			case seq > given && scanning && pos <= given:
				t.Fatalf("message %d given a new identifier %d before the scan read every record holding one", seq, pub.PacketID)
			case seq > given && r.e.byID[pub.PacketID].seq != uint64(seq):
				t.Fatalf("message %d sent under identifier %d, held by message %d", seq, pub.PacketID, r.e.byID[pub.PacketID].seq)
			case pub.Dup != (seq <= sent):
				t.Fatalf("message %d sent with DUP %v, Sent %d", seq, pub.Dup, sent)
			}
			order = append(order, string(pub.Payload))
			r.receive(ack(packets.PUBACK, pub.PacketID))
		}
		if scanning {
			r.page(7)
		} else if r.serveTail(); len(w) == 0 && len(r.wire) == 0 {
			r.commit()
			if len(r.wire) == 0 {
				break
			}
		}
	}
	if len(order) != backlog {
		t.Fatalf("sent %d messages, want %d", len(order), backlog)
	}
	for i, p := range order {
		if p != "m"+strconv.Itoa(i+1) {
			t.Fatalf("message %d sent as %s: out of order", i+1, p)
		}
	}
}

// TestOutSize guards what a resumed session holds for each message of its
// window (README, Resource limits): the engine's part is one Out, in the
// 80-byte size class (smaller on a 32-bit platform).
func TestOutSize(t *testing.T) {
	if n := unsafe.Sizeof(Out{}); n > 80 {
		t.Fatalf("Out is %d bytes, want at most 80", n)
	}
}
