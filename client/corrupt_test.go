package client

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
	"github.com/tethermq/tether/store/memory"
)

// seed writes recs into st under the session of url/id.
func seed(t testing.TB, st store.SessionStore, url, id string, recs ...store.Record) store.Key {
	t.Helper()
	sv, err := parseServer(url)
	if err != nil {
		t.Fatal(err)
	}
	k := store.Key{Server: sv.canonical, ClientID: id}
	ops := make([]store.Op, len(recs))
	for i, r := range recs {
		ops[i] = store.Put(r)
	}
	if err := st.Apply(context.Background(), k, ops...); err != nil {
		t.Fatal(err)
	}
	return k
}

func storedPublish(t testing.TB, p *packets.Publish) []byte {
	t.Helper()
	b, err := packets.Append(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// craftedMeta is a meta record whose first subscription claims a filter
// length of 2^64-1: the length check used to wrap and slice past the end.
func craftedMeta() []byte {
	b := []byte{1} // the meta record's version
	b = binary.BigEndian.AppendUint32(b, 3600)
	b = binary.BigEndian.AppendUint64(b, uint64(time.Now().UnixMilli()))
	b = binary.AppendUvarint(b, 1)
	b = binary.AppendUvarint(b, math.MaxUint64)
	return append(b, 'x', 0)
}

// TestCorruptMetaRecord: a meta record crafted to overflow the decoder's
// length check is reported, never a panic; the client starts a clean
// session (it holds no usable state) and connects.
func TestCorruptMetaRecord(t *testing.T) {
	b := broker(t)
	st := memory.New()
	id := uniqueID(t)
	seed(t, st, b.URL(), id, store.Record{Seq: store.MetaSeq, Dir: store.Meta, Packet: craftedMeta()})
	got := make(chan *store.CorruptError, 4)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		OnCorrupt: func(e *store.CorruptError) { got <- e }})
	select {
	case e := <-got:
		if !slices.Equal(e.Seqs, []uint64{store.MetaSeq}) || !errors.Is(e, store.ErrCorrupt) || !errors.Is(e, engine.ErrBadMeta) {
			t.Fatalf("OnCorrupt got %v, want seq 0 with its cause", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnCorrupt not called")
	}
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "t", QoS: 1}); err != nil {
		t.Fatal(err)
	}
}

// TestSequenceNumbersNeverWrap: records at the top of the uint64 range are
// reported corrupt instead of making the next sequence number wrap onto a
// queued message or onto the meta record; the queued message is still sent
// once.
func TestSequenceNumbersNeverWrap(t *testing.T) {
	b := broker(t)
	col := subscriber(t, b.URL(), "wrap")
	st := memory.New()
	id := uniqueID(t)
	queued := storedPublish(t, &packets.Publish{Topic: "wrap", QoS: 1, PacketID: 1, Payload: []byte("queued")})
	k := seed(t, st, b.URL(), id,
		store.Record{Seq: 1, Dir: store.Outbound, Packet: queued},
		store.Record{Seq: math.MaxUint64 - 1, Dir: store.Outbound, Packet: queued},
		store.Record{Seq: math.MaxUint64, Dir: store.Outbound, Packet: queued})
	c, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok := c.PublishAsync(&Message{Topic: "wrap", QoS: 1, Payload: []byte("new")}) // offline: stored
	bad := c.Corrupt()
	if bad == nil || !slices.Equal(bad.Seqs, []uint64{math.MaxUint64 - 1, math.MaxUint64}) {
		t.Fatalf("Corrupt() = %v, want the two out-of-range records", bad)
	}
	var seqs []uint64
	eventually(t, 5*time.Second, "the new message stored", func() bool {
		recs, err := st.Load(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		seqs = seqs[:0]
		for _, r := range recs {
			seqs = append(seqs, r.Seq)
		}
		return len(seqs) == 4
	})
	if !slices.Equal(seqs, []uint64{1, 2, math.MaxUint64 - 1, math.MaxUint64}) {
		t.Fatalf("stored seqs %v: the new message must take seq 2", seqs)
	}
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := tok.Wait(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	msgs := col.waitFor(t, 2, 10*time.Second)
	col.quiet(t, 2, 300*time.Millisecond)
	if string(msgs[0].Payload) != "queued" || string(msgs[1].Payload) != "new" {
		t.Fatalf("got %q, %q", msgs[0].Payload, msgs[1].Payload)
	}
	n, err := c.DiscardCorrupt(ctxT(t, 5*time.Second))
	if err != nil || n != 2 {
		t.Fatalf("DiscardCorrupt = %d, %v", n, err)
	}
	eventually(t, 5*time.Second, "store empty of outbound records", func() bool {
		return countDir(records(t, st, b.URL(), id), store.Outbound) == 0
	})
}

// TestStoredAliasPublishCorrupt: a stored PUBLISH that no server would
// accept (empty topic with a topic alias, which used to loop on 0x82
// reconnects) is reported and never sent; the packet identifier it holds
// stays out of use until DiscardCorrupt removes it (MQTT-2.2.1-3).
func TestStoredAliasPublishCorrupt(t *testing.T) {
	b := broker(t)
	st := memory.New()
	id := uniqueID(t)
	p := &packets.Publish{Topic: "", QoS: 1, PacketID: 1, Payload: []byte("x")}
	p.Properties.TopicAlias = 3
	seed(t, st, b.URL(), id, store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: storedPublish(t, p)})
	lost := make(chan error, 8)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		OnConnectionLost: func(err error) { lost <- err }})
	if c.Corrupt() == nil {
		t.Fatal("no corruption reported")
	}
	c.mu.Lock()
	reserved := c.eng.IDInUse(1)
	c.mu.Unlock()
	if !reserved {
		t.Fatal("packet identifier 1 of the corrupt record is free")
	}
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "t", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		t.Fatalf("connection lost: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := c.DiscardCorrupt(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	reserved = c.eng.IDInUse(1)
	c.mu.Unlock()
	if reserved || c.Corrupt() != nil {
		t.Fatal("identifier still reserved or corruption still reported after DiscardCorrupt")
	}
}

// randomRecord makes a record that is sometimes valid, sometimes damaged.
func randomRecord(r *rand.Rand) store.Record {
	rec := store.Record{Seq: r.Uint64N(64), Dir: store.Direction(r.IntN(4)), ID: uint16(r.IntN(8))}
	switch r.IntN(6) {
	case 0:
		rec.Seq = math.MaxUint64 - r.Uint64N(3)
	case 1:
		rec.Packet = craftedMeta()
	case 2:
		m := engine.Meta{Expiry: r.Uint32(), LastConnected: time.Now(), Subs: []engine.Sub{{Filter: "a/#"}}}
		rec.Packet = m.Encode()
	}
	if rec.Packet == nil {
		p := &packets.Publish{Topic: "t", QoS: byte(r.IntN(3)), Payload: []byte("p")}
		if p.QoS > 0 {
			p.PacketID = 1
		}
		rec.Packet, _ = packets.Append(nil, p)
	}
	if r.IntN(3) == 0 && len(rec.Packet) > 0 { // damage it
		for range 1 + r.IntN(3) {
			rec.Packet[r.IntN(len(rec.Packet))] = byte(r.Uint32())
		}
		rec.Packet = rec.Packet[:r.IntN(len(rec.Packet)+1)]
	}
	return rec
}

// loadAll runs the session load path over whatever st holds for the key:
// no panic, no hang, and every record either used or reported.
func loadAll(t *testing.T, st store.SessionStore, id string) {
	t.Helper()
	c, err := New(Config{Servers: []string{"mqtt://127.0.0.1:1"}, ClientID: id, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok := c.PublishAsync(&Message{Topic: "t", QoS: 1}) // loads the session first
	if err := tok.Err(); err != nil {
		t.Fatalf("publish after load: %v", err)
	}
}

// FuzzLoadSession feeds random and damaged records through store.Op into
// a store, then starts a client on it: the load path never panics or hangs.
func FuzzLoadSession(f *testing.F) {
	for i := range 8 {
		f.Add(uint64(i))
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		r := rand.New(rand.NewPCG(seed, 1))
		st := memory.New()
		k := store.Key{Server: "mqtt://127.0.0.1:1", ClientID: "fuzz"}
		var ops []store.Op
		for range 1 + r.IntN(12) {
			ops = append(ops, store.Put(randomRecord(r)))
		}
		if err := st.Apply(context.Background(), k, ops...); err != nil {
			t.Fatal(err)
		}
		loadAll(t, st, "fuzz")
	})
}

// TestLoadSessionDamagedBolt runs the same random records through a
// durable backend, where they also pass through its encoding.
func TestLoadSessionDamagedBolt(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.bolt"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 200 {
		k := store.Key{Server: "mqtt://127.0.0.1:1", ClientID: "fuzz"}
		if err := st.Clear(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		var ops []store.Op
		for range 1 + r.IntN(12) {
			ops = append(ops, store.Put(randomRecord(r)))
		}
		if err := st.Apply(context.Background(), k, ops...); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		loadAll(t, st, "fuzz")
	}
}
