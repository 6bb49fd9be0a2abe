package packets

import (
	"bufio"
	"io"
	"slices"
)

// Append appends the encoding of p to dst and returns the extended slice.
// It validates p first (the same rules as decode: QoS, packet identifier,
// properties allowed in that packet type, UTF-8 strings, reason codes
// allowed in that packet type) and returns an *Error without appending
// anything when p is invalid. Acknowledgements, DISCONNECT and AUTH take
// their shortest valid form. When dst has enough capacity, Append does not
// allocate.
func Append(dst []byte, p Packet) ([]byte, error) {
	l, err := plan(p)
	if err != nil {
		return dst, err
	}
	dst = slices.Grow(dst, 1+varIntLen(l.remaining)+l.remaining)
	return write(dst, p, &l), nil
}

// Size returns the number of bytes Append would write for p, or the error
// Append would return.
func Size(p Packet) (int, error) {
	l, err := plan(p)
	if err != nil {
		return 0, err
	}
	return 1 + varIntLen(l.remaining) + l.remaining, nil
}

// limit turns a maximum packet size as callers give it into a usable one.
func limit(maxSize int) int {
	if maxSize <= 0 || maxSize > maxPacketSize {
		return maxPacketSize
	}
	return maxSize
}

// Decode decodes exactly one whole packet from b (fixed header included)
// and returns an error if b holds anything else. maxSize bounds the whole
// packet; zero means the protocol maximum. The packet does not alias b:
// its body is copied once, and its byte slices share that copy.
func Decode(b []byte, maxSize int) (Packet, error) {
	if len(b) == 0 {
		return nil, ErrTruncated
	}
	if err := checkHeader(b[0]); err != nil {
		return nil, err
	}
	rl, n, err := parseVarInt(b[1:])
	if err != nil {
		return nil, err
	}
	size := 1 + n + rl
	switch {
	case size > limit(maxSize):
		return nil, errorf(ErrPacketTooLarge, "packet larger than the maximum size")
	case len(b) < size:
		return nil, ErrTruncated
	case len(b) > size:
		return nil, errorf(ErrProtocol, "bytes after the packet")
	}
	return decodeBody(b[0], slices.Clone(b[1+n:]))
}

// Reader reads packets one at a time from a stream. It is not safe for
// concurrent use. After an error other than io.EOF the stream is out of
// step and the connection should be closed.
type Reader struct {
	r       *bufio.Reader
	maxSize int
	// alloc makes a packet body; tests replace it to watch allocations.
	alloc func(n int) []byte
}

// NewReader returns a Reader of packets from r, each at most maxSize bytes
// (zero means the protocol maximum). It buffers r unless r is already a
// *bufio.Reader.
func NewReader(r io.Reader, maxSize int) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return &Reader{r: br, maxSize: maxSize, alloc: func(n int) []byte { return make([]byte, n) }}
}

// SetMaxSize changes the largest packet Read accepts, as when a CONNACK
// announces a Maximum Packet Size; zero means the protocol maximum.
func (r *Reader) SetMaxSize(n int) { r.maxSize = n }

// Read reads exactly one packet. It checks the remaining length against
// the maximum size before reading or allocating the body, so an oversized
// packet costs nothing but the error. It returns io.EOF when the stream
// ends cleanly between packets and io.ErrUnexpectedEOF when it ends inside
// one. The packet owns its memory: the body is read into a fresh buffer
// that the packet's byte slices (a PUBLISH payload) share.
func (r *Reader) Read() (Packet, error) {
	h, err := r.r.ReadByte()
	if err != nil {
		return nil, err
	}
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	var lb [4]byte
	n := 0
	for {
		c, err := r.r.ReadByte()
		if err != nil {
			return nil, noEOF(err)
		}
		lb[n] = c
		n++
		if c&0x80 == 0 || n == len(lb) {
			break
		}
	}
	rl, _, err := parseVarInt(lb[:n])
	if err != nil {
		return nil, err
	}
	if 1+n+rl > limit(r.maxSize) {
		return nil, errorf(ErrPacketTooLarge, "packet larger than the maximum size")
	}
	body := r.alloc(rl)
	if _, err := io.ReadFull(r.r, body); err != nil {
		return nil, noEOF(err)
	}
	return decodeBody(h, body)
}

// noEOF reports a stream that ended inside a packet.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
