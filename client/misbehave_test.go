package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// TestAliasNeverExceedsMaximumPacketSize: a PUBLISH that fits the server's
// Maximum Packet Size only without a Topic Alias goes out without one
// (MQTT-3.2.2-15). It used to get the alias, be disconnected with 0x95 and
// loop on every reconnection with the message stuck in the store.
func TestAliasNeverExceedsMaximumPacketSize(t *testing.T) {
	const limit = 1000
	b := broker(t, testenv.WithConfig(func(c *testenv.MosquittoConfig) { c.MaxPacketSize = limit }))
	col := subscriber(t, b.URL(), "big/#")
	lost := make(chan error, 8)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), OutboundTopicAliases: true,
		OnConnectionLost: func(err error) { lost <- err }})
	c.mu.Lock()
	announced := c.eng.Limits().MaxPacket
	c.mu.Unlock()
	if announced != limit {
		t.Fatalf("server announced Maximum Packet Size %d, want %d", announced, limit)
	}
	// A payload that makes the alias-less packet exactly the limit.
	p := &packets.Publish{Topic: "big/one", QoS: 1, PacketID: 1}
	base, _ := packets.Size(p)
	payload := []byte(strings.Repeat("x", limit-base-1)) // the length field grows by a byte
	p.Payload = payload
	if n, _ := packets.Size(p); n != limit {
		t.Fatalf("test packet is %d bytes, want %d", n, limit)
	}
	for i := range 3 { // the first use of a topic, then a repeat
		if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "big/one", QoS: 1, Payload: payload}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// A short topic is still aliased.
	if err := c.Publish(ctxT(t, 5*time.Second), &Message{Topic: "big/two", QoS: 1, Payload: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, 4, 5*time.Second)
	select {
	case err := <-lost:
		t.Fatalf("connection lost: %v", err)
	default:
	}
	c.mu.Lock()
	_, aliased := c.eng.AliasOf("big/two")
	_, bigAliased := c.eng.AliasOf("big/one")
	c.mu.Unlock()
	if !aliased || bigAliased {
		t.Errorf("aliases: big/two %v (want true), big/one %v (want false)", aliased, bigAliased)
	}
}

// TestStoredMessageTooLargeFailsOnce: a message stored while offline that
// the server's Maximum Packet Size turns out to refuse fails once with
// ErrPacketTooLarge and leaves the store; the messages around it are sent,
// and the connection is never dropped for it.
func TestStoredMessageTooLargeFailsOnce(t *testing.T) {
	const limit = 1000
	b := broker(t, testenv.WithConfig(func(c *testenv.MosquittoConfig) { c.MaxPacketSize = limit }))
	col := subscriber(t, b.URL(), "stored/#")
	st := memory.New()
	id := uniqueID(t)
	lost := make(chan error, 8)
	c, err := New(Config{Servers: []string{b.URL()}, ClientID: id, Store: st, SessionExpiry: time.Hour,
		OnConnectionLost: func(err error) { lost <- err }, ReconnectBackoff: Backoff{Min: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var toks []*Token
	for i, size := range []int{10, 5000, 10, 2 * limit, 10} {
		toks = append(toks, c.PublishAsync(&Message{Topic: fmt.Sprintf("stored/%d", i), QoS: byte(1 + i%2),
			Payload: make([]byte, size)}))
	}
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks {
		err := tok.Wait(ctxT(t, 5*time.Second))
		if big := i == 1 || i == 3; big != errors.Is(err, ErrPacketTooLarge) {
			t.Errorf("message %d: %v", i, err)
		}
	}
	col.waitFor(t, 3, 5*time.Second)
	col.quiet(t, 3, 200*time.Millisecond)
	eventually(t, 5*time.Second, "records deleted", func() bool {
		return countDir(records(t, st, b.URL(), id), store.Outbound) == 0
	})
	select {
	case err := <-lost:
		t.Fatalf("connection lost: %v", err)
	default:
	}
}

// TestPublishesOnDyingConnectionNotLost: publishes accepted while the
// connection is failing (the server sends a malformed packet right after
// SUBACK) are never reported lost unless they reached the network: with
// Session Expiry 0 the next connection starts a new session, and every
// message the first connection did not carry is sent on it, with DUP 0
// (MQTT-3.3.1-1); only those it did carry are reported lost.
func TestPublishesOnDyingConnectionNotLost(t *testing.T) {
	for round := range 6 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			var mu sync.Mutex
			first := map[string]bool{}
			second := map[string]bool{}
			dup := false
			done := make(chan struct{})
			url := scriptedServer(t, func(p *peer) {
				p.accept(&packets.Connack{})
				s, _ := p.expect(packets.SUBSCRIBE).(*packets.Subscribe)
				if s == nil {
					return
				}
				ack, _ := packets.Append(nil, &packets.Suback{PacketID: s.PacketID, ReasonCodes: []packets.ReasonCode{1}})
				p.nc.Write(append(ack, 0x00, 0x00)) // packet type 0: malformed
				for {
					pk, err := p.r.Read()
					if err != nil {
						return
					}
					if pub, ok := pk.(*packets.Publish); ok {
						mu.Lock()
						first[string(pub.Payload)] = true
						mu.Unlock()
					}
				}
			}, func(p *peer) {
				p.accept(&packets.Connack{})
				for {
					pk, err := p.r.Read()
					if err != nil {
						return
					}
					if pub, ok := pk.(*packets.Publish); ok {
						mu.Lock()
						second[string(pub.Payload)] = true
						dup = dup || pub.Dup
						n := len(second)
						mu.Unlock()
						p.send(&packets.Ack{Kind: packets.PUBACK, PacketID: pub.PacketID})
						if n == 1 {
							close(done)
						}
					}
				}
			})
			var lostMu sync.Mutex
			var reported []string
			c, err := New(Config{Servers: []string{url}, ClientID: uniqueID(t),
				ReconnectBackoff: Backoff{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond},
				OnSessionLost: func(lost []*Message, _ bool) {
					lostMu.Lock()
					for _, m := range lost {
						reported = append(reported, string(m.Payload))
					}
					lostMu.Unlock()
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "x"}); err != nil {
				t.Fatal(err)
			}
			toks := map[string]*Token{}
			for i := range 10 {
				m := fmt.Sprint(i)
				toks[m] = c.PublishAsync(&Message{Topic: "t", QoS: 1, Payload: []byte(m)})
			}
			for m, tok := range toks {
				if err := tok.Wait(ctxT(t, 10*time.Second)); err != nil && !errors.Is(err, ErrSessionLost) {
					t.Fatalf("message %s: %v", m, err)
				}
			}
			// OnSessionLost runs once the new connection is set up, which
			// may be after the lost publishes have failed.
			mu.Lock()
			carried := len(first)
			mu.Unlock()
			eventually(t, 5*time.Second, "OnSessionLost called", func() bool {
				lostMu.Lock()
				defer lostMu.Unlock()
				return len(reported) >= carried
			})
			mu.Lock()
			defer mu.Unlock()
			lostMu.Lock()
			defer lostMu.Unlock()
			for m, tok := range toks {
				wasLost := errors.Is(tok.Err(), ErrSessionLost)
				if wasLost != first[m] {
					t.Errorf("message %s: carried by the first connection %v, reported lost %v", m, first[m], wasLost)
				}
				if !first[m] && !second[m] {
					t.Errorf("message %s never sent", m)
				}
			}
			if len(reported) != len(first) {
				t.Errorf("OnSessionLost reported %v, the first connection carried %v", reported, first)
			}
			if dup {
				t.Error("a first transmission carried DUP 1")
			}
			t.Logf("first connection carried %d, second %d", len(first), len(second))
		})
	}
}

// recordedSession seeds st with a live session of url/id whose inbound
// QoS 2 message ids are recorded (PUBREC sent, PUBREL awaited).
func recordedSession(t *testing.T, st store.SessionStore, url, id string, ids ...uint16) {
	t.Helper()
	m := engine.Meta{Expiry: 3600, LastConnected: time.Now()}
	recs := []store.Record{{Seq: store.MetaSeq, Dir: store.Meta, Packet: m.Encode()}}
	for i, pid := range ids {
		recs = append(recs, store.Record{Seq: uint64(i + 1), Dir: store.Inbound, ID: pid, Packet: engine.InboundRecord(0, 0).Packet})
	}
	seed(t, st, url, id, recs...)
}

// TestRepeatedQoS2ResendsBounded: a server that repeats a recorded QoS 2
// PUBLISH while an earlier message is still with the application gets one
// PUBREC for it, in its turn (MQTT-4.3.3-10, MQTT-4.6.0-3), and the client
// queues nothing per repeat: 20,000 repeats used to queue 20,000 answers.
func TestRepeatedQoS2ResendsBounded(t *testing.T) {
	const repeats = 20000
	recs := make(chan []uint16, 1)
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{SessionPresent: true})
		p.send(&packets.Publish{Topic: "a", QoS: 2, PacketID: 1, Payload: []byte("held")})
		var buf []byte
		for range repeats {
			buf, _ = packets.Append(buf, &packets.Publish{Topic: "a", QoS: 2, PacketID: 5, Dup: true})
		}
		buf, _ = packets.Append(buf, &packets.Publish{Topic: "marker"})
		p.nc.Write(buf)
		var got []uint16
		for len(got) < 2 {
			a, ok := p.expect(packets.PUBREC).(*packets.Ack)
			if !ok {
				break
			}
			got = append(got, a.PacketID)
		}
		// Anything more than the two answers would come before this.
		p.send(&packets.Publish{Topic: "marker2"})
		for {
			pk, err := p.r.Read()
			if err != nil {
				break
			}
			if a, ok := pk.(*packets.Ack); ok && a.Kind == packets.PUBREC {
				got = append(got, a.PacketID)
			}
		}
		recs <- got
	})
	st := memory.New()
	id := uniqueID(t)
	recordedSession(t, st, url, id, 5)
	held := make(chan *Message, 1)
	marker := make(chan string, 2)
	c, _ := peerClient(t, url, Config{ClientID: id, Store: st, SessionExpiry: time.Hour, ManualAck: true,
		OnMessage: func(m *Message) {
			switch m.Topic {
			case "a":
				held <- m
			default:
				marker <- m.Topic
			}
		}})
	m := <-held
	select {
	case <-marker:
	case <-time.After(10 * time.Second):
		t.Fatal("marker not delivered")
	}
	c.mu.Lock()
	queued := c.eng.InboundQueued()
	c.mu.Unlock()
	if queued > 2 {
		t.Fatalf("%d acknowledgements queued for 2 messages", queued)
	}
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-marker:
	case <-time.After(10 * time.Second):
		t.Fatal("second marker not delivered")
	}
	c.Close()
	if got := <-recs; len(got) != 2 || got[0] != 1 || got[1] != 5 {
		t.Fatalf("PUBRECs %v, want [1 5]", got)
	}
}

// TestPubrelBeforeQueuedAnswer: a server that repeats a recorded QoS 2
// PUBLISH and then releases it while that repeat's PUBREC still waits
// behind a message with the application: the release deletes the record,
// and the late PUBREC must not record the message again, or the next
// message with that identifier would be taken for a repeat and lost.
func TestPubrelBeforeQueuedAnswer(t *testing.T) {
	finished := make(chan struct{})
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{SessionPresent: true})
		p.send(&packets.Publish{Topic: "a", QoS: 2, PacketID: 1, Payload: []byte("held")})
		p.send(&packets.Publish{Topic: "a", QoS: 2, PacketID: 5, Dup: true})
		p.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 5})
		p.expect(packets.PUBCOMP)
		p.expect(packets.PUBREC) // id 1, once the application acknowledges it
		p.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 1})
		p.expect(packets.PUBCOMP)
		// A new message reusing identifier 5 must be delivered.
		p.send(&packets.Publish{Topic: "a", QoS: 2, PacketID: 5, Payload: []byte("new")})
		p.expect(packets.PUBREC)
		p.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 5})
		p.expect(packets.PUBCOMP)
		close(finished)
		p.expect(packets.DISCONNECT)
	})
	st := memory.New()
	id := uniqueID(t)
	recordedSession(t, st, url, id, 5)
	got := make(chan *Message, 4)
	c, _ := peerClient(t, url, Config{ClientID: id, Store: st, SessionExpiry: time.Hour, ManualAck: true,
		OnMessage: func(m *Message) { got <- m }})
	first := <-got
	eventually(t, 5*time.Second, "PUBREL handled", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		ok := c.eng.Recorded(5)
		return !ok
	})
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m.Payload) != "new" {
			t.Fatalf("got %q", m.Payload)
		}
		m.Ack()
	case <-time.After(5 * time.Second):
		t.Fatal("the new message with identifier 5 was not delivered")
	}
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("exchange of the new message not finished")
	}
}

// silentServer accepts one connection, answers CONNACK, then reads nothing
// more: the client's writes pile up in the kernel and then in the client.
func silentServer(t *testing.T, ca *packets.Connack, after func(p *peer)) string {
	stop := make(chan struct{})
	url := scriptedServer(t, func(p *peer) {
		p.accept(ca)
		if tc, ok := p.nc.(interface{ SetReadBuffer(int) error }); ok {
			tc.SetReadBuffer(4096)
		}
		p.nc.SetDeadline(time.Now().Add(time.Minute))
		if after != nil {
			after(p)
		}
		<-stop // never drains the client's writes
	})
	t.Cleanup(func() { close(stop) }) // runs before the server's own cleanup
	return url
}

// TestStalledServerBoundsQoS0: against a server that stopped reading, QoS 0
// publishes fail with ErrBufferFull once Config.MaxWriteBuffer bytes wait,
// Publish waits for room within its context, and WriteTimeout ends the
// connection. 368,532 QoS 0 publishes used to all return nil into an
// unbounded buffer.
func TestStalledServerBoundsQoS0(t *testing.T) {
	const limit = 256 << 10
	url := silentServer(t, &packets.Connack{}, nil)
	lost := make(chan error, 1)
	c, err := New(Config{Servers: []string{url}, ClientID: uniqueID(t), MaxWriteBuffer: limit,
		WriteTimeout: time.Second, KeepAlive: -1, OnConnectionLost: func(err error) { lost <- err },
		ReconnectBackoff: Backoff{Min: time.Minute, Max: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1024)
	full := 0
	for range 100000 {
		err := c.PublishAsync(&Message{Topic: "t", Payload: payload}).Err()
		if errors.Is(err, ErrBufferFull) {
			full++
			c.mu.Lock()
			cn := c.conn
			c.mu.Unlock()
			if cn == nil {
				break
			}
			cn.wmu.Lock()
			n := len(cn.wbuf)
			cn.wmu.Unlock()
			if n > limit+2048 {
				t.Fatalf("%d bytes buffered, limit %d", n, limit)
			}
			break
		} else if err != nil {
			t.Logf("publish: %v", err)
			break // the connection ended (write timeout)
		}
	}
	if full == 0 {
		t.Fatal("100,000 QoS 0 publishes of 1 KiB to a server that reads nothing never found the buffer full")
	}
	// Publish waits for room; once the kernel's buffers are full too, it
	// waits until its deadline.
	waited := false
	for range 100000 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := c.Publish(ctx, &Message{Topic: "t", Payload: payload})
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			waited = true
			break
		}
		if err != nil {
			t.Logf("publish: %v", err)
			break // the connection ended (write timeout)
		}
	}
	if !waited {
		t.Fatal("Publish never waited for room in the write buffer")
	}
	// Keep publishing until the connection ends: on a loaded machine the
	// wait above may also be a writer not scheduled for 50 ms, with the
	// kernel's buffers not full yet, and then nothing would block a write.
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-lost:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("connection lost with %v, want the write deadline", err)
			}
			return
		case <-deadline:
			t.Fatal("WriteTimeout did not end the connection to a server that reads nothing")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		if err := c.Publish(ctx, &Message{Topic: "t", Payload: payload}); errors.Is(err, ErrNotConnected) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}
}

// TestFloodingServerNotReading: a server that floods PUBREL for unknown
// identifiers and never reads the PUBCOMPs loses the connection with
// ErrServerNotReading once they fill Config.MaxWriteBuffer; they used to
// grow the client to hundreds of megabytes with keep alive content.
func TestFloodingServerNotReading(t *testing.T) {
	url := silentServer(t, &packets.Connack{}, func(p *peer) {
		var buf []byte
		for id := uint16(1); id < 4096; id++ {
			buf, _ = packets.Append(buf, &packets.Ack{Kind: packets.PUBREL, PacketID: id})
		}
		p.nc.SetWriteDeadline(time.Now().Add(2 * time.Minute))
		for {
			if _, err := p.nc.Write(buf); err != nil {
				return
			}
		}
	})
	lost := make(chan error, 1)
	c, err := New(Config{Servers: []string{url}, ClientID: uniqueID(t), MaxWriteBuffer: 64 << 10,
		WriteTimeout: time.Minute, OnConnectionLost: func(err error) { lost <- err },
		ReconnectBackoff: Backoff{Min: time.Minute, Max: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Small kernel buffers, so the test does not spend its time filling
	// megabytes of them on a loaded machine.
	c.mu.Lock()
	if tc, ok := c.conn.nc.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	c.mu.Unlock()
	select {
	case err := <-lost:
		if !errors.Is(err, ErrServerNotReading) {
			t.Fatalf("connection lost with %v, want ErrServerNotReading", err)
		}
	case <-time.After(90 * time.Second): // the kernel's socket buffers fill first: megabytes of PUBCOMPs
		t.Fatal("the flood did not end the connection")
	}
}

// TestSlowHandlerPausesReading: inbound messages held for a blocked handler
// stop at Config.MaxInboundBytes (the reader pauses; the server meets TCP
// flow control), keep alive does not end the paused connection, and every
// message is delivered once the handler goes on: none is dropped.
func TestSlowHandlerPausesReading(t *testing.T) {
	const limit = 1 << 20
	const n = 200
	payload := make([]byte, 32<<10) // 200 × 32 KiB = 6.4 MiB sent
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p.nc.SetDeadline(time.Now().Add(time.Minute))
		for i := range n {
			p.send(&packets.Publish{Topic: "slow", Payload: payload, Properties: packets.Properties{
				User: []packets.UserProperty{{Key: "i", Value: fmt.Sprint(i)}}}})
		}
		p.expect(packets.DISCONNECT)
	})
	release := make(chan struct{})
	var got atomic.Int64
	c, lost := peerClient(t, url, Config{MaxInboundBytes: limit, KeepAlive: time.Second, MaxQueuedQoS0: 1 << 20,
		OnMessage: func(*Message) {
			<-release
			got.Add(1)
		}})
	peak := 0
	deadline := time.Now().Add(3 * time.Second) // three keep alive periods
	for time.Now().Before(deadline) {
		c.deliv.mu.Lock()
		peak = max(peak, c.deliv.bytes)
		c.deliv.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	if peak > limit+len(payload)+1024 {
		t.Fatalf("%d bytes held for the handler, limit %d", peak, limit)
	}
	if peak < limit/2 {
		t.Fatalf("only %d bytes held: the test did not fill the queue", peak)
	}
	select {
	case err := <-lost:
		t.Fatalf("connection lost while reading was paused: %v", err)
	default:
	}
	close(release)
	eventually(t, 20*time.Second, "every message delivered", func() bool { return got.Load() == n })
}

// TestServerURLs: credentials in a server URL are sent to that server and
// never shown in errors; ports out of range are refused by New.
func TestServerURLs(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"mqtt://127.0.0.1:99999", "port 99999 out of range"},
		{"mqtt://127.0.0.1:0", "port 0 out of range"},
		{"mqtt://user:s3cret@127.0.0.1:99999", "port 99999 out of range"},
		{"mqtt://user:s3cret@127.0.0.1:x y", ""},
		{"bogus://user:s3cret@127.0.0.1", "unsupported scheme"},
	} {
		_, err := New(Config{Servers: []string{tc.url}, ClientID: "x"})
		if err == nil {
			t.Errorf("%s: accepted", tc.url)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.url, err)
		}
	}
	got := make(chan *packets.Connect, 1)
	url := scriptedServer(t, func(p *peer) {
		got <- p.accept(&packets.Connack{})
		p.expect(packets.DISCONNECT)
	})
	url = strings.Replace(url, "mqtt://", "mqtt://alice:s3cret@", 1)
	peerClient(t, url, Config{Username: "config-user"})
	c := <-got
	if c.Username != "alice" || string(c.Password) != "s3cret" {
		t.Fatalf("CONNECT carried %q/%q, want the URL's credentials", c.Username, c.Password)
	}
}

// TestErrorTexts: an error chain names each level once, and a protocol
// violation the client answers with DISCONNECT is logged at WARN with the
// reason code it sent.
func TestErrorTexts(t *testing.T) {
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p.send(&packets.Disconnect{ReasonCode: packets.SessionTakenOver})
	}, func(p *peer) {
		p.accept(&packets.Connack{})
		p.send(&packets.Publish{Topic: "a", Properties: packets.Properties{TopicAlias: 9}})
		p.expect(packets.DISCONNECT)
	})
	var logs strings.Builder
	var logMu sync.Mutex
	lost := make(chan error, 4)
	start(t, Config{Servers: []string{url}, ClientID: uniqueID(t), TopicAliasMaximum: 2,
		ReconnectBackoff: Backoff{Min: time.Millisecond, Max: time.Millisecond},
		OnConnectionLost: func(err error) { lost <- err },
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return logs.Write(b)
		}), nil))})
	err := waitLost(t, lost)
	var re *ReasonError
	if !errors.As(err, &re) || re.Code != packets.SessionTakenOver {
		t.Fatalf("first loss: %v", err)
	}
	if s := err.Error(); strings.Count(s, "client:") != 1 || !strings.Contains(s, "server sent DISCONNECT") {
		t.Errorf("error text %q", s)
	}
	err = waitLost(t, lost)
	if s := err.Error(); strings.Count(s, "client:") != 1 || !strings.Contains(s, "topic alias") {
		t.Errorf("error text %q", s)
	}
	eventually(t, 5*time.Second, "WARN log with the reason code", func() bool {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "reason_code=0x94")
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestFloodedWarningsRateLimited: a server that sends thousands of
// acknowledgements for unknown identifiers gets a few log lines, not one
// each.
func TestFloodedWarningsRateLimited(t *testing.T) {
	const n = 5000
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		var buf []byte
		for i := range n {
			buf, _ = packets.Append(buf, &packets.Ack{Kind: packets.PUBACK, PacketID: uint16(1 + i%1000)})
		}
		buf, _ = packets.Append(buf, &packets.Publish{Topic: "marker"})
		p.nc.Write(buf)
		p.expect(packets.DISCONNECT)
	})
	var lines atomic.Int64
	marker := make(chan struct{}, 1)
	peerClient(t, url, Config{OnMessage: func(*Message) { marker <- struct{}{} },
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
			if strings.Contains(string(b), "unknown packet identifier") {
				lines.Add(1)
			}
			return len(b), nil
		}), nil))})
	select {
	case <-marker:
	case <-time.After(10 * time.Second):
		t.Fatal("marker not delivered")
	}
	if got := lines.Load(); got < 1 || got > 5 {
		t.Fatalf("%d log lines for %d unknown PUBACKs", got, n)
	}
}

// TestMosquittoReceiveMaximumOverrun documents why a server exceeding our
// Receive Maximum is tolerated by default: Mosquitto 2.0.11 ignores the
// client's Receive Maximum for live traffic too, not only when it resends
// a session's backlog (measured here: with Receive Maximum 10 and QoS 1
// only, dozens of unacknowledged PUBLISHes at once). A client enforcing
// MQTT-3.3.4-7 with 0x93 would be disconnected in a loop by Debian's
// broker. The default keeps the connection, and the overrun costs nothing
// unbounded: handled messages awaiting their acknowledgement stay within
// the Receive Maximum (back-pressure, the crash window), held messages
// within MaxInboundBytes (the reader pauses), and 65,535 unacknowledged
// messages still end the connection with 0x93.
func TestMosquittoReceiveMaximumOverrun(t *testing.T) {
	const recvMax, n = 10, 300
	b := broker(t)
	col := newCollector()
	lost := make(chan error, 8)
	s := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), ReceiveMaximum: recvMax,
		OnMessage: col.handle, OnConnectionLost: func(err error) { lost <- err }})
	if _, err := s.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "rm/#", SubscribeOptions: subOpts(2)}); err != nil {
		t.Fatal(err)
	}
	pub := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t)})
	for i := range n {
		pub.PublishAsync(&Message{Topic: "rm/live", QoS: byte(1 + i%2), Payload: []byte(fmt.Sprint(i))})
	}
	col.waitFor(t, n, 30*time.Second)
	s.mu.Lock()
	_, overrun := s.eng.Unacked()
	s.mu.Unlock()
	t.Logf("server exceeded Receive Maximum %d: %v", recvMax, overrun)
	select {
	case err := <-lost:
		t.Fatalf("connection lost: %v", err)
	default:
	}
}

// TestInvalidFiltersRefusedLocally: a filter the server would answer by
// dropping the connection (0x81 from Mosquitto) is refused before anything
// is sent (MQTT-4.7.1-1, MQTT-4.7.1-2, MQTT-4.8.2-1, MQTT-4.8.2-2), and so is
// a Response Topic with a wildcard (MQTT-3.3.2-14); the connection stays.
func TestInvalidFiltersRefusedLocally(t *testing.T) {
	b := broker(t)
	lost := make(chan error, 4)
	c := start(t, Config{Servers: []string{b.URL()}, ClientID: uniqueID(t), OnConnectionLost: func(err error) { lost <- err }})
	for _, f := range []string{"a/#/b", "a+", "#/a", "", "$share//a", "$share/g+/a", "$share/g"} {
		if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: f}); !errors.Is(err, packets.ErrInvalidTopicFilter) {
			t.Errorf("subscribe %q: %v", f, err)
		}
		if _, err := c.Unsubscribe(ctxT(t, 5*time.Second), f); !errors.Is(err, packets.ErrInvalidTopicFilter) {
			t.Errorf("unsubscribe %q: %v", f, err)
		}
	}
	m := &Message{Topic: "t", QoS: 1, Properties: packets.Properties{ResponseTopic: "replies/#"}}
	if err := c.Publish(ctxT(t, 5*time.Second), m); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("response topic with a wildcard: %v", err)
	}
	if _, err := c.Subscribe(ctxT(t, 5*time.Second), Subscription{Filter: "$share/g/a/+"}); err != nil {
		t.Errorf("valid shared filter: %v", err)
	}
	select {
	case err := <-lost:
		t.Fatalf("connection lost: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestTopicAliasZeroFromServer: a PUBLISH carrying Topic Alias 0 is
// answered with DISCONNECT 0x94 Topic Alias invalid (MQTT-3.3.2-8 from the
// server's side), and the error says so.
func TestTopicAliasZeroFromServer(t *testing.T) {
	got := make(chan packets.ReasonCode, 1)
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p.nc.Write([]byte{0x30, 0x07, 0x00, 0x01, 't', 0x03, 0x23, 0x00, 0x00})
		if d, ok := p.expect(packets.DISCONNECT).(*packets.Disconnect); ok {
			got <- d.ReasonCode
		}
	})
	_, lost := peerClient(t, url, Config{TopicAliasMaximum: 5})
	err := waitLost(t, lost)
	if !strings.Contains(err.Error(), "topic alias") {
		t.Errorf("error %q does not say topic alias", err)
	}
	select {
	case code := <-got:
		if code != packets.TopicAliasInvalid {
			t.Fatalf("DISCONNECT %v, want 0x94", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DISCONNECT")
	}
}
