package sealed

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/tethermq/tether/store"
)

func testNamer(t testing.TB, b byte) *namer {
	t.Helper()
	n, err := newNamer(bytes.Repeat([]byte{b}, KeyLen))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var nameKeys = []store.Key{
	{},
	{Server: "tcp://broker.example:1883", ClientID: "sensor-17"},
	{Server: "tcp://broker.example:1883", ClientID: ""},
	{Server: "", ClientID: "tcp://broker.example:1883"},
	{Server: "a", ClientID: "bc"},
	{Server: "ab", ClientID: "c"},
	{Server: "x\x00y", ClientID: "{tag}:rec\n"},
	{Server: "wss://ü.example:443", ClientID: strings.Repeat("é", 300)},
	{Server: "tcp://h:1", ClientID: strings.Repeat("z", 13)}, // fills a pad block exactly
}

func TestNamesRoundTrip(t *testing.T) {
	n := testNamer(t, 1)
	seen := make(map[store.Key]store.Key)
	for _, k := range nameKeys {
		h := n.hide(k)
		if h.Server != HiddenServer {
			t.Errorf("hide(%v).Server = %q", k, h.Server)
		}
		// (Strings of a few letters turn up in base64 by chance.)
		if len(k.ClientID) > 4 && strings.Contains(h.ClientID, k.ClientID) || len(k.Server) > 4 && strings.Contains(h.ClientID, k.Server) {
			t.Errorf("hide(%v) = %v shows the Key", k, h)
		}
		if again := n.compute(k); again != h {
			t.Errorf("hide(%v) is not deterministic: %v then %v", k, h, again)
		}
		if other, dup := seen[h]; dup {
			t.Errorf("%v and %v hide to one name %v", k, other, h)
		}
		seen[h] = k
		got, err := n.reveal(h)
		if err != nil || got != k {
			t.Errorf("reveal(hide(%v)) = %v, %v", k, got, err)
		}
	}
}

func TestNamesRefuseForeign(t *testing.T) {
	n, other := testNamer(t, 1), testNamer(t, 2)
	k := store.Key{Server: "tcp://broker.example:1883", ClientID: "sensor-17"}
	h := n.hide(k)
	if _, err := other.reveal(h); err == nil {
		t.Error("a name opened under another NameKey")
	}
	if _, err := n.reveal(k); err == nil {
		t.Error("a clear Key was taken for a name")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(h.ClientID)
	for i := range raw {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x40
		if got, err := n.reveal(store.Key{Server: HiddenServer, ClientID: base64.RawURLEncoding.EncodeToString(bad)}); err == nil {
			t.Errorf("a name with byte %d changed opened, as %v", i, got)
		}
	}
	for _, s := range []string{"", "!!", "AAAA", h.ClientID[:len(h.ClientID)-4]} {
		if _, err := n.reveal(store.Key{Server: HiddenServer, ClientID: s}); err == nil {
			t.Errorf("name %q opened", s)
		}
	}
}

// FuzzReveal feeds reveal and parseName arbitrary names: they refuse, never
// panic, and whatever opens maps back to the same name.
func FuzzReveal(f *testing.F) {
	n := testNamer(f, 1)
	for _, k := range nameKeys {
		f.Add(n.hide(k).ClientID, plainName(k))
	}
	f.Fuzz(func(t *testing.T, name string, plain []byte) {
		if k, err := n.reveal(store.Key{Server: HiddenServer, ClientID: name}); err == nil {
			if h := n.hide(k); h.ClientID != name {
				t.Errorf("%q opened as %v, which hides to %q", name, k, h.ClientID)
			}
		}
		if k, err := parseName(plain); err == nil && !bytes.Equal(plainName(k), plain) {
			t.Errorf("parseName(%x) = %v, which encodes as %x", plain, k, plainName(k))
		}
	})
}

// FuzzOpen feeds the record opener arbitrary stored bytes: it refuses them
// with a clear error and never panics.
func FuzzOpen(f *testing.F) {
	g, err := newRing(Keyring{Current: 7, Keys: map[uint32][]byte{7: bytes.Repeat([]byte{7}, KeyLen)}})
	if err != nil {
		f.Fatal(err)
	}
	k := store.Key{Server: "tcp://h:1", ClientID: "c"}
	good, err := g.seal(k, store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte("hello")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, uint64(1))
	f.Add([]byte{}, uint64(0))
	f.Add(make([]byte, Overhead), uint64(2))
	f.Fuzz(func(t *testing.T, b []byte, seq uint64) {
		r := store.Record{Seq: seq, Dir: store.Outbound, ID: 1, Packet: bytes.Clone(b)}
		p, err := g.open(k, r)
		if err == nil && (seq != 1 || !bytes.Equal(p, []byte("hello"))) {
			t.Errorf("%x at seq %d opened as %q", b, seq, p)
		}
	})
}
