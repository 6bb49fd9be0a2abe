package packets

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestDecodeErrors has one case per kind of violation (and several
// instances of most), each checked by errors.Is and by its reason code.
func TestDecodeErrors(t *testing.T) {
	str := func(s string) []byte { return appendString(nil, s) }
	u16 := func(v uint16) []byte { return appendU16(nil, v) }
	connect := func(flags byte, rest ...[]byte) []byte {
		head := [][]byte{str("MQTT"), {5, flags}, u16(0), {0}}
		return frame(0x10, append(head, rest...)...)
	}
	tests := []struct {
		name string
		b    []byte
		want *Error
		code ReasonCode
	}{
		{"empty input", nil, ErrTruncated, MalformedPacket},
		{"truncated PUBACK", unhex(t, `40 02 00`), ErrTruncated, MalformedPacket},
		{"truncated remaining length", unhex(t, `30 80`), ErrTruncated, MalformedPacket},
		{"string longer than packet", frame(0x30, u16(10), []byte("ab")), ErrTruncated, MalformedPacket},
		{"property length beyond packet", frame(0x30, str("t"), []byte{5, 0x01}), ErrTruncated, MalformedPacket},

		// MQTT-1.5.5-1: the fewest bytes, and at most four.
		{"non-minimal remaining length", unhex(t, `C0 80 00`), ErrMalformedVarInt, MalformedPacket},
		{"five-byte remaining length", unhex(t, `30 FF FF FF FF 01`), ErrMalformedVarInt, MalformedPacket},
		{"non-minimal property length", frame(0x30, str("t"), []byte{0x80, 0x00}), ErrMalformedVarInt, MalformedPacket},
		{"non-minimal subscription identifier", frame(0x30, str("t"), []byte{3, 0x0B, 0x81, 0x00}), ErrMalformedVarInt, MalformedPacket},

		// MQTT-1.5.4-1, MQTT-1.5.4-2.
		{"ill-formed UTF-8 topic", frame(0x30, u16(2), []byte{0xC3, 0x28}, []byte{0}), ErrInvalidUTF8, MalformedPacket},
		{"surrogate in topic", frame(0x30, u16(3), []byte{0xED, 0xA0, 0x80}, []byte{0}), ErrInvalidUTF8, MalformedPacket},
		{"overlong encoding in topic", frame(0x30, u16(2), []byte{0xC0, 0xAF}, []byte{0}), ErrInvalidUTF8, MalformedPacket},
		{"U+0000 in topic", frame(0x30, u16(1), []byte{0}, []byte{0}), ErrInvalidUTF8, MalformedPacket},
		{"U+0000 in user property", frame(0x40, u16(1), []byte{0, 6, 0x26}, str("\x00"), str("")), ErrInvalidUTF8, MalformedPacket},
		{"ill-formed client ID", connect(0, []byte{0, 1, 0xFF}), ErrInvalidUTF8, MalformedPacket},

		// MQTT-2.1.3-1, MQTT-3.14.1-1 and the reserved bits elsewhere.
		{"PUBACK header flags", unhex(t, `41 02 00 01`), ErrReservedFlags, MalformedPacket},
		{"PUBREL header flags 0", unhex(t, `60 02 00 01`), ErrReservedFlags, MalformedPacket},
		{"SUBSCRIBE header flags 0", frame(0x80, u16(1), []byte{0}, str("a"), []byte{0}), ErrReservedFlags, MalformedPacket},
		{"DISCONNECT header flags", unhex(t, `E1 00`), ErrReservedFlags, MalformedPacket},
		{"CONNECT reserved flag", connect(0x01, str("c")), ErrReservedFlags, MalformedPacket}, // MQTT-3.1.2-3
		{"CONNACK reserved flags", unhex(t, `20 03 02 00 00`), ErrReservedFlags, MalformedPacket},
		{"subscription options reserved bits", frame(0x82, u16(1), []byte{0}, str("a"), []byte{0x40}), ErrReservedFlags, MalformedPacket}, // MQTT-3.8.3-5

		{"unknown property", frame(0x30, str("t"), []byte{2, 0x05, 0}), ErrPropertyNotAllowed, MalformedPacket},
		{"two-byte property identifier", frame(0x30, str("t"), []byte{3, 0x81, 0x01, 0}), ErrPropertyNotAllowed, MalformedPacket},
		{"topic alias in PUBACK", frame(0x40, u16(1), []byte{0, 3, 0x23, 0, 1}), ErrPropertyNotAllowed, MalformedPacket},
		{"session expiry in PUBLISH", frame(0x30, str("t"), []byte{5, 0x11, 0, 0, 0, 1}), ErrPropertyNotAllowed, MalformedPacket},
		{"will delay in CONNECT properties", frame(0x10, str("MQTT"), []byte{5, 0}, u16(0), []byte{5, 0x18, 0, 0, 0, 1}, str("c")), ErrPropertyNotAllowed, MalformedPacket},
		{"server keep alive in DISCONNECT", frame(0xE0, []byte{0, 3, 0x13, 0, 1}), ErrPropertyNotAllowed, MalformedPacket},

		{"topic alias twice", frame(0x30, str("t"), []byte{6, 0x23, 0, 1, 0x23, 0, 2}), ErrDuplicateProperty, ProtocolError},
		{"reason string twice", frame(0x40, u16(1), []byte{0x80, 8, 0x1F}, str("a"), []byte{0x1F}, str("b")), ErrDuplicateProperty, ProtocolError},
		{"subscription identifier twice in SUBSCRIBE", frame(0x82, u16(1), []byte{4, 0x0B, 1, 0x0B, 2}, str("a"), []byte{0}), ErrDuplicateProperty, ProtocolError},

		// MQTT-3.3.1-4, MQTT-3.3.1-2, MQTT-3.1.2-12.
		{"PUBLISH QoS 3", frame(0x36, str("t"), u16(1), []byte{0}), ErrInvalidQoS, MalformedPacket},
		{"PUBLISH QoS 0 with DUP", frame(0x38, str("t"), []byte{0}), ErrInvalidQoS, MalformedPacket},
		{"subscription QoS 3", frame(0x82, u16(1), []byte{0}, str("a"), []byte{3}), ErrInvalidQoS, MalformedPacket},
		{"will QoS 3", connect(0x1C, str("c"), []byte{0}, str("w"), str("")), ErrInvalidQoS, MalformedPacket},

		// MQTT-2.2.1-3.
		{"PUBACK packet identifier 0", unhex(t, `40 02 00 00`), ErrZeroPacketID, ProtocolError},
		{"PUBLISH QoS 1 packet identifier 0", frame(0x32, str("t"), u16(0), []byte{0}), ErrZeroPacketID, ProtocolError},
		{"SUBSCRIBE packet identifier 0", frame(0x82, u16(0), []byte{0}, str("a"), []byte{0}), ErrZeroPacketID, ProtocolError},

		{"protocol name", frame(0x10, str("MQTX"), []byte{5, 0}, u16(0), []byte{0}, str("c")), ErrProtocol, UnsupportedProtocolVersion},
		{"protocol version 4", frame(0x10, str("MQTT"), []byte{4, 0}, u16(0), []byte{0}, str("c")), ErrProtocol, UnsupportedProtocolVersion},
		{"Receive Maximum 0", unhex(t, `20 06 00 00 03 21 00 00`), ErrProtocol, ProtocolError},
		{"Maximum Packet Size 0", unhex(t, `20 08 00 00 05 27 00 00 00 00`), ErrProtocol, ProtocolError},
		{"Maximum QoS 2", unhex(t, `20 05 00 00 02 24 02`), ErrProtocol, ProtocolError},
		{"Topic Alias 0", frame(0x30, str("t"), []byte{3, 0x23, 0, 0}), ErrTopicAliasInvalid, TopicAliasInvalid}, // MQTT-3.3.2-8
		{"Payload Format 2", frame(0x30, str("t"), []byte{2, 0x01, 2}), ErrProtocol, ProtocolError},
		{"auth data without auth method", frame(0x10, str("MQTT"), []byte{5, 0}, u16(0), []byte{3, 0x16, 0, 0}, str("c")), ErrProtocol, ProtocolError},
		{"Request Problem Information 2", frame(0x10, str("MQTT"), []byte{5, 0}, u16(0), []byte{2, 0x17, 2}, str("c")), ErrProtocol, ProtocolError},
		{"subscription identifier 0", frame(0x30, str("t"), []byte{2, 0x0B, 0}), ErrProtocol, ProtocolError},
		{"empty SUBSCRIBE", frame(0x82, u16(1), []byte{0}), ErrProtocol, ProtocolError},             // MQTT-3.8.3-2
		{"empty UNSUBSCRIBE", frame(0xA2, u16(1), []byte{0}), ErrProtocol, ProtocolError},           // MQTT-3.10.3-2
		{"empty topic filter", frame(0xA2, u16(1), []byte{0}, str("")), ErrProtocol, ProtocolError}, // MQTT-4.7.3-1
		{"retain handling 3", frame(0x82, u16(1), []byte{0}, str("a"), []byte{0x30}), ErrProtocol, ProtocolError},
		{"no local on shared subscription", frame(0x82, u16(1), []byte{0}, str("$share/g/a"), []byte{0x04}), ErrProtocol, ProtocolError}, // MQTT-3.8.3-4
		{"wildcard + in PUBLISH topic", frame(0x30, str("a/+"), []byte{0}), ErrProtocol, ProtocolError},                                  // MQTT-3.3.2-2
		{"wildcard # in PUBLISH topic", frame(0x30, str("#"), []byte{0}), ErrProtocol, ProtocolError},
		{"empty topic without alias", frame(0x30, str(""), []byte{0}), ErrProtocol, ProtocolError},
		{"bytes after the packet", unhex(t, `C0 00 C0`), ErrProtocol, ProtocolError},
		{"reason code not allowed in PUBACK", unhex(t, `40 03 00 01 04`), ErrProtocol, ProtocolError},
		{"reason code not allowed in PUBREL", unhex(t, `62 03 00 01 80`), ErrProtocol, ProtocolError},
		{"reason code not allowed in SUBACK", unhex(t, `90 04 00 01 00 03`), ErrProtocol, ProtocolError},
		{"reason code not allowed in DISCONNECT", unhex(t, `E0 01 01`), ErrProtocol, ProtocolError},
		{"reason code not allowed in AUTH", unhex(t, `F0 01 80`), ErrProtocol, ProtocolError},
		{"reason code not allowed in CONNACK", unhex(t, `20 03 00 10 00`), ErrProtocol, ProtocolError},
		{"session present with failure", unhex(t, `20 03 01 80 00`), ErrProtocol, ProtocolError}, // MQTT-3.2.2-6

		{"bytes left over in PINGREQ", unhex(t, `C0 01 00`), ErrMalformed, MalformedPacket},
		{"bytes left over in CONNACK", unhex(t, `20 04 00 00 00 00`), ErrMalformed, MalformedPacket},
		{"will retain without will", connect(0x20, str("c")), ErrMalformed, MalformedPacket}, // MQTT-3.1.2-13
		{"will QoS without will", connect(0x08, str("c")), ErrMalformed, MalformedPacket},    // MQTT-3.1.2-11
		{"reserved packet type 0", unhex(t, `00 00`), ErrMalformed, MalformedPacket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Decode(tt.b, 0)
			if err == nil {
				t.Fatalf("Decode(% X) = %#v, want %v", tt.b, p, tt.want)
			}
			if p != nil {
				t.Errorf("Decode returned a packet with the error")
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode(% X) = %v, want errors.Is %v", tt.b, err, tt.want)
			}
			if got := CodeOf(err); got != tt.code {
				t.Fatalf("CodeOf(%v) = %v, want %v", err, got, tt.code)
			}
			// The Reader reports the same error.
			_, rerr := NewReader(bytes.NewReader(tt.b), 0).Read()
			if len(tt.b) > 0 && tt.want != ErrTruncated && tt.name != "bytes after the packet" && !errors.Is(rerr, tt.want) {
				t.Fatalf("Reader: %v, want %v", rerr, tt.want)
			}
		})
	}
}

// TestEncodeErrors: Append refuses what Decode would refuse, and appends
// nothing when it does.
func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		p    Packet
		want *Error
	}{
		{"nil packet", nil, ErrProtocol},
		{"nil *Publish", (*Publish)(nil), ErrProtocol},
		{"QoS 3", &Publish{QoS: 3, PacketID: 1, Topic: "t"}, ErrInvalidQoS},
		{"DUP on QoS 0", &Publish{Dup: true, Topic: "t"}, ErrInvalidQoS},       // MQTT-3.3.1-2
		{"packet ID on QoS 0", &Publish{PacketID: 1, Topic: "t"}, ErrProtocol}, // MQTT-2.2.1-2
		{"zero packet ID", &Publish{QoS: 1, Topic: "t"}, ErrZeroPacketID},      // MQTT-2.2.1-3
		{"zero packet ID in ack", &Ack{Kind: PUBACK}, ErrZeroPacketID},
		{"wildcard topic", &Publish{Topic: "a/#"}, ErrProtocol},
		{"empty topic", &Publish{}, ErrProtocol},
		{"invalid UTF-8 topic", &Publish{Topic: "\xff"}, ErrInvalidUTF8},
		{"U+0000 in client ID", &Connect{ClientID: "a\x00"}, ErrInvalidUTF8},
		{"surrogate in user property", &Disconnect{Properties: Properties{User: []UserProperty{{"\xed\xa0\x80", ""}}}}, ErrInvalidUTF8},
		{"string too long", &Publish{Topic: string(bytes.Repeat([]byte("a"), 70000))}, ErrMalformed},
		{"session expiry in PUBLISH", &Publish{Topic: "t", Properties: Properties{SessionExpiry: new(uint32(1))}}, ErrPropertyNotAllowed},
		{"will delay in CONNECT", &Connect{Properties: Properties{WillDelay: 1}}, ErrPropertyNotAllowed},
		{"topic alias in Will", &Connect{Will: &Will{Topic: "w", Properties: Properties{TopicAlias: 1}}}, ErrPropertyNotAllowed},
		{"subscription identifier in UNSUBSCRIBE", &Unsubscribe{PacketID: 1, Filters: []string{"a"}, Properties: Properties{SubscriptionIdentifier: []uint32{1}}}, ErrPropertyNotAllowed},
		{"two subscription identifiers in SUBSCRIBE", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a"}}, Properties: Properties{SubscriptionIdentifier: []uint32{1, 2}}}, ErrDuplicateProperty},
		{"subscription identifier 0", &Publish{Topic: "t", Properties: Properties{SubscriptionIdentifier: []uint32{0}}}, ErrProtocol},
		{"subscription identifier too big", &Publish{Topic: "t", Properties: Properties{SubscriptionIdentifier: []uint32{maxVarInt + 1}}}, ErrProtocol},
		{"payload format 2", &Publish{Topic: "t", Properties: Properties{PayloadFormat: 2}}, ErrProtocol},
		{"maximum QoS 2", &Connack{Properties: Properties{MaximumQoS: new(byte(2))}}, ErrProtocol},
		{"auth data without auth method", &Connect{Properties: Properties{AuthData: []byte{}}}, ErrProtocol},
		{"will QoS 3", &Connect{Will: &Will{Topic: "w", QoS: 3}}, ErrInvalidQoS},
		{"empty will topic", &Connect{Will: &Will{}}, ErrProtocol},
		{"empty SUBSCRIBE", &Subscribe{PacketID: 1}, ErrProtocol},
		{"empty UNSUBSCRIBE", &Unsubscribe{PacketID: 1}, ErrProtocol},
		{"subscription QoS 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", SubscribeOptions: SubscribeOptions{QoS: 3}}}}, ErrInvalidQoS},
		{"retain handling 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", SubscribeOptions: SubscribeOptions{RetainHandling: 3}}}}, ErrProtocol},
		{"PUBACK reason not allowed", &Ack{Kind: PUBACK, PacketID: 1, ReasonCode: PacketIdentifierNotFound}, ErrProtocol},
		{"ack of kind PUBLISH", &Ack{Kind: PUBLISH, PacketID: 1}, ErrProtocol},
		{"SUBACK reason not allowed", &Suback{PacketID: 1, ReasonCodes: []ReasonCode{NoSubscriptionExisted}}, ErrProtocol},
		{"session present with failure", &Connack{SessionPresent: true, ReasonCode: ServerBusy}, ErrProtocol},
		// 4097 filters of 65535 bytes, sharing one string, pass the
		// protocol's limit without a 256 MB allocation.
		{"too large", &Unsubscribe{PacketID: 1, Filters: slices.Repeat([]string{strings.Repeat("a", 0xFFFF)}, 4097)}, ErrPacketTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := Append(dst, tt.p)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Append = %v, want %v", err, tt.want)
			}
			if string(out) != "keep" {
				t.Fatalf("Append wrote % X on error", out[4:])
			}
			if _, serr := Size(tt.p); !errors.Is(serr, tt.want) {
				t.Fatalf("Size = %v, want %v", serr, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.want.Code {
				t.Fatalf("error %v does not carry code %v", err, tt.want.Code)
			}
		})
	}
}

func TestPacketTooLarge(t *testing.T) {
	b, _ := Append(nil, &Publish{Topic: "t", Payload: make([]byte, 100)})
	if _, err := Decode(b, len(b)); err != nil {
		t.Fatalf("packet of exactly maxSize: %v", err)
	}
	_, err := Decode(b, len(b)-1)
	if !errors.Is(err, ErrPacketTooLarge) || CodeOf(err) != PacketTooLarge {
		t.Fatalf("Decode over maxSize = %v", err)
	}
	// The size check comes before the length check: a header alone is
	// enough to refuse.
	if _, err := Decode(unhex(t, `30 FF FF FF 7F`), 1<<20); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("header of a huge packet = %v", err)
	}
}

func TestErrorMessages(t *testing.T) {
	_, err := Decode(unhex(t, `40 03 00 01 04`), 0)
	if got := err.Error(); got != "packets: protocol error: reason code 0x04 not allowed in PUBACK" {
		t.Fatalf("message %q", got)
	}
	if errors.Is(err, ErrMalformed) || errors.Is(ErrProtocol, ErrMalformed) {
		t.Fatal("kinds must not match each other")
	}
}
