package packets

// checkHeader checks the fixed header's first byte: a defined packet type
// with the flags that type requires (MQTT-2.1.3-1), and for PUBLISH a
// valid QoS (MQTT-3.3.1-4).
func checkHeader(h byte) error {
	t, flags := Type(h>>4), h&0x0F
	switch t {
	case 0:
		return errorf(ErrMalformed, "reserved packet type 0")
	case PUBLISH:
		if flags&0x06 == 0x06 {
			return errorf(ErrInvalidQoS, "QoS 3") // MQTT-3.3.1-4
		}
		if flags&0x0E == 0x08 {
			return errorf(ErrInvalidQoS, "DUP on QoS 0") // MQTT-3.3.1-2
		}
		return nil
	case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
		if flags == 0x02 {
			return nil
		}
	default:
		if flags == 0 {
			return nil
		}
	}
	return errorf(ErrReservedFlags, "fixed header flags of "+t.String())
}

// decodeBody decodes the body of a packet whose fixed header starts with
// h, which checkHeader accepted. The packet keeps slices of body, so body
// must belong to it alone.
//
// lim holds resolved limits (Limits.resolve), so that a Reader resolves
// them once rather than for every packet. An acknowledgement is decoded
// into ack, and a PUBLISH into pub, when they are not nil.
func decodeBody(h byte, body []byte, lim Limits, ack *Ack, pub *Publish) (Packet, error) {
	d := &decoder{b: body, lim: lim}
	t := Type(h >> 4)
	var p Packet
	var err error
	switch t {
	case CONNECT:
		p = d.connect()
	case CONNACK:
		p = d.connack()
	case PUBLISH:
		p = d.publish(h, pub)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		p = d.ack(t, ack)
	case SUBSCRIBE:
		p = d.subscribe()
	case SUBACK, UNSUBACK:
		p = d.codes(t)
	case UNSUBSCRIBE:
		p = d.unsubscribe()
	case PINGREQ:
		p = &Pingreq{}
	case PINGRESP:
		p = &Pingresp{}
	case DISCONNECT, AUTH:
		p = d.reason(t)
	}
	if d.err == nil && d.left() != 0 {
		d.fail(errorf(ErrMalformed, "bytes left over in "+t.String()))
	}
	if err = d.err; err != nil {
		return nil, err
	}
	return p, nil
}

func (d *decoder) packetID() uint16 {
	id := d.u16()
	if d.err == nil && id == 0 {
		d.fail(ErrZeroPacketID)
	}
	return id
}

func (d *decoder) code(t Type) ReasonCode {
	c := ReasonCode(d.byte())
	if d.err == nil {
		if err := checkCode(t, c); err != nil {
			d.fail(err)
		}
	}
	return c
}

func (d *decoder) connect() *Connect {
	p := &Connect{}
	if name := d.binary(); d.err == nil && string(name) != "MQTT" {
		d.fail(&Error{UnsupportedProtocolVersion, kindProtocol, "protocol error: protocol name is not MQTT"})
	}
	if v := d.byte(); d.err == nil && v != 5 {
		d.fail(&Error{UnsupportedProtocolVersion, kindProtocol, "protocol error: protocol version is not 5"})
	}
	flags := d.byte()
	p.KeepAlive = d.u16()
	if d.err != nil {
		return nil
	}
	will, willQoS, willRetain := flags&0x04 != 0, flags>>3&3, flags&0x20 != 0
	switch {
	case flags&0x01 != 0:
		d.fail(errorf(ErrReservedFlags, "CONNECT reserved flag")) // MQTT-3.1.2-3
	case willQoS == 3:
		d.fail(errorf(ErrInvalidQoS, "will QoS 3")) // MQTT-3.1.2-12
	case !will && (willQoS != 0 || willRetain):
		d.fail(errorf(ErrMalformed, "will QoS or retain without will")) // MQTT-3.1.2-11, -13
	}
	p.CleanStart = flags&0x02 != 0
	d.props(&p.Properties, ctxOf(CONNECT))
	if d.err == nil {
		d.fail(checkAuthData(&p.Properties))
	}
	p.ClientID = d.string()
	if will {
		w := &Will{QoS: willQoS, Retain: willRetain}
		d.props(&w.Properties, willContext)
		w.Topic = d.string()
		w.Payload = d.binary()
		if d.err == nil {
			d.fail(ValidTopicName(w.Topic))
		}
		p.Will = w
	}
	if flags&0x80 != 0 {
		p.HasUsername = true
		p.Username = d.string()
	}
	if flags&0x40 != 0 {
		p.HasPassword = true
		p.Password = d.binary()
	}
	return p
}

func (d *decoder) connack() *Connack {
	p := &Connack{}
	flags := d.byte()
	p.ReasonCode = d.code(CONNACK)
	if d.err != nil {
		return nil
	}
	if flags&0xFE != 0 {
		d.fail(errorf(ErrReservedFlags, "CONNACK flags"))
	}
	p.SessionPresent = flags&1 != 0
	if p.SessionPresent && p.ReasonCode != Success {
		d.fail(errorf(ErrProtocol, "session present with a failure reason code")) // MQTT-3.2.2-6
	}
	d.props(&p.Properties, ctxOf(CONNACK))
	return p
}

func (d *decoder) publish(h byte, into *Publish) *Publish {
	// Field by field rather than *p = Publish{...}: the reused Publish is
	// cleared without rewriting every pointer slot of its Properties.
	p := into
	if p == nil {
		p = &Publish{}
	} else {
		p.Properties.reset()
		p.PacketID, p.Payload = 0, nil
	}
	p.Dup, p.QoS, p.Retain = h&0x08 != 0, h>>1&3, h&0x01 != 0
	p.Topic = d.string()
	if p.QoS > 0 {
		p.PacketID = d.packetID()
	}
	d.props(&p.Properties, ctxOf(PUBLISH))
	if d.err != nil {
		return nil
	}
	// checkHeader and packetID have applied the rest of checkPublish, and
	// d.string the rules of any string.
	if err := checkPublishTopic(p); err != nil {
		d.fail(err)
	}
	p.Payload = d.b[d.i:]
	d.i = len(d.b)
	return p
}

func (d *decoder) ack(t Type, into *Ack) *Ack {
	p := into
	if p == nil {
		p = &Ack{}
	} else {
		p.Properties.reset() // as in publish
	}
	p.Kind, p.PacketID, p.ReasonCode = t, d.packetID(), 0
	if d.left() > 0 {
		p.ReasonCode = d.code(t)
	}
	if d.left() > 0 {
		d.props(&p.Properties, ctxOf(t))
	}
	return p
}

func (d *decoder) subscribe() *Subscribe {
	p := &Subscribe{PacketID: d.packetID()}
	d.props(&p.Properties, ctxOf(SUBSCRIBE))
	if d.err == nil && d.left() == 0 {
		d.fail(errorf(ErrProtocol, "SUBSCRIBE without subscriptions")) // MQTT-3.8.3-2
	}
	for d.err == nil && d.left() > 0 {
		s := Subscription{Filter: d.string()}
		o := d.byte()
		if d.err != nil {
			break
		}
		if o&0xC0 != 0 {
			d.fail(errorf(ErrReservedFlags, "subscription options")) // MQTT-3.8.3-5
			break
		}
		s.QoS, s.NoLocal, s.RetainAsPublished, s.RetainHandling = o&3, o&0x04 != 0, o&0x08 != 0, o>>4&3
		if err := ValidTopicFilter(s.Filter); err != nil {
			d.fail(err)
		} else if err := checkOptions(&s); err != nil {
			d.fail(err)
		}
		p.Subscriptions = append(p.Subscriptions, s)
	}
	return p
}

func (d *decoder) unsubscribe() *Unsubscribe {
	p := &Unsubscribe{PacketID: d.packetID()}
	d.props(&p.Properties, ctxOf(UNSUBSCRIBE))
	if d.err == nil && d.left() == 0 {
		d.fail(errorf(ErrProtocol, "UNSUBSCRIBE without topic filters")) // MQTT-3.10.3-2
	}
	for d.err == nil && d.left() > 0 {
		f := d.string()
		if d.err == nil {
			if err := ValidTopicFilter(f); err != nil {
				d.fail(err)
			}
		}
		p.Filters = append(p.Filters, f)
	}
	return p
}

// codes decodes SUBACK and UNSUBACK, which share their layout.
func (d *decoder) codes(t Type) Packet {
	id := d.packetID()
	var props Properties
	d.props(&props, ctxOf(t))
	var codes []ReasonCode
	if d.err == nil && d.left() > 0 {
		codes = make([]ReasonCode, 0, d.left())
		for d.err == nil && d.left() > 0 {
			codes = append(codes, d.code(t))
		}
	}
	if t == SUBACK {
		return &Suback{PacketID: id, Properties: props, ReasonCodes: codes}
	}
	return &Unsuback{PacketID: id, Properties: props, ReasonCodes: codes}
}

// reason decodes DISCONNECT and AUTH, whose reason code and properties
// may both be left out.
func (d *decoder) reason(t Type) Packet {
	var c ReasonCode
	var props Properties
	if d.left() > 0 {
		c = d.code(t)
	}
	if d.left() > 0 {
		d.props(&props, ctxOf(t))
	}
	if t == DISCONNECT {
		return &Disconnect{ReasonCode: c, Properties: props}
	}
	return &Auth{ReasonCode: c, Properties: props}
}
