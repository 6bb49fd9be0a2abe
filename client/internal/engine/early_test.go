package engine

import (
	"errors"
	"testing"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// failCommit hands the next batch to a store that fails it.
func (r *rig) failCommit(err error) {
	r.t.Helper()
	if !r.e.NeedsCommit() {
		r.t.Fatal("no batch to fail")
	}
	r.e.Commit()
	r.e.CommitFailed(err)
	r.effects()
}

// TestQoS1LeavesBeforeItsRecord: a QoS 1 PUBLISH goes on the wire as it
// is published, its record committing alongside the exchange: the server
// keeps nothing of a QoS 1 exchange once acknowledged (MQTT-4.3.2-5), so
// the record only has to outlive a crash of this process. A QoS 2 PUBLISH
// still waits for its record (MQTT-4.3.3-10 on the server's side). A
// PUBACK that overtakes the record completes the publish, and the record's
// Put is taken back from the batch: nothing is written for it.
func TestQoS1LeavesBeforeItsRecord(t *testing.T) {
	r := newRig(t, Config{})
	puts := r.countPuts()
	r.connect(windowOf(10))
	r.commit() // a meta record whose Sent covers what follows

	r.publish(1, 1, "a", []byte("1"))
	w := r.take()
	if len(w) != 1 || w[0].(*packets.Publish).QoS != 1 || len(r.st) != 1 {
		t.Fatalf("QoS 1 publish before any commit: wrote %v with %d records durable", kinds(w), len(r.st))
	}
	r.publish(2, 2, "a", []byte("2"))
	if w := r.take(); len(w) != 0 {
		t.Fatalf("QoS 2 PUBLISH written before its record was durable: %v", kinds(w))
	}

	// The PUBACK arrives before the QoS 1 record is durable.
	r.receive(ack(packets.PUBACK, w[0].(*packets.Publish).PacketID))
	if err, ok := r.outcome[1]; !ok || err != nil {
		t.Fatalf("publish 1 after its PUBACK: completed %v, %v", ok, err)
	}
	r.commit()
	w = r.take()
	if len(w) != 1 || w[0].(*packets.Publish).QoS != 2 {
		t.Fatalf("after the commit: wrote %v, want the QoS 2 PUBLISH", kinds(w))
	}
	if _, ok := r.st[1]; ok || puts[1] != 0 || puts[2] != 1 {
		t.Fatalf("record of the acknowledged QoS 1 message left %v, Puts per record %v, want none for it", ok, puts)
	}

	// The Put of a message that left before it waits for the batch after
	// the one being taken: a PUBACK during that Apply still takes it back.
	r.publish(3, 1, "a", []byte("3"))
	id := r.take()[0].(*packets.Publish).PacketID
	ops := r.e.Commit()
	if hasPut(ops, 3) {
		t.Fatal("the first batch taken after a QoS 1 PUBLISH left holds its Put")
	}
	r.ackDuring(ops, id)
	if _, ok := r.st[3]; ok || puts[3] != 0 {
		t.Fatalf("record of a message acknowledged during the Apply after it left: left %v, Puts %d", ok, puts[3])
	}

	// A PUBACK that comes while the batch holding the Put is being
	// applied leaves the Put, and a Delete follows.
	r.publish(4, 1, "a", []byte("4"))
	id = r.take()[0].(*packets.Publish).PacketID
	r.commitOnce()
	ops = r.e.Commit()
	if !hasPut(ops, 4) {
		t.Fatal("the second batch taken after a QoS 1 PUBLISH left lacks its Put")
	}
	r.ackDuring(ops, id)
	if _, ok := r.st[4]; ok || puts[4] != 1 {
		t.Fatalf("record of a message acknowledged during its Apply: left %v, Puts %d", ok, puts[4])
	}
}

// ackDuring has the PUBACK for id arrive while ops, the batch Commit
// took, are being applied, then commits everything.
func (r *rig) ackDuring(ops []store.Op, id uint16) {
	r.t.Helper()
	r.receive(ack(packets.PUBACK, id))
	r.apply(ops)
	r.e.Committed()
	r.effects()
	r.commit()
}

// hasPut reports whether ops put the record of seq.
func hasPut(ops []store.Op, seq uint64) bool {
	for _, op := range ops {
		if op.Kind == store.OpPut && op.Record.Seq == seq {
			return true
		}
	}
	return false
}

// TestQoS1CrashBeforeItsRecord: a process that dies after a QoS 1 PUBLISH
// left but before its record was durable leaves no trace of it: the next
// process neither resends it nor holds its identifier (MQTT-4.3.2-5: the
// server took any later PUBLISH with it for a new message), and the
// publish had neither completed nor reached Stored, so the message was
// still the application's. One whose record became durable is resent as
// maybe sent, with DUP 1 (MQTT-4.4.0-1, MQTT-3.3.1-1).
func TestQoS1CrashBeforeItsRecord(t *testing.T) {
	r := newRig(t, Config{SessionExpiry: 3600})
	r.connect(windowOf(10))
	r.commit()
	r.publish(1, 1, "a", []byte("1"))
	r.commit()
	r.publish(2, 1, "a", []byte("2"))
	w := r.take()
	if len(w) != 2 || r.stored[2] {
		t.Fatalf("wrote %v, stored %v", kinds(w), r.stored)
	}
	if _, done := r.outcome[2]; done {
		t.Fatal("publish 2 completed without its PUBACK")
	}

	r.restart(Config{SessionExpiry: 3600}) // crash: the second record was never applied
	r.connect(packets.Connack{SessionPresent: true})
	r.commit()
	w = r.take()
	if len(w) != 1 || string(w[0].(*packets.Publish).Payload) != "1" || !w[0].(*packets.Publish).Dup {
		t.Fatalf("after the crash: resent %v, want the first message with DUP 1", kinds(w))
	}
	if r.e.ids.n != 1 {
		t.Fatalf("%d identifiers held, want 1 (the resent message's)", r.e.ids.n)
	}
}

// TestQoS1StoredWithoutIdentifierWaits: a message stored while
// disconnected has a record without a packet identifier, which a process
// loading it takes for never sent. Its PUBLISH waits until the record
// with the identifier is durable, so that a crash never leaves a sent
// message looking unsent (MQTT-3.3.1-1).
func TestQoS1StoredWithoutIdentifierWaits(t *testing.T) {
	r := newRig(t, Config{})
	r.publish(1, 1, "a", []byte("1"))
	r.commit()
	if r.st[1].ID != 0 {
		t.Fatalf("stored offline with identifier %d", r.st[1].ID)
	}
	r.connect(windowOf(10))
	if w := r.take(); len(w) != 0 {
		t.Fatalf("wrote %v while its durable record lacks the identifier", kinds(w))
	}
	r.commit()
	w := r.take()
	if len(w) != 1 || w[0].(*packets.Publish).PacketID != r.st[1].ID || r.st[1].ID == 0 {
		t.Fatalf("after the commit: wrote %v, record %+v", kinds(w), r.st[1])
	}
}

// TestQoS1SentThenCommitFails: when the batch holding a QoS 1 message's
// first record fails, the publish fails with the store's error even if its
// PUBLISH left already (it may still reach the server: at least once), and
// its identifier is freed only once the retried deletion is durable. While
// the store fails, a QoS 1 PUBLISH waits for its record again.
func TestQoS1SentThenCommitFails(t *testing.T) {
	r := newRig(t, Config{})
	r.connect(windowOf(10))
	r.commit()
	r.publish(1, 1, "a", []byte("1"))
	first := r.take()
	if len(first) != 1 {
		t.Fatalf("wrote %v", kinds(first))
	}
	r.commitOnce() // its Put waits for the next batch (Engine.Commit)
	down := errors.New("store down")
	r.failCommit(down)
	if err := r.outcome[1]; !errors.Is(err, down) {
		t.Fatalf("publish 1: outcome %v, want %v", err, down)
	}
	id := first[0].(*packets.Publish).PacketID
	if !r.e.ids.has(id) {
		t.Fatal("identifier freed before the deletion of the failed record is durable")
	}
	r.cut(1)
	r.connect(packets.Connack{SessionPresent: true}) // commits the retry
	if r.e.ids.has(id) {
		t.Fatal("identifier still held after the deletion is durable")
	}

	// The store fails again: a QoS 1 PUBLISH waits for its record.
	r.publish(2, 1, "a", []byte("2"))
	r.take()
	r.commitOnce()
	r.failCommit(down)
	r.publish(3, 1, "a", []byte("3")) // before the connection has ended
	if w := r.take(); len(w) != 0 {
		t.Fatalf("wrote %v while the store is failing", kinds(w))
	}
	r.cut(0)
	r.connect(packets.Connack{SessionPresent: true})
	r.commit()
	w := r.take()
	if len(w) != 1 || string(w[0].(*packets.Publish).Payload) != "3" {
		t.Fatalf("after the store recovered: wrote %v, want message 3", kinds(w))
	}
	for _, rec := range r.st {
		if rec.Dir == store.Outbound && rec.Seq != 3 {
			t.Fatalf("record left: %+v", rec)
		}
	}
}

// TestUrgent: a batch that only records (the first Put of a QoS 1 message
// already sent, the deletion of a finished one, an identifier to free)
// is not urgent, and the driver may hold it back; one that a packet waits
// for is, and so is one once identifiers run low.
func TestUrgent(t *testing.T) {
	r := newRig(t, Config{MaxPacketID: 1000})
	r.connect(windowOf(10))
	r.commit()

	r.publish(1, 1, "a", []byte("1"))
	id := r.take()[0].(*packets.Publish).PacketID
	if !r.e.NeedsCommit() || r.e.Urgent() {
		t.Fatalf("after a QoS 1 PUBLISH left: needs commit %v, urgent %v; want a batch that may wait", r.e.NeedsCommit(), r.e.Urgent())
	}
	r.receive(ack(packets.PUBACK, id))
	if r.e.Urgent() {
		t.Fatal("freeing the identifier of an acknowledged QoS 1 message is urgent")
	}

	r.publish(2, 2, "a", []byte("2")) // its PUBLISH waits for its record
	if !r.e.Urgent() {
		t.Fatal("a batch a QoS 2 PUBLISH waits for is not urgent")
	}
	r.commit()
	id = r.take()[0].(*packets.Publish).PacketID
	r.receive(ack(packets.PUBREC, id)) // the PUBREL waits for its record
	if !r.e.Urgent() {
		t.Fatal("a batch a PUBREL waits for is not urgent")
	}
	r.commit()
	r.take()
	r.receive(ack(packets.PUBCOMP, id))
	if !r.e.NeedsCommit() || r.e.Urgent() {
		t.Fatalf("after PUBCOMP: needs commit %v, urgent %v; want the deletion to wait", r.e.NeedsCommit(), r.e.Urgent())
	}

	// An inbound QoS 1 message: its PUBACK waits behind the batch.
	r.receive(&packets.Publish{Topic: "in", QoS: 1, PacketID: 7, Payload: []byte("x")})
	if err := r.e.Ack(r.delivered[0]); err != nil {
		t.Fatal(err)
	}
	r.effects()
	if !r.e.Urgent() {
		t.Fatal("a batch an inbound message's PUBACK waits for is not urgent")
	}
	r.commit()
	r.take()

	// Identifiers running low: the last sixteenth is all that is free.
	for i := 10; r.e.ids.n < 1000-1000/16; i++ {
		r.publish(i, 1, "a", []byte("q"))
	}
	if !r.e.Urgent() {
		t.Fatalf("with %d of 1000 identifiers in use, freeing one is not urgent", r.e.ids.n)
	}
}

// TestQueuedQoS1PutWaitsABatch: the first Put of a QoS 1 message queued
// behind the server's window, holding the identifier it will go under,
// waits one batch too, since its PUBLISH does not need it: the PUBACK of
// the message before frees the slot, and its own PUBACK then takes the
// Put back. Once only: the batch after the one it skipped takes it.
func TestQueuedQoS1PutWaitsABatch(t *testing.T) {
	r := newRig(t, Config{})
	puts := r.countPuts()
	r.connect(windowOf(1))
	r.commit()
	r.publish(1, 1, "a", []byte("1"))
	id := r.take()[0].(*packets.Publish).PacketID
	r.publish(2, 1, "a", []byte("2"))
	if w := r.take(); len(w) != 0 {
		t.Fatalf("wrote %v with the server's window full", kinds(w))
	}
	ops := r.e.Commit()
	if hasPut(ops, 1) || hasPut(ops, 2) {
		t.Fatal("the batch taken holds the first Put of a QoS 1 message holding its identifier")
	}
	// While that batch is applied, the PUBACK of message 1 frees the slot,
	// message 2 leaves, and its PUBACK comes too.
	r.receive(ack(packets.PUBACK, id))
	w := r.take()
	if len(w) != 1 || w[0].(*packets.Publish).QoS != 1 {
		t.Fatalf("after the PUBACK: wrote %v, want the queued PUBLISH", kinds(w))
	}
	r.receive(ack(packets.PUBACK, w[0].(*packets.Publish).PacketID))
	r.apply(ops)
	r.e.Committed()
	r.effects()
	r.commit()
	if len(r.st) != 1 || puts[1]+puts[2] != 0 {
		t.Fatalf("records %v, Puts %v: want only the meta record, nothing written for either message", r.st, puts)
	}

	// Once: a message still queued when the next batch is taken is written.
	r.publish(3, 1, "a", []byte("3"))
	id = r.take()[0].(*packets.Publish).PacketID
	r.publish(4, 1, "a", []byte("4"))
	if ops := r.e.Commit(); hasPut(ops, 4) {
		t.Fatal("the first batch taken holds the queued message's Put")
	}
	r.e.Committed()
	r.effects()
	if ops := r.e.Commit(); !hasPut(ops, 4) {
		t.Fatal("the second batch taken lacks the queued message's Put")
	} else {
		r.ackDuring(ops, id)
	}
	if puts[4] != 1 {
		t.Fatalf("Puts of the message queued across two batches: %d, want 1", puts[4])
	}
}

// TestWaitsOnlyForOrder: a QoS 1 PUBLISH that needs nothing from the store
// but must go after one waiting for the batch being applied goes as soon
// as that batch is durable, not after the batch gathered meanwhile, which
// would then be urgent, and the next one after it, and so on: a chain that
// made every QoS 1 PUBLISH wait for a commit once a single one had.
func TestWaitsOnlyForOrder(t *testing.T) {
	r := newRig(t, Config{})
	r.connect(windowOf(10))
	r.commit()
	r.publish(1, 2, "a", []byte("1")) // waits for its record
	ops := r.e.Commit()
	r.publish(2, 1, "a", []byte("2")) // needs nothing, goes after 1
	if w := r.take(); len(w) != 0 {
		t.Fatalf("wrote %v before the QoS 2 PUBLISH's record was durable", kinds(w))
	}
	if r.e.Urgent() {
		t.Fatal("the batch gathered while the QoS 2 record is applied is urgent: the QoS 1 PUBLISH waits for it")
	}
	r.apply(ops)
	r.e.Committed()
	r.effects()
	w := r.take()
	if len(w) != 2 || w[0].(*packets.Publish).QoS != 2 || w[1].(*packets.Publish).QoS != 1 {
		t.Fatalf("once the QoS 2 record is durable: wrote %v, want both PUBLISHes in order", kinds(w))
	}
}
