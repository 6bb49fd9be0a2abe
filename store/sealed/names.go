package sealed

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/tethermq/tether/store"
)

// HiddenServer is the Server of every Key a store with Options.NameKey hands
// to the inner store; the session's real Key is sealed in the ClientID.
const HiddenServer = "tether-sealed:1"

// namer maps a session's Key to the Key the inner store sees, and back.
//
// The mapping must be deterministic (the same session always lands on the
// same inner Key) and reversible (so that Lister can name sessions). It is a
// synthetic-IV construction: the IV is an HMAC-SHA256 of the real Key, and
// the real Key is encrypted with AES-256-CTR under that IV. Equal Keys give
// equal names, which a deterministic name cannot avoid; nothing else about a
// Key shows but its length, rounded up to 16 bytes.
type namer struct {
	mac   []byte       // HMAC-SHA256 key of the synthetic IV
	block cipher.Block // AES-256 for the CTR encryption

	mu    sync.Mutex // guards names
	names map[store.Key]store.Key
}

// namesMax bounds the names a namer remembers (a client maps the same Key
// on every call); past it, the cache starts again.
const namesMax = 1024

const (
	sivLen     = 16
	namePad    = 16
	nameMACTag = "tether sealed name\x00"
)

func newNamer(secret []byte) (*namer, error) {
	if len(secret) != KeyLen {
		return nil, fmt.Errorf("sealed: NameKey is %d bytes, want %d", len(secret), KeyLen)
	}
	mac, err := hkdf.Key(sha256.New, secret, nil, "tether sealed name mac", 32)
	if err != nil {
		return nil, fmt.Errorf("sealed: NameKey: %w", err)
	}
	enc, err := hkdf.Key(sha256.New, secret, nil, "tether sealed name enc", 32)
	if err != nil {
		return nil, fmt.Errorf("sealed: NameKey: %w", err)
	}
	b, err := aes.NewCipher(enc)
	if err != nil {
		return nil, fmt.Errorf("sealed: NameKey: %w", err)
	}
	return &namer{mac: mac, block: b, names: make(map[store.Key]store.Key)}, nil
}

// plainName encodes k unambiguously (lengths first), padded with zeros to a
// multiple of namePad bytes.
func plainName(k store.Key) []byte {
	n := 2*binary.MaxVarintLen64 + len(k.Server) + len(k.ClientID)
	b := make([]byte, 0, n+namePad)
	b = binary.AppendUvarint(b, uint64(len(k.Server)))
	b = append(b, k.Server...)
	b = binary.AppendUvarint(b, uint64(len(k.ClientID)))
	b = append(b, k.ClientID...)
	for len(b)%namePad != 0 {
		b = append(b, 0)
	}
	return b
}

var errBadName = errors.New("sealed: not a name of this NameKey")

// parseName is plainName's inverse; it refuses anything plainName could
// not have produced (a length spelt in more bytes than needed, padding that
// is not zeros or not minimal), so that every Key has one name.
func parseName(b []byte) (store.Key, error) {
	var parts [2]string
	rest := b
	for i := range parts {
		l, n := binary.Uvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return store.Key{}, errBadName
		}
		parts[i] = string(rest[n : n+int(l)])
		rest = rest[n+int(l):]
	}
	k := store.Key{Server: parts[0], ClientID: parts[1]}
	if !bytes.Equal(plainName(k), b) {
		return store.Key{}, errBadName
	}
	return k, nil
}

func (n *namer) siv(plain []byte) []byte {
	h := hmac.New(sha256.New, n.mac)
	h.Write([]byte(nameMACTag))
	h.Write(plain)
	return h.Sum(nil)[:sivLen]
}

// hide returns the inner store's Key of session k.
func (n *namer) hide(k store.Key) store.Key {
	n.mu.Lock()
	h, ok := n.names[k]
	n.mu.Unlock()
	if ok {
		return h
	}
	h = n.compute(k)
	n.mu.Lock()
	if len(n.names) >= namesMax {
		clear(n.names)
	}
	n.names[k] = h
	n.mu.Unlock()
	return h
}

// compute is hide without the cache.
func (n *namer) compute(k store.Key) store.Key {
	plain := plainName(k)
	out := make([]byte, sivLen+len(plain))
	copy(out, n.siv(plain))
	cipher.NewCTR(n.block, out[:sivLen]).XORKeyStream(out[sivLen:], plain)
	return store.Key{Server: HiddenServer, ClientID: base64.RawURLEncoding.EncodeToString(out)}
}

// reveal returns the session Key that h, a Key of the inner store, hides.
// It fails for a Key that this namer did not make.
func (n *namer) reveal(h store.Key) (store.Key, error) {
	if h.Server != HiddenServer {
		return store.Key{}, errBadName
	}
	raw, err := base64.RawURLEncoding.DecodeString(h.ClientID)
	// The decoder skips line breaks; only the one spelling hide makes is
	// a name, so no two inner sessions reveal the same Key.
	if err != nil || len(raw) < sivLen+namePad || (len(raw)-sivLen)%namePad != 0 ||
		base64.RawURLEncoding.EncodeToString(raw) != h.ClientID {
		return store.Key{}, errBadName
	}
	iv, body := raw[:sivLen], raw[sivLen:]
	plain := make([]byte, len(body))
	cipher.NewCTR(n.block, iv).XORKeyStream(plain, body)
	if !hmac.Equal(n.siv(plain), iv) {
		return store.Key{}, errBadName
	}
	return parseName(plain)
}
