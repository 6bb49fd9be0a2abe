package packets

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora under testdata/fuzz")

// malformedSeeds are invalid packets that steer the fuzzer towards the
// validation paths.
var malformedSeeds = []string{
	"40 02 00",                                     // truncated
	"30 80 00",                                     // non-minimal remaining length
	"30 FF FF FF FF 01",                            // five-byte remaining length
	"30 04 00 02 C3 28",                            // ill-formed UTF-8
	"41 02 00 01",                                  // reserved header flags
	"36 04 00 01 74 00",                            // QoS 3
	"40 02 00 00",                                  // packet identifier 0
	"30 0A 00 01 74 06 23 00 01 23 00 02",          // duplicate topic alias
	"82 03 00 01 00",                               // empty SUBSCRIBE
	"20 06 00 00 03 21 00 00",                      // Receive Maximum 0
	"C0 00 C0",                                     // bytes after the packet
	"30 07 00 01 74 03 23 00 00",                   // topic alias 0 (0x94)
	"30 09 00 01 74 05 08 00 02 61 23",             // Response Topic "a#"
	"82 0A 00 01 00 00 04 61 2F 23 2F 00",          // filter "a/#/" then options
	"82 08 00 01 00 00 02 61 2B 00",                // filter "a+"
	"A2 0D 00 01 00 00 08 24 73 68 61 72 65 2F 67", // filter "$share/g"
	"30 0B 00 01 74 07 26 00 00 00 00 0B 01",       // user property and subscription identifier
}

// seedPackets returns valid encodings of every packet type, in a stable
// order, followed by the malformed seeds.
func seedPackets(t testing.TB) [][]byte {
	rich := richPackets()
	names := make([]string, 0, len(rich))
	for name := range rich {
		names = append(names, name)
	}
	sort.Strings(names)
	var seeds [][]byte
	for _, name := range names {
		seeds = append(seeds, stream(t, rich[name]))
	}
	for _, s := range malformedSeeds {
		seeds = append(seeds, unhex(t, s))
	}
	return seeds
}

// FuzzDecode: Decode never panics; whatever it accepts, the Reader reads
// the same, and Append writes back to bytes that decode to the same
// packet.
func FuzzDecode(f *testing.F) {
	for _, s := range seedPackets(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(data, 0)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || p != nil {
				t.Fatalf("Decode error %v (%T) with packet %v", err, err, p)
			}
			return
		}
		// The Reader agrees with Decode on a whole packet.
		r := NewReader(bytes.NewReader(data), 0)
		if rp, err := r.Read(); err != nil || !reflect.DeepEqual(rp, p) {
			t.Fatalf("Reader: %#v, %v; Decode: %#v", rp, err, p)
		}
		if _, err := r.Read(); err != io.EOF {
			t.Fatalf("Reader after the packet: %v", err)
		}
		b, err := Append(nil, p)
		if err != nil {
			t.Fatalf("Append refused a decoded packet %#v: %v", p, err)
		}
		if n, _ := Size(p); n != len(b) {
			t.Fatalf("Size %d, Append %d", n, len(b))
		}
		q, err := Decode(b, 0)
		if err != nil {
			t.Fatalf("Decode of re-encoding % X: %v", b, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("re-encoding differs:\n got %#v\nwant %#v", q, p)
		}
		if b2, _ := Append(nil, q); !bytes.Equal(b2, b) {
			t.Fatalf("second re-encoding % X differs from % X", b2, b)
		}
		checkExactLists(t, p)
	})
}

// FuzzReader: a stream of packets never makes the Reader panic, never
// makes it allocate a body larger than its maximum size, and always ends.
func FuzzReader(f *testing.F) {
	seeds := seedPackets(f)
	var all []byte
	for i, s := range seeds {
		f.Add(s, uint16(len(s)))
		if i < len(seeds)-len(malformedSeeds) {
			all = append(all, s...)
		}
	}
	f.Add(all, uint16(0))
	f.Add(all, uint16(64))
	f.Add(append(appendVarInt([]byte{0x30}, 200<<20), all...), uint16(1024))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		maxSize := int(max)
		r := NewReader(bytes.NewReader(data), maxSize)
		allocated := 0
		r.alloc = func(n int) []byte {
			if maxSize > 0 && n > maxSize {
				t.Fatalf("allocated %d bytes with maxSize %d", n, maxSize)
			}
			allocated += n
			return make([]byte, n)
		}
		for i := 0; ; i++ {
			if i > len(data) {
				t.Fatal("more packets than bytes")
			}
			allocated = 0
			p, err := r.Read()
			// The body grows with the bytes that arrive, whatever the
			// header announced.
			if allocated > firstChunk+4*len(data) {
				t.Fatalf("allocated %d bytes for a stream of %d", allocated, len(data))
			}
			if err != nil {
				if p != nil {
					t.Fatal("packet returned with an error")
				}
				var e *Error
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &e) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if _, err := Append(nil, p); err != nil {
				t.Fatalf("Append refused a read packet %#v: %v", p, err)
			}
		}
	})
}

// TestWriteSeedCorpus rewrites testdata/fuzz/{FuzzDecode,FuzzReader} from
// the seeds above when run with -update-corpus.
func TestWriteSeedCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite the seed corpora")
	}
	seeds := seedPackets(t)
	write := func(target string, i int, args ...string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := "go test fuzz v1\n"
		for _, a := range args {
			body += a + "\n"
		}
		name := filepath.Join(dir, fmt.Sprintf("seed-%03d", i))
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var all []byte
	for i, s := range seeds {
		write("FuzzDecode", i, fmt.Sprintf("[]byte(%q)", s))
		write("FuzzReader", i, fmt.Sprintf("[]byte(%q)", s), fmt.Sprintf("uint16(%d)", len(s)))
		all = append(all, s...)
	}
	write("FuzzReader", len(seeds), fmt.Sprintf("[]byte(%q)", all), "uint16(0)")
	write("FuzzReader", len(seeds)+1, fmt.Sprintf("[]byte(%q)", all), "uint16(100)")
}
