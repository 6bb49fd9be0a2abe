package packets

import "math/bits"

// Property identifiers (§2.2.2.2).
const (
	propPayloadFormat          = 0x01
	propMessageExpiry          = 0x02
	propContentType            = 0x03
	propResponseTopic          = 0x08
	propCorrelationData        = 0x09
	propSubscriptionIdentifier = 0x0B
	propSessionExpiry          = 0x11
	propAssignedClientID       = 0x12
	propServerKeepAlive        = 0x13
	propAuthMethod             = 0x15
	propAuthData               = 0x16
	propRequestProblemInfo     = 0x17
	propWillDelay              = 0x18
	propRequestResponseInfo    = 0x19
	propResponseInfo           = 0x1A
	propServerReference        = 0x1C
	propReasonString           = 0x1F
	propReceiveMaximum         = 0x21
	propTopicAliasMaximum      = 0x22
	propTopicAlias             = 0x23
	propMaximumQoS             = 0x24
	propRetainAvailable        = 0x25
	propUser                   = 0x26
	propMaximumPacketSize      = 0x27
	propWildcardSubAvailable   = 0x28
	propSubIDAvailable         = 0x29
	propSharedSubAvailable     = 0x2A
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
	propPayloadFormat:          {kind: kindByte, where: pubWill, bool: true},
	propMessageExpiry:          {kind: kindU32, where: pubWill},
	propContentType:            {kind: kindString, where: pubWill},
	propResponseTopic:          {kind: kindString, where: pubWill},
	propCorrelationData:        {kind: kindBinary, where: pubWill},
	propSubscriptionIdentifier: {kind: kindVarInt, where: in(PUBLISH, SUBSCRIBE), nonZero: true},
	propSessionExpiry:          {kind: kindU32, where: in(CONNECT, CONNACK, DISCONNECT)},
	propAssignedClientID:       {kind: kindString, where: in(CONNACK)},
	propServerKeepAlive:        {kind: kindU16, where: in(CONNACK)},
	propAuthMethod:             {kind: kindString, where: in(CONNECT, CONNACK, AUTH)},
	propAuthData:               {kind: kindBinary, where: in(CONNECT, CONNACK, AUTH)},
	propRequestProblemInfo:     {kind: kindByte, where: in(CONNECT), bool: true},
	propWillDelay:              {kind: kindU32, where: willContext},
	propRequestResponseInfo:    {kind: kindByte, where: in(CONNECT), bool: true},
	propResponseInfo:           {kind: kindString, where: in(CONNACK)},
	propServerReference:        {kind: kindString, where: in(CONNACK, DISCONNECT)},
	propReasonString:           {kind: kindString, where: in(CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH) | acks},
	propReceiveMaximum:         {kind: kindU16, where: in(CONNECT, CONNACK), nonZero: true},
	propTopicAliasMaximum:      {kind: kindU16, where: in(CONNECT, CONNACK)},
	propTopicAlias:             {kind: kindU16, where: in(PUBLISH), nonZero: true},
	propMaximumQoS:             {kind: kindByte, where: in(CONNACK), bool: true},
	propRetainAvailable:        {kind: kindByte, where: in(CONNACK), bool: true},
	propUser:                   {kind: kindPair, where: pubWill | acks | in(CONNECT, CONNACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH)},
	propMaximumPacketSize:      {kind: kindU32, where: in(CONNECT, CONNACK), nonZero: true},
	propWildcardSubAvailable:   {kind: kindByte, where: in(CONNACK), bool: true},
	propSubIDAvailable:         {kind: kindByte, where: in(CONNACK), bool: true},
	propSharedSubAvailable:     {kind: kindByte, where: in(CONNACK), bool: true},
}

// repeatable is the set of the two properties that may appear more than
// once, handled apart from the others: Subscription Identifier (in
// PUBLISH) and User Property.
const repeatable = 1<<propSubscriptionIdentifier | 1<<propUser

func bit(id byte, ok bool) uint64 {
	if ok {
		return 1 << id
	}
	return 0
}

// present returns the set of properties that p holds, one bit per
// identifier, so that encoding visits only those.
func (p *Properties) present() uint64 {
	return bit(propPayloadFormat, p.PayloadFormat != 0) |
		bit(propMessageExpiry, p.MessageExpiry != nil) |
		bit(propContentType, p.ContentType != "") |
		bit(propResponseTopic, p.ResponseTopic != "") |
		bit(propCorrelationData, p.CorrelationData != nil) |
		bit(propSubscriptionIdentifier, len(p.SubscriptionIdentifier) > 0) |
		bit(propSessionExpiry, p.SessionExpiry != nil) |
		bit(propAssignedClientID, p.AssignedClientID != "") |
		bit(propServerKeepAlive, p.ServerKeepAlive != nil) |
		bit(propAuthMethod, p.AuthMethod != "") |
		bit(propAuthData, p.AuthData != nil) |
		bit(propRequestProblemInfo, p.RequestProblemInfo != nil) |
		bit(propWillDelay, p.WillDelay != 0) |
		bit(propRequestResponseInfo, p.RequestResponseInfo != 0) |
		bit(propResponseInfo, p.ResponseInfo != "") |
		bit(propServerReference, p.ServerReference != "") |
		bit(propReasonString, p.ReasonString != "") |
		bit(propReceiveMaximum, p.ReceiveMaximum != 0) |
		bit(propTopicAliasMaximum, p.TopicAliasMaximum != 0) |
		bit(propTopicAlias, p.TopicAlias != 0) |
		bit(propMaximumQoS, p.MaximumQoS != nil) |
		bit(propRetainAvailable, p.RetainAvailable != nil) |
		bit(propUser, len(p.User) > 0) |
		bit(propMaximumPacketSize, p.MaximumPacketSize != 0) |
		bit(propWildcardSubAvailable, p.WildcardSubAvailable != nil) |
		bit(propSubIDAvailable, p.SubIDAvailable != nil) |
		bit(propSharedSubAvailable, p.SharedSubAvailable != nil)
}

// get returns the value of single-valued property id in p: a number, a
// string or binary data depending on its kind, and whether it is present
// (as present reports it).
func (p *Properties) get(id byte) (n uint32, s string, b []byte, ok bool) {
	switch id {
	case propPayloadFormat:
		return uint32(p.PayloadFormat), "", nil, p.PayloadFormat != 0
	case propMessageExpiry:
		return u32p(p.MessageExpiry)
	case propContentType:
		return 0, p.ContentType, nil, p.ContentType != ""
	case propResponseTopic:
		return 0, p.ResponseTopic, nil, p.ResponseTopic != ""
	case propCorrelationData:
		return 0, "", p.CorrelationData, p.CorrelationData != nil
	case propSessionExpiry:
		return u32p(p.SessionExpiry)
	case propAssignedClientID:
		return 0, p.AssignedClientID, nil, p.AssignedClientID != ""
	case propServerKeepAlive:
		if p.ServerKeepAlive != nil {
			return uint32(*p.ServerKeepAlive), "", nil, true
		}
	case propAuthMethod:
		return 0, p.AuthMethod, nil, p.AuthMethod != ""
	case propAuthData:
		return 0, "", p.AuthData, p.AuthData != nil
	case propRequestProblemInfo:
		return bytep(p.RequestProblemInfo)
	case propWillDelay:
		return p.WillDelay, "", nil, p.WillDelay != 0
	case propRequestResponseInfo:
		return uint32(p.RequestResponseInfo), "", nil, p.RequestResponseInfo != 0
	case propResponseInfo:
		return 0, p.ResponseInfo, nil, p.ResponseInfo != ""
	case propServerReference:
		return 0, p.ServerReference, nil, p.ServerReference != ""
	case propReasonString:
		return 0, p.ReasonString, nil, p.ReasonString != ""
	case propReceiveMaximum:
		return uint32(p.ReceiveMaximum), "", nil, p.ReceiveMaximum != 0
	case propTopicAliasMaximum:
		return uint32(p.TopicAliasMaximum), "", nil, p.TopicAliasMaximum != 0
	case propTopicAlias:
		return uint32(p.TopicAlias), "", nil, p.TopicAlias != 0
	case propMaximumQoS:
		return bytep(p.MaximumQoS)
	case propRetainAvailable:
		return bytep(p.RetainAvailable)
	case propMaximumPacketSize:
		return p.MaximumPacketSize, "", nil, p.MaximumPacketSize != 0
	case propWildcardSubAvailable:
		return bytep(p.WildcardSubAvailable)
	case propSubIDAvailable:
		return bytep(p.SubIDAvailable)
	case propSharedSubAvailable:
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
// against the range of the property's kind.
func (p *Properties) set(id byte, n uint32, s string, b []byte) {
	switch id {
	case propPayloadFormat:
		p.PayloadFormat = byte(n)
	case propMessageExpiry:
		p.MessageExpiry = newU32(n)
	case propContentType:
		p.ContentType = s
	case propResponseTopic:
		p.ResponseTopic = s
	case propCorrelationData:
		p.CorrelationData = b
	case propSessionExpiry:
		p.SessionExpiry = newU32(n)
	case propAssignedClientID:
		p.AssignedClientID = s
	case propServerKeepAlive:
		v := uint16(n)
		p.ServerKeepAlive = &v
	case propAuthMethod:
		p.AuthMethod = s
	case propAuthData:
		p.AuthData = b
	case propRequestProblemInfo:
		p.RequestProblemInfo = newByte(n)
	case propWillDelay:
		p.WillDelay = n
	case propRequestResponseInfo:
		p.RequestResponseInfo = byte(n)
	case propResponseInfo:
		p.ResponseInfo = s
	case propServerReference:
		p.ServerReference = s
	case propReasonString:
		p.ReasonString = s
	case propReceiveMaximum:
		p.ReceiveMaximum = uint16(n)
	case propTopicAliasMaximum:
		p.TopicAliasMaximum = uint16(n)
	case propTopicAlias:
		p.TopicAlias = uint16(n)
	case propMaximumQoS:
		p.MaximumQoS = newByte(n)
	case propRetainAvailable:
		p.RetainAvailable = newByte(n)
	case propMaximumPacketSize:
		p.MaximumPacketSize = n
	case propWildcardSubAvailable:
		p.WildcardSubAvailable = newByte(n)
	case propSubIDAvailable:
		p.SubIDAvailable = newByte(n)
	case propSharedSubAvailable:
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
func checkValue(id byte, n uint32) error {
	def := &props[id]
	switch {
	case def.bool && n > 1:
		return errorf(ErrProtocol, "property "+hexByte(id)+" must be 0 or 1")
	case id == propTopicAlias && n == 0:
		return errorf(ErrTopicAliasInvalid, "topic alias 0") // MQTT-3.3.2-8, §3.3.2.3.4
	case def.nonZero && n == 0:
		return errorf(ErrProtocol, "property "+hexByte(id)+" must not be 0")
	case def.kind == kindVarInt && n > maxVarInt:
		return errorf(ErrProtocol, "property "+hexByte(id)+" out of range")
	}
	return nil
}

// checkText applies the rules of string property id: those of any string,
// and those of a Topic Name for a Response Topic (MQTT-3.3.2-14).
func checkText(id byte, s string) error {
	if id == propResponseTopic {
		return ValidTopicName(s)
	}
	return checkString(s)
}

func hexByte(b byte) string { return ReasonCode(b).hex() }

func notAllowed(id byte, ctx propPlace) error {
	where := "Will properties"
	for t := CONNECT; t <= AUTH; t++ {
		if ctx == ctxOf(t) {
			where = t.String()
		}
	}
	return errorf(ErrPropertyNotAllowed, "property "+hexByte(id)+" in "+where)
}

// propsLen validates p for place ctx and returns the length of its
// encoded properties, without the length prefix.
func propsLen(p *Properties, ctx propPlace) (int, error) {
	n := 0
	for m := p.present(); m != 0; m &= m - 1 {
		id := byte(bits.TrailingZeros64(m))
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
			if err := checkValue(propSubscriptionIdentifier, v); err != nil {
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
		id := byte(bits.TrailingZeros64(m))
		v, s, bin, _ := p.get(id)
		b = append(b, id)
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
		b = append(b, propSubscriptionIdentifier)
		b = appendVarInt(b, int(v))
	}
	for _, u := range p.User {
		b = append(b, propUser)
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
		id64 := d.varInt()
		if d.err != nil {
			return
		}
		if id64 >= len(props) || props[id64].kind == 0 {
			d.fail(errorf(ErrPropertyNotAllowed, "unknown property "+strconvHex(id64)))
			return
		}
		id := byte(id64)
		def := &props[id]
		if def.where&ctx == 0 {
			d.fail(notAllowed(id, ctx))
			return
		}
		repeatable := id == propUser || (id == propSubscriptionIdentifier && ctx == ctxOf(PUBLISH))
		if seen&(1<<id) != 0 && !repeatable {
			d.fail(errorf(ErrDuplicateProperty, "property "+hexByte(id)))
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
			s := d.string()
			if d.err == nil {
				d.fail(checkText(id, s))
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
		if id == propSubscriptionIdentifier {
			p.SubscriptionIdentifier = append(p.SubscriptionIdentifier, v)
		} else {
			p.set(id, v, "", nil)
		}
	}
	if d.err == nil && d.i != end {
		d.fail(errorf(ErrMalformed, "property overruns property length"))
	}
}

func strconvHex(v int) string {
	if v < 256 {
		return hexByte(byte(v))
	}
	return "above 0xFF"
}
