package packets

import (
	"errors"
	"strings"
	"testing"
)

func TestValidTopicName(t *testing.T) {
	for _, tt := range []struct {
		name string
		want *Error // nil: valid
	}{
		{"a", nil},
		{"a/b/c", nil},
		{"/", nil},
		{"a//b", nil},
		{"$SYS/x", nil},
		{"\uFEFFbom", nil},
		{"", ErrInvalidTopicName},                    // MQTT-4.7.3-1
		{"a/+", ErrInvalidTopicName},                 // MQTT-3.3.2-2
		{"a/#", ErrInvalidTopicName},                 // MQTT-3.3.2-2
		{"a+b", ErrInvalidTopicName},                 // MQTT-4.7.0-1: not even inside a level
		{"\xff", ErrInvalidUTF8},                     // MQTT-1.5.4-1
		{"a\x00", ErrInvalidUTF8},                    // MQTT-4.7.3-2
		{strings.Repeat("a", 0x10000), ErrMalformed}, // MQTT-4.7.3-3
	} {
		err := ValidTopicName(tt.name)
		if tt.want == nil {
			if err != nil {
				t.Errorf("ValidTopicName(%.20q) = %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("ValidTopicName(%.20q) = %v, want %v", tt.name, err, tt.want)
		}
	}
	// A topic error is a protocol error, with that reason code.
	err := ValidTopicName("a/#")
	if !errors.Is(err, ErrProtocol) || CodeOf(err) != ProtocolError {
		t.Errorf("wildcard topic: %v, code %v", err, CodeOf(err))
	}
	if errors.Is(err, ErrInvalidTopicFilter) || errors.Is(ErrProtocol, ErrInvalidTopicName) {
		t.Error("topic name error matches the wrong sentinel")
	}
}

func TestValidTopicFilter(t *testing.T) {
	for _, tt := range []struct {
		filter string
		want   *Error // nil: valid
	}{
		{"a", nil},
		{"#", nil},
		{"+", nil},
		{"/", nil},
		{"+/+", nil},
		{"/+", nil},
		{"a/#", nil},
		{"a/+/b/#", nil},
		{"+/#", nil},
		{"$SYS/#", nil},
		{"$share", nil},       // not a shared subscription: an ordinary filter
		{"$sharex/g/a", nil},  // likewise
		{"$share/g/a/b", nil}, // MQTT-4.8.2-1
		{"$share/g/#", nil},
		{"$share/g/+/x", nil},
		{"$share/g//", nil}, // the filter "/" after the share name

		{"", ErrInvalidTopicFilter},                  // MQTT-4.7.3-1
		{"a/#/b", ErrInvalidTopicFilter},             // MQTT-4.7.1-1
		{"#/a", ErrInvalidTopicFilter},               // MQTT-4.7.1-1
		{"a#", ErrInvalidTopicFilter},                // MQTT-4.7.1-1
		{"a/b#", ErrInvalidTopicFilter},              // MQTT-4.7.1-1
		{"##", ErrInvalidTopicFilter},                // MQTT-4.7.1-1
		{"a+", ErrInvalidTopicFilter},                // MQTT-4.7.1-2
		{"+a/b", ErrInvalidTopicFilter},              // MQTT-4.7.1-2
		{"a/++", ErrInvalidTopicFilter},              // MQTT-4.7.1-2
		{"a/+b/c", ErrInvalidTopicFilter},            // MQTT-4.7.1-2
		{"$share/", ErrInvalidTopicFilter},           // MQTT-4.8.2-1: empty share name
		{"$share//a", ErrInvalidTopicFilter},         // MQTT-4.8.2-1
		{"$share/g", ErrInvalidTopicFilter},          // MQTT-4.8.2-2: no "/" after the share name
		{"$share/g/", ErrInvalidTopicFilter},         // MQTT-4.8.2-2: no filter after the "/"
		{"$share/+/a", ErrInvalidTopicFilter},        // MQTT-4.8.2-2
		{"$share/g#/a", ErrInvalidTopicFilter},       // MQTT-4.8.2-2
		{"$share/g/a/#/b", ErrInvalidTopicFilter},    // the filter after it: MQTT-4.7.1-1
		{"$share/g/a+", ErrInvalidTopicFilter},       // MQTT-4.7.1-2
		{"\xff/#", ErrInvalidUTF8},                   // MQTT-1.5.4-1
		{"a\x00", ErrInvalidUTF8},                    // MQTT-4.7.3-2
		{strings.Repeat("a", 0x10000), ErrMalformed}, // MQTT-4.7.3-3
	} {
		err := ValidTopicFilter(tt.filter)
		if tt.want == nil {
			if err != nil {
				t.Errorf("ValidTopicFilter(%.20q) = %v", tt.filter, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("ValidTopicFilter(%.20q) = %v, want %v", tt.filter, err, tt.want)
		}
		if tt.want == ErrInvalidTopicFilter && (!errors.Is(err, ErrProtocol) || CodeOf(err) != ProtocolError) {
			t.Errorf("ValidTopicFilter(%q): %v is not a protocol error", tt.filter, err)
		}
	}
}

// TestTopicRulesOnTheWire: SUBSCRIBE, UNSUBSCRIBE and PUBLISH (topic and
// Response Topic, also in a Will) apply the topic rules both ways: Append
// refuses to write what Decode refuses to read.
func TestTopicRulesOnTheWire(t *testing.T) {
	str := func(s string) []byte { return appendString(nil, s) }
	u16 := func(v uint16) []byte { return appendU16(nil, v) }
	respTopic := func(s string) []byte { return append([]byte{byte(3 + len(s)), 0x08}, str(s)...) }
	tests := []struct {
		name string
		p    Packet
		wire []byte
		want *Error
	}{
		{"SUBSCRIBE a/#/b", // MQTT-4.7.1-1
			&Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a"}, {Filter: "a/#/b"}}},
			frame(0x82, u16(1), []byte{0}, str("a"), []byte{0}, str("a/#/b"), []byte{0}), ErrInvalidTopicFilter},
		{"SUBSCRIBE a+", // MQTT-4.7.1-2
			&Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a+"}}},
			frame(0x82, u16(1), []byte{0}, str("a+"), []byte{0}), ErrInvalidTopicFilter},
		{"SUBSCRIBE empty share name", // MQTT-4.8.2-1
			&Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "$share//a"}}},
			frame(0x82, u16(1), []byte{0}, str("$share//a"), []byte{0}), ErrInvalidTopicFilter},
		{"SUBSCRIBE share name only", // MQTT-4.8.2-2
			&Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "$share/g"}}},
			frame(0x82, u16(1), []byte{0}, str("$share/g"), []byte{0}), ErrInvalidTopicFilter},
		{"UNSUBSCRIBE #/a", // MQTT-4.7.1-1
			&Unsubscribe{PacketID: 1, Filters: []string{"#/a"}},
			frame(0xA2, u16(1), []byte{0}, str("#/a")), ErrInvalidTopicFilter},
		{"UNSUBSCRIBE empty filter", // MQTT-4.7.3-1
			&Unsubscribe{PacketID: 1, Filters: []string{"a", ""}},
			frame(0xA2, u16(1), []byte{0}, str("a"), str("")), ErrInvalidTopicFilter},
		{"PUBLISH Response Topic with +", // MQTT-3.3.2-14
			&Publish{Topic: "t", Properties: Properties{ResponseTopic: "reply/+"}},
			frame(0x30, str("t"), respTopic("reply/+")), ErrInvalidTopicName},
		{"PUBLISH Response Topic with #", // MQTT-3.3.2-14
			&Publish{QoS: 1, PacketID: 1, Topic: "t", Properties: Properties{ResponseTopic: "#"}},
			frame(0x32, str("t"), u16(1), respTopic("#")), ErrInvalidTopicName},
		{"Will Response Topic with #", // MQTT-3.3.2-14 (§3.1.3.2.7)
			&Connect{Will: &Will{Topic: "w", Properties: Properties{ResponseTopic: "r/#"}}},
			frame(0x10, str("MQTT"), []byte{5, 0x04}, u16(0), []byte{0}, str(""), respTopic("r/#"), str("w"), str("")), ErrInvalidTopicName},
		{"Will topic with +", // MQTT-4.7.0-1
			&Connect{Will: &Will{Topic: "w/+"}},
			frame(0x10, str("MQTT"), []byte{5, 0x04}, u16(0), []byte{0}, str(""), []byte{0}, str("w/+"), str("")), ErrInvalidTopicName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Append(nil, tt.p); !errors.Is(err, tt.want) || !errors.Is(err, ErrProtocol) {
				t.Errorf("Append = %v, want %v", err, tt.want)
			}
			if p, err := Decode(tt.wire, 0); !errors.Is(err, tt.want) || CodeOf(err) != ProtocolError {
				t.Errorf("Decode = %#v, %v (code %v), want %v", p, err, CodeOf(err), tt.want)
			}
		})
	}
	// An empty Response Topic is present but not a Topic Name
	// (MQTT-4.7.3-1).
	if _, err := Decode(frame(0x30, str("t"), respTopic("")), 0); !errors.Is(err, ErrInvalidTopicName) {
		t.Errorf("empty Response Topic: %v", err)
	}
}

// TestTopicFilterCheckDoesNotAllocate: validation runs on every SUBSCRIBE
// Append, which must not allocate.
func TestTopicFilterCheckDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(20, func() {
		if ValidTopicFilter("$share/group/a/+/b/#") != nil || ValidTopicName("a/b/c") != nil {
			t.Fatal("valid topic refused")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations", allocs)
	}
}
