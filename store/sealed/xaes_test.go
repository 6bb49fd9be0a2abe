package sealed

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestXAESVectors checks the construction against the test vectors that
// C2SP publishes for XAES-256-GCM, so the stored format is the standard one
// and any conforming implementation can open it.
func TestXAESVectors(t *testing.T) {
	nonce := []byte("ABCDEFGHIJKLMNOPQRSTUVWX")
	plaintext := []byte("XAES-256-GCM")
	for _, c := range []struct {
		key  byte
		aad  string
		want string
	}{
		{0x01, "", "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271"},
		{0x03, "c2sp.org/XAES-256-GCM", "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d"},
	} {
		x, err := newXAES(bytes.Repeat([]byte{c.key}, 32))
		if err != nil {
			t.Fatal(err)
		}
		var aad []byte
		if c.aad != "" {
			aad = []byte(c.aad)
		}
		ct, err := x.seal(nil, nonce, plaintext, aad)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(ct); got != c.want {
			t.Errorf("key %#x: sealed %s, want %s", c.key, got, c.want)
		}
		pt, err := x.open(nil, nonce, ct, aad)
		if err != nil || !bytes.Equal(pt, plaintext) {
			t.Errorf("key %#x: open = %q, %v", c.key, pt, err)
		}
		ct[len(ct)-1] ^= 1
		if _, err := x.open(nil, nonce, ct, aad); err == nil {
			t.Errorf("key %#x: a changed tag opened", c.key)
		}
	}
}

func TestXAESKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33} {
		if _, err := newXAES(make([]byte, n)); err == nil {
			t.Errorf("a %d-byte key was accepted", n)
		}
	}
}
