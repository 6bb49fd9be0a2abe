package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
)

// xaes is XAES-256-GCM as C2SP specifies it: AES-256-GCM with a 192-bit
// nonce. The first 96 bits of the nonce derive a key of its own for the
// message (NIST SP 800-108r1 counter-mode KDF over AES-256 CMAC), and the
// last 96 bits are that message's GCM nonce. Random nonces are then safe for
// far more messages than the 2^32 a single AES-GCM key allows, which a busy
// session store could otherwise reach within days.
//
// The standard library offers AES-GCM but not this extension, so it is built
// here from crypto/aes and crypto/cipher; the published test vectors check it.
type xaes struct {
	block cipher.Block // AES-256 under the master key
	k1    [16]byte     // the CMAC subkey K1 of the master key
}

const (
	xaesKeyLen   = 32
	xaesNonceLen = 24
	xaesTagLen   = 16
)

func newXAES(key []byte) (*xaes, error) {
	if len(key) != xaesKeyLen {
		return nil, errors.New("sealed: XAES-256-GCM needs a 32-byte key")
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	x := &xaes{block: b}
	var l [16]byte
	b.Encrypt(l[:], l[:])
	// K1 is L doubled in GF(2^128): a left shift by one bit, reduced by the
	// polynomial x^128 + x^7 + x^2 + x + 1 when a bit falls off the top.
	carry := l[0] >> 7
	for i := 0; i < 15; i++ {
		x.k1[i] = l[i]<<1 | l[i+1]>>7
	}
	x.k1[15] = l[15]<<1 ^ 0x87*carry
	return x, nil
}

// aead returns the AES-256-GCM instance for one message, keyed by the first
// 12 bytes of its 24-byte nonce.
func (x *xaes) aead(nonce []byte) (cipher.AEAD, error) {
	var m1, m2, key [32]byte
	// The KDF's two input blocks: counter, label 'X', a zero separator and
	// the nonce's first half; each is XORed with K1, as CMAC does for a
	// single complete block.
	m1[1], m1[2] = 1, 'X'
	m2[1], m2[2] = 2, 'X'
	copy(m1[4:16], nonce[:12])
	copy(m2[4:16], nonce[:12])
	for i := 0; i < 16; i++ {
		m1[i] ^= x.k1[i]
		m2[i] ^= x.k1[i]
	}
	x.block.Encrypt(key[:16], m1[:16])
	x.block.Encrypt(key[16:], m2[:16])
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// seal appends to dst the encryption and tag of plaintext under the 24-byte
// nonce, authenticating aad as well.
func (x *xaes) seal(dst, nonce, plaintext, aad []byte) ([]byte, error) {
	g, err := x.aead(nonce)
	if err != nil {
		return nil, err
	}
	return g.Seal(dst, nonce[12:], plaintext, aad), nil
}

// open appends to dst the plaintext of ciphertext sealed under the 24-byte
// nonce with aad, or fails when it does not authenticate.
func (x *xaes) open(dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	g, err := x.aead(nonce)
	if err != nil {
		return nil, err
	}
	return g.Open(dst, nonce[12:], ciphertext, aad)
}
