package sealed

import (
	"bytes"
	"testing"

	"github.com/tethermq/tether/store"
)

func testRing(t *testing.T) *ring {
	t.Helper()
	g, err := newRing(Keyring{Current: 3, Keys: map[uint32][]byte{3: bytes.Repeat([]byte{3}, KeyLen)}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestSealedIsXAES opens a stored record with the plain XAES-256-GCM
// construction and the documented layout, so that any conforming
// implementation given the key can read a store's records.
func TestSealedIsXAES(t *testing.T) {
	g := testRing(t)
	k := store.Key{Server: "tcp://h:1", ClientID: "c"}
	r := store.Record{Seq: 42, Dir: store.Inbound, ID: 7, Packet: []byte("marker")}
	b, err := g.seal(k, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != len(r.Packet)+Overhead || b[0] != formatV1 {
		t.Fatalf("stored form of %d bytes, format %d", len(b), b[0])
	}
	if id, ok := KeyID(b); !ok || id != 3 {
		t.Fatalf("KeyID = %d, %v", id, ok)
	}
	x, _ := newXAES(bytes.Repeat([]byte{3}, KeyLen))
	p, err := x.open(nil, b[5:headerLen], b[headerLen:], aad(b, k, r))
	if err != nil || !bytes.Equal(p, r.Packet) {
		t.Fatalf("XAES open = %q, %v", p, err)
	}
}

// TestNonces: two records never share a nonce; one handle keeps its salt
// (the first half) until it is used up, then draws another; two handles
// draw different salts.
func TestNonces(t *testing.T) {
	g, h := testRing(t), testRing(t)
	k := store.Key{}
	r := store.Record{Seq: 1, Packet: []byte("same")}
	seen := make(map[string]bool)
	nonce := func(g *ring) []byte {
		t.Helper()
		b, err := g.seal(k, r)
		if err != nil {
			t.Fatal(err)
		}
		n := b[5:headerLen]
		if seen[string(n)] {
			t.Fatalf("nonce %x used twice", n)
		}
		seen[string(n)] = true
		if p, err := g.open(k, store.Record{Seq: 1, Packet: b}); err != nil || string(p) != "same" {
			t.Fatalf("open = %q, %v", p, err)
		}
		return n
	}
	a1, a2 := nonce(g), nonce(g)
	if !bytes.Equal(a1[:12], a2[:12]) {
		t.Error("one handle changed its salt before it was used up")
	}
	if b1 := nonce(h); bytes.Equal(a1[:12], b1[:12]) {
		t.Error("two handles drew one salt")
	}
	g.mu.Lock()
	g.uses = 1
	g.mu.Unlock()
	a3 := nonce(g)
	if !bytes.Equal(a1[:12], a3[:12]) {
		t.Error("the salt changed before its last use")
	}
	if a4 := nonce(g); bytes.Equal(a1[:12], a4[:12]) {
		t.Error("a used-up salt was kept")
	}
	// The cache of derived ciphers stays bounded whatever salts it meets.
	for i := 0; i < 3*cacheMax; i++ {
		g.mu.Lock()
		g.uses = 0
		g.mu.Unlock()
		nonce(g)
	}
	g.mu.Lock()
	n := len(g.cache)
	g.mu.Unlock()
	if n > cacheMax {
		t.Errorf("the cache holds %d derived ciphers, more than %d", n, cacheMax)
	}
}
