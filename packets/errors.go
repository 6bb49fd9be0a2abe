package packets

import (
	"errors"
	"io"
)

// errKind tells the kinds of violation apart, so that errors.Is matches an
// error against its sentinel whatever its message or reason code.
type errKind uint8

const (
	kindTruncated errKind = iota + 1
	kindMalformed
	kindMalformedVarInt
	kindInvalidUTF8
	kindReservedFlags
	kindPropertyNotAllowed
	kindDuplicateProperty
	kindInvalidQoS
	kindZeroPacketID
	kindPacketTooLarge
	kindProtocol
	kindTopicName
	kindTopicFilter
	kindTopicAlias
	kindLimit
)

// parent returns the broader kind a kind belongs to, so that errors.Is
// matches a topic error against ErrProtocol as well as its own sentinel.
func (k errKind) parent() errKind {
	switch k {
	case kindTopicName, kindTopicFilter, kindTopicAlias:
		return kindProtocol
	}
	return 0
}

// Error is a violation of the MQTT v5 wire format or protocol rules found
// while encoding or decoding a packet. Code is the reason code to send in
// the DISCONNECT (or CONNACK) that the specification asks for.
type Error struct {
	Code ReasonCode
	kind errKind
	msg  string
}

// Error returns the message, prefixed by the package name.
func (e *Error) Error() string { return "packets: " + e.msg }

// Is reports whether target is an *Error of the same kind, or of the
// broader kind this one belongs to (ErrProtocol for the topic errors),
// which lets errors.Is match a detailed error against its sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.kind != 0 && (t.kind == e.kind || t.kind == e.kind.parent())
}

// Sentinels, one per kind of violation; test with errors.Is. The reason
// code of each is the one a detailed error of that kind carries, except
// where noted.
var (
	// ErrTruncated reports a packet that ends before a field it announces.
	ErrTruncated = &Error{MalformedPacket, kindTruncated, "truncated packet"}
	// ErrMalformed reports any other structural fault, such as bytes left
	// over inside a packet or Will flags without a Will.
	ErrMalformed = &Error{MalformedPacket, kindMalformed, "malformed packet"}
	// ErrMalformedVarInt reports a variable byte integer longer than four
	// bytes or not in its shortest form (MQTT-1.5.5-1).
	ErrMalformedVarInt = &Error{MalformedPacket, kindMalformedVarInt, "malformed variable byte integer"}
	// ErrInvalidUTF8 reports an ill-formed UTF-8 string, an encoded
	// surrogate or U+0000 (MQTT-1.5.4-1, MQTT-1.5.4-2).
	ErrInvalidUTF8 = &Error{MalformedPacket, kindInvalidUTF8, "invalid UTF-8 string"}
	// ErrReservedFlags reports reserved bits set in the fixed header, the
	// CONNECT flags, the CONNACK flags or subscription options
	// (MQTT-2.1.3-1, MQTT-3.1.2-3, MQTT-3.8.3-5).
	ErrReservedFlags = &Error{MalformedPacket, kindReservedFlags, "reserved flags set"}
	// ErrPropertyNotAllowed reports an unknown property identifier, or one
	// not allowed in that packet (§2.2.2.2: a Malformed Packet).
	ErrPropertyNotAllowed = &Error{MalformedPacket, kindPropertyNotAllowed, "property not allowed"}
	// ErrDuplicateProperty reports a property that may appear once
	// appearing twice.
	ErrDuplicateProperty = &Error{ProtocolError, kindDuplicateProperty, "duplicate property"}
	// ErrInvalidQoS reports QoS 3, or DUP set on a QoS 0 PUBLISH
	// (MQTT-3.3.1-2, MQTT-3.3.1-4).
	ErrInvalidQoS = &Error{MalformedPacket, kindInvalidQoS, "invalid QoS"}
	// ErrZeroPacketID reports a packet identifier of zero where one is
	// required (MQTT-2.2.1-3).
	ErrZeroPacketID = &Error{ProtocolError, kindZeroPacketID, "zero packet identifier"}
	// ErrPacketTooLarge reports a packet over the maximum size in force,
	// or over the protocol's own limit.
	ErrPacketTooLarge = &Error{PacketTooLarge, kindPacketTooLarge, "packet too large"}
	// ErrProtocol reports any other protocol error: a wrong protocol name
	// or version (with code 0x84, Unsupported Protocol Version, as
	// §3.1.2.1 suggests), a property value out of range, a reason code not
	// allowed in the packet, an empty SUBSCRIBE, a wildcard in a topic
	// name, bytes after the packet, and so on.
	ErrProtocol = &Error{ProtocolError, kindProtocol, "protocol error"}
	// ErrInvalidTopicName reports a Topic Name (of a PUBLISH, a Will or a
	// Response Topic) that is empty or holds a wildcard (MQTT-4.7.3-1,
	// MQTT-3.3.2-2, MQTT-3.3.2-14). It is also ErrProtocol.
	ErrInvalidTopicName = &Error{ProtocolError, kindTopicName, "invalid topic name"}
	// ErrInvalidTopicFilter reports a Topic Filter that is empty, places a
	// wildcard wrongly, or breaks the rules of a shared subscription
	// (MQTT-4.7.3-1, MQTT-4.7.1-1, MQTT-4.7.1-2, MQTT-4.8.2-1,
	// MQTT-4.8.2-2). It is also ErrProtocol.
	ErrInvalidTopicFilter = &Error{ProtocolError, kindTopicFilter, "invalid topic filter"}
	// ErrTopicAliasInvalid reports a Topic Alias of 0 (MQTT-3.3.2-8); its
	// code is 0x94, Topic Alias invalid (§3.3.2.3.4). It is also
	// ErrProtocol.
	ErrTopicAliasInvalid = &Error{TopicAliasInvalid, kindTopicAlias, "topic alias invalid"}
	// ErrLimit reports a packet that holds more User Properties or
	// Subscription Identifiers than the decoder's Limits allow: decoding
	// them would take memory out of proportion to the packet. Its code is
	// 0x83, Implementation specific error.
	ErrLimit = &Error{ImplementationSpecificError, kindLimit, "decode limit exceeded"}
)

// errorf builds a detailed error of the sentinel's kind and code.
func errorf(sentinel *Error, msg string) *Error {
	return &Error{Code: sentinel.Code, kind: sentinel.kind, msg: sentinel.msg + ": " + msg}
}

// CodeOf returns the reason code to send in a DISCONNECT because of err:
// the code an *Error carries, Malformed Packet for a stream that ended
// inside a packet, Success for nil and Unspecified error otherwise.
func CodeOf(err error) ReasonCode {
	var e *Error
	switch {
	case err == nil:
		return Success
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, io.ErrUnexpectedEOF):
		return MalformedPacket
	}
	return UnspecifiedError
}
