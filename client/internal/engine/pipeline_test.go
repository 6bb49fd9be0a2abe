package engine

import (
	"errors"
	"testing"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// publishes returns the payloads of the PUBLISHes among ps, in order.
func publishes(ps []packets.Packet) []string {
	var s []string
	for _, p := range ps {
		if pub, ok := p.(*packets.Publish); ok {
			s = append(s, string(pub.Payload))
		}
	}
	return s
}

func wantWire(t *testing.T, r *rig, when string, want ...string) {
	t.Helper()
	got := publishes(r.take())
	if len(got) != len(want) {
		t.Fatalf("%s: PUBLISHes %q, want %q", when, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: PUBLISHes %q, want %q", when, got, want)
		}
	}
}

// twoOnTheirWay returns a rig with Pipeline 2 whose QoS 2 messages 1 and
// 2 wait for two batches on their way, and those batches' operations.
func twoOnTheirWay(t *testing.T) (r *rig, ops1, ops2 []store.Op) {
	r = newRig(t, Config{Pipeline: 2})
	r.connect(windowOf(10))
	r.commit()
	r.publish(1, 2, "a", []byte("1"))
	ops1 = r.e.Commit()
	r.publish(2, 2, "a", []byte("2"))
	if !r.e.NeedsCommit() {
		t.Fatal("an urgent batch waits for the one being applied")
	}
	return r, ops1, r.e.Commit()
}

// durable applies ops, the oldest batch on its way, and reports it durable.
func (r *rig) durable(ops []store.Op) {
	r.apply(ops)
	r.e.Committed()
	r.effects()
}

// TestPipelineOverlaps: with Config.Pipeline, an urgent batch is taken
// while the one before it is being applied, no more than Pipeline at once,
// and what waits for each runs in the order the batches were taken.
func TestPipelineOverlaps(t *testing.T) {
	r, ops1, ops2 := twoOnTheirWay(t)
	r.publish(3, 2, "a", []byte("3"))
	if r.e.NeedsCommit() {
		t.Fatal("a third batch taken with Pipeline 2")
	}
	r.durable(ops1)
	wantWire(t, r, "first batch durable", "1")
	r.durable(ops2)
	wantWire(t, r, "second batch durable", "2")
	r.commit()
	wantWire(t, r, "third batch durable", "3")

	serial := newRig(t, Config{})
	serial.connect(windowOf(10))
	serial.commit()
	serial.publish(1, 2, "a", []byte("1"))
	serial.e.Commit()
	serial.publish(2, 2, "a", []byte("2"))
	if serial.e.NeedsCommit() {
		t.Fatal("without Pipeline, a batch taken while another is applied")
	}
}

// TestPipelineReadyFollowsNewest: a PUBLISH that needs nothing from the
// store, behind PUBLISHes waiting for two batches on their way, leaves
// right after the second (MQTT-4.6.0-1: in order), without making the
// batch being gathered urgent.
func TestPipelineReadyFollowsNewest(t *testing.T) {
	r, ops1, ops2 := twoOnTheirWay(t)
	r.publish(3, 1, "a", []byte("3"))
	if r.e.Urgent() {
		t.Fatal("the QoS 1 PUBLISH made the batch being gathered urgent")
	}
	wantWire(t, r, "nothing durable yet")
	r.durable(ops1)
	wantWire(t, r, "first batch durable", "1")
	r.durable(ops2)
	wantWire(t, r, "second batch durable", "2", "3")
}

// TestPipelineFailureTakesLaterBatches: when the oldest batch fails, the
// one taken after it fails with it, whether the store applied either or
// not: the publishes whose records were in them fail, none is sent, and
// the retry deletes their records (a reply may have been lost).
func TestPipelineFailureTakesLaterBatches(t *testing.T) {
	for _, applied := range []bool{false, true} {
		r, ops1, ops2 := twoOnTheirWay(t)
		if applied {
			r.apply(ops1) // replies lost: both took effect
			r.apply(ops2)
		}
		errDown := errors.New("store down")
		r.e.CommitFailed(errDown)
		r.effects()
		for _, id := range []int{1, 2} {
			if err, ok := r.outcome[id]; !ok || !errors.Is(err, errDown) {
				t.Fatalf("applied %v: publish %d ended with %v (ended %v), want the store's error", applied, id, err, ok)
			}
		}
		if !r.e.NeedsCommit() {
			t.Fatalf("applied %v: no retry queued", applied)
		}
		r.commit()
		wantWire(t, r, "after the retry")
		for seq, rec := range r.st {
			if rec.Dir == store.Outbound {
				t.Fatalf("applied %v: record %d of a failed publish left in the store", applied, seq)
			}
		}
	}
}
