package packets

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"testing"
	"testing/iotest"
)

// stream encodes packets back to back.
func stream(t testing.TB, ps ...Packet) []byte {
	t.Helper()
	var b []byte
	for _, p := range ps {
		var err error
		if b, err = Append(b, p); err != nil {
			t.Fatalf("Append(%#v): %v", p, err)
		}
	}
	return b
}

func TestReaderManyPackets(t *testing.T) {
	var want []Packet
	for range 50 {
		for _, p := range richPackets() {
			want = append(want, p)
		}
	}
	data := stream(t, want...)
	// One byte at a time exercises every boundary inside the bufio.Reader.
	for name, src := range map[string]io.Reader{
		"whole":    bytes.NewReader(data),
		"one byte": iotest.OneByteReader(bytes.NewReader(data)),
		"bufio":    bufio.NewReaderSize(bytes.NewReader(data), 16),
	} {
		r := NewReader(src, 0)
		for i, w := range want {
			p, err := r.Read()
			if err != nil {
				t.Fatalf("%s: packet %d: %v", name, i, err)
			}
			if !reflect.DeepEqual(p, w) {
				t.Fatalf("%s: packet %d:\n got %#v\nwant %#v", name, i, p, w)
			}
		}
		if _, err := r.Read(); err != io.EOF {
			t.Fatalf("%s: after the last packet: %v, want io.EOF", name, err)
		}
	}
}

// TestReaderReuseManyPackets: with ReuseAcks and ReusePublish, each packet
// read into a reused value equals what was sent, nothing left over from
// the packets before it.
func TestReaderReuseManyPackets(t *testing.T) {
	var want []Packet
	for range 3 {
		for _, p := range richPackets() {
			want = append(want, p)
		}
		// A bare PUBLISH and PUBACK after ones with properties.
		want = append(want, &Publish{Topic: "t", Payload: []byte{}}, &Ack{Kind: PUBACK, PacketID: 1})
	}
	r := NewReader(bytes.NewReader(stream(t, want...)), 0)
	r.ReuseAcks()
	r.ReusePublish()
	for i, w := range want {
		p, err := r.Read()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !reflect.DeepEqual(p, w) {
			t.Fatalf("packet %d:\n got %#v\nwant %#v", i, p, w)
		}
	}
}

func TestReaderBufioUsedDirectly(t *testing.T) {
	br := bufio.NewReader(bytes.NewReader(nil))
	if NewReader(br, 0).r != br {
		t.Fatal("a *bufio.Reader was wrapped again")
	}
}

func TestReaderEOF(t *testing.T) {
	pub := stream(t, &Publish{QoS: 1, PacketID: 1, Topic: "t", Payload: []byte("hello")})
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty stream", nil, io.EOF},
		{"inside remaining length", []byte{0x30, 0x80}, io.ErrUnexpectedEOF},
		{"after the fixed header", pub[:2], io.ErrUnexpectedEOF},
		{"inside the body", pub[:len(pub)-1], io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		_, err := NewReader(bytes.NewReader(tt.data), 0).Read()
		if err != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if tt.want == io.ErrUnexpectedEOF && CodeOf(err) != MalformedPacket {
			t.Errorf("%s: CodeOf = %v", tt.name, CodeOf(err))
		}
	}
	// Other read errors come through unchanged.
	boom := errors.New("boom")
	if _, err := NewReader(iotest.ErrReader(boom), 0).Read(); err != boom {
		t.Errorf("read error: %v", err)
	}
}

// failReader fails the test if the Reader reads past what it was given.
type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("Reader read the body of an oversized packet")
	return 0, io.ErrUnexpectedEOF
}

// TestReaderMaxSizeBeforeAllocation: a header claiming 200 MB with a 1 MB
// limit fails at once, reading nothing more and allocating nothing.
func TestReaderMaxSizeBeforeAllocation(t *testing.T) {
	header := appendVarInt([]byte{0x30}, 200<<20)
	r := NewReader(io.MultiReader(bytes.NewReader(header), failReader{t}), 1<<20)
	r.alloc = func(n int) []byte {
		t.Fatalf("allocated a body of %d bytes", n)
		return nil
	}
	_, err := r.Read()
	if !errors.Is(err, ErrPacketTooLarge) || CodeOf(err) != PacketTooLarge {
		t.Fatalf("Read = %v, want ErrPacketTooLarge", err)
	}
	allocs := testing.AllocsPerRun(10, func() {
		r := NewReader(bytes.NewReader(header), 1<<20)
		if _, err := r.Read(); !errors.Is(err, ErrPacketTooLarge) {
			t.Fatal(err)
		}
	})
	// The Reader, its bufio.Reader and buffer, the closure and the error:
	// nothing in proportion to the claimed size.
	if allocs > 8 {
		t.Fatalf("%v allocations", allocs)
	}
}

func TestReaderSetMaxSize(t *testing.T) {
	p := &Publish{Topic: "t", Payload: make([]byte, 100)}
	data := stream(t, p, p)
	r := NewReader(bytes.NewReader(data), 0)
	if _, err := r.Read(); err != nil {
		t.Fatal(err)
	}
	r.SetMaxSize(len(data)/2 - 1)
	if _, err := r.Read(); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("after SetMaxSize: %v", err)
	}
}

// TestReaderPacketsOwnMemory: reading the next packet leaves the previous
// one untouched, and the payload shares the body buffer (one copy).
func TestReaderPacketsOwnMemory(t *testing.T) {
	data := stream(t,
		&Publish{Topic: "a", Payload: []byte("first")},
		&Publish{Topic: "b", Payload: []byte("other")})
	r := NewReader(bytes.NewReader(data), 0)
	var bodies [][]byte
	r.alloc = func(n int) []byte {
		b := make([]byte, n)
		bodies = append(bodies, b)
		return b
	}
	p1, _ := r.Read()
	p2, _ := r.Read()
	if string(p1.(*Publish).Payload) != "first" || string(p2.(*Publish).Payload) != "other" {
		t.Fatal("payloads overwritten")
	}
	if len(bodies) != 2 || &bodies[0][len(bodies[0])-1] != &p1.(*Publish).Payload[4] {
		t.Fatal("payload is not a slice of the packet's own body buffer")
	}
}

func TestReaderAllocations(t *testing.T) {
	data := stream(t, slices.Repeat([]Packet{&Publish{QoS: 1, PacketID: 1, Topic: "t", Payload: make([]byte, 64)}}, 200)...)
	r := NewReader(bytes.NewReader(data), 0)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := r.Read(); err != nil {
			t.Fatal(err)
		}
	})
	// Body, *Publish and topic string.
	if allocs > 3 {
		t.Fatalf("%v allocations per PUBLISH", allocs)
	}
}

// TestReaderReuseAcks: with ReuseAcks, acknowledgements decode into the
// Reader's own Ack without allocating, their properties intact; other
// packets are unaffected, and an Ack is only valid until the next Read.
func TestReaderReuseAcks(t *testing.T) {
	var stream []byte
	ack := &Ack{Kind: PUBREC, PacketID: 7, ReasonCode: 0x10}
	ack.Properties.ReasonString = "why"
	ack.Properties.User = []UserProperty{{Key: "k", Value: "v"}}
	stream, _ = Append(stream, ack)
	stream, _ = Append(stream, &Publish{Topic: "t", QoS: 1, PacketID: 3, Payload: []byte("p")})
	for range 100 {
		stream, _ = Append(stream, &Ack{Kind: PUBACK, PacketID: 9})
	}
	r := NewReader(bytes.NewReader(stream), 0)
	r.ReuseAcks()
	p, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	got := p.(*Ack)
	if got.Kind != PUBREC || got.PacketID != 7 || got.ReasonCode != 0x10 || got.Properties.ReasonString != "why" ||
		len(got.Properties.User) != 1 || got.Properties.User[0].Value != "v" {
		t.Fatalf("decoded %+v", got)
	}
	p, err = r.Read()
	if pub, ok := p.(*Publish); err != nil || !ok || string(pub.Payload) != "p" {
		t.Fatalf("publish: %v %+v", err, p)
	}
	if got.Kind != PUBREC || got.Properties.ReasonString != "why" {
		t.Fatal("a PUBLISH in between changed the reused Ack")
	}
	allocs := testing.AllocsPerRun(50, func() {
		p, err := r.Read()
		if err != nil || p.(*Ack).PacketID != 9 {
			t.Fatalf("%v %+v", err, p)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per reused acknowledgement", allocs)
	}
}

// TestReaderReusePublish: with ReusePublish, every PUBLISH decodes into the
// Reader's own Publish, while what it points to stays the caller's: a
// payload kept from one message is intact after the next is read.
func TestReaderReusePublish(t *testing.T) {
	var stream []byte
	for i := range 3 {
		p := &Publish{Topic: fmt.Sprintf("t/%d", i), QoS: 1, PacketID: uint16(1 + i), Payload: []byte{byte('a' + i)}}
		p.Properties.User = []UserProperty{{Key: "i", Value: fmt.Sprint(i)}}
		stream, _ = Append(stream, p)
	}
	r := NewReader(bytes.NewReader(stream), 0)
	r.ReusePublish()
	var first *Publish
	var kept []byte
	var keptUser []UserProperty
	for i := range 3 {
		p, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		pub := p.(*Publish)
		if pub.Topic != fmt.Sprintf("t/%d", i) || pub.PacketID != uint16(1+i) || pub.Properties.User[0].Value != fmt.Sprint(i) {
			t.Fatalf("message %d decoded as %+v", i, pub)
		}
		if i == 0 {
			first, kept, keptUser = pub, pub.Payload, pub.Properties.User
		} else if pub != first {
			t.Fatal("a new Publish for each packet")
		}
	}
	if string(kept) != "a" || keptUser[0].Value != "0" {
		t.Fatalf("kept payload %q, user %v: overwritten by later packets", kept, keptUser)
	}
}
