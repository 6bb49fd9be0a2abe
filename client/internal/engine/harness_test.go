package engine

import (
	"testing"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// link is a connection's liveness for scripted tests.
type link struct{ closed bool }

func (l *link) Closed() bool { return l.closed }

// rig drives an engine by hand: it performs effects into slices a test
// inspects, and applies store batches only when told to, so that a test
// sees exactly what waits for what.
type rig struct {
	t         *testing.T
	e         *Engine
	st        map[uint64]store.Record // what is durable
	link      *link
	wire      []packets.Packet // packets written, decoded back from their bytes
	nums      []uint64         // the numbered writes among them
	delivered []*Inbound
	outcome   map[int]error // ticket → Complete's error
	elsewhere []Effect      // StoreAt effects
	stored    map[int]bool
	puts      map[uint64]int // if set, commit counts the Puts of each outbound record
	tailReqs  []Effect       // ReadTail effects not yet served
	now       time.Time
}

func newRig(t *testing.T, cfg Config) *rig {
	r := &rig{t: t, e: New(cfg), st: map[uint64]store.Record{}, outcome: map[int]error{}, stored: map[int]bool{},
		now: time.Unix(1_700_000_000, 0)}
	r.e.Load(store.Key{Server: "mqtt://sim:1883", ClientID: "c"}, nil, nil)
	r.effects()
	return r
}

// load loads a session of recs and a meta record, as a process restarting
// on a store would.
func (r *rig) load(recs ...store.Record) {
	m := Meta{Expiry: 3600, LastConnected: r.now}
	all := append([]store.Record{{Seq: store.MetaSeq, Dir: store.Meta, Packet: m.Encode()}}, recs...)
	for _, rec := range all {
		r.st[rec.Seq] = rec
	}
	r.e.Load(r.e.key, all, nil)
	r.effects()
}

// effects performs the effects queued so far.
func (r *rig) effects() {
	r.t.Helper()
	for _, f := range r.e.Effects() {
		switch f.Kind {
		case Write, Publish0:
			b, err := packets.Append(nil, f.Packet)
			if err != nil {
				r.t.Fatalf("encode %T: %v", f.Packet, err)
			}
			p, err := packets.Decode(b, 0)
			if err != nil {
				r.t.Fatalf("decode what the engine wrote: %v", err)
			}
			r.wire = append(r.wire, p)
			if pub, ok := p.(*packets.Publish); ok && pub.QoS > 0 {
				r.coveredBySent(pub)
			}
			if f.Kind == Write {
				r.nums = append(r.nums, f.Num)
			} else {
				r.outcome[f.Ticket.(int)] = nil
			}
		case Deliver:
			r.delivered = append(r.delivered, f.In)
		case Complete:
			id := f.Ticket.(int)
			if _, dup := r.outcome[id]; dup {
				r.t.Fatalf("publish %d completed twice", id)
			}
			r.outcome[id] = f.Err
		case Stored:
			r.stored[f.Ticket.(int)] = true
		case StoreAt:
			r.elsewhere = append(r.elsewhere, f)
		case ReadTail:
			r.tailReqs = append(r.tailReqs, f)
		}
	}
}

// coveredBySent checks that a process loading the durable session now
// would take the PUBLISH p for maybe sent: its record holds its identifier
// and lies within the meta record's Sent. A QoS 1 PUBLISH may leave before
// its record is durable (mayLeave), but not before a record of it without
// the identifier, and only within Sent, so that the record, once durable,
// is taken for maybe sent.
func (r *rig) coveredBySent(p *packets.Publish) {
	r.t.Helper()
	mr, seen := r.st[store.MetaSeq]
	m, _ := DecodeMeta(mr.Packet)
	for _, rec := range r.st {
		if rec.Dir == store.Outbound && rec.ID == p.PacketID {
			if !MaybeSent(m, seen, rec) {
				r.t.Fatalf("PUBLISH id %d (seq %d) written before a durable meta record covered it (Sent %d)", p.PacketID, rec.Seq, m.Sent)
			}
			return
		}
	}
	o := r.e.byID[p.PacketID]
	switch {
	case p.QoS != 1:
		r.t.Fatalf("QoS %d PUBLISH id %d written without a durable record", p.QoS, p.PacketID)
	case o == nil:
		r.t.Fatalf("PUBLISH id %d written for no message", p.PacketID)
	case !seen || o.seq > m.Sent:
		r.t.Fatalf("QoS 1 PUBLISH id %d (seq %d) written before a durable meta record covered it (Sent %d)", p.PacketID, o.seq, m.Sent)
	}
	if rec, ok := r.st[o.seq]; ok {
		r.t.Fatalf("QoS 1 PUBLISH id %d written while its durable record has identifier %d", p.PacketID, rec.ID)
	}
}

// commit applies every batch the engine has queued, one at a time.
func (r *rig) commit() {
	r.t.Helper()
	for r.e.NeedsCommit() {
		r.commitOnce()
	}
}

// commitOnce commits one batch, even an empty one.
func (r *rig) commitOnce() {
	r.t.Helper()
	r.apply(r.e.Commit())
	r.e.Committed()
	r.effects()
}

// apply makes ops durable, as a store applying a batch does.
func (r *rig) apply(ops []store.Op) {
	for _, op := range ops {
		if op.Kind == store.OpPut {
			rec := op.Record
			rec.Packet = append([]byte(nil), rec.Packet...)
			r.st[rec.Seq] = rec
			if r.puts != nil && rec.Dir == store.Outbound {
				r.puts[rec.Seq]++
			}
		} else {
			delete(r.st, op.Record.Seq)
		}
	}
}

// countPuts makes commit count the Puts of each outbound record from now
// on, and returns the counts.
func (r *rig) countPuts() map[uint64]int {
	r.puts = map[uint64]int{}
	return r.puts
}

// connect brings a connection up with a CONNACK carrying ca's fields.
func (r *rig) connect(ca packets.Connack) {
	r.t.Helper()
	r.commit()
	clean, _ := r.e.Prepare(r.now, false)
	r.effects()
	r.commit()
	r.link = &link{}
	if _, err := r.e.Connected(r.link, &ca, clean, r.now); err != nil {
		r.t.Fatal(err)
	}
	r.effects()
}

// cut ends the connection; handed is how many numbered writes reached the
// network.
func (r *rig) cut(handed uint64) {
	r.link.closed = true
	r.e.Disconnected(handed, r.now)
	r.effects()
}

// publish publishes a QoS 1 or 2 message as ticket id.
func (r *rig) publish(id int, qos byte, topic string, payload []byte) {
	p := &packets.Publish{Topic: topic, QoS: qos, Payload: payload}
	r.e.Publish(new(Msg), p, "", id)
	r.effects()
}

// take returns the packets written since the last take.
func (r *rig) take() []packets.Packet {
	w := r.wire
	r.wire = nil
	return w
}

func (r *rig) receive(p packets.Packet) error {
	r.t.Helper()
	var err error
	switch p := p.(type) {
	case *packets.Publish:
		if err = r.e.Resolve(p); err == nil {
			if p.QoS == 0 {
				break
			}
			err = r.e.Arrived(&Inbound{QoS: p.QoS, ID: p.PacketID, Dup: p.Dup, App: string(p.Payload), Cost: len(p.Payload)})
		}
	case *packets.Ack:
		r.e.Received(p)
	}
	r.effects()
	return err
}

func ack(kind packets.Type, id uint16) *packets.Ack { return &packets.Ack{Kind: kind, PacketID: id} }

func kinds(ps []packets.Packet) []string {
	var s []string
	for _, p := range ps {
		name := TypeName(p.Type())
		switch p := p.(type) {
		case *packets.Publish:
			if p.Dup {
				name += "(dup)"
			}
		case *packets.Ack:
			name = TypeName(p.Kind)
		}
		s = append(s, name)
	}
	return s
}
