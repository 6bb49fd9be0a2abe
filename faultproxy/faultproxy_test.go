package faultproxy_test

import (
	"bufio"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioTimeout bounds every wait for a packet the test expects.
const ioTimeout = 5 * time.Second

// client is a bare MQTT v5 client speaking through the packets codec.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *packets.Reader
	buf  []byte
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &client{t: t, conn: conn, r: packets.NewReader(bufio.NewReader(conn), 0)}
}

func (c *client) send(p packets.Packet) error {
	c.t.Helper()
	var err error
	if c.buf, err = packets.Append(c.buf[:0], p); err != nil {
		c.t.Fatalf("encode %v: %v", p.Type(), err)
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err = c.conn.Write(c.buf)
	return err
}

func (c *client) mustSend(p packets.Packet) {
	c.t.Helper()
	if err := c.send(p); err != nil {
		c.t.Fatalf("send %v: %v", p.Type(), err)
	}
}

// read reads one packet within d.
func (c *client) read(d time.Duration) (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	return c.r.Read()
}

func (c *client) mustRead() packets.Packet {
	c.t.Helper()
	p, err := c.read(ioTimeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

// connect sends CONNECT (clean start) and checks the CONNACK.
func (c *client) connect(id string) {
	c.t.Helper()
	c.mustSend(&packets.Connect{CleanStart: true, KeepAlive: 60, ClientID: id})
	ack, ok := c.mustRead().(*packets.Connack)
	if !ok || ack.ReasonCode != packets.Success {
		c.t.Fatalf("CONNACK: %#v", ack)
	}
}

// subscribe subscribes at QoS 1 and waits for the SUBACK.
func (c *client) subscribe(filter string) {
	c.t.Helper()
	c.mustSend(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{
		{Filter: filter, SubscribeOptions: packets.SubscribeOptions{QoS: 1}},
	}})
	if ack, ok := c.mustRead().(*packets.Suback); !ok || len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != packets.GrantedQoS1 {
		c.t.Fatalf("SUBACK: %#v", ack)
	}
}

func publish(id uint16, topic, payload string) *packets.Publish {
	return &packets.Publish{QoS: 1, PacketID: id, Topic: topic, Payload: []byte(payload)}
}

// expectPuback reads a PUBACK for id.
func (c *client) expectPuback(id uint16) {
	c.t.Helper()
	ack, ok := c.mustRead().(*packets.Ack)
	if !ok || ack.Kind != packets.PUBACK || ack.PacketID != id {
		c.t.Fatalf("want PUBACK %d, got %#v", id, ack)
	}
}

// expectMessage reads a PUBLISH with the payload, and acknowledges it.
func (c *client) expectMessage(payload string) {
	c.t.Helper()
	p, ok := c.mustRead().(*packets.Publish)
	if !ok || string(p.Payload) != payload {
		c.t.Fatalf("want PUBLISH %q, got %#v", payload, p)
	}
	c.mustSend(&packets.Ack{Kind: packets.PUBACK, PacketID: p.PacketID})
}

// expectClosed checks that the connection ends (without a packet) in time.
func (c *client) expectClosed() {
	c.t.Helper()
	p, err := c.read(ioTimeout)
	if err == nil {
		c.t.Fatalf("want the connection closed, got %#v", p)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("want the connection closed, still open after %v", ioTimeout)
	}
}

// expectSilent checks that nothing arrives for a short while and that the
// connection is still open. Only absence can be checked this way.
func (c *client) expectSilent(d time.Duration) {
	c.t.Helper()
	p, err := c.read(d)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("want silence on an open connection, got %#v, %v", p, err)
	}
	c.r = packets.NewReader(bufio.NewReader(c.conn), 0) // a timed-out read may leave the old reader mid-packet
}

func waitFired(t *testing.T, inj *faultproxy.Injection) {
	t.Helper()
	select {
	case <-inj.Fired():
	case <-time.After(ioTimeout):
		t.Fatalf("fault %+v did not fire", inj.Fault())
	}
}

// setup starts a broker and a proxy in front of it.
func setup(t *testing.T) (*testenv.Broker, *faultproxy.Proxy) {
	t.Helper()
	b := testenv.Mosquitto(t)
	p, err := faultproxy.Start(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return b, p
}

func TestForward(t *testing.T) {
	b, p := setup(t)
	if p.URL() != "mqtt://"+p.Addr() || !strings.HasPrefix(p.Addr(), "127.0.0.1:") {
		t.Errorf("Addr() = %q, URL() = %q", p.Addr(), p.URL())
	}
	sub := dial(t, b.Addr())
	sub.connect("sub")
	sub.subscribe("fwd")

	c := dial(t, p.Addr())
	c.connect("pub")
	c.mustSend(publish(7, "fwd", "hello"))
	c.expectPuback(7)
	sub.expectMessage("hello")
	big := strings.Repeat("x", 200_000) // a three-byte remaining length
	c.mustSend(publish(8, "fwd", big))
	c.expectPuback(8)
	sub.expectMessage(big)
	if n := p.Conns(); n != 1 {
		t.Errorf("Conns() = %d, want 1", n)
	}
}

func TestCutBeforePublish(t *testing.T) {
	b, p := setup(t)
	sub := dial(t, b.Addr())
	sub.connect("sub")
	sub.subscribe("cut")

	inj := p.Inject(faultproxy.Fault{Dir: faultproxy.ClientToServer, Type: packets.PUBLISH, Nth: 1, Action: faultproxy.CutBefore})
	c := dial(t, p.Addr())
	c.connect("pub")
	c.mustSend(publish(1, "cut", "never"))
	c.expectClosed()
	waitFired(t, inj)

	// The broker never saw the PUBLISH: the first message the subscriber
	// gets is one published after the cut.
	other := dial(t, b.Addr())
	other.connect("other")
	other.mustSend(publish(1, "cut", "marker"))
	other.expectPuback(1)
	sub.expectMessage("marker")
}

func TestCutAfterPuback(t *testing.T) {
	b, p := setup(t)
	sub := dial(t, b.Addr())
	sub.connect("sub")
	sub.subscribe("cutafter")

	inj := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Nth: 1, Action: faultproxy.CutAfter})
	c := dial(t, p.Addr())
	c.connect("pub")
	// The second PUBLISH is still unread by the proxy when it cuts: the
	// PUBACK forwarded before the cut must reach the client all the same.
	c.mustSend(publish(42, "cutafter", "once"))
	c.mustSend(publish(43, "cutafter", "maybe"))
	c.expectPuback(42) // forwarded whole...
	c.expectClosed()   // ...then cut
	waitFired(t, inj)
	sub.expectMessage("once")
}

func TestNthAcrossConnections(t *testing.T) {
	_, p := setup(t)
	inj := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Nth: 2, Action: faultproxy.CutBefore})
	first := dial(t, p.Addr())
	first.connect("first")
	second := dial(t, p.Addr())
	second.connect("second")

	first.mustSend(publish(1, "nth", "a"))
	first.expectPuback(1)
	second.mustSend(publish(1, "nth", "b"))
	second.expectClosed()
	waitFired(t, inj)
	first.mustSend(publish(2, "nth", "c")) // fired once: no longer armed
	first.expectPuback(2)
}

func TestAnyType(t *testing.T) {
	_, p := setup(t)
	// Type 0 matches any packet: the third packet from the server is the
	// PUBACK of the second PUBLISH.
	inj := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Nth: 3, Action: faultproxy.CutBefore})
	c := dial(t, p.Addr())
	c.connect("any")
	c.mustSend(publish(1, "any", "a"))
	c.expectPuback(1)
	c.mustSend(publish(2, "any", "b"))
	c.expectClosed()
	waitFired(t, inj)
}

func TestBlackhole(t *testing.T) {
	b, p := setup(t)
	sub := dial(t, b.Addr())
	sub.connect("sub")
	sub.subscribe("bh")

	inj := p.Inject(faultproxy.Fault{Dir: faultproxy.ClientToServer, Type: packets.PUBLISH, Nth: 1, Action: faultproxy.Blackhole})
	c := dial(t, p.Addr())
	c.connect("pub")
	c.mustSend(publish(1, "bh", "lost"))
	waitFired(t, inj)
	// Nothing comes back either way, but the connection stays open.
	c.mustSend(&packets.Pingreq{})
	c.expectSilent(300 * time.Millisecond)

	other := dial(t, b.Addr())
	other.connect("other")
	other.mustSend(publish(1, "bh", "marker"))
	other.expectPuback(1)
	sub.expectMessage("marker")

	p.CutAll()
	c.expectClosed()
}

func TestDelay(t *testing.T) {
	_, p := setup(t)
	const delay = 300 * time.Millisecond
	inj := p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.PUBACK, Nth: 1, Action: faultproxy.Delay, Delay: delay})
	c := dial(t, p.Addr())
	c.connect("pub")
	start := time.Now()
	c.mustSend(publish(1, "delay", "a"))
	c.mustSend(publish(2, "delay", "b"))
	c.expectPuback(1)
	if d := time.Since(start); d < delay {
		t.Errorf("PUBACK came after %v, want at least %v", d, delay)
	}
	c.expectPuback(2) // order kept behind the delayed packet
	waitFired(t, inj)
}

func TestSetRefuse(t *testing.T) {
	_, p := setup(t)
	p.SetRefuse(true)
	c := dial(t, p.Addr())
	c.expectClosed()
	if n := p.Conns(); n != 1 {
		t.Errorf("Conns() = %d after a refused connection, want 1", n)
	}
	p.SetRefuse(false)
	c = dial(t, p.Addr())
	c.connect("back")
	if n := p.Conns(); n != 2 {
		t.Errorf("Conns() = %d, want 2", n)
	}
}

func TestMalformedFramingCuts(t *testing.T) {
	_, p := setup(t)
	for name, raw := range map[string][]byte{
		"type 0":                {0x00, 0x00},
		"five length bytes":     {0x30, 0xff, 0xff, 0xff, 0xff, 0x01},
		"non-minimal length":    {0x30, 0x80, 0x00},
		"end inside the packet": {0x30, 0x10, 't'},
	} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, p.Addr())
			if _, err := c.conn.Write(raw); err != nil {
				t.Fatal(err)
			}
			if name == "end inside the packet" {
				// The proxy waits for the rest until the client ends its side.
				if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			c.expectClosed()
		})
	}
	if n := p.Conns(); n != 4 {
		t.Errorf("Conns() = %d, want 4", n)
	}
}

func TestTargetDown(t *testing.T) {
	b, p := setup(t)
	b.Stop()
	c := dial(t, p.Addr())
	c.expectClosed()
	b.Start()
	c = dial(t, p.Addr())
	c.connect("again")
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	b := testenv.Mosquitto(t)
	ignore := goleak.IgnoreCurrent()
	p, err := faultproxy.Start(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// An open connection, a black-holed one, and one held in a Delay.
	open := dial(t, p.Addr())
	open.connect("open")
	bh := p.Inject(faultproxy.Fault{Dir: faultproxy.ClientToServer, Type: packets.PINGREQ, Action: faultproxy.Blackhole})
	hole := dial(t, p.Addr())
	hole.connect("hole")
	hole.mustSend(&packets.Pingreq{})
	waitFired(t, bh)
	p.Inject(faultproxy.Fault{Dir: faultproxy.ServerToClient, Type: packets.CONNACK, Action: faultproxy.Delay, Delay: time.Hour})
	held := dial(t, p.Addr())
	held.mustSend(&packets.Connect{CleanStart: true, ClientID: "held"})

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, c := range []*client{open, hole, held} {
		c.expectClosed()
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("a closed proxy accepted a connection")
	}
	goleak.VerifyNone(t, ignore)
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{faultproxy.ClientToServer.String(), "ClientToServer"},
		{faultproxy.ServerToClient.String(), "ServerToClient"},
		{faultproxy.CutBefore.String(), "CutBefore"},
		{faultproxy.CutAfter.String(), "CutAfter"},
		{faultproxy.Blackhole.String(), "Blackhole"},
		{faultproxy.Delay.String(), "Delay"},
		{faultproxy.Action(9).String(), "Action(9)"},
	} {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}
