package faultproxy_test

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"

	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/packets"
)

// TestAuditServerPublishAfterPubrel: a server that sends a QoS 2 PUBLISH
// again after its PUBREL for that identifier, before the client's PUBCOMP,
// breaks MQTT-4.3.3-6 on the sender's side; the client would take it for a
// new message. No broker here does it on purpose, so a scripted server
// plays the part.
func TestAuditServerPublishAfterPubrel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r := packets.NewReader(bufio.NewReader(nc), 0)
		write := func(p packets.Packet) bool {
			b, err := packets.Append(nil, p)
			if err == nil {
				_, err = nc.Write(b)
			}
			return err == nil
		}
		pub := &packets.Publish{QoS: 2, Topic: "t", PacketID: 7, Payload: []byte("m")}
		if _, err := r.Read(); err != nil || !write(&packets.Connack{}) || !write(pub) {
			return
		}
		if _, err := r.Read(); err != nil { // the client's PUBREC
			return
		}
		again := *pub
		again.Dup = true
		if !write(&packets.Ack{Kind: packets.PUBREL, PacketID: 7}) || !write(&again) {
			return
		}
		for {
			if _, err := r.Read(); err != nil {
				return
			}
		}
	}()

	p, a := auditProxy(t, ln.Addr().String())
	c := dial(t, p.Addr())
	c.session("srv-pubrel", true, packets.Properties{})
	if got := c.readPublish(); got.PacketID != 7 {
		t.Fatalf("PUBLISH %d, want 7", got.PacketID)
	}
	c.mustSend(&packets.Ack{Kind: packets.PUBREC, PacketID: 7})
	if rel, ok := c.mustRead().(*packets.Ack); !ok || rel.Kind != packets.PUBREL {
		t.Fatalf("want PUBREL, got %#v", rel)
	}
	if again := c.readPublish(); !again.Dup {
		t.Fatalf("the scripted resend lost its DUP flag: %#v", again)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	v, err := a.WaitFor(ctx, "MQTT-4.3.3-6")
	if err != nil {
		t.Fatalf("%v; recorded: %v", err, a.Violations())
	}
	if v.By != faultproxy.ServerToClient {
		t.Errorf("%v charged to the client", v)
	}
	if err := a.Err(); err != nil {
		t.Errorf("the client broke no rule, yet: %v", err)
	}
	if a.ServerErr() == nil {
		t.Error("ServerErr() = nil with a server violation recorded")
	}
}
