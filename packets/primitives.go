package packets

import (
	"strings"
	"unicode/utf8"
)

// maxVarInt is the largest value a variable byte integer holds (§1.5.5),
// which bounds the remaining length and the subscription identifier.
const maxVarInt = 268435455

// maxPacketSize is the largest packet the protocol allows: a fixed header
// byte, a four-byte remaining length and the longest remaining length.
const maxPacketSize = 1 + 4 + maxVarInt

// varIntLen returns the number of bytes of the shortest encoding of v.
func varIntLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	}
	return 4
}

func appendVarInt(b []byte, v int) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendU16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendString(b []byte, s string) []byte {
	b = appendU16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBinary(b, v []byte) []byte {
	b = appendU16(b, uint16(len(v)))
	return append(b, v...)
}

// checkString reports a string that cannot go on the wire: too long for
// its two-byte length, ill-formed UTF-8 (Go's decoder also refuses encoded
// surrogates and overlong forms), or holding U+0000 (MQTT-1.5.4-1/-2).
// A leading BOM is kept as any other character (MQTT-1.5.4-3).
func checkString(s string) error {
	if len(s) > 0xFFFF {
		return errorf(ErrMalformed, "string longer than 65535 bytes")
	}
	if !utf8.ValidString(s) {
		return ErrInvalidUTF8
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errorf(ErrInvalidUTF8, "U+0000 in string")
	}
	return nil
}

func checkBinary(b []byte) error {
	if len(b) > 0xFFFF {
		return errorf(ErrMalformed, "binary data longer than 65535 bytes")
	}
	return nil
}

// decoder reads primitives from a packet body. The first failure sticks in
// err and every later read returns zero values, so callers check err once
// per field group instead of after every read.
type decoder struct {
	b   []byte
	i   int
	err error
	lim Limits // resolved: no zero or negative values
}

func (d *decoder) fail(err error) {
	if d.err == nil && err != nil {
		d.err = err
	}
}

func (d *decoder) left() int { return len(d.b) - d.i }

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > d.left() {
		d.fail(ErrTruncated)
		return nil
	}
	v := d.b[d.i : d.i+n : d.i+n] // capped: appending to v must not clobber what follows
	d.i += n
	return v
}

func (d *decoder) byte() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return uint16(v[0])<<8 | uint16(v[1])
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
	}
	return 0
}

func (d *decoder) varInt() int {
	if d.err != nil {
		return 0
	}
	if d.i < len(d.b) && d.b[d.i] < 0x80 {
		// One byte, as every property identifier: no call.
		d.i++
		return int(d.b[d.i-1])
	}
	v, n, err := parseVarInt(d.b[d.i:])
	if err != nil {
		d.fail(err)
		return 0
	}
	d.i += n
	return v
}

// binary returns a slice of the body, which the packet then owns.
func (d *decoder) binary() []byte { return d.take(int(d.u16())) }

func (d *decoder) string() string {
	s := string(d.binary())
	if d.err == nil {
		if err := checkString(s); err != nil {
			d.fail(err)
		}
	}
	return s
}

// parseVarInt decodes a variable byte integer at the start of b and
// returns its value and length. It refuses more than four bytes and
// encodings longer than needed (MQTT-1.5.5-1).
func parseVarInt(b []byte) (v, n int, err error) {
	for shift := 0; n < 4; shift += 7 {
		if n >= len(b) {
			return 0, 0, ErrTruncated
		}
		c := b[n]
		n++
		v |= int(c&0x7F) << shift
		if c&0x80 == 0 {
			if n > 1 && c == 0 {
				return 0, 0, errorf(ErrMalformedVarInt, "not in shortest form")
			}
			return v, n, nil
		}
	}
	return 0, 0, errorf(ErrMalformedVarInt, "longer than four bytes")
}
