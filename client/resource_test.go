package client

import (
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/packets"
)

// worstCaseInbound is README's bound on what a server can make one client
// hold through its inbound side: the messages queued for the handler, the
// delivered messages awaiting their acknowledgement (at most CrashWindow),
// one packet being read and decoded, and both write buffers (one being
// written, one filling), plus the fixed structures of a connection.
func worstCaseInbound(cfg Config) int {
	mps := int(cfg.MaximumPacketSize)
	return cfg.MaxInboundBytes + cfg.CrashWindow*mps + 2*mps + 2*cfg.MaxWriteBuffer + fixedPerConnection
}

// fixedPerConnection is README's allowance for a connection's own
// structures (packet identifier states, alias tables, buffers).
const fixedPerConnection = 1 << 20

// TestHostileServerMemoryBound drives a server that floods large QoS 0 and
// QoS 1 messages, each with as many User Properties as the decoder allows,
// at a handler that takes its time, and samples the live heap: it stays
// within worstCaseInbound, and every message is delivered in the end.
func TestHostileServerMemoryBound(t *testing.T) {
	const n = 300
	cfg := Config{MaximumPacketSize: 256 << 10, MaxInboundBytes: 4 << 20, ReceiveMaximum: 64, CrashWindow: 8,
		MaxWriteBuffer: 256 << 10, MaxQueuedQoS0: n}
	props := packets.Properties{}
	for range packets.DefaultUserProperties {
		props.User = append(props.User, packets.UserProperty{}) // the decoder's worst amplification
	}
	payload := make([]byte, 200<<10)
	stop := make(chan struct{})
	url := scriptedServer(t, func(p *peer) {
		p.accept(&packets.Connack{})
		p.nc.SetDeadline(time.Now().Add(2 * time.Minute))
		go func() { // drain the acknowledgements
			for {
				if _, err := p.r.Read(); err != nil {
					return
				}
			}
		}()
		for i := range n {
			pub := &packets.Publish{Topic: "flood", QoS: byte(i % 2), Payload: payload, Properties: props}
			if pub.QoS == 1 {
				pub.PacketID = uint16(1 + i)
			}
			b, err := packets.Append(nil, pub)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := p.nc.Write(b); err != nil {
				return
			}
		}
		<-stop // the client closes first
	})
	t.Cleanup(func() { close(stop) })
	var got atomic.Int64
	peerClient(t, url, func() Config {
		c := cfg
		c.OnMessage = func(*Message) {
			time.Sleep(10 * time.Millisecond)
			got.Add(1)
		}
		return c
	}())
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	peak := uint64(0)
	deadline := time.Now().Add(time.Minute)
	for got.Load() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > base {
			peak = max(peak, ms.HeapAlloc-base)
		}
	}
	if got.Load() != n {
		t.Fatalf("%d of %d messages delivered", got.Load(), n)
	}
	bound := worstCaseInbound(cfg)
	t.Logf("peak live heap %.1f MiB, bound %.1f MiB, %.1f MiB sent", float64(peak)/(1<<20), float64(bound)/(1<<20),
		float64(n*len(payload))/(1<<20))
	if peak > uint64(bound) {
		t.Fatalf("live heap grew by %d bytes, bound %d", peak, bound)
	}
}
