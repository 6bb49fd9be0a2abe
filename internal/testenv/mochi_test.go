package testenv

import (
	"testing"

	"github.com/tethermq/tether/packets"
)

// readAck reads an acknowledgement of the given kind for id.
func (c *mqttConn) readAck(kind packets.Type, id uint16) {
	c.t.Helper()
	ack, ok := c.read().(*packets.Ack)
	if !ok || ack.Kind != kind || ack.PacketID != id || ack.ReasonCode >= 0x80 {
		c.t.Fatalf("want %v %d, got %#v", kind, id, ack)
	}
}

// TestMochiQoS2 sends a QoS 2 message through the embedded broker to a
// subscriber on another connection, both sides running the whole
// PUBLISH/PUBREC/PUBREL/PUBCOMP exchange.
func TestMochiQoS2(t *testing.T) {
	b := Mochi(t, MochiOptions{ReceiveMaximum: 5})

	sub := mqttDial(t, b.Addr())
	sub.connect(&packets.Connect{CleanStart: true, KeepAlive: 30, ClientID: "mochi-sub"})
	sub.send(&packets.Subscribe{PacketID: 7, Subscriptions: []packets.Subscription{
		{Filter: "mochi/+", SubscribeOptions: packets.SubscribeOptions{QoS: 2}},
	}})
	if ack, ok := sub.read().(*packets.Suback); !ok || ack.PacketID != 7 || len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != packets.GrantedQoS2 {
		t.Fatalf("SUBACK: %#v", ack)
	}

	pub := mqttDial(t, b.Addr())
	if ack := pub.connect(&packets.Connect{CleanStart: true, KeepAlive: 30, ClientID: "mochi-pub"}); ack.Properties.ReceiveMaximum != 5 {
		t.Errorf("Receive Maximum = %d, want 5", ack.Properties.ReceiveMaximum)
	}
	pub.send(&packets.Publish{QoS: 2, PacketID: 42, Topic: "mochi/q2", Payload: []byte("exactly once")})
	pub.readAck(packets.PUBREC, 42)
	pub.send(&packets.Ack{Kind: packets.PUBREL, PacketID: 42})
	pub.readAck(packets.PUBCOMP, 42)

	msg, ok := sub.read().(*packets.Publish)
	if !ok || msg.QoS != 2 || msg.Topic != "mochi/q2" || string(msg.Payload) != "exactly once" || msg.Dup {
		t.Fatalf("subscriber got %#v", msg)
	}
	sub.send(&packets.Ack{Kind: packets.PUBREC, PacketID: msg.PacketID})
	sub.readAck(packets.PUBREL, msg.PacketID)
	sub.send(&packets.Ack{Kind: packets.PUBCOMP, PacketID: msg.PacketID})
	// A round trip proves the broker took the PUBCOMP without complaint.
	sub.send(&packets.Pingreq{})
	if p, ok := sub.read().(*packets.Pingresp); !ok {
		t.Fatalf("want PINGRESP, got %#v", p)
	}
	sub.disconnect()
	pub.disconnect()
}

// TestMochiRestart checks that a session survives a reconnect but not a
// Restart, which comes back on the same port.
func TestMochiRestart(t *testing.T) {
	b := Mochi(t)
	addr := b.Addr()
	expiry := uint32(600)
	connect := &packets.Connect{KeepAlive: 30, ClientID: "mochi-restart", Properties: packets.Properties{SessionExpiry: &expiry}}

	c := mqttDial(t, addr)
	connect.CleanStart = true
	c.connect(connect)
	c.disconnect()
	connect.CleanStart = false
	c = mqttDial(t, addr)
	if ack := c.connect(connect); !ack.SessionPresent {
		t.Fatal("the session did not survive a reconnect")
	}

	b.Restart()
	if b.Addr() != addr || b.URL() != "mqtt://"+addr {
		t.Fatalf("address changed: %s, %s", b.Addr(), b.URL())
	}
	if d, ok := c.read().(*packets.Disconnect); !ok || d.ReasonCode != packets.ServerShuttingDown {
		t.Errorf("want DISCONNECT 0x8B on Restart, got %#v", d)
	}
	if _, err := c.r.Read(); err == nil {
		t.Error("the connection survived Restart")
	}
	c = mqttDial(t, addr)
	if ack := c.connect(connect); ack.SessionPresent {
		t.Error("the session survived a Restart of an in-memory broker")
	}
	c.disconnect()

	b.Stop()
	b.Stop() // stopping twice does nothing
	if b.Running() {
		t.Error("Running() true while stopped")
	}
	b.Start()
	if !b.Running() {
		t.Error("Running() false after Start")
	}
	c = mqttDial(t, addr)
	c.connect(connect)
}
