package sealed

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/tethermq/tether/store"
)

// KeyLen is the length of every key of a Keyring and of Options.NameKey:
// 32 bytes, for AES-256. Use bytes from a cryptographic random source (a
// secrets manager, or crypto/rand), never a password.
const KeyLen = 32

// Overhead is how many bytes sealing adds to a record's Packet: a format
// byte, the key id (4 bytes), the nonce (24) and the authentication tag (16).
// The largest Packet a sealed store accepts is the inner store's maximum
// less Overhead.
const Overhead = headerLen + xaesTagLen

const (
	formatV1  = 1
	headerLen = 1 + 4 + xaesNonceLen // format, key id, nonce
)

// Keyring holds the keys records are sealed and opened with. Every record
// names the id of the key that sealed it, so keys can rotate: add a new key,
// make it Current, and keep the old one in Keys for as long as records sealed
// with it may remain.
type Keyring struct {
	// Current is the id of the key that seals every record written. It
	// must be one of Keys.
	Current uint32
	// Keys holds every key that may open a record, by id, the current one
	// included. Each is KeyLen bytes. New copies them; changing the map or
	// its slices afterwards changes nothing.
	Keys map[uint32][]byte
}

// Errors that explain why a record did not open. A Load reports such records
// in a *store.CorruptError whose Err wraps one or more of these.
var (
	// ErrUnknownKey means the record names a key id the keyring lacks: a
	// key retired too early, or a store shared with another keyring.
	ErrUnknownKey = errors.New("sealed: record sealed with a key id the keyring lacks")
	// ErrAuth means the record failed authentication: a wrong key under
	// the right id, changed bytes, or a record moved to another session,
	// Seq, direction or packet identifier.
	ErrAuth = errors.New("sealed: record failed authentication (wrong key, tampered, or moved)")
	// ErrFormat means the stored bytes are not a sealed record at all: too
	// short, or of an unknown format (for example written by a store
	// without encryption).
	ErrFormat = errors.New("sealed: not a sealed record")
)

// ring is a checked Keyring ready for use.
//
// XAES-256-GCM derives a key from the first half of each nonce, which costs
// two AES blocks and a new AES and GCM setup per record. A store therefore
// seals with one random first half (a salt) for up to saltUses records and
// a random second half per record, and caches the derived ciphers it meets
// when opening: records written by one handle share a salt. Every nonce
// stays random, so no two records share one however processes are copied
// or restored, and no derived key serves more records than a random 96-bit
// GCM nonce allows.
type ring struct {
	current uint32
	keys    map[uint32]*xaes

	mu     sync.Mutex // guards the fields below
	salt   [12]byte   // first half of the nonces sealed now
	writer cipher.AEAD
	uses   uint64 // records left to seal under salt
	cache  map[derivation]cipher.AEAD
}

// saltUses is how many records a store seals under one salt: well below
// the 2^32 messages that one AES-GCM key may take under random nonces.
const saltUses = 1 << 30

// cacheMax bounds the derived ciphers a store keeps for opening; past it,
// the cache starts again.
const cacheMax = 256

// derivation names one derived key: the master key's id and the salt.
type derivation struct {
	id   uint32
	salt [12]byte
}

func newRing(kr Keyring) (*ring, error) {
	if len(kr.Keys) == 0 {
		return nil, errors.New("sealed: the keyring holds no key")
	}
	ids := make([]uint32, 0, len(kr.Keys))
	for id := range kr.Keys {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	r := &ring{current: kr.Current, keys: make(map[uint32]*xaes, len(kr.Keys)), cache: make(map[derivation]cipher.AEAD)}
	for _, id := range ids {
		k := kr.Keys[id]
		if len(k) != KeyLen {
			return nil, fmt.Errorf("sealed: key %d is %d bytes, want %d", id, len(k), KeyLen)
		}
		x, err := newXAES(k)
		if err != nil {
			return nil, fmt.Errorf("sealed: key %d: %w", id, err)
		}
		r.keys[id] = x
	}
	if _, ok := r.keys[kr.Current]; !ok {
		return nil, fmt.Errorf("sealed: the current key id %d is not in the keyring", kr.Current)
	}
	return r, nil
}

// aad returns the additional data a record is authenticated with: its format
// and key id, and its whole identity, so that a record copied to another
// session, Seq, direction or packet identifier no longer opens.
func aad(header []byte, k store.Key, r store.Record) []byte {
	const label = "tether sealed record\x00"
	b := make([]byte, 0, len(label)+5+2*binary.MaxVarintLen64+len(k.Server)+len(k.ClientID)+11)
	b = append(b, label...)
	b = append(b, header[:5]...)
	b = binary.AppendUvarint(b, uint64(len(k.Server)))
	b = append(b, k.Server...)
	b = binary.AppendUvarint(b, uint64(len(k.ClientID)))
	b = append(b, k.ClientID...)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = append(b, byte(r.Dir))
	return binary.BigEndian.AppendUint16(b, r.ID)
}

// seal returns the stored form of r's Packet for session k:
//
//	format (1) | key id (4, big-endian) | nonce (24) | ciphertext and tag
func (g *ring) seal(k store.Key, r store.Record) ([]byte, error) {
	aead, salt, err := g.sealer()
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerLen, headerLen+len(r.Packet)+xaesTagLen)
	out[0] = formatV1
	binary.BigEndian.PutUint32(out[1:], g.current)
	nonce := out[5:headerLen]
	copy(nonce, salt[:])
	if _, err := rand.Read(nonce[12:]); err != nil {
		return nil, fmt.Errorf("sealed: nonce: %w", err)
	}
	return aead.Seal(out, nonce[12:], r.Packet, aad(out, k, r)), nil
}

// sealer returns the cipher to seal the next record with, and its salt,
// drawing a new salt when the current one is used up.
func (g *ring) sealer() (cipher.AEAD, [12]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.uses == 0 {
		var salt [12]byte
		if _, err := rand.Read(salt[:]); err != nil {
			return nil, salt, fmt.Errorf("sealed: nonce: %w", err)
		}
		aead, err := g.keys[g.current].aead(salt[:])
		if err != nil {
			return nil, salt, fmt.Errorf("sealed: %w", err)
		}
		g.salt, g.writer, g.uses = salt, aead, saltUses
		g.remember(derivation{g.current, salt}, aead)
	}
	g.uses--
	return g.writer, g.salt, nil
}

// remember caches a derived cipher. g.mu held.
func (g *ring) remember(d derivation, aead cipher.AEAD) {
	if len(g.cache) >= cacheMax {
		clear(g.cache)
	}
	g.cache[d] = aead
}

// opener returns the cipher that opens records of key x (id) sealed under
// salt.
func (g *ring) opener(id uint32, x *xaes, salt []byte) (cipher.AEAD, error) {
	d := derivation{id: id, salt: [12]byte(salt)}
	g.mu.Lock()
	aead := g.cache[d]
	g.mu.Unlock()
	if aead != nil {
		return aead, nil
	}
	aead, err := x.aead(salt)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.remember(d, aead)
	g.mu.Unlock()
	return aead, nil
}

// open returns the Packet that r (as the inner store holds it) seals for
// session k. It decrypts in place, so r.Packet must belong to the caller.
func (g *ring) open(k store.Key, r store.Record) ([]byte, error) {
	b := r.Packet
	if len(b) < Overhead {
		return nil, fmt.Errorf("%w: seq %d holds %d bytes, fewer than the %d of a sealed record", ErrFormat, r.Seq, len(b), Overhead)
	}
	if b[0] != formatV1 {
		return nil, fmt.Errorf("%w: seq %d has format %d", ErrFormat, r.Seq, b[0])
	}
	id := binary.BigEndian.Uint32(b[1:])
	x, ok := g.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w: seq %d names key %d", ErrUnknownKey, r.Seq, id)
	}
	nonce, body := b[5:headerLen], b[headerLen:]
	aead, err := g.opener(id, x, nonce[:12])
	if err != nil {
		return nil, fmt.Errorf("sealed: %w", err)
	}
	p, err := aead.Open(body[:0], nonce[12:], body, aad(b, k, r))
	if err != nil {
		return nil, fmt.Errorf("%w: seq %d under key %d", ErrAuth, r.Seq, id)
	}
	return p, nil
}

// KeyID returns the id of the key that sealed a record as the inner store
// holds it (the Packet of a record loaded from the wrapped store directly),
// for tools that audit which keys are still in use. ok is false when packet
// is not a sealed record.
func KeyID(packet []byte) (id uint32, ok bool) {
	if len(packet) < Overhead || packet[0] != formatV1 {
		return 0, false
	}
	return binary.BigEndian.Uint32(packet[1:]), true
}
