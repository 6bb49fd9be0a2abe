package client

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// gatedScanner is a memory store whose Scan waits, for every page after
// the first, until gate is closed: a slow store reading a long session.
type gatedScanner struct {
	*memory.Store
	gate chan struct{}
}

func (g gatedScanner) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	if from > 0 {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	return g.Store.Scan(ctx, k, from, limit)
}

// TestScanHoldsRedelivery: a client resuming a session connects after the
// first page, before its scan has reached the inbound QoS 2 record at the
// session's end. The server redelivers that message (DUP 1): the client
// must not take it for new, so it reads it only once the scan has ended,
// then answers it as the recorded message it is — PUBREC without
// delivering it again (MQTT-4.3.3-10) — and completes the exchange at
// PUBREL. Meanwhile its own stored messages are resent.
func TestScanHoldsRedelivery(t *testing.T) {
	const queued = 2500 // three pages of the memory store's Scan
	st := gatedScanner{Store: memory.New(), gate: make(chan struct{})}
	var opened atomic.Bool
	delivered := make(chan *Message, 4)
	done := make(chan struct{})
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{SessionPresent: true})
		p.send(&packets.Publish{Topic: "in", QoS: 2, PacketID: 5, Dup: true, Payload: []byte("recorded")})
		resent := 0
		for {
			switch pk := p.read().(type) {
			case *packets.Publish:
				resent++
			case *packets.Ack:
				if pk.Kind != packets.PUBREC && pk.Kind != packets.PUBCOMP {
					t.Errorf("client sent %s", engine.TypeName(pk.Kind))
					return
				}
				if pk.PacketID != 5 {
					t.Errorf("client sent %s for identifier %d", engine.TypeName(pk.Kind), pk.PacketID)
					return
				}
				if !opened.Load() {
					t.Errorf("client answered the redelivery with %s before its scan reached the inbound record", engine.TypeName(pk.Kind))
				}
				if pk.Kind == packets.PUBREC {
					p.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 5})
					continue
				}
				if resent == 0 {
					t.Error("no stored message resent")
				}
				close(done)
				for { // the resends go on until the client disconnects
					if pk := p.read(); pk == nil || pk.Type() == packets.DISCONNECT {
						return
					}
				}
			case nil:
				return
			}
		}
	})
	id := uniqueID(t)
	k := store.Key{Server: url, ClientID: id}
	meta := engine.Meta{Expiry: 3600, LastConnected: time.Now(), Sent: 1}
	ops := []store.Op{store.Put(store.Record{Seq: store.MetaSeq, Dir: store.Meta, Packet: meta.Encode()})}
	for seq := uint64(1); seq <= queued; seq++ {
		b, err := packets.Append(nil, &packets.Publish{Topic: "out", QoS: 1, PacketID: 1, Payload: []byte("q")})
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, store.Put(store.Record{Seq: seq, Dir: store.Outbound, Packet: engine.AppendRef(b, "")}))
	}
	ops = append(ops, store.Put(engine.InboundRecord(queued+1, 5)))
	if err := st.Apply(context.Background(), k, ops...); err != nil {
		t.Fatal(err)
	}

	c := start(t, Config{Servers: []string{url}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		OnMessage: func(m *Message) { delivered <- m }})
	eventually(t, 10*time.Second, "the reader holding the redelivery", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.conn != nil && c.conn.paused.Load()
	})
	opened.Store(true)
	close(st.gate)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the exchange of the recorded message did not complete")
	}
	select {
	case m := <-delivered:
		t.Fatalf("the redelivery of a recorded QoS 2 message was delivered again: %q", m.Payload)
	default:
	}
	c.mu.Lock()
	recorded := c.eng.Recorded(5)
	c.mu.Unlock()
	if recorded {
		t.Error("identifier 5 still recorded after PUBCOMP")
	}
}

// flakyScanner is a memory store whose Scan fails, for pages after the
// first, until fails reaches zero: a store that drops out while the
// client reads a long session.
type flakyScanner struct {
	*memory.Store
	fails *atomic.Int32
	first bool // the first page fails too
}

func (f flakyScanner) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	if (from > 0 || f.first) && f.fails.Add(-1) >= 0 {
		return nil, 0, fmt.Errorf("flaky: %w", store.ErrUnavailable)
	}
	return f.Store.Scan(ctx, k, from, limit)
}

// TestScanRetries: reading a stored session fails now and then, after the
// client has connected or before (the connection attempt then fails and
// the next one reads the session again); the client retries, sends every
// stored message once and in order, and a publish made meanwhile waits for
// the scan and goes after them.
func TestScanRetries(t *testing.T) {
	for _, first := range []bool{false, true} {
		t.Run(fmt.Sprintf("first=%v", first), func(t *testing.T) { testScanRetries(t, first) })
	}
}

func testScanRetries(t *testing.T, first bool) {
	b := broker(t, testenv.WithMaxInflight(10))
	col := subscriber(t, b.URL(), "flaky")
	fails := new(atomic.Int32)
	st := flakyScanner{Store: memory.New(), fails: fails, first: first}
	id := uniqueID(t)
	const n = 2500 // three pages of the memory store's Scan
	a, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		a.PublishAsync(&Message{Topic: "flaky", QoS: byte(1 + i%2), Payload: []byte(strconv.Itoa(i))})
	}
	a.Close()

	fails.Store(4)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour, LoadWindow: 100})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Publish(ctx, &Message{Topic: "flaky", QoS: 1, Payload: []byte(strconv.Itoa(n))}); err != nil {
		t.Fatalf("publish after the resume: %v", err)
	}
	checkOrder(t, col.waitFor(t, n+1, 30*time.Second), n+1)
	if left := fails.Load(); left > 0 {
		t.Fatalf("the store failed %d times of 4", 4-left)
	}
}
