package packets

import (
	"math/bits"
	"strconv"
)

// PropertyID is a property identifier (§2.2.2.2).
type PropertyID byte

// Property identifiers (§2.2.2.2), one per field of Properties, named
// after the field.
const (
	PropPayloadFormat          PropertyID = 0x01
	PropMessageExpiry          PropertyID = 0x02
	PropContentType            PropertyID = 0x03
	PropResponseTopic          PropertyID = 0x08
	PropCorrelationData        PropertyID = 0x09
	PropSubscriptionIdentifier PropertyID = 0x0B
	PropSessionExpiry          PropertyID = 0x11
	PropAssignedClientID       PropertyID = 0x12
	PropServerKeepAlive        PropertyID = 0x13
	PropAuthMethod             PropertyID = 0x15
	PropAuthData               PropertyID = 0x16
	PropRequestProblemInfo     PropertyID = 0x17
	PropWillDelay              PropertyID = 0x18
	PropRequestResponseInfo    PropertyID = 0x19
	PropResponseInfo           PropertyID = 0x1A
	PropServerReference        PropertyID = 0x1C
	PropReasonString           PropertyID = 0x1F
	PropReceiveMaximum         PropertyID = 0x21
	PropTopicAliasMaximum      PropertyID = 0x22
	PropTopicAlias             PropertyID = 0x23
	PropMaximumQoS             PropertyID = 0x24
	PropRetainAvailable        PropertyID = 0x25
	PropUser                   PropertyID = 0x26
	PropMaximumPacketSize      PropertyID = 0x27
	PropWildcardSubAvailable   PropertyID = 0x28
	PropSubIDAvailable         PropertyID = 0x29
	PropSharedSubAvailable     PropertyID = 0x2A
)

// A propPlace is a bit set of the places a property may appear:
// bit t for packet type t, and bit 0 (no packet type) for Will properties.
type propPlace uint16

const willContext propPlace = 1

func in(types ...Type) propPlace {
	var c propPlace
	for _, t := range types {
		c |= 1 << t
	}
	return c
}

func ctxOf(t Type) propPlace { return 1 << t }

type propKind uint8

const (
	kindByte propKind = iota + 1
	kindU16
	kindU32
	kindVarInt
	kindString
	kindBinary
	kindPair
)

type propDef struct {
	kind  propKind
	where propPlace
	// bool: values above 1 are a protocol error; nonZero: 0 is.
	bool, nonZero bool
}

var (
	pubWill = in(PUBLISH) | willContext
	acks    = in(PUBACK, PUBREC, PUBREL, PUBCOMP)
)

// props describes every property, indexed by identifier; kind 0 marks an
// identifier the specification does not define.
var props = [...]propDef{
	PropPayloadFormat:          {kind: kindByte, where: pubWill, bool: true},
	PropMessageExpiry:          {kind: kindU32, where: pubWill},
	PropContentType:            {kind: kindString, where: pubWill},
	PropResponseTopic:          {kind: kindString, where: pubWill},
	PropCorrelationData:        {kind: kindBinary, where: pubWill},
	PropSubscriptionIdentifier: {kind: kindVarInt, where: in(PUBLISH, SUBSCRIBE), nonZero: true},
	PropSessionExpiry:          {kind: kindU32, where: in(CONNECT, CONNACK, DISCONNECT)},
	PropAssignedClientID:       {kind: kindString, where: in(CONNACK)},
	PropServerKeepAlive:        {kind: kindU16, where: in(CONNACK)},
	PropAuthMethod:             {kind: kindString, where: in(CONNECT, CONNACK, AUTH)},
	PropAuthData:               {kind: kindBinary, where: in(CONNECT, CONNACK, AUTH)},
	PropRequestProblemInfo:     {kind: kindByte, where: in(CONNECT), bool: true},
	PropWillDelay:              {kind: kindU32, where: willContext},
	PropRequestResponseInfo:    {kind: kindByte, where: in(CONNECT), bool: true},
	PropResponseInfo:           {kind: kindString, where: in(CONNACK)},
	PropServerReference:        {kind: kindString, where: in(CONNACK, DISCONNECT)},
	PropReasonString:           {kind: kindString, where: in(CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH) | acks},
	PropReceiveMaximum:         {kind: kindU16, where: in(CONNECT, CONNACK), nonZero: true},
	PropTopicAliasMaximum:      {kind: kindU16, where: in(CONNECT, CONNACK)},
	PropTopicAlias:             {kind: kindU16, where: in(PUBLISH), nonZero: true},
	PropMaximumQoS:             {kind: kindByte, where: in(CONNACK), bool: true},
	PropRetainAvailable:        {kind: kindByte, where: in(CONNACK), bool: true},
	PropUser:                   {kind: kindPair, where: pubWill | acks | in(CONNECT, CONNACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH)},
	PropMaximumPacketSize:      {kind: kindU32, where: in(CONNECT, CONNACK), nonZero: true},
	PropWildcardSubAvailable:   {kind: kindByte, where: in(CONNACK), bool: true},
	PropSubIDAvailable:         {kind: kindByte, where: in(CONNACK), bool: true},
	PropSharedSubAvailable:     {kind: kindByte, where: in(CONNACK), bool: true},
}

// repeatable is the set of the two properties that may appear more than
// once, handled apart from the others: Subscription Identifier (in
// PUBLISH) and User Property.
const repeatable = 1<<PropSubscriptionIdentifier | 1<<PropUser

func bit(id PropertyID, ok bool) uint64 {
	if ok {
		return 1 << id
	}
	return 0
}

// plainFields is the set of properties whose field is neither a pointer
// nor a slice, so that its zero value cannot say "present" by itself.
const plainFields = 1<<PropPayloadFormat | 1<<PropContentType | 1<<PropResponseTopic |
	1<<PropAssignedClientID | 1<<PropAuthMethod | 1<<PropWillDelay | 1<<PropRequestResponseInfo |
	1<<PropResponseInfo | 1<<PropServerReference | 1<<PropReasonString | 1<<PropReceiveMaximum |
	1<<PropTopicAliasMaximum | 1<<PropTopicAlias | 1<<PropMaximumPacketSize

// Has reports whether property id is present in p: its field holds a
// value other than the zero value (a non-nil pointer, a non-nil slice, a
// non-empty User or SubscriptionIdentifier slice), or SetPresent marked it.
// Append writes exactly the properties Has reports.
func (p *Properties) Has(id PropertyID) bool {
	return id < 64 && p.present()&(1<<id) != 0
}

// SetPresent makes single-valued property id present even when its field
// holds the zero value, so that Append writes it: an explicit Payload
// Format Indicator 0 or Topic Alias Maximum 0, an empty Content Type.
// Where a pointer or a slice tells presence, SetPresent stores a pointer to
// zero or an empty slice if the field is nil. It does nothing for User and
// SubscriptionIdentifier, which have no single zero value, and for an
// identifier the specification does not define. A zero that a property may
// not hold (Topic Alias, Receive Maximum, Maximum Packet Size) then makes
// Append fail, as receiving it would.
func (p *Properties) SetPresent(id PropertyID) {
	if id < 64 && plainFields&(1<<id) != 0 {
		p.zeros |= 1 << id
		return
	}
	switch id {
	case PropMessageExpiry:
		p.MessageExpiry = orZero(p.MessageExpiry)
	case PropSessionExpiry:
		p.SessionExpiry = orZero(p.SessionExpiry)
	case PropServerKeepAlive:
		p.ServerKeepAlive = orZero(p.ServerKeepAlive)
	case PropRequestProblemInfo:
		p.RequestProblemInfo = orZero(p.RequestProblemInfo)
	case PropMaximumQoS:
		p.MaximumQoS = orZero(p.MaximumQoS)
	case PropRetainAvailable:
		p.RetainAvailable = orZero(p.RetainAvailable)
	case PropWildcardSubAvailable:
		p.WildcardSubAvailable = orZero(p.WildcardSubAvailable)
	case PropSubIDAvailable:
		p.SubIDAvailable = orZero(p.SubIDAvailable)
	case PropSharedSubAvailable:
		p.SharedSubAvailable = orZero(p.SharedSubAvailable)
	case PropCorrelationData:
		if p.CorrelationData == nil {
			p.CorrelationData = []byte{}
		}
	case PropAuthData:
		if p.AuthData == nil {
			p.AuthData = []byte{}
		}
	}
}

func orZero[T any](v *T) *T {
	if v == nil {
		return new(T)
	}
	return v
}

// Remove makes property id absent: it sets the field to its zero value (a
// nil pointer or slice) and undoes SetPresent.
func (p *Properties) Remove(id PropertyID) {
	switch id {
	case PropMessageExpiry:
		p.MessageExpiry = nil
	case PropSessionExpiry:
		p.SessionExpiry = nil
	case PropServerKeepAlive:
		p.ServerKeepAlive = nil
	case PropRequestProblemInfo:
		p.RequestProblemInfo = nil
	case PropMaximumQoS:
		p.MaximumQoS = nil
	case PropRetainAvailable:
		p.RetainAvailable = nil
	case PropWildcardSubAvailable:
		p.WildcardSubAvailable = nil
	case PropSubIDAvailable:
		p.SubIDAvailable = nil
	case PropSharedSubAvailable:
		p.SharedSubAvailable = nil
	case PropSubscriptionIdentifier:
		p.SubscriptionIdentifier = nil
	case PropUser:
		p.User = nil
	default:
		p.set(id, 0, "", nil) // the plain fields and the binary ones
	}
	if id < 64 {
		p.zeros &^= 1 << id
	}
}

// present returns the set of properties that p holds, one bit per
// identifier, so that encoding visits only those.
func (p *Properties) present() uint64 {
	return p.zeros | bit(PropPayloadFormat, p.PayloadFormat != 0) |
		bit(PropMessageExpiry, p.MessageExpiry != nil) |
		bit(PropContentType, p.ContentType != "") |
		bit(PropResponseTopic, p.ResponseTopic != "") |
		bit(PropCorrelationData, p.CorrelationData != nil) |
		bit(PropSubscriptionIdentifier, len(p.SubscriptionIdentifier) > 0) |
		bit(PropSessionExpiry, p.SessionExpiry != nil) |
		bit(PropAssignedClientID, p.AssignedClientID != "") |
		bit(PropServerKeepAlive, p.ServerKeepAlive != nil) |
		bit(PropAuthMethod, p.AuthMethod != "") |
		bit(PropAuthData, p.AuthData != nil) |
		bit(PropRequestProblemInfo, p.RequestProblemInfo != nil) |
		bit(PropWillDelay, p.WillDelay != 0) |
		bit(PropRequestResponseInfo, p.RequestResponseInfo != 0) |
		bit(PropResponseInfo, p.ResponseInfo != "") |
		bit(PropServerReference, p.ServerReference != "") |
		bit(PropReasonString, p.ReasonString != "") |
		bit(PropReceiveMaximum, p.ReceiveMaximum != 0) |
		bit(PropTopicAliasMaximum, p.TopicAliasMaximum != 0) |
		bit(PropTopicAlias, p.TopicAlias != 0) |
		bit(PropMaximumQoS, p.MaximumQoS != nil) |
		bit(PropRetainAvailable, p.RetainAvailable != nil) |
		bit(PropUser, len(p.User) > 0) |
		bit(PropMaximumPacketSize, p.MaximumPacketSize != 0) |
		bit(PropWildcardSubAvailable, p.WildcardSubAvailable != nil) |
		bit(PropSubIDAvailable, p.SubIDAvailable != nil) |
		bit(PropSharedSubAvailable, p.SharedSubAvailable != nil)
}

// reset makes p the zero Properties. Unlike *p = Properties{}, it writes
// a field that holds a pointer (a string, a slice) only if it is not
// already zero, so that clearing a reused Ack or Publish does not rewrite,
// and while the garbage collector runs put a write barrier on, every
// pointer slot of p. TestPropertiesReset checks that it knows every field.
func (p *Properties) reset() {
	p.PayloadFormat, p.WillDelay, p.RequestResponseInfo = 0, 0, 0
	p.ReceiveMaximum, p.TopicAliasMaximum, p.TopicAlias, p.MaximumPacketSize = 0, 0, 0, 0
	p.zeros = 0
	unset(&p.MessageExpiry)
	unset(&p.ContentType)
	unset(&p.ResponseTopic)
	unsetList(&p.CorrelationData)
	unsetList(&p.SubscriptionIdentifier)
	unset(&p.SessionExpiry)
	unset(&p.AssignedClientID)
	unset(&p.ServerKeepAlive)
	unset(&p.AuthMethod)
	unsetList(&p.AuthData)
	unset(&p.RequestProblemInfo)
	unset(&p.ResponseInfo)
	unset(&p.ServerReference)
	unset(&p.ReasonString)
	unset(&p.MaximumQoS)
	unset(&p.RetainAvailable)
	unsetList(&p.User)
	unset(&p.WildcardSubAvailable)
	unset(&p.SubIDAvailable)
	unset(&p.SharedSubAvailable)
}

// unset and unsetList write the zero value to *v unless it holds it.
func unset[T comparable](v *T) {
	var zero T
	if *v != zero {
		*v = zero
	}
}

func unsetList[T any](v *[]T) {
	if *v != nil {
		*v = nil
	}
}

// get returns the value of single-valued property id in p: a number, a
// string or binary data depending on its kind, and whether it is present
// (as present reports it).
func (p *Properties) get(id PropertyID) (n uint32, s string, b []byte, ok bool) {
	switch id {
	case PropPayloadFormat:
		return uint32(p.PayloadFormat), "", nil, p.PayloadFormat != 0
	case PropMessageExpiry:
		return u32p(p.MessageExpiry)
	case PropContentType:
		return 0, p.ContentType, nil, p.ContentType != ""
	case PropResponseTopic:
		return 0, p.ResponseTopic, nil, p.ResponseTopic != ""
	case PropCorrelationData:
		return 0, "", p.CorrelationData, p.CorrelationData != nil
	case PropSessionExpiry:
		return u32p(p.SessionExpiry)
	case PropAssignedClientID:
		return 0, p.AssignedClientID, nil, p.AssignedClientID != ""
	case PropServerKeepAlive:
		if p.ServerKeepAlive != nil {
			return uint32(*p.ServerKeepAlive), "", nil, true
		}
	case PropAuthMethod:
		return 0, p.AuthMethod, nil, p.AuthMethod != ""
	case PropAuthData:
		return 0, "", p.AuthData, p.AuthData != nil
	case PropRequestProblemInfo:
		return bytep(p.RequestProblemInfo)
	case PropWillDelay:
		return p.WillDelay, "", nil, p.WillDelay != 0
	case PropRequestResponseInfo:
		return uint32(p.RequestResponseInfo), "", nil, p.RequestResponseInfo != 0
	case PropResponseInfo:
		return 0, p.ResponseInfo, nil, p.ResponseInfo != ""
	case PropServerReference:
		return 0, p.ServerReference, nil, p.ServerReference != ""
	case PropReasonString:
		return 0, p.ReasonString, nil, p.ReasonString != ""
	case PropReceiveMaximum:
		return uint32(p.ReceiveMaximum), "", nil, p.ReceiveMaximum != 0
	case PropTopicAliasMaximum:
		return uint32(p.TopicAliasMaximum), "", nil, p.TopicAliasMaximum != 0
	case PropTopicAlias:
		return uint32(p.TopicAlias), "", nil, p.TopicAlias != 0
	case PropMaximumQoS:
		return bytep(p.MaximumQoS)
	case PropRetainAvailable:
		return bytep(p.RetainAvailable)
	case PropMaximumPacketSize:
		return p.MaximumPacketSize, "", nil, p.MaximumPacketSize != 0
	case PropWildcardSubAvailable:
		return bytep(p.WildcardSubAvailable)
	case PropSubIDAvailable:
		return bytep(p.SubIDAvailable)
	case PropSharedSubAvailable:
		return bytep(p.SharedSubAvailable)
	}
	return 0, "", nil, false
}

func u32p(v *uint32) (uint32, string, []byte, bool) {
	if v == nil {
		return 0, "", nil, false
	}
	return *v, "", nil, true
}

func bytep(v *byte) (uint32, string, []byte, bool) {
	if v == nil {
		return 0, "", nil, false
	}
	return uint32(*v), "", nil, true
}

// set stores a decoded single-valued property; n has already been checked
// against the range of the property's kind. A zero in a plain field is
// marked present, so that it encodes back.
func (p *Properties) set(id PropertyID, n uint32, s string, b []byte) {
	if plainFields&(1<<id) != 0 && n == 0 && s == "" {
		p.zeros |= 1 << id
	}
	switch id {
	case PropPayloadFormat:
		p.PayloadFormat = byte(n)
	case PropMessageExpiry:
		p.MessageExpiry = newU32(n)
	case PropContentType:
		p.ContentType = s
	case PropResponseTopic:
		p.ResponseTopic = s
	case PropCorrelationData:
		p.CorrelationData = b
	case PropSessionExpiry:
		p.SessionExpiry = newU32(n)
	case PropAssignedClientID:
		p.AssignedClientID = s
	case PropServerKeepAlive:
		v := uint16(n)
		p.ServerKeepAlive = &v
	case PropAuthMethod:
		p.AuthMethod = s
	case PropAuthData:
		p.AuthData = b
	case PropRequestProblemInfo:
		p.RequestProblemInfo = newByte(n)
	case PropWillDelay:
		p.WillDelay = n
	case PropRequestResponseInfo:
		p.RequestResponseInfo = byte(n)
	case PropResponseInfo:
		p.ResponseInfo = s
	case PropServerReference:
		p.ServerReference = s
	case PropReasonString:
		p.ReasonString = s
	case PropReceiveMaximum:
		p.ReceiveMaximum = uint16(n)
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = uint16(n)
	case PropTopicAlias:
		p.TopicAlias = uint16(n)
	case PropMaximumQoS:
		p.MaximumQoS = newByte(n)
	case PropRetainAvailable:
		p.RetainAvailable = newByte(n)
	case PropMaximumPacketSize:
		p.MaximumPacketSize = n
	case PropWildcardSubAvailable:
		p.WildcardSubAvailable = newByte(n)
	case PropSubIDAvailable:
		p.SubIDAvailable = newByte(n)
	case PropSharedSubAvailable:
		p.SharedSubAvailable = newByte(n)
	}
}

// newU32 and newByte take a copy, so that only the cases that keep a
// pointer allocate.
func newU32(n uint32) *uint32 { return &n }

func newByte(n uint32) *byte {
	v := byte(n)
	return &v
}

// checkValue applies the value rules of property id, on both encode and
// decode.
func checkValue(id PropertyID, n uint32) error {
	def := &props[id]
	switch {
	case def.bool && n > 1:
		return errorf(ErrProtocol, "property "+id.hex()+" must be 0 or 1")
	case id == PropTopicAlias && n == 0:
		return errorf(ErrTopicAliasInvalid, "topic alias 0") // MQTT-3.3.2-8, §3.3.2.3.4
	case def.nonZero && n == 0:
		return errorf(ErrProtocol, "property "+id.hex()+" must not be 0")
	case def.kind == kindVarInt && n > maxVarInt:
		return errorf(ErrProtocol, "property "+id.hex()+" out of range")
	}
	return nil
}

// checkText applies the rules of string property id: those of any string,
// and those of a Topic Name for a Response Topic (MQTT-3.3.2-14).
func checkText(id PropertyID, s string) error {
	if id == PropResponseTopic {
		return ValidTopicName(s)
	}
	return checkString(s)
}

func (id PropertyID) hex() string { return ReasonCode(id).hex() }

func notAllowed(id PropertyID, ctx propPlace) error {
	where := "Will properties"
	for t := CONNECT; t <= AUTH; t++ {
		if ctx == ctxOf(t) {
			where = t.String()
		}
	}
	return errorf(ErrPropertyNotAllowed, "property "+id.hex()+" in "+where)
}

// propsLen validates p for place ctx and returns the length of its
// encoded properties, without the length prefix.
func propsLen(p *Properties, ctx propPlace) (int, error) {
	n := 0
	for m := p.present(); m != 0; m &= m - 1 {
		id := PropertyID(bits.TrailingZeros64(m))
		def := &props[id]
		if def.where&ctx == 0 {
			return 0, notAllowed(id, ctx)
		}
		if 1<<id&repeatable != 0 {
			continue
		}
		v, s, b, _ := p.get(id)
		if err := checkValue(id, v); err != nil {
			return 0, err
		}
		n++
		switch def.kind {
		case kindByte:
			n++
		case kindU16:
			n += 2
		case kindU32:
			n += 4
		case kindString:
			if err := checkText(id, s); err != nil {
				return 0, err
			}
			n += 2 + len(s)
		case kindBinary:
			if err := checkBinary(b); err != nil {
				return 0, err
			}
			n += 2 + len(b)
		}
	}
	if ids := p.SubscriptionIdentifier; len(ids) > 0 {
		if ctx != ctxOf(PUBLISH) && len(ids) > 1 {
			return 0, errorf(ErrDuplicateProperty, "subscription identifier")
		}
		for _, v := range ids {
			if err := checkValue(PropSubscriptionIdentifier, v); err != nil {
				return 0, err
			}
			n += 1 + varIntLen(int(v))
		}
	}
	if len(p.User) > 0 {
		for _, u := range p.User {
			if err := checkString(u.Key); err != nil {
				return 0, err
			}
			if err := checkString(u.Value); err != nil {
				return 0, err
			}
			n += 5 + len(u.Key) + len(u.Value)
		}
	}
	return n, nil
}

// appendProps writes the properties of p, already validated by propsLen,
// which returned n.
func appendProps(b []byte, p *Properties, n int) []byte {
	b = appendVarInt(b, n)
	if n == 0 {
		return b
	}
	for m := p.present() &^ repeatable; m != 0; m &= m - 1 {
		id := PropertyID(bits.TrailingZeros64(m))
		v, s, bin, _ := p.get(id)
		b = append(b, byte(id))
		switch props[id].kind {
		case kindByte:
			b = append(b, byte(v))
		case kindU16:
			b = appendU16(b, uint16(v))
		case kindU32:
			b = appendU32(b, v)
		case kindString:
			b = appendString(b, s)
		case kindBinary:
			b = appendBinary(b, bin)
		}
	}
	for _, v := range p.SubscriptionIdentifier {
		b = append(b, byte(PropSubscriptionIdentifier))
		b = appendVarInt(b, int(v))
	}
	for _, u := range p.User {
		b = append(b, byte(PropUser))
		b = appendString(b, u.Key)
		b = appendString(b, u.Value)
	}
	return b
}

// props decodes a property length and the properties that follow into p,
// checking each against place ctx.
func (d *decoder) props(p *Properties, ctx propPlace) {
	n := d.varInt()
	if d.err != nil {
		return
	}
	if n > d.left() {
		d.fail(errorf(ErrTruncated, "property length exceeds packet"))
		return
	}
	end := d.i + n
	var seen uint64
	for d.err == nil && d.i < end {
		at := d.i
		id64 := d.varInt()
		if d.err != nil {
			return
		}
		if id64 >= len(props) || props[id64].kind == 0 {
			d.fail(errorf(ErrPropertyNotAllowed, "unknown property "+strconvHex(id64)))
			return
		}
		id := PropertyID(id64)
		def := &props[id]
		if def.where&ctx == 0 {
			d.fail(notAllowed(id, ctx))
			return
		}
		repeatable := id == PropUser || (id == PropSubscriptionIdentifier && ctx == ctxOf(PUBLISH))
		if seen&(1<<id) != 0 && !repeatable {
			d.fail(errorf(ErrDuplicateProperty, "property "+id.hex()))
			return
		}
		seen |= 1 << id
		var v uint32
		switch def.kind {
		case kindByte:
			v = uint32(d.byte())
		case kindU16:
			v = uint32(d.u16())
		case kindU32:
			v = d.u32()
		case kindVarInt:
			v = uint32(d.varInt())
		case kindString:
			s := d.string() // checkText's checkString, done
			if d.err == nil && id == PropResponseTopic {
				d.fail(checkTopicName(s))
			}
			p.set(id, 0, s, nil)
			continue
		case kindBinary:
			p.set(id, 0, "", d.binary())
			continue
		case kindPair:
			k := d.string()
			val := d.string()
			if d.err == nil {
				p.User = room(d, p.User, id, at, end, d.lim.UserProperties)
			}
			if d.err == nil {
				p.User = append(p.User, UserProperty{k, val})
			}
			continue
		}
		if d.err != nil {
			return
		}
		if err := checkValue(id, v); err != nil {
			d.fail(err)
			return
		}
		if id == PropSubscriptionIdentifier {
			p.SubscriptionIdentifier = room(d, p.SubscriptionIdentifier, id, at, end, d.lim.SubscriptionIdentifiers)
			p.SubscriptionIdentifier = append(p.SubscriptionIdentifier, v)
		} else {
			p.set(id, v, "", nil)
		}
	}
	if d.err == nil && d.i != end {
		d.fail(errorf(ErrMalformed, "property overruns property length"))
	}
}

// room readies list for one more value of repeatable property id, whose
// occurrence starts at d.b[at:]. On the first occurrence it counts those
// up to end, so that the list is allocated once at its final size, in
// memory proportional to the packet; it fails with ErrLimit past max.
func room[T any](d *decoder, list []T, id PropertyID, at, end, max int) []T {
	n := len(list) + 1
	if list == nil {
		n = countProp(d.b[at:end], id)
	}
	if n > max {
		what := " user properties"
		if id == PropSubscriptionIdentifier {
			what = " subscription identifiers"
		}
		d.fail(errorf(ErrLimit, "more than "+strconv.Itoa(max)+what))
		return list
	}
	if list == nil {
		list = make([]T, 0, n)
	}
	return list
}

// countProp counts the occurrences of property id in the properties b,
// skipping values without decoding them. It stops at the first fault,
// which decoding then reports.
func countProp(b []byte, want PropertyID) int {
	count := 0
	for len(b) > 0 {
		id, n, err := parseVarInt(b)
		if err != nil || id >= len(props) || props[id].kind == 0 {
			break
		}
		b = b[n:]
		switch props[id].kind {
		case kindByte:
			n = 1
		case kindU16:
			n = 2
		case kindU32:
			n = 4
		case kindVarInt:
			if _, n, err = parseVarInt(b); err != nil {
				return count
			}
		case kindString, kindBinary:
			n = lenPrefixed(b)
		case kindPair:
			n = lenPrefixed(b)
			if n <= len(b) {
				n += lenPrefixed(b[n:])
			}
		}
		if n > len(b) {
			break
		}
		b = b[n:]
		if PropertyID(id) == want {
			count++
		}
	}
	return count
}

// lenPrefixed returns the length of the string or binary data at the
// start of b, prefix included, or more than len(b) if it does not fit.
func lenPrefixed(b []byte) int {
	if len(b) < 2 {
		return len(b) + 1
	}
	return 2 + (int(b[0])<<8 | int(b[1]))
}

func strconvHex(v int) string {
	if v < 256 {
		return PropertyID(v).hex()
	}
	return "above 0xFF"
}
