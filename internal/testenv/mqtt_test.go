package testenv

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tethermq/tether/packets"
)

// mqttConn is a bare MQTT v5 connection speaking through the packets codec.
type mqttConn struct {
	t    *testing.T
	conn net.Conn
	r    *packets.Reader
}

func mqttDial(t *testing.T, addr string) *mqttConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &mqttConn{t: t, conn: conn, r: packets.NewReader(bufio.NewReader(conn), 0)}
}

func (c *mqttConn) send(p packets.Packet) {
	c.t.Helper()
	b, err := packets.Append(nil, p)
	if err != nil {
		c.t.Fatalf("encode %v: %v", p.Type(), err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("send %v: %v", p.Type(), err)
	}
}

func (c *mqttConn) read() packets.Packet {
	c.t.Helper()
	p, err := c.r.Read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

func (c *mqttConn) connect(cp *packets.Connect) *packets.Connack {
	c.t.Helper()
	c.send(cp)
	ack, ok := c.read().(*packets.Connack)
	if !ok {
		c.t.Fatalf("want CONNACK, got %#v", ack)
	}
	if ack.ReasonCode != packets.Success {
		c.t.Fatalf("CONNACK reason %#x", byte(ack.ReasonCode))
	}
	return ack
}

// disconnect sends DISCONNECT and waits for the broker to close.
func (c *mqttConn) disconnect() {
	c.t.Helper()
	c.send(&packets.Disconnect{})
	if _, err := c.r.Read(); err != io.EOF {
		c.t.Fatalf("after DISCONNECT: %v, want the broker to close", err)
	}
}

// TestMosquittoRawProtocol speaks MQTT v5 to a started broker, restarts
// it, and checks that the persistent session survived.
func TestMosquittoRawProtocol(t *testing.T) {
	b := Mosquitto(t, WithPersistence(), WithMaxInflight(9))
	expiry := uint32(600)
	connect := &packets.Connect{
		CleanStart: true,
		KeepAlive:  30,
		ClientID:   "testenv-raw",
		Properties: packets.Properties{SessionExpiry: &expiry},
	}

	c := mqttDial(t, b.Addr())
	ack := c.connect(connect)
	if ack.SessionPresent {
		t.Error("Session Present on a clean start")
	}
	if ack.Properties.ReceiveMaximum != 9 {
		t.Errorf("Receive Maximum = %d, want the configured 9", ack.Properties.ReceiveMaximum)
	}
	c.send(&packets.Publish{QoS: 1, PacketID: 321, Topic: "testenv/raw", Payload: []byte("hello")})
	puback, ok := c.read().(*packets.Ack)
	if !ok || puback.Kind != packets.PUBACK || puback.PacketID != 321 {
		t.Fatalf("want PUBACK 321, got %#v", puback)
	}
	if puback.ReasonCode >= 0x80 {
		t.Fatalf("PUBACK reason %#x", byte(puback.ReasonCode))
	}
	c.disconnect()

	// Mosquitto 2.0.11 writes a session to its persistence file only when
	// the client's latest CONNECT had Clean Start 0: a session begun with
	// Clean Start 1 survives reconnects but not a broker restart, until the
	// client has reconnected once with Clean Start 0.
	connect.CleanStart = false
	c = mqttDial(t, b.Addr())
	if ack := c.connect(connect); !ack.SessionPresent {
		t.Fatal("the session did not survive a reconnect")
	}
	c.disconnect()

	b.Restart()

	c = mqttDial(t, b.Addr())
	if ack := c.connect(connect); !ack.SessionPresent {
		t.Error("the session did not survive a Restart with persistence")
	}
	c.send(&packets.Pingreq{})
	if _, ok := c.read().(*packets.Pingresp); !ok {
		t.Fatal("no PINGRESP after the restart")
	}
}
