package packets

import (
	"bufio"
	"bytes"
	"testing"
)

func benchPublish(size int) *Publish {
	return &Publish{
		QoS: 1, PacketID: 42, Topic: "sensors/building-7/floor-3/temperature",
		Properties: Properties{
			MessageExpiry: new(uint32(3600)), ContentType: "application/json",
			User: []UserProperty{{"trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"}},
		},
		Payload: make([]byte, size),
	}
}

func benchEncode(b *testing.B, size int) {
	p := benchPublish(size)
	n, _ := Size(p)
	buf := make([]byte, 0, n)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Append(buf[:0], p); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode(b *testing.B, size int) {
	data, _ := Append(nil, benchPublish(size))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodePublish64(b *testing.B)  { benchEncode(b, 64) }
func BenchmarkEncodePublish64K(b *testing.B) { benchEncode(b, 64<<10) }
func BenchmarkDecodePublish64(b *testing.B)  { benchDecode(b, 64) }
func BenchmarkDecodePublish64K(b *testing.B) { benchDecode(b, 64<<10) }

// benchRead reads, one packet per op, a stream of PUBLISH and PUBACK
// packets in turn, as a client receives them, starting over at its end.
func benchRead(b *testing.B, reuse bool) {
	const pairs = 512
	var data []byte
	for i := range pairs {
		p := benchPublish(64)
		p.PacketID = uint16(1 + i)
		data, _ = Append(data, p)
		data, _ = Append(data, &Ack{Kind: PUBACK, PacketID: uint16(1 + i)})
	}
	src := bytes.NewReader(data)
	br := bufio.NewReader(src)
	r := NewReader(br, 0)
	if reuse {
		r.ReuseAcks()
		r.ReusePublish()
	}
	b.SetBytes(int64(len(data) / (2 * pairs)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n == 2*pairs {
			src.Reset(data)
			br.Reset(src)
			n = 0
		}
		if _, err := r.Read(); err != nil {
			b.Fatal(err)
		}
		n++
	}
}

func BenchmarkReadPublishAck(b *testing.B)      { benchRead(b, false) }
func BenchmarkReadPublishAckReuse(b *testing.B) { benchRead(b, true) }
