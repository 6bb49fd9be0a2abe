package packets

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// unhex turns "10 33 00 04" into bytes, so that known sequences read as
// they are written in the specification.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// frame builds a packet from its first byte and body, computing the
// remaining length, for tests where only the body matters.
func frame(h byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	out := appendVarInt([]byte{h}, len(b))
	return append(out, b...)
}

// richPackets holds one or more packets of every type, with every
// property each may carry, in the form Decode returns them (byte slices
// that are present are non-nil).
func richPackets() map[string]Packet {
	users := []UserProperty{{"k", "v"}, {"k", "v2"}, {"", ""}}
	return map[string]Packet{
		"connect": &Connect{
			CleanStart: true, KeepAlive: 30, ClientID: "client-1",
			Username: "user", HasUsername: true, Password: []byte{0, 1, 2}, HasPassword: true,
			Properties: Properties{
				SessionExpiry: new(uint32(3600)), AuthMethod: "SCRAM-SHA-1", AuthData: []byte("data"),
				RequestProblemInfo: new(byte(0)), RequestResponseInfo: 1, ReceiveMaximum: 100,
				TopicAliasMaximum: 10, MaximumPacketSize: 1 << 20, User: users,
			},
			Will: &Will{
				Topic: "will/topic", Payload: []byte("gone"), QoS: 2, Retain: true,
				Properties: Properties{
					PayloadFormat: 1, MessageExpiry: new(uint32(60)), ContentType: "text/plain",
					ResponseTopic: "resp", CorrelationData: []byte{9}, WillDelay: 5, User: users,
				},
			},
		},
		"connect minimal": &Connect{},
		"connect empty credentials": &Connect{
			ClientID: "c", HasUsername: true, HasPassword: true, Password: []byte{},
			Will: &Will{Topic: "w", Payload: []byte{}},
		},
		"connack": &Connack{
			SessionPresent: true,
			Properties: Properties{
				SessionExpiry: new(uint32(0)), AssignedClientID: "auto-1", ServerKeepAlive: new(uint16(0)),
				AuthMethod: "m", AuthData: []byte{}, ResponseInfo: "ri", ServerReference: "other:1883",
				ReasonString: "welcome", ReceiveMaximum: 20, TopicAliasMaximum: 5,
				MaximumQoS: new(byte(1)), RetainAvailable: new(byte(0)), User: users,
				MaximumPacketSize: 65536, WildcardSubAvailable: new(byte(1)),
				SubIDAvailable: new(byte(0)), SharedSubAvailable: new(byte(1)),
			},
		},
		"connack refused": &Connack{ReasonCode: NotAuthorized},
		// Every property that may hold a zero, sent with it (issue 9 item 7).
		"connack explicit zeros": &Connack{Properties: zeroed(Properties{}, PropSessionExpiry,
			PropAssignedClientID, PropServerKeepAlive, PropAuthMethod, PropAuthData, PropResponseInfo,
			PropServerReference, PropReasonString, PropTopicAliasMaximum, PropMaximumQoS,
			PropRetainAvailable, PropWildcardSubAvailable, PropSubIDAvailable, PropSharedSubAvailable)},
		"connect explicit zeros": &Connect{
			Properties: zeroed(Properties{}, PropSessionExpiry, PropRequestProblemInfo,
				PropRequestResponseInfo, PropTopicAliasMaximum),
			Will: &Will{Topic: "w", Payload: []byte{}, Properties: zeroed(Properties{}, PropPayloadFormat,
				PropMessageExpiry, PropContentType, PropCorrelationData, PropWillDelay)},
		},
		"publish explicit zeros": &Publish{Topic: "z", Payload: []byte{},
			Properties: zeroed(Properties{}, PropPayloadFormat, PropMessageExpiry, PropContentType, PropCorrelationData)},
		"disconnect explicit zeros": &Disconnect{Properties: zeroed(Properties{}, PropSessionExpiry, PropReasonString, PropServerReference)},
		"publish": &Publish{
			Dup: true, QoS: 1, Retain: true, Topic: "a/b/c", PacketID: 65535,
			Properties: Properties{
				PayloadFormat: 1, MessageExpiry: new(uint32(10)), ContentType: "json",
				ResponseTopic: "r/t", CorrelationData: []byte("id"),
				SubscriptionIdentifier: []uint32{1, 128, maxVarInt}, TopicAlias: 7, User: users,
			},
			Payload: []byte(`{"x":1}`),
		},
		"publish alias only": &Publish{QoS: 2, PacketID: 1, Properties: Properties{TopicAlias: 1}, Payload: []byte{}},
		"publish qos0":       &Publish{Topic: "\uFEFFbom/é/日本", Payload: bytes.Repeat([]byte{0}, 300)},
		"puback short":       &Ack{Kind: PUBACK, PacketID: 1},
		"puback":             &Ack{Kind: PUBACK, PacketID: 2, ReasonCode: QuotaExceeded, Properties: Properties{ReasonString: "full", User: users}},
		"pubrec code only":   &Ack{Kind: PUBREC, PacketID: 3, ReasonCode: NoMatchingSubscribers},
		"pubrel":             &Ack{Kind: PUBREL, PacketID: 4, ReasonCode: PacketIdentifierNotFound, Properties: Properties{ReasonString: "?"}},
		"pubcomp":            &Ack{Kind: PUBCOMP, PacketID: 5, Properties: Properties{User: users}},
		"subscribe": &Subscribe{
			PacketID: 10, Properties: Properties{SubscriptionIdentifier: []uint32{42}, User: users},
			Subscriptions: []Subscription{
				{Filter: "a/+/c", SubscribeOptions: SubscribeOptions{QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}},
				{Filter: "#", SubscribeOptions: SubscribeOptions{QoS: 1, RetainHandling: 1}},
				{Filter: "$share/g/x", SubscribeOptions: SubscribeOptions{}},
			},
		},
		"suback": &Suback{PacketID: 10, Properties: Properties{ReasonString: "ok", User: users},
			ReasonCodes: []ReasonCode{GrantedQoS2, GrantedQoS1, GrantedQoS0, TopicFilterInvalid, WildcardSubscriptionsNotSupported}},
		"unsubscribe": &Unsubscribe{PacketID: 11, Properties: Properties{User: users}, Filters: []string{"a/+/c", "#"}},
		"unsuback": &Unsuback{PacketID: 11, Properties: Properties{ReasonString: "done", User: users},
			ReasonCodes: []ReasonCode{Success, NoSubscriptionExisted}},
		"pingreq":  &Pingreq{},
		"pingresp": &Pingresp{},
		"disconnect": &Disconnect{ReasonCode: ServerMoved, Properties: Properties{
			SessionExpiry: new(uint32(7)), ReasonString: "moved", ServerReference: "b:1883", User: users}},
		"disconnect short":     &Disconnect{},
		"disconnect code only": &Disconnect{ReasonCode: DisconnectWithWill},
		"auth": &Auth{ReasonCode: ContinueAuthentication, Properties: Properties{
			AuthMethod: "SCRAM-SHA-1", AuthData: []byte{1, 2, 3}, ReasonString: "more", User: users}},
		"auth short":     &Auth{},
		"auth code only": &Auth{ReasonCode: ReAuthenticate},
	}
}

func TestRoundTrip(t *testing.T) {
	for name, p := range richPackets() {
		t.Run(name, func(t *testing.T) {
			b, err := Append(nil, p)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if n, err := Size(p); err != nil || n != len(b) {
				t.Fatalf("Size = %d, %v; Append wrote %d bytes", n, err, len(b))
			}
			got, err := Decode(b, 0)
			if err != nil {
				t.Fatalf("Decode(% x): %v", b, err)
			}
			if !reflect.DeepEqual(got, p) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, p)
			}
			if got.Type() != p.Type() {
				t.Fatalf("type %v, want %v", got.Type(), p.Type())
			}
			// Appending to a buffer keeps what is there.
			b2, _ := Append([]byte("prefix"), p)
			if !bytes.Equal(b2[6:], b) || string(b2[:6]) != "prefix" {
				t.Fatal("Append to a non-empty slice differs")
			}
		})
	}
}

// TestKnownBytes checks encode and decode against byte sequences worked
// out by hand from the specification.
func TestKnownBytes(t *testing.T) {
	tests := []struct {
		name, hex string
		p         Packet
	}{
		{
			// Flags 0xEE: username, password, will retain, will QoS 1, will,
			// clean start. Properties: Session Expiry 3600, Receive Maximum
			// 20. Will properties: Payload Format 1, Will Delay 5.
			"CONNECT with Will and properties",
			`10 33  00 04 4D 51 54 54  05  EE  00 3C
			 08  11 00 00 0E 10  21 00 14
			 00 06 74 65 74 68 65 72
			 07  01 01  18 00 00 00 05
			 00 03 74 2F 77  00 03 62 79 65
			 00 01 75  00 01 70`,
			&Connect{CleanStart: true, KeepAlive: 60, ClientID: "tether",
				Properties: Properties{SessionExpiry: new(uint32(3600)), ReceiveMaximum: 20},
				Will: &Will{Topic: "t/w", Payload: []byte("bye"), QoS: 1, Retain: true,
					Properties: Properties{PayloadFormat: 1, WillDelay: 5}},
				Username: "u", HasUsername: true, Password: []byte("p"), HasPassword: true},
		},
		{
			"CONNACK session present, Receive Maximum 10, Topic Alias Maximum 5",
			`20 09  01 00  06  21 00 0A  22 00 05`,
			&Connack{SessionPresent: true, Properties: Properties{ReceiveMaximum: 10, TopicAliasMaximum: 5}},
		},
		{
			"PUBLISH QoS 2 with topic alias",
			`34 0D  00 03 61 2F 62  00 0A  03 23 00 03  68 69`,
			&Publish{QoS: 2, Topic: "a/b", PacketID: 10, Properties: Properties{TopicAlias: 3}, Payload: []byte("hi")},
		},
		{
			"PUBLISH QoS 1 DUP with alias and empty topic",
			`3A 09  00 00  00 01  03 23 00 03  78`,
			&Publish{Dup: true, QoS: 1, PacketID: 1, Properties: Properties{TopicAlias: 3}, Payload: []byte("x")},
		},
		{
			"PUBLISH QoS 0 retained with user property, no payload",
			`31 0B  00 01 74  07 26 00 01 6B 00 01 76`,
			&Publish{Retain: true, Topic: "t", Properties: Properties{User: []UserProperty{{"k", "v"}}}, Payload: []byte{}},
		},
		{"short PUBACK", `40 02 00 07`, &Ack{Kind: PUBACK, PacketID: 7}},
		{"PUBREC with reason code only", `50 03 00 07 10`, &Ack{Kind: PUBREC, PacketID: 7, ReasonCode: NoMatchingSubscribers}},
		{"short PUBREL", `62 02 00 07`, &Ack{Kind: PUBREL, PacketID: 7}},
		{"short PUBCOMP", `70 02 FF FF`, &Ack{Kind: PUBCOMP, PacketID: 0xFFFF}},
		{
			"PUBACK with reason string",
			`40 09  00 07  87  05 1F 00 02 6E 6F`,
			&Ack{Kind: PUBACK, PacketID: 7, ReasonCode: NotAuthorized, Properties: Properties{ReasonString: "no"}},
		},
		{
			// Options 0x2D: QoS 1, No Local, Retain As Published, Retain
			// Handling 2. Subscription Identifier 300 = AC 02.
			"SUBSCRIBE with subscription identifier",
			`82 0C  00 01  03 0B AC 02  00 03 61 2F 2B  2D`,
			&Subscribe{PacketID: 1, Properties: Properties{SubscriptionIdentifier: []uint32{300}},
				Subscriptions: []Subscription{{Filter: "a/+", SubscribeOptions: SubscribeOptions{
					QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}}}},
		},
		{
			"SUBACK",
			`90 06  12 34  00  01 00 87`,
			&Suback{PacketID: 0x1234, ReasonCodes: []ReasonCode{GrantedQoS1, GrantedQoS0, NotAuthorized}},
		},
		{"UNSUBSCRIBE", `A2 06  00 02  00  00 01 61`, &Unsubscribe{PacketID: 2, Filters: []string{"a"}}},
		{"UNSUBACK", `B0 04  00 02  00  11`, &Unsuback{PacketID: 2, ReasonCodes: []ReasonCode{NoSubscriptionExisted}}},
		{"PINGREQ", `C0 00`, &Pingreq{}},
		{"PINGRESP", `D0 00`, &Pingresp{}},
		{"short DISCONNECT", `E0 00`, &Disconnect{}},
		{"DISCONNECT with reason code only", `E0 01 8E`, &Disconnect{ReasonCode: SessionTakenOver}},
		{
			"DISCONNECT with Session Expiry 0",
			`E0 07  04  05 11 00 00 00 00`,
			&Disconnect{ReasonCode: DisconnectWithWill, Properties: Properties{SessionExpiry: new(uint32(0))}},
		},
		{
			"AUTH continue",
			`F0 0A  18  08 15 00 05 53 43 52 41 4D`,
			&Auth{ReasonCode: ContinueAuthentication, Properties: Properties{AuthMethod: "SCRAM"}},
		},
		{"short AUTH", `F0 00`, &Auth{}},
		{
			// A two-byte remaining length: 200 = C8 01.
			"PUBLISH with two-byte remaining length",
			`30 C8 01  00 01 74  00` + strings.Repeat(" 2A", 196),
			&Publish{Topic: "t", Payload: bytes.Repeat([]byte{0x2A}, 196)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := unhex(t, tt.hex)
			b, err := Append(nil, tt.p)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !bytes.Equal(b, want) {
				t.Fatalf("Append:\n got % X\nwant % X", b, want)
			}
			p, err := Decode(want, 0)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(p, tt.p) {
				t.Fatalf("Decode:\n got %#v\nwant %#v", p, tt.p)
			}
		})
	}
}

// TestLongerForms checks that the optional parts that Append leaves out
// are accepted when present.
func TestLongerForms(t *testing.T) {
	tests := []struct {
		name, hex string
		p         Packet
	}{
		{"PUBACK with Success and empty properties", `40 04 00 07 00 00`, &Ack{Kind: PUBACK, PacketID: 7}},
		{"DISCONNECT with Success and empty properties", `E0 02 00 00`, &Disconnect{}},
		{"AUTH with Success and no property length", `F0 01 00`, &Auth{}},
	}
	for _, tt := range tests {
		p, err := Decode(unhex(t, tt.hex), 0)
		if err != nil || !reflect.DeepEqual(p, tt.p) {
			t.Errorf("%s: got %#v, %v; want %#v", tt.name, p, err, tt.p)
		}
	}
}

// TestBOMKept: a leading U+FEFF is an ordinary character that decoding
// must not strip (MQTT-1.5.4-3).
func TestBOMKept(t *testing.T) {
	p, err := Decode(unhex(t, `30 07 00 04 EF BB BF 61 00`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(*Publish).Topic; got != "\uFEFFa" {
		t.Fatalf("topic %q, want BOM kept", got)
	}
}

// TestEmptyPropertiesLengthZero: no properties are written as a property
// length of 0 (MQTT-2.2.2-1).
func TestEmptyPropertiesLengthZero(t *testing.T) {
	b, err := Append(nil, &Publish{QoS: 1, PacketID: 1, Topic: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, `32 06 00 01 74 00 01 00`); !bytes.Equal(b, want) {
		t.Fatalf("got % X, want % X", b, want)
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	for name, p := range richPackets() {
		buf := make([]byte, 0, 4096)
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := Append(buf[:0], p); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per Append", name, allocs)
		}
	}
}

func TestDecodedPacketOwnsMemory(t *testing.T) {
	b, _ := Append(nil, &Publish{QoS: 1, PacketID: 1, Topic: "t",
		Properties: Properties{CorrelationData: []byte("cd")}, Payload: []byte("payload")})
	p, err := Decode(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	pub := p.(*Publish)
	if string(pub.Payload) != "payload" || string(pub.Properties.CorrelationData) != "cd" {
		t.Fatal("decoded packet aliases the input")
	}
	// Growing one field must not overwrite the next in the shared body.
	_ = append(pub.Properties.CorrelationData, 'X', 'X', 'X')
	if string(pub.Payload) != "payload" {
		t.Fatal("append to CorrelationData clobbered the payload")
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{PUBLISH.String(), "PUBLISH"},
		{UNSUBACK.String(), "UNSUBACK"},
		{Type(0).String(), "Type(0)"},
		{Success.String(), "Success"},
		{MalformedPacket.String(), "Malformed Packet"},
		{ReAuthenticate.String(), "Re-authenticate"},
		{WildcardSubscriptionsNotSupported.String(), "Wildcard Subscriptions not supported"},
		{ReasonCode(0x03).String(), "ReasonCode(0x03)"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	if Success.IsError() || GrantedQoS2.IsError() || !UnspecifiedError.IsError() || !PacketTooLarge.IsError() {
		t.Error("IsError wrong")
	}
}

func TestCodeOf(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want ReasonCode
	}{
		{nil, Success},
		{ErrPacketTooLarge, PacketTooLarge},
		{errorf(ErrDuplicateProperty, "x"), ProtocolError},
		{errors.Join(errors.New("read"), errorf(ErrInvalidUTF8, "x")), MalformedPacket},
		{fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), MalformedPacket},
		{errors.New("connection reset"), UnspecifiedError},
	} {
		if got := CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestTopicAliasZeroNeverSent: alias 0 means "no alias", so it never
// reaches the wire (MQTT-3.3.2-8), while a received alias 0 is refused.
func TestTopicAliasZeroNeverSent(t *testing.T) {
	b, err := Append(nil, &Publish{Topic: "t", Properties: Properties{TopicAlias: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, `30 04 00 01 74 00`); !bytes.Equal(b, want) {
		t.Fatalf("got % X, want % X", b, want)
	}
	// §3.3.2.3.4: the receiver answers with DISCONNECT 0x94, and the
	// error says what was wrong.
	_, err = Decode(unhex(t, `30 07 00 01 74 03 23 00 00`), 0)
	if !errors.Is(err, ErrTopicAliasInvalid) || !errors.Is(err, ErrProtocol) || CodeOf(err) != TopicAliasInvalid ||
		!strings.Contains(err.Error(), "topic alias") {
		t.Fatalf("alias 0 decoded: %v (code %v)", err, CodeOf(err))
	}
	// Through the Reader, as the client reads it.
	_, err = NewReader(bytes.NewReader(unhex(t, `30 07 00 01 74 03 23 00 00`)), 0).Read()
	if CodeOf(err) != TopicAliasInvalid {
		t.Fatalf("Reader: %v (code %v)", err, CodeOf(err))
	}
}

func TestEveryReasonCodeNamed(t *testing.T) {
	for _, s := range []*codeSet{&connackCodes, &pubackCodes, &pubrelCodes, &subackCodes, &unsubackCodes, &disconnectCodes, &authCodes} {
		for c := range 256 {
			if s.has(ReasonCode(c)) && strings.HasPrefix(ReasonCode(c).String(), "ReasonCode(") {
				t.Errorf("reason code %#x has no name", c)
			}
		}
	}
}

// TestVarInt checks the boundaries from the specification's table of
// variable byte integers (§1.5.5) in both directions (MQTT-1.5.5-1).
func TestVarInt(t *testing.T) {
	for _, tt := range []struct {
		v   int
		hex string
	}{
		{0, "00"}, {127, "7F"},
		{128, "80 01"}, {16383, "FF 7F"},
		{16384, "80 80 01"}, {2097151, "FF FF 7F"},
		{2097152, "80 80 80 01"}, {268435455, "FF FF FF 7F"},
	} {
		want := unhex(t, tt.hex)
		if got := appendVarInt(nil, tt.v); !bytes.Equal(got, want) || varIntLen(tt.v) != len(want) {
			t.Errorf("encode %d: % X (len %d), want % X", tt.v, got, varIntLen(tt.v), want)
		}
		if v, n, err := parseVarInt(want); v != tt.v || n != len(want) || err != nil {
			t.Errorf("decode % X: %d, %d, %v", want, v, n, err)
		}
	}
	for _, bad := range []string{"80 00", "FF 00", "80 80 00", "80 80 80 00", "FF FF FF FF 7F"} {
		if _, _, err := parseVarInt(unhex(t, bad)); !errors.Is(err, ErrMalformedVarInt) {
			t.Errorf("decode % s: %v, want ErrMalformedVarInt", bad, err)
		}
	}
}
