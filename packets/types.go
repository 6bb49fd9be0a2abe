package packets

// Type is an MQTT control packet type, the high nibble of the first byte.
type Type byte

// Control packet types (MQTT v5 §2.1.2).
const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

// Packet is any MQTT v5 control packet. The concrete types are the pointer
// types of this package: *Connect, *Connack, *Publish, *Ack (PUBACK, PUBREC,
// PUBREL, PUBCOMP), *Subscribe, *Suback, *Unsubscribe, *Unsuback, *Pingreq,
// *Pingresp, *Disconnect and *Auth.
type Packet interface {
	// Type returns the packet's control packet type.
	Type() Type
}

// UserProperty is one User Property name/value pair. The same name may
// appear more than once, and order is kept.
type UserProperty struct {
	Key, Value string
}

// Properties holds every MQTT v5 property (§2.2.2.2). Which properties a
// packet may carry is checked on encode and on decode.
//
// A nil pointer, a nil slice and any other field's zero value mean the
// property is absent, except for a property marked by SetPresent: that one
// is present with its zero value (an explicit Payload Format Indicator 0,
// an empty Reason String, ...). Decode marks every property it reads with
// a zero value in a field of that kind, so what was decoded encodes back
// the same; Has reports whether a property is present either way.
type Properties struct {
	PayloadFormat          byte           // 0x01 PUBLISH, Will
	MessageExpiry          *uint32        // 0x02 PUBLISH, Will
	ContentType            string         // 0x03 PUBLISH, Will
	ResponseTopic          string         // 0x08 PUBLISH, Will
	CorrelationData        []byte         // 0x09 PUBLISH, Will
	SubscriptionIdentifier []uint32       // 0x0B PUBLISH (repeatable), SUBSCRIBE (one)
	SessionExpiry          *uint32        // 0x11 CONNECT, CONNACK, DISCONNECT
	AssignedClientID       string         // 0x12 CONNACK
	ServerKeepAlive        *uint16        // 0x13 CONNACK
	AuthMethod             string         // 0x15 CONNECT, CONNACK, AUTH
	AuthData               []byte         // 0x16 CONNECT, CONNACK, AUTH
	RequestProblemInfo     *byte          // 0x17 CONNECT
	WillDelay              uint32         // 0x18 Will
	RequestResponseInfo    byte           // 0x19 CONNECT
	ResponseInfo           string         // 0x1A CONNACK
	ServerReference        string         // 0x1C CONNACK, DISCONNECT
	ReasonString           string         // 0x1F CONNACK, acks, SUBACK, UNSUBACK, DISCONNECT, AUTH
	ReceiveMaximum         uint16         // 0x21 CONNECT, CONNACK
	TopicAliasMaximum      uint16         // 0x22 CONNECT, CONNACK
	TopicAlias             uint16         // 0x23 PUBLISH
	MaximumQoS             *byte          // 0x24 CONNACK
	RetainAvailable        *byte          // 0x25 CONNACK
	User                   []UserProperty // 0x26 all packets but PINGREQ/PINGRESP
	MaximumPacketSize      uint32         // 0x27 CONNECT, CONNACK
	WildcardSubAvailable   *byte          // 0x28 CONNACK
	SubIDAvailable         *byte          // 0x29 CONNACK
	SharedSubAvailable     *byte          // 0x2A CONNACK

	// zeros holds, one bit per identifier, the properties of plainFields
	// that are present though their field holds the zero value.
	zeros uint64
}

// Will is the Will Message of a CONNECT.
type Will struct {
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties Properties // Will Properties
}

// Connect is a CONNECT packet. The protocol name and level are always
// "MQTT" and 5. On encode, a non-empty Username or a non-nil Password is
// sent even if its Has flag is false, rather than silently dropped.
type Connect struct {
	CleanStart  bool
	KeepAlive   uint16
	ClientID    string
	Will        *Will
	Username    string
	HasUsername bool // a username is present (it may be empty)
	Password    []byte
	HasPassword bool // a password is present (it may be empty)
	Properties  Properties
}

// Connack is a CONNACK packet.
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Properties     Properties
}

// Publish is a PUBLISH packet. On decode, Topic and Payload do not alias the
// reader's buffer: each decoded packet owns its memory.
type Publish struct {
	Dup        bool
	QoS        byte
	Retain     bool
	Topic      string // may be empty when Properties.TopicAlias is set
	PacketID   uint16 // 0 for QoS 0
	Properties Properties
	Payload    []byte
}

// Ack is a PUBACK, PUBREC, PUBREL or PUBCOMP packet, told apart by Kind.
type Ack struct {
	Kind       Type // PUBACK, PUBREC, PUBREL or PUBCOMP
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// SubscribeOptions are the options byte of one subscription (§3.8.3.1).
type SubscribeOptions struct {
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte // 0, 1 or 2
}

// Subscription is one topic filter of a SUBSCRIBE.
type Subscription struct {
	Filter string
	SubscribeOptions
}

// Subscribe is a SUBSCRIBE packet.
type Subscribe struct {
	PacketID      uint16
	Properties    Properties
	Subscriptions []Subscription
}

// Suback is a SUBACK packet: one reason code per subscription.
type Suback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Unsubscribe is an UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID   uint16
	Properties Properties
	Filters    []string
}

// Unsuback is an UNSUBACK packet: one reason code per filter.
type Unsuback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Pingreq is a PINGREQ packet.
type Pingreq struct{}

// Pingresp is a PINGRESP packet.
type Pingresp struct{}

// Disconnect is a DISCONNECT packet.
type Disconnect struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Auth is an AUTH packet.
type Auth struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Type returns CONNECT.
func (*Connect) Type() Type { return CONNECT }

// Type returns CONNACK.
func (*Connack) Type() Type { return CONNACK }

// Type returns PUBLISH.
func (*Publish) Type() Type { return PUBLISH }

// Type returns the Kind of the acknowledgement.
func (a *Ack) Type() Type { return a.Kind }

// Type returns SUBSCRIBE.
func (*Subscribe) Type() Type { return SUBSCRIBE }

// Type returns SUBACK.
func (*Suback) Type() Type { return SUBACK }

// Type returns UNSUBSCRIBE.
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }

// Type returns UNSUBACK.
func (*Unsuback) Type() Type { return UNSUBACK }

// Type returns PINGREQ.
func (*Pingreq) Type() Type { return PINGREQ }

// Type returns PINGRESP.
func (*Pingresp) Type() Type { return PINGRESP }

// Type returns DISCONNECT.
func (*Disconnect) Type() Type { return DISCONNECT }

// Type returns AUTH.
func (*Auth) Type() Type { return AUTH }
