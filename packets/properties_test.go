package packets

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

// zeroed returns p with each of ids made present by SetPresent.
func zeroed(p Properties, ids ...PropertyID) Properties {
	for _, id := range ids {
		p.SetPresent(id)
	}
	return p
}

// definedIDs lists every property identifier of the specification.
func definedIDs() []PropertyID {
	var ids []PropertyID
	for id := range props {
		if props[id].kind != 0 {
			ids = append(ids, PropertyID(id))
		}
	}
	return ids
}

// places lists every place a property may appear, with a minimal valid
// packet there holding properties pr, in the form Decode returns it.
func places() []struct {
	name string
	ctx  propPlace
	make func(pr Properties) Packet
} {
	type place = struct {
		name string
		ctx  propPlace
		make func(pr Properties) Packet
	}
	ps := []place{
		{"CONNECT", ctxOf(CONNECT), func(pr Properties) Packet { return &Connect{Properties: pr} }},
		{"Will", willContext, func(pr Properties) Packet {
			return &Connect{Will: &Will{Topic: "w", Payload: []byte{}, Properties: pr}}
		}},
		{"CONNACK", ctxOf(CONNACK), func(pr Properties) Packet { return &Connack{Properties: pr} }},
		{"PUBLISH", ctxOf(PUBLISH), func(pr Properties) Packet {
			return &Publish{QoS: 1, PacketID: 9, Topic: "t", Properties: pr, Payload: []byte{}}
		}},
		{"SUBSCRIBE", ctxOf(SUBSCRIBE), func(pr Properties) Packet {
			return &Subscribe{PacketID: 9, Properties: pr, Subscriptions: []Subscription{{Filter: "a"}}}
		}},
		{"SUBACK", ctxOf(SUBACK), func(pr Properties) Packet {
			return &Suback{PacketID: 9, Properties: pr, ReasonCodes: []ReasonCode{GrantedQoS1}}
		}},
		{"UNSUBSCRIBE", ctxOf(UNSUBSCRIBE), func(pr Properties) Packet {
			return &Unsubscribe{PacketID: 9, Properties: pr, Filters: []string{"a"}}
		}},
		{"UNSUBACK", ctxOf(UNSUBACK), func(pr Properties) Packet {
			return &Unsuback{PacketID: 9, Properties: pr, ReasonCodes: []ReasonCode{Success}}
		}},
		{"DISCONNECT", ctxOf(DISCONNECT), func(pr Properties) Packet { return &Disconnect{Properties: pr} }},
		{"AUTH", ctxOf(AUTH), func(pr Properties) Packet { return &Auth{ReasonCode: ContinueAuthentication, Properties: pr} }},
	}
	for _, k := range []Type{PUBACK, PUBREC, PUBREL, PUBCOMP} {
		ps = append(ps, place{k.String(), ctxOf(k), func(pr Properties) Packet {
			return &Ack{Kind: k, PacketID: 9, Properties: pr}
		}})
	}
	return ps
}

// TestPropertyZeroRoundTrip: every property that may hold a zero, sent
// explicitly with it, decodes as present and encodes back to the same
// bytes; a zero a property may not hold is refused both ways.
func TestPropertyZeroRoundTrip(t *testing.T) {
	refused := map[PropertyID]*Error{
		PropTopicAlias:        ErrTopicAliasInvalid, // MQTT-3.3.2-8
		PropReceiveMaximum:    ErrProtocol,          // §3.1.2.11.3
		PropMaximumPacketSize: ErrProtocol,          // §3.1.2.11.4
		PropResponseTopic:     ErrInvalidTopicName,  // MQTT-4.7.3-1
	}
	for _, pl := range places() {
		for _, id := range definedIDs() {
			if props[id].where&pl.ctx == 0 || 1<<id&repeatable != 0 {
				continue
			}
			var pr Properties
			pr.SetPresent(id)
			if id == PropAuthData && pl.ctx == ctxOf(CONNECT) {
				pr.SetPresent(PropAuthMethod) // an empty one: §3.1.2.11.10 asks for one
			}
			if !pr.Has(id) {
				t.Fatalf("%s: SetPresent(%s) left it absent", pl.name, id.hex())
			}
			p := pl.make(pr)
			b, err := Append(nil, p)
			if want := refused[id]; want != nil {
				if !errors.Is(err, want) {
					t.Errorf("%s: zero %s encoded: %v, want %v", pl.name, id.hex(), err, want)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: zero %s: Append: %v", pl.name, id.hex(), err)
				continue
			}
			q, err := Decode(b, 0)
			if err != nil {
				t.Errorf("%s: zero %s: Decode(% X): %v", pl.name, id.hex(), b, err)
				continue
			}
			if !reflect.DeepEqual(q, p) {
				t.Errorf("%s: zero %s round trip:\n got %#v\nwant %#v", pl.name, id.hex(), q, p)
			}
			b2, _ := Append(nil, q)
			if !bytes.Equal(b2, b) {
				t.Errorf("%s: zero %s re-encoded as % X, first % X", pl.name, id.hex(), b2, b)
			}
		}
	}
}

// TestExplicitPayloadFormatZero is the case of issue 9 item 7: a Payload
// Format Indicator of 0 sent explicitly is kept, and written back.
func TestExplicitPayloadFormatZero(t *testing.T) {
	wire := unhex(t, `30 06 00 01 74 02 01 00`)
	p, err := Decode(wire, 0)
	if err != nil {
		t.Fatal(err)
	}
	pr := &p.(*Publish).Properties
	if !pr.Has(PropPayloadFormat) || pr.PayloadFormat != 0 {
		t.Fatalf("Payload Format Indicator 0 decoded as absent: %#v", pr)
	}
	if b, err := Append(nil, p); err != nil || !bytes.Equal(b, wire) {
		t.Fatalf("re-encoded as % X, %v; want % X", b, err, wire)
	}
	// Without SetPresent, a zero field is still absent.
	if b, _ := Append(nil, &Publish{Topic: "t"}); !bytes.Equal(b, unhex(t, `30 04 00 01 74 00`)) {
		t.Fatalf("zero field written: % X", b)
	}
}

func TestPropertiesHasSetPresentRemove(t *testing.T) {
	for _, id := range definedIDs() {
		var pr Properties
		if pr.Has(id) {
			t.Errorf("%s present in zero Properties", id.hex())
		}
		pr.SetPresent(id)
		if got, want := pr.Has(id), 1<<id&repeatable == 0; got != want {
			t.Errorf("after SetPresent(%s): Has = %v, want %v", id.hex(), got, want)
		}
		pr.Remove(id)
		if pr.Has(id) || !reflect.DeepEqual(pr, Properties{}) {
			t.Errorf("after Remove(%s): %#v", id.hex(), pr)
		}
	}
	pr := Properties{User: []UserProperty{{}}, SubscriptionIdentifier: []uint32{1}, MessageExpiry: new(uint32(5)), ContentType: "c"}
	for _, id := range []PropertyID{PropUser, PropSubscriptionIdentifier, PropMessageExpiry, PropContentType} {
		if !pr.Has(id) {
			t.Errorf("%s not present", id.hex())
		}
		pr.SetPresent(id) // keeps the value
		pr.Remove(id)
	}
	if !reflect.DeepEqual(pr, Properties{}) {
		t.Errorf("after Remove: %#v", pr)
	}
	// SetPresent keeps a value that is there, and an undefined identifier
	// is never present.
	pr = Properties{MessageExpiry: new(uint32(7))}
	pr.SetPresent(PropMessageExpiry)
	pr.SetPresent(0x05)
	pr.SetPresent(0xFF)
	if *pr.MessageExpiry != 7 || pr.Has(0x05) || pr.Has(0xFF) || pr.zeros != 0 {
		t.Errorf("%#v", pr)
	}
}

// randomProperties fills properties allowed at ctx from the bytes of src:
// each absent, present with its zero value (when the property may hold
// one), or present with another value.
func randomProperties(src func() byte, ctx propPlace) Properties {
	var pr Properties
	for _, id := range definedIDs() {
		def := &props[id]
		if def.where&ctx == 0 {
			continue
		}
		choice := src() % 3
		switch {
		case choice == 0:
			continue
		case id == PropUser:
			for range int(src() % 4) {
				pr.User = append(pr.User, UserProperty{string("ab"[:src()%3]), string("xyz"[:src()%4])})
			}
			continue
		case id == PropSubscriptionIdentifier:
			n := int(src()%3) + 1
			if ctx != ctxOf(PUBLISH) {
				n = 1
			}
			for range n {
				pr.SubscriptionIdentifier = append(pr.SubscriptionIdentifier, uint32(src())<<20|uint32(src())+1)
			}
			continue
		case choice == 1 && !def.nonZero && id != PropResponseTopic:
			pr.SetPresent(id)
			continue
		}
		v := uint32(src())<<8 | uint32(src()) | 1 // never 0
		switch def.kind {
		case kindByte:
			pr.set(id, 1, "", nil)
		case kindU16:
			pr.set(id, v, "", nil)
		case kindU32:
			pr.set(id, v<<8, "", nil)
		case kindString:
			pr.set(id, 0, string("r/t/u"[:src()%5+1]), nil)
		case kindBinary:
			pr.set(id, 0, "", []byte("bin")[:src()%4])
		}
	}
	if ctx == ctxOf(CONNECT) && pr.AuthData != nil && !pr.Has(PropAuthMethod) {
		pr.AuthMethod = "m" // §3.1.2.11.10
	}
	return pr
}

// checkPropertiesRoundTrip: Decode(Append(p)) == p, and Has agrees with
// the bytes, for properties made by randomProperties from data.
func checkPropertiesRoundTrip(t *testing.T, data []byte) {
	i := 0
	src := func() byte {
		if i >= len(data) {
			return 0
		}
		i++
		return data[i-1]
	}
	pls := places()
	pl := pls[int(src())%len(pls)]
	p := pl.make(randomProperties(src, pl.ctx))
	b, err := Append(nil, p)
	if err != nil {
		t.Fatalf("%s: Append(%#v): %v", pl.name, p, err)
	}
	q, err := Decode(b, 0)
	if err != nil {
		t.Fatalf("%s: Decode(% X): %v", pl.name, b, err)
	}
	if !reflect.DeepEqual(q, p) {
		t.Fatalf("%s: round trip:\n got %#v\nwant %#v", pl.name, q, p)
	}
	if b2, _ := Append(nil, q); !bytes.Equal(b, b2) {
		t.Fatalf("%s: re-encoding % X differs from % X", pl.name, b2, b)
	}
}

func TestPropertiesRoundTripRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 256)
	for range 3000 {
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		checkPropertiesRoundTrip(t, data)
	}
}

// FuzzProperties: whatever mix of absent, zero and other values the
// properties of any packet hold, Decode(Append(p)) == p.
func FuzzProperties(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{1}, 100)) // every property present with its zero
	f.Add(bytes.Repeat([]byte{2}, 100))
	f.Add([]byte{3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) // CONNACK zeros
	f.Fuzz(checkPropertiesRoundTrip)
}

// TestPropertiesReset: reset leaves the zero Properties whatever p held,
// each field alone or all at once, explicit zeros and empty lists included.
func TestPropertiesReset(t *testing.T) {
	var each []Properties
	var all Properties
	typ := reflect.TypeFor[Properties]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		var one Properties
		for _, p := range []*Properties{&one, &all} {
			v := reflect.ValueOf(p).Elem().Field(i)
			switch f.Type.Kind() {
			case reflect.Pointer:
				v.Set(reflect.New(f.Type.Elem()))
			case reflect.String:
				v.SetString("x")
			case reflect.Slice:
				v.Set(reflect.MakeSlice(f.Type, 1, 1))
			default:
				v.SetUint(1)
			}
		}
		each = append(each, one)
		if f.Type.Kind() == reflect.Slice {
			empty := Properties{}
			reflect.ValueOf(&empty).Elem().Field(i).Set(reflect.MakeSlice(f.Type, 0, 1))
			each = append(each, empty)
		}
	}
	for _, id := range definedIDs() {
		each = append(each, zeroed(Properties{}, id))
	}
	for i, p := range append(each, all, zeroed(all, definedIDs()...)) {
		p.reset()
		if !reflect.DeepEqual(p, Properties{}) {
			t.Errorf("case %d: after reset %#v", i, p)
		}
	}
}
