package embedbroker

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tethermq/tether/packets"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const ioTimeout = 10 * time.Second

// rawConn is a bare MQTT v5 connection speaking through the packets codec.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *packets.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, conn: conn, r: packets.NewReader(bufio.NewReader(conn), 0)}
}

func (c *rawConn) send(p packets.Packet) {
	c.t.Helper()
	b, err := packets.Append(nil, p)
	if err != nil {
		c.t.Fatalf("encode %v: %v", p.Type(), err)
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("send %v: %v", p.Type(), err)
	}
}

func (c *rawConn) read() packets.Packet {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	p, err := c.r.Read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

func (c *rawConn) connect(id string, clean bool, expiry uint32) *packets.Connack {
	c.t.Helper()
	c.send(&packets.Connect{CleanStart: clean, KeepAlive: 30, ClientID: id,
		Properties: packets.Properties{SessionExpiry: &expiry}})
	ack, ok := c.read().(*packets.Connack)
	if !ok || ack.ReasonCode != packets.Success {
		c.t.Fatalf("CONNACK: %#v", ack)
	}
	return ack
}

func (c *rawConn) subscribe(filter string, qos byte) {
	c.t.Helper()
	c.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{
		{Filter: filter, SubscribeOptions: packets.SubscribeOptions{QoS: qos}},
	}})
	if ack, ok := c.read().(*packets.Suback); !ok || len(ack.ReasonCodes) != 1 || byte(ack.ReasonCodes[0]) != qos {
		c.t.Fatalf("SUBACK: %#v", ack)
	}
}

func start(t *testing.T, opts Options) *Broker {
	t.Helper()
	b, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConnackAnnouncesReceiveMaximum(t *testing.T) {
	b := start(t, Options{ReceiveMaximum: 7})
	if !strings.HasPrefix(b.URL(), "mqtt://127.0.0.1:") {
		t.Errorf("URL = %q", b.URL())
	}
	c := dial(t, b.Addr())
	ack := c.connect("rm", true, 0)
	if ack.Properties.ReceiveMaximum != 7 {
		t.Errorf("Receive Maximum = %d, want 7", ack.Properties.ReceiveMaximum)
	}
}

// TestOfflineQueueKeepsEveryMessage queues more QoS 1 messages for an
// offline persistent session than Mosquitto's default limit of 1000 and
// checks that every one arrives when the session resumes. Not their order:
// mochi resends a resumed session's messages in an arbitrary order (see
// the package documentation).
func TestOfflineQueueKeepsEveryMessage(t *testing.T) {
	const n = 1100
	b := start(t, Options{})
	sub := dial(t, b.Addr())
	sub.connect("queue-sub", true, 600)
	sub.subscribe("q/#", 1)
	sub.send(&packets.Disconnect{})
	_ = sub.conn.Close()

	pub := dial(t, b.Addr())
	pub.connect("queue-pub", true, 0)
	for i := range n {
		id := uint16(i%100 + 1)
		pub.send(&packets.Publish{QoS: 1, PacketID: id, Topic: "q/x", Payload: fmt.Appendf(nil, "%d", i)})
		if ack, ok := pub.read().(*packets.Ack); !ok || ack.Kind != packets.PUBACK || ack.PacketID != id || ack.ReasonCode >= 0x80 {
			t.Fatalf("PUBACK %d: %#v", id, ack)
		}
	}
	// mochi sends the PUBACK before it hands the message to the
	// subscriptions, and a message handed to a session while its client
	// reconnects can be lost (see the package documentation). It handles a
	// client's packets in order, so the PINGRESP proves the last message
	// is queued.
	pub.send(&packets.Pingreq{})
	if p, ok := pub.read().(*packets.Pingresp); !ok {
		t.Fatalf("want PINGRESP, got %#v", p)
	}

	sub = dial(t, b.Addr())
	if ack := sub.connect("queue-sub", false, 600); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	seen := make(map[string]bool, n)
	for range n {
		p, ok := sub.read().(*packets.Publish)
		if !ok || seen[string(p.Payload)] {
			t.Fatalf("after %d messages: got %#v", len(seen), p)
		}
		seen[string(p.Payload)] = true
		sub.send(&packets.Ack{Kind: packets.PUBACK, PacketID: p.PacketID})
	}
	for i := range n {
		if !seen[fmt.Sprint(i)] {
			t.Errorf("message %d lost", i)
		}
	}
}

// TestCloseWithIdleConnection checks that Close does not wait for a
// connection that never sent CONNECT, and closes it.
func TestCloseWithIdleConnection(t *testing.T) {
	b, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	idle := dial(t, b.Addr())
	live := dial(t, b.Addr())
	live.connect("live", true, 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Close()
	}()
	select {
	case <-done:
	case <-time.After(ioTimeout):
		t.Fatal("Close hung")
	}
	if d, ok := live.read().(*packets.Disconnect); !ok || d.ReasonCode != packets.ServerShuttingDown {
		t.Errorf("live client got %#v, want DISCONNECT 0x8B", d)
	}
	_ = idle.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := idle.r.Read(); err == nil {
		t.Error("idle connection still open after Close")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestRestartOnSamePort closes a broker and starts another on its address.
func TestRestartOnSamePort(t *testing.T) {
	b := start(t, Options{})
	c := dial(t, b.Addr())
	c.connect("again", true, 600)
	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := start(t, Options{Addr: addr})
	c = dial(t, b2.Addr())
	if ack := c.connect("again", false, 600); ack.SessionPresent {
		t.Error("a session survived Close")
	}
}

func TestStartOnBusyAddress(t *testing.T) {
	b := start(t, Options{})
	if b2, err := Start(Options{Addr: b.Addr()}); err == nil {
		_ = b2.Close()
		t.Fatal("Start on a busy address succeeded")
	} else if !strings.HasPrefix(err.Error(), "embedbroker: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
}
