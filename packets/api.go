package packets

import (
	"bufio"
	"io"
	"math"
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

// Limits bounds the memory that decoding a packet may take beyond the
// packet's own bytes. Every string and binary field of a decoded packet
// costs at most its size on the wire once more (the payload and binary
// data share the body), but each User Property also costs 32 bytes and
// each Subscription Identifier 4, for as little as 5 and 2 bytes on the
// wire: without a bound, a packet of empty User Properties would take
// about seven times its size. A decoded packet therefore takes at most
// twice its size plus 32×UserProperties + 4×SubscriptionIdentifiers bytes
// and a few hundred bytes of fixed cost. A packet over a limit fails with
// ErrLimit (reason code 0x83, Implementation specific error).
type Limits struct {
	// UserProperties is the most User Properties one property section
	// may hold (a CONNECT counts its Will properties apart). Zero means
	// DefaultUserProperties; a negative value means no limit.
	UserProperties int
	// SubscriptionIdentifiers is the most Subscription Identifiers a
	// PUBLISH may hold. Zero means DefaultSubscriptionIdentifiers; a
	// negative value means no limit.
	SubscriptionIdentifiers int
}

// The limits Decode applies, and a Reader applies unless SetLimits
// changes them. The specification sets no limit; these are far above
// what applications send (one Subscription Identifier per matching
// subscription, a handful of User Properties) and cost at most 36 KiB.
const (
	DefaultUserProperties          = 1024
	DefaultSubscriptionIdentifiers = 1024
)

// resolve turns limits as callers give them into usable ones.
func (l Limits) resolve() Limits {
	pick := func(v, def int) int {
		switch {
		case v == 0:
			return def
		case v < 0:
			return math.MaxInt
		}
		return v
	}
	return Limits{pick(l.UserProperties, DefaultUserProperties), pick(l.SubscriptionIdentifiers, DefaultSubscriptionIdentifiers)}
}

// Decode decodes exactly one whole packet from b (fixed header included)
// and returns an error if b holds anything else. maxSize bounds the whole
// packet; zero means the protocol maximum. The packet does not alias b:
// its body is copied once, and its byte slices share that copy. It applies
// the default Limits.
func Decode(b []byte, maxSize int) (Packet, error) {
	return DecodeWith(b, maxSize, Limits{})
}

// DecodeWith is Decode with limits lim in place of the default ones.
func DecodeWith(b []byte, maxSize int, lim Limits) (Packet, error) {
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
	return decodeBody(b[0], slices.Clone(b[1+n:]), lim.resolve(), nil, nil)
}

// Reader reads packets one at a time from a stream. It is not safe for
// concurrent use. After an error other than io.EOF the stream is out of
// step and the connection should be closed.
type Reader struct {
	r       *bufio.Reader
	maxSize int
	lim     Limits // resolved once here rather than for every packet
	// alloc makes a packet body, or a larger one as its bytes arrive;
	// tests replace it to watch allocations.
	alloc func(n int) []byte

	reuse    bool      // ReuseAcks
	ack      Ack       // the Ack ReuseAcks decodes into
	small    [256]byte // the body of such an Ack
	reusePub bool      // ReusePublish
	pub      Publish   // the Publish ReusePublish decodes into
}

// NewReader returns a Reader of packets from r, each at most maxSize bytes
// (zero means the protocol maximum). It buffers r unless r is already a
// *bufio.Reader.
func NewReader(r io.Reader, maxSize int) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return &Reader{r: br, maxSize: maxSize, lim: Limits{}.resolve(), alloc: func(n int) []byte { return make([]byte, n) }}
}

// SetMaxSize changes the largest packet Read accepts, as when a CONNACK
// announces a Maximum Packet Size; zero means the protocol maximum.
func (r *Reader) SetMaxSize(n int) { r.maxSize = n }

// SetLimits changes the limits Read applies to each packet's decoded
// form; the zero Limits, in force until then, applies the defaults.
func (r *Reader) SetLimits(l Limits) { r.lim = l.resolve() }

// Read reads exactly one packet. It checks the remaining length against
// the maximum size before reading or allocating the body, so an oversized
// packet costs nothing but the error; and it allocates a large body as its
// bytes arrive, never more than about twice what arrived, so that a header
// that announces 256 MB costs nothing until the bytes follow. It returns
// io.EOF when the stream ends cleanly between packets and
// io.ErrUnexpectedEOF when it ends inside one. The packet owns its
// memory: the body is read into a fresh buffer, exactly as long as the
// body, that the packet's byte slices (a PUBLISH payload) share.
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
	if t := Type(h >> 4); r.reuse && t >= PUBACK && t <= PUBCOMP && rl <= len(r.small) {
		// An acknowledgement keeps no slice of its body: decoded from the
		// Reader's own buffer into the Reader's own Ack.
		body := r.small[:rl]
		if _, err := io.ReadFull(r.r, body); err != nil {
			return nil, noEOF(err)
		}
		return decodeBody(h, body, r.lim, &r.ack, nil)
	}
	body, err := r.body(rl)
	if err != nil {
		return nil, noEOF(err)
	}
	var pub *Publish
	if r.reusePub {
		pub = &r.pub
	}
	return decodeBody(h, body, r.lim, nil, pub)
}

// ReusePublish makes the Reader decode every PUBLISH into one Publish it
// owns and reuses: the *Publish returned by Read is valid only until the
// next Read, though what it points to (topic, payload, property values and
// lists) stays the caller's. A caller that copies what it keeps from each
// PUBLISH before reading the next saves an allocation per message.
func (r *Reader) ReusePublish() { r.reusePub = true }

// ReuseAcks makes the Reader decode every PUBACK, PUBREC, PUBREL and
// PUBCOMP (of up to 256 bytes) into one Ack it owns and reuses: such a
// packet returned by Read is valid only until the next Read. A caller that
// handles each packet before reading the next saves two allocations per
// acknowledgement.
func (r *Reader) ReuseAcks() { r.reuse = true }

// firstChunk is the largest body the Reader allocates before any of its
// bytes arrive.
const firstChunk = 64 << 10

// body reads a packet body of n bytes. Up to firstChunk it allocates the
// whole body at once; beyond, it doubles the buffer as bytes arrive, the
// last step to n exactly, so the packet keeps no spare capacity and a
// peer that announces more than it sends makes the Reader hold at most
// twice what it sent.
func (r *Reader) body(n int) ([]byte, error) {
	b := r.alloc(min(n, firstChunk))
	got := 0
	for {
		m, err := io.ReadFull(r.r, b[got:])
		got += m
		if err != nil {
			return nil, err
		}
		if got == n {
			return b, nil
		}
		next := r.alloc(min(2*len(b), n))
		copy(next, b)
		b = next
	}
}

// noEOF reports a stream that ended inside a packet.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
