package packets

// This file fixes the package's public API. The implementation lives in the
// other files of the package; signatures here are the contract the client
// codes against.

// Append appends the encoding of p to dst and returns the extended slice.
// It validates p first (the same rules as decode: QoS, packet identifier,
// properties allowed in that packet type, UTF-8 strings) and returns an
// *Error without appending anything when p is invalid. In steady state
// (dst with enough capacity) it does not allocate.
//   func Append(dst []byte, p Packet) ([]byte, error)

// Size returns the number of bytes Append would write for p.
//   func Size(p Packet) (int, error)

// Decode decodes exactly one whole packet from b (fixed header included)
// and returns an error if b holds anything else. maxSize bounds the whole
// packet; zero means the protocol maximum.
//   func Decode(b []byte, maxSize int) (Packet, error)

// Reader reads packets one at a time from a stream.
//   func NewReader(r io.Reader, maxSize int) *Reader
//   func (r *Reader) Read() (Packet, error)   // exactly one packet; checks
//       the remaining length against maxSize before allocating; io.EOF at
//       a clean end between packets, io.ErrUnexpectedEOF inside one.
//   func (r *Reader) SetMaxSize(n int)

// Errors: every validation failure is an *Error carrying the reason code
// the specification asks for (0x81 Malformed Packet, 0x82 Protocol Error,
// 0x95 Packet Too Large, ...) and matching, with errors.Is, one exported
// sentinel per kind of violation (ErrMalformedVarInt, ErrInvalidUTF8, ...).
//   type Error struct { Code ReasonCode; ... }
//   func CodeOf(err error) ReasonCode // the reason code to DISCONNECT with
