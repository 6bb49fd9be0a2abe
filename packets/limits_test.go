package packets

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// allocated returns the bytes f allocated in all (garbage included) and
// the bytes still held after a collection while keep's result is alive.
func allocated(f func() any) (total, retained uint64) {
	var before, after, held runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := f()
	runtime.ReadMemStats(&after)
	runtime.GC()
	runtime.ReadMemStats(&held)
	runtime.KeepAlive(v)
	retained = 0
	if held.HeapAlloc > before.HeapAlloc {
		retained = held.HeapAlloc - before.HeapAlloc
	}
	return after.TotalAlloc - before.TotalAlloc, retained
}

// floodPublish returns a QoS 0 PUBLISH of about size bytes whose
// properties are nothing but copies of one property.
func floodPublish(size int, prop []byte) []byte {
	n := (size - 16) / len(prop)
	props := bytes.Repeat(prop, n)
	return frame(0x30, appendString(nil, "t"), appendVarInt(nil, len(props)), props)
}

var (
	emptyUserProperty = []byte{0x26, 0, 0, 0, 0}
	subscriptionID1   = []byte{0x0B, 1}
)

// TestReaderAllocatesAsBytesArrive: with no maximum size (the protocol's
// 256 MB), a header that announces the largest packet and then three
// bytes costs the Reader one small buffer, not the announced size (issue
// 13 item 3: 268.6 MB before).
func TestReaderAllocatesAsBytesArrive(t *testing.T) {
	header := appendVarInt([]byte{0x30}, maxVarInt)
	var asked int
	r := NewReader(bytes.NewReader(append(header, 1, 2, 3)), 0)
	r.alloc = func(n int) []byte { asked += n; return make([]byte, n) }
	if _, err := r.Read(); err != io.ErrUnexpectedEOF {
		t.Fatalf("Read = %v, want io.ErrUnexpectedEOF", err)
	}
	if asked > firstChunk {
		t.Fatalf("allocated %d bytes for 3 that arrived", asked)
	}
	total, _ := allocated(func() any {
		_, err := NewReader(bytes.NewReader(append(header, 1, 2, 3)), 0).Read()
		return err
	})
	t.Logf("256 MB header + 3 bytes: %d bytes allocated", total)
	if total > 2*firstChunk+16<<10 {
		t.Fatalf("%d bytes allocated for a 3-byte body", total)
	}

	// A large body that does arrive, one byte at a time: the buffer grows
	// by doubling to exactly its length, holding at most twice what came.
	pub := &Publish{QoS: 1, PacketID: 1, Topic: "big", Payload: bytes.Repeat([]byte("x"), 1<<20+12345)}
	data := stream(t, pub)
	r = NewReader(iotest.OneByteReader(bytes.NewReader(data)), 0)
	var sizes []int
	r.alloc = func(n int) []byte { sizes = append(sizes, n); return make([]byte, n) }
	p, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	got := p.(*Publish)
	if !bytes.Equal(got.Payload, pub.Payload) || cap(got.Payload) != len(got.Payload) {
		t.Fatalf("payload of %d bytes, capacity %d", len(got.Payload), cap(got.Payload))
	}
	bodyLen := len(data) - 4 // one type byte, three of remaining length
	if sizes[0] != firstChunk || sizes[len(sizes)-1] != bodyLen {
		t.Fatalf("buffer sizes %v for a body of %d", sizes, bodyLen)
	}
	for i := 1; i < len(sizes); i++ {
		if sizes[i] > 2*sizes[i-1] {
			t.Fatalf("buffer sizes %v grow faster than the bytes", sizes)
		}
	}
}

// TestDecodeAmplification: decoding a packet of empty User Properties or
// of Subscription Identifiers takes memory in proportion to the packet
// even with no limit, and little more than the packet with the default
// limits, which refuse it (issue 13 item 3: 21× and 8.6× before, as
// resident memory; 40× and 13× allocated, 8.9× and 3.4× held, measured
// with this test on 16 MiB packets before the change).
func TestDecodeAmplification(t *testing.T) {
	const size = 4 << 20
	for _, tt := range []struct {
		name           string
		packet         []byte
		total, retain  float64 // bounds, as multiples of the packet size
		limitedTotal   float64
		perValueMemory int
	}{
		// 32 bytes per 5 on the wire, plus the body: 7.4×.
		{"empty user properties", floodPublish(size, emptyUserProperty), 7.6, 7.6, 1.1, 32},
		// 4 bytes per 2 on the wire, plus the body: 3×.
		{"subscription identifiers", floodPublish(size, subscriptionID1), 3.2, 3.2, 1.1, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			unlimited := Limits{UserProperties: -1, SubscriptionIdentifiers: -1}
			total, retained := allocated(func() any {
				p, err := DecodeWith(tt.packet, 0, unlimited)
				if err != nil {
					t.Fatal(err)
				}
				return p
			})
			n := float64(len(tt.packet))
			t.Logf("no limit: %.1f× allocated, %.1f× held", float64(total)/n, float64(retained)/n)
			if float64(total) > tt.total*n || float64(retained) > tt.retain*n {
				t.Errorf("no limit: %d bytes allocated, %d held, for a packet of %d", total, retained, len(tt.packet))
			}

			total, _ = allocated(func() any {
				_, err := Decode(tt.packet, 0)
				if !errors.Is(err, ErrLimit) || CodeOf(err) != ImplementationSpecificError {
					t.Fatalf("default limits: %v", err)
				}
				return nil
			})
			t.Logf("default limits: %.2f× allocated (the copy of the body)", float64(total)/n)
			if float64(total) > tt.limitedTotal*n {
				t.Errorf("default limits: %d bytes allocated for a packet of %d", total, len(tt.packet))
			}

			// Through the Reader, as the client reads: the body once (grown
			// as it arrives), the refusal, nothing in proportion to the
			// values.
			total, _ = allocated(func() any {
				_, err := NewReader(bytes.NewReader(tt.packet), 0).Read()
				if !errors.Is(err, ErrLimit) {
					t.Fatalf("Reader: %v", err)
				}
				return nil
			})
			t.Logf("Reader, default limits: %.2f× allocated", float64(total)/n)
			if float64(total) > 2.1*n {
				t.Errorf("Reader: %d bytes allocated for a packet of %d", total, len(tt.packet))
			}
		})
	}
}

func TestLimits(t *testing.T) {
	users := func(n int) []byte { return floodPublish(16+5*n, emptyUserProperty) }
	ids := func(n int) []byte { return floodPublish(16+2*n, subscriptionID1) }
	for _, tt := range []struct {
		name   string
		packet []byte
		lim    Limits
		ok     bool
	}{
		{"default user properties", users(DefaultUserProperties), Limits{}, true},
		{"one user property too many", users(DefaultUserProperties + 1), Limits{}, false},
		{"default subscription identifiers", ids(DefaultSubscriptionIdentifiers), Limits{}, true},
		{"one subscription identifier too many", ids(DefaultSubscriptionIdentifiers + 1), Limits{}, false},
		{"user properties: own limit", users(3), Limits{UserProperties: 3}, true},
		{"user properties: over own limit", users(4), Limits{UserProperties: 3}, false},
		{"subscription identifiers: over own limit", ids(2), Limits{SubscriptionIdentifiers: 1}, false},
		{"no limit", users(3 * DefaultUserProperties), Limits{UserProperties: -1}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			check := func(how string, p Packet, err error) {
				t.Helper()
				if tt.ok {
					if err != nil {
						t.Fatalf("%s: %v", how, err)
					}
					pr := &p.(*Publish).Properties
					if cap(pr.User) != len(pr.User) || cap(pr.SubscriptionIdentifier) != len(pr.SubscriptionIdentifier) {
						t.Fatalf("%s: lists not allocated at their size", how)
					}
					return
				}
				if !errors.Is(err, ErrLimit) || CodeOf(err) != ImplementationSpecificError || p != nil {
					t.Fatalf("%s: %v, want ErrLimit", how, err)
				}
				if !strings.Contains(err.Error(), "more than") {
					t.Fatalf("%s: message %q", how, err)
				}
			}
			p, err := DecodeWith(tt.packet, 0, tt.lim)
			check("DecodeWith", p, err)
			r := NewReader(bytes.NewReader(tt.packet), 0)
			r.SetLimits(tt.lim)
			p, err = r.Read()
			check("Reader", p, err)
		})
	}
	// A CONNECT counts its Will properties apart.
	many := make([]UserProperty, 3)
	b, err := Append(nil, &Connect{Properties: Properties{User: many},
		Will: &Will{Topic: "w", Payload: []byte{}, Properties: Properties{User: many}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeWith(b, 0, Limits{UserProperties: 3}); err != nil {
		t.Fatalf("three and three user properties: %v", err)
	}
}

// TestDecodedListsExact: every decoded list of User Properties and
// Subscription Identifiers has exactly its length as capacity, which
// checks the counting pass against decoding.
func TestDecodedListsExact(t *testing.T) {
	pubs := []Packet{
		&Publish{Topic: "t", Properties: Properties{
			User:                   []UserProperty{{"", ""}, {strings.Repeat("k", 300), "v"}, {"a", strings.Repeat("v", 513)}},
			SubscriptionIdentifier: []uint32{1, 200, 70000, maxVarInt}, ContentType: strings.Repeat("c", 258),
			CorrelationData: bytes.Repeat([]byte{1}, 259), MessageExpiry: new(uint32(1)), PayloadFormat: 1,
		}, Payload: []byte{}},
	}
	for _, p := range richPackets() {
		pubs = append(pubs, p)
	}
	for _, p := range pubs {
		q, err := Decode(stream(t, p), 0)
		if err != nil {
			t.Fatal(err)
		}
		checkExactLists(t, q)
	}
}

// checkExactLists fails if a list of repeated properties in p has spare
// capacity.
func checkExactLists(t testing.TB, p Packet) {
	t.Helper()
	var prs []*Properties
	switch p := p.(type) {
	case *Connect:
		prs = append(prs, &p.Properties)
		if p.Will != nil {
			prs = append(prs, &p.Will.Properties)
		}
	case *Publish:
		prs = append(prs, &p.Properties)
	case *Connack:
		prs = append(prs, &p.Properties)
	}
	for _, pr := range prs {
		if cap(pr.User) != len(pr.User) || cap(pr.SubscriptionIdentifier) != len(pr.SubscriptionIdentifier) {
			t.Fatalf("%v: user properties %d/%d, subscription identifiers %d/%d (len/cap)", p.Type(),
				len(pr.User), cap(pr.User), len(pr.SubscriptionIdentifier), cap(pr.SubscriptionIdentifier))
		}
	}
}

// TestCountProp: the counting pass skips every kind of value as decoding
// reads it, and stops where decoding would fail.
func TestCountProp(t *testing.T) {
	user := "26 00 01 6B 00 00"
	for _, tt := range []struct {
		hex  string
		want int
	}{
		{"", 0},
		{user + " 01 01 " + user, 2},             // byte
		{user + " 23 00 05 " + user, 2},          // two bytes
		{user + " 02 00 00 00 3C " + user, 2},    // four bytes
		{user + " 0B 80 01 " + user, 2},          // variable byte integer
		{user + " 03 01 02 61 62 " + user, 1},    // a string of 258 bytes that does not fit
		{user + " 03 00 02 61 62 " + user, 2},    // string
		{user + " 09 00 01 FF " + user, 2},       // binary
		{user + " 26 00 00 00 00 26", 2},         // pair, then a pair cut short
		{user + " 26 00 05", 1},                  // a pair whose key is cut short
		{user + " 26 00", 1},                     // a length cut short
		{user + " 0B 80", 1},                     // a cut variable byte integer
		{user + " 0B 80 80 80 80 01 " + user, 1}, // an overlong one
		{user + " 05 00 " + user, 1},             // an unknown identifier
		{user + " 02 00 00 " + user, 1},          // a value cut short
	} {
		if got := countProp(unhex(t, tt.hex), PropUser); got != tt.want {
			t.Errorf("countProp(%s) = %d, want %d", tt.hex, got, tt.want)
		}
	}
}
