package packets

import "strings"

// layout is what validation learns about a packet and encoding needs: the
// lengths that prefix the variable parts, computed once.
type layout struct {
	remaining int // remaining length
	props     int // length of the packet's properties
	willProps int // length of the Will properties (CONNECT)
}

func nilPacket(t Type) error { return errorf(ErrProtocol, "nil "+t.String()) }

func checkPacketID(id uint16) error {
	if id == 0 {
		return ErrZeroPacketID
	}
	return nil
}

// checkOptions applies the rules for subscription options (§3.8.3.1).
func checkOptions(s *Subscription) error {
	switch {
	case s.QoS > 2:
		return errorf(ErrInvalidQoS, "subscription QoS 3")
	case s.RetainHandling > 2:
		return errorf(ErrProtocol, "retain handling 3")
	case s.NoLocal && strings.HasPrefix(s.Filter, "$share/"):
		return errorf(ErrProtocol, "no local on a shared subscription") // MQTT-3.8.3-4
	}
	return nil
}

func (o SubscribeOptions) byte() byte {
	b := o.QoS | o.RetainHandling<<4
	if o.NoLocal {
		b |= 0x04
	}
	if o.RetainAsPublished {
		b |= 0x08
	}
	return b
}

// propsPart returns the length of a properties section: its length prefix
// followed by the properties.
func propsPart(n int) int { return varIntLen(n) + n }

// plan validates p and computes its layout.
func plan(p Packet) (layout, error) {
	var l layout
	var err error
	switch p := p.(type) {
	case *Connect:
		if p == nil {
			return l, nilPacket(CONNECT)
		}
		return planConnect(p)
	case *Connack:
		if p == nil {
			return l, nilPacket(CONNACK)
		}
		if p.SessionPresent && p.ReasonCode != Success {
			return l, errorf(ErrProtocol, "session present with a failure reason code") // MQTT-3.2.2-6
		}
		if err = checkCode(CONNACK, p.ReasonCode); err != nil {
			return l, err
		}
		l.props, err = propsLen(&p.Properties, ctxOf(CONNACK))
		l.remaining = 2 + propsPart(l.props)
	case *Publish:
		if p == nil {
			return l, nilPacket(PUBLISH)
		}
		if err = checkPublish(p); err != nil {
			return l, err
		}
		l.props, err = propsLen(&p.Properties, ctxOf(PUBLISH))
		l.remaining = 2 + len(p.Topic) + propsPart(l.props) + len(p.Payload)
		if p.QoS > 0 {
			l.remaining += 2
		}
	case *Ack:
		if p == nil {
			return l, nilPacket(PUBACK)
		}
		if p.Kind < PUBACK || p.Kind > PUBCOMP {
			return l, errorf(ErrProtocol, "ack of kind "+p.Kind.String())
		}
		if err = checkPacketID(p.PacketID); err != nil {
			return l, err
		}
		if err = checkCode(p.Kind, p.ReasonCode); err != nil {
			return l, err
		}
		l.props, err = propsLen(&p.Properties, ctxOf(p.Kind))
		// Shortest form: the reason code and the property length may be
		// left out when they hold nothing (§3.4.2.1).
		switch {
		case l.props > 0:
			l.remaining = 3 + propsPart(l.props)
		case p.ReasonCode != Success:
			l.remaining = 3
		default:
			l.remaining = 2
		}
	case *Subscribe:
		if p == nil {
			return l, nilPacket(SUBSCRIBE)
		}
		if err = checkPacketID(p.PacketID); err != nil {
			return l, err
		}
		if len(p.Subscriptions) == 0 {
			return l, errorf(ErrProtocol, "SUBSCRIBE without subscriptions") // MQTT-3.8.3-2
		}
		l.props, err = propsLen(&p.Properties, ctxOf(SUBSCRIBE))
		l.remaining = 2 + propsPart(l.props)
		for i := range p.Subscriptions {
			s := &p.Subscriptions[i]
			if err := ValidTopicFilter(s.Filter); err != nil {
				return l, err
			}
			if err := checkOptions(s); err != nil {
				return l, err
			}
			l.remaining += 3 + len(s.Filter)
		}
	case *Suback:
		if p == nil {
			return l, nilPacket(SUBACK)
		}
		l, err = planCodes(SUBACK, p.PacketID, &p.Properties, p.ReasonCodes)
	case *Unsubscribe:
		if p == nil {
			return l, nilPacket(UNSUBSCRIBE)
		}
		if err = checkPacketID(p.PacketID); err != nil {
			return l, err
		}
		if len(p.Filters) == 0 {
			return l, errorf(ErrProtocol, "UNSUBSCRIBE without topic filters") // MQTT-3.10.3-2
		}
		l.props, err = propsLen(&p.Properties, ctxOf(UNSUBSCRIBE))
		l.remaining = 2 + propsPart(l.props)
		for _, f := range p.Filters {
			if err := ValidTopicFilter(f); err != nil {
				return l, err
			}
			l.remaining += 2 + len(f)
		}
	case *Unsuback:
		if p == nil {
			return l, nilPacket(UNSUBACK)
		}
		l, err = planCodes(UNSUBACK, p.PacketID, &p.Properties, p.ReasonCodes)
	case *Pingreq, *Pingresp:
	case *Disconnect:
		if p == nil {
			return l, nilPacket(DISCONNECT)
		}
		l, err = planReason(DISCONNECT, p.ReasonCode, &p.Properties)
	case *Auth:
		if p == nil {
			return l, nilPacket(AUTH)
		}
		l, err = planReason(AUTH, p.ReasonCode, &p.Properties)
	default:
		return l, errorf(ErrProtocol, "unknown packet")
	}
	if err != nil {
		return l, err
	}
	if l.remaining > maxVarInt {
		return l, errorf(ErrPacketTooLarge, "remaining length over the protocol limit")
	}
	return l, nil
}

func checkPublish(p *Publish) error {
	switch {
	case p.QoS > 2:
		return errorf(ErrInvalidQoS, "QoS 3") // MQTT-3.3.1-4
	case p.QoS == 0 && p.Dup:
		return errorf(ErrInvalidQoS, "DUP on QoS 0") // MQTT-3.3.1-2
	case p.QoS == 0 && p.PacketID != 0:
		return errorf(ErrProtocol, "packet identifier on QoS 0") // MQTT-2.2.1-2
	case p.QoS > 0 && p.PacketID == 0:
		return ErrZeroPacketID
	}
	if err := checkString(p.Topic); err != nil {
		return err
	}
	return checkPublishTopic(p)
}

// checkPublishTopic applies the Topic Name rules to a PUBLISH whose topic
// checkString accepted: a topic name, or an empty one with a Topic Alias.
func checkPublishTopic(p *Publish) error {
	if p.Topic == "" {
		if p.Properties.TopicAlias == 0 {
			return errorf(ErrInvalidTopicName, "empty topic name without topic alias")
		}
		return nil
	}
	return checkTopicName(p.Topic)
}

func planConnect(p *Connect) (layout, error) {
	var l layout
	var err error
	if err = checkString(p.ClientID); err != nil {
		return l, err
	}
	if l.props, err = propsLen(&p.Properties, ctxOf(CONNECT)); err != nil {
		return l, err
	}
	if err = checkAuthData(&p.Properties); err != nil {
		return l, err
	}
	// Protocol name, level, flags, keep alive; properties; client ID.
	l.remaining = 6 + 1 + 1 + 2 + propsPart(l.props) + 2 + len(p.ClientID)
	if w := p.Will; w != nil {
		if w.QoS > 2 {
			return l, errorf(ErrInvalidQoS, "will QoS 3") // MQTT-3.1.2-12
		}
		if err = ValidTopicName(w.Topic); err != nil {
			return l, err
		}
		if err = checkBinary(w.Payload); err != nil {
			return l, err
		}
		if l.willProps, err = propsLen(&w.Properties, willContext); err != nil {
			return l, err
		}
		l.remaining += propsPart(l.willProps) + 2 + len(w.Topic) + 2 + len(w.Payload)
	}
	if p.hasUsername() {
		if err = checkString(p.Username); err != nil {
			return l, err
		}
		l.remaining += 2 + len(p.Username)
	}
	if p.hasPassword() {
		if err = checkBinary(p.Password); err != nil {
			return l, err
		}
		l.remaining += 2 + len(p.Password)
	}
	return l, nil
}

// checkAuthData: Authentication Data without an Authentication Method is
// a protocol error in CONNECT (§3.1.2.11.10).
func checkAuthData(p *Properties) error {
	if p.AuthData != nil && !p.Has(PropAuthMethod) {
		return errorf(ErrProtocol, "authentication data without authentication method")
	}
	return nil
}

// A username or password that is set counts as present even when its Has
// flag was forgotten: dropping credentials silently would be worse.
func (p *Connect) hasUsername() bool { return p.HasUsername || p.Username != "" }
func (p *Connect) hasPassword() bool { return p.HasPassword || p.Password != nil }

func planCodes(t Type, id uint16, props *Properties, codes []ReasonCode) (layout, error) {
	var l layout
	var err error
	if err = checkPacketID(id); err != nil {
		return l, err
	}
	for _, c := range codes {
		if err = checkCode(t, c); err != nil {
			return l, err
		}
	}
	l.props, err = propsLen(props, ctxOf(t))
	l.remaining = 2 + propsPart(l.props) + len(codes)
	return l, err
}

// planReason lays out DISCONNECT and AUTH, whose whole variable header
// may be left out when it says Success and has no properties.
func planReason(t Type, c ReasonCode, props *Properties) (layout, error) {
	var l layout
	var err error
	if err = checkCode(t, c); err != nil {
		return l, err
	}
	if l.props, err = propsLen(props, ctxOf(t)); err != nil {
		return l, err
	}
	switch {
	case l.props == 0 && c == Success:
		l.remaining = 0
	case l.props == 0 && t == DISCONNECT:
		l.remaining = 1 // §3.14.2.2.1: a missing property length means 0
	default:
		l.remaining = 1 + propsPart(l.props)
	}
	return l, nil
}

// firstByte returns the fixed header's first byte.
func firstByte(p Packet) byte {
	t := p.Type()
	switch t {
	case PUBLISH:
		pub := p.(*Publish)
		b := byte(PUBLISH)<<4 | pub.QoS<<1
		if pub.Dup {
			b |= 0x08
		}
		if pub.Retain {
			b |= 0x01
		}
		return b
	case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
		return byte(t)<<4 | 0x02 // MQTT-2.1.3-1
	}
	return byte(t) << 4
}

// write appends p, already validated by plan, which returned l.
func write(b []byte, p Packet, l *layout) []byte {
	b = append(b, firstByte(p))
	b = appendVarInt(b, l.remaining)
	switch p := p.(type) {
	case *Connect:
		b = appendString(b, "MQTT")
		b = append(b, 5)
		var flags byte
		if p.CleanStart {
			flags |= 0x02
		}
		if w := p.Will; w != nil {
			flags |= 0x04 | w.QoS<<3
			if w.Retain {
				flags |= 0x20
			}
		}
		if p.hasPassword() {
			flags |= 0x40
		}
		if p.hasUsername() {
			flags |= 0x80
		}
		b = append(b, flags)
		b = appendU16(b, p.KeepAlive)
		b = appendProps(b, &p.Properties, l.props)
		b = appendString(b, p.ClientID)
		if w := p.Will; w != nil {
			b = appendProps(b, &w.Properties, l.willProps)
			b = appendString(b, w.Topic)
			b = appendBinary(b, w.Payload)
		}
		if p.hasUsername() {
			b = appendString(b, p.Username)
		}
		if p.hasPassword() {
			b = appendBinary(b, p.Password)
		}
	case *Connack:
		var flags byte
		if p.SessionPresent {
			flags = 1
		}
		b = append(b, flags, byte(p.ReasonCode))
		b = appendProps(b, &p.Properties, l.props)
	case *Publish:
		b = appendString(b, p.Topic)
		if p.QoS > 0 {
			b = appendU16(b, p.PacketID)
		}
		b = appendProps(b, &p.Properties, l.props)
		b = append(b, p.Payload...)
	case *Ack:
		b = appendU16(b, p.PacketID)
		if l.remaining > 2 {
			b = append(b, byte(p.ReasonCode))
		}
		if l.remaining > 3 {
			b = appendProps(b, &p.Properties, l.props)
		}
	case *Subscribe:
		b = appendU16(b, p.PacketID)
		b = appendProps(b, &p.Properties, l.props)
		for i := range p.Subscriptions {
			s := &p.Subscriptions[i]
			b = appendString(b, s.Filter)
			b = append(b, s.SubscribeOptions.byte())
		}
	case *Suback:
		b = appendCodes(b, p.PacketID, &p.Properties, l.props, p.ReasonCodes)
	case *Unsubscribe:
		b = appendU16(b, p.PacketID)
		b = appendProps(b, &p.Properties, l.props)
		for _, f := range p.Filters {
			b = appendString(b, f)
		}
	case *Unsuback:
		b = appendCodes(b, p.PacketID, &p.Properties, l.props, p.ReasonCodes)
	case *Disconnect:
		b = appendReason(b, p.ReasonCode, &p.Properties, l)
	case *Auth:
		b = appendReason(b, p.ReasonCode, &p.Properties, l)
	}
	return b
}

func appendCodes(b []byte, id uint16, props *Properties, n int, codes []ReasonCode) []byte {
	b = appendU16(b, id)
	b = appendProps(b, props, n)
	for _, c := range codes {
		b = append(b, byte(c))
	}
	return b
}

func appendReason(b []byte, c ReasonCode, props *Properties, l *layout) []byte {
	if l.remaining > 0 {
		b = append(b, byte(c))
	}
	if l.remaining > 1 {
		b = appendProps(b, props, l.props)
	}
	return b
}
