// Package sim is a deterministic simulation of the client's session engine
// against models of a broker, a network and a store.
package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/tethermq/tether/packets"
)

// Quirks are departures from the specification seen in real brokers, which
// the client must survive. All are off by default.
type Quirks struct {
	// IgnoreClientReceiveMaximum sends QoS>0 PUBLISHes to the client
	// beyond the Receive Maximum of its CONNECT, live and on resend, as
	// Mosquitto 2.0.11 does with a session's backlog.
	IgnoreClientReceiveMaximum bool
	// PublishAfterPubrel: on a reconnect with a session present, each
	// message to the client in PUBREL state is, at random, sent again as
	// its PUBLISH (DUP 1) and its flow restarted from there, as Mosquitto
	// 2.0.11 does after a cut. The client cannot tell such a copy from a
	// new message once it has completed the first; AfterPubrel counts them.
	PublishAfterPubrel bool
	// NoDisconnectOnViolation records a client violation and carries on.
	// By default the broker answers a violation with a DISCONNECT carrying
	// the reason code the specification names, and reads nothing more
	// from that connection.
	NoDisconnectOnViolation bool
}

// Config describes a Broker. The zero Config is a broker without limits
// that accepts QoS 2.
type Config struct {
	// ReceiveMaximum is the broker's, announced in CONNACK; 0 means 65535,
	// not announced.
	ReceiveMaximum uint16
	// MaximumPacketSize is the broker's, announced in CONNACK; 0 means
	// none.
	MaximumPacketSize uint32
	// TopicAliasMaximum is the highest topic alias the client may send,
	// announced in CONNACK; 0 means none.
	TopicAliasMaximum uint16
	// MaximumQoS is the highest QoS the client may publish with and the
	// highest a SUBACK grants, announced in CONNACK when below 2; nil
	// means 2.
	MaximumQoS *byte
	// SendTopicAliases makes the broker use topic aliases, at random, on
	// PUBLISHes to a client whose CONNECT allows them.
	SendTopicAliases bool
	// NoSubscribersOneIn answers about one accepted PUBLISH in N, at
	// random, with reason code 0x10 (No matching subscribers), which is a
	// success; 0 means never. Received counts such messages all the same.
	NoSubscribersOneIn int
	// AcceptStrayPubrel answers a PUBREL for an identifier the broker
	// holds nothing for with 0x92 and records no violation: what a client
	// does to release, on its return, an identifier whose QoS 2 message it
	// moved to another server (the end-to-end checks still catch a message
	// lost that way).
	AcceptStrayPubrel bool
	// PayloadsRepeat tells the broker that a payload may come again as a
	// new message (a client with several servers moves a message to
	// another's session and may bring it back): a PUBLISH repeating a
	// released one is then a delivery, not a violation. The simulation's
	// end-to-end counts still bound such repeats.
	PayloadsRepeat bool
	Quirks         Quirks
}

// Loss tells why the broker gave up a message to the client before its
// flow completed.
type Loss byte

const (
	// LostSession: the session was discarded (Clean Start, a connection
	// ending with Session Expiry 0, Restart(false)), or there was none
	// when the message was injected. A message in PUBREL state had
	// reached the client; one in PUBLISH state may have.
	LostSession Loss = iota + 1
	// LostTooLarge: the PUBLISH exceeds the Maximum Packet Size of the
	// client's CONNECT, so it was discarded unsent, as if its flow had
	// completed (MQTT-3.1.2-25).
	LostTooLarge
	// LostRefused: the client answered with a PUBACK or PUBREC whose
	// reason code is 0x80 or more.
	LostRefused
)

// String returns the name of the loss.
func (l Loss) String() string {
	switch l {
	case LostSession:
		return "session discarded"
	case LostTooLarge:
		return "too large for the client"
	case LostRefused:
		return "refused by the client"
	}
	return fmt.Sprintf("Loss(%d)", byte(l))
}

// connState is the state of the broker's side of the connection.
type connState byte

const (
	connDown connState = iota
	connOpen
	// connClientClosed: the client sent DISCONNECT; anything more it sends
	// on that connection is a violation (MQTT-3.14.4-1).
	connClientClosed
	// connServerClosed: the broker sent DISCONNECT; what the client sent
	// meanwhile is never read.
	connServerClosed
)

// outState is where a message to the client stands.
type outState byte

const (
	outQueued    outState = iota // no packet identifier yet
	outPublished                 // PUBLISH sent, waiting for PUBACK or PUBREC
	outReleased                  // PUBREL sent, waiting for PUBCOMP
	outDone
)

func (s outState) String() string {
	return [...]string{"queued", "waiting for PUBACK or PUBREC", "waiting for PUBCOMP", "done"}[s]
}

// outMsg is a QoS 1 or 2 message to the client.
type outMsg struct {
	topic   string
	payload []byte // the broker's copy, shared by every PUBLISH of it
	size    int    // of its PUBLISH without a topic alias
	qos     byte
	state   outState
	sent    bool // a PUBLISH of it went out before, so the next has DUP 1
	id      uint16
}

// inWait is a QoS 2 message from the client, delivered and answered with
// PUBREC, waiting for its PUBREL.
type inWait struct {
	key  string // its payload
	conn uint32 // the connection that last carried its PUBLISH
}

// idSet is a set of packet identifiers.
type idSet [1024]uint64

func (s *idSet) has(id uint16) bool { return s[id>>6]&(1<<(id&63)) != 0 }
func (s *idSet) add(id uint16)      { s[id>>6] |= 1 << (id & 63) }
func (s *idSet) del(id uint16)      { s[id>>6] &^= 1 << (id & 63) }

// slab hands out values of T from chunks, so that packets returned to the
// caller, which it may keep as long as it likes, cost no allocation each.
type slab[T any] []T

func (s *slab[T]) next() *T {
	if len(*s) == 0 {
		*s = make([]T, 64)
	}
	p := &(*s)[0]
	*s = (*s)[1:]
	return p
}

// Broker is an MQTT v5 broker reduced to one client's session, for
// simulation: deterministic (its only randomness is the *rand.Rand it is
// given), without goroutines, time or I/O, and strict: it records every
// client violation it can detect. It is not safe for concurrent use.
//
// Every method that returns packets returns those the broker sends, in
// order. The slice and the packets are the caller's to keep; a PUBLISH's
// payload is shared with the broker's copy and must not be modified. The
// broker keeps nothing of the packets it is given: the caller may reuse
// them and their payloads.
type Broker struct {
	cfg Config
	rnd *rand.Rand

	// The connection.
	state        connState
	conn         uint32 // the number of the current or last connection
	recvMax      int    // the client's Receive Maximum
	maxOut       int    // the client's Maximum Packet Size, 0 for none
	aliasMax     uint16 // the client's Topic Alias Maximum
	aliasIn      map[uint16]string
	aliasSeen    idSet // aliases the client has set on any connection
	aliasOut     map[string]uint16
	aliasOutName map[uint16]string
	inConn       int    // QoS 2 messages from the client waiting for PUBREL, their PUBLISH on this connection
	cursor       uint64 // every message to the client before it is done or was sent on this connection
	onWire       int    // messages before cursor not done
	next1, next2 uint64 // where to look for the message the next PUBACK, PUBREC must answer

	// The session.
	session  bool
	clientID string
	expiry   uint32 // Session Expiry Interval in force
	inWait   map[uint16]inWait
	released map[uint16]string // identifiers whose PUBCOMP was sent, and the payload it completed
	relHere  idSet             // those whose PUBCOMP was sent on this connection
	// forgotten holds the identifiers in a QoS 2 flow from the client when
	// a session was discarded, each with the connection whose CONNACK
	// then said Session Present 0.
	forgotten map[uint16]uint32
	queue     []outMsg // messages to the client; queue[i] has sequence number base+i
	base      uint64
	head      int               // queue[:head] are done
	byID      map[uint16]uint64 // the sequence number of the message holding each identifier
	nextID    uint16
	pending   int // messages in queue not done

	// Accounting.
	received    map[string]int
	lost        map[string]Loss
	afterPubrel map[string]int
	violations  []string

	out     slab[packets.Packet]
	mark    int // where the packets of the current call start in out
	acks    slab[packets.Ack]
	pubs    slab[packets.Publish]
	scratch packets.Publish
}

// New returns a broker with no session. rnd is its only source of
// randomness; nil means a fixed seed.
func New(cfg Config, rnd *rand.Rand) *Broker {
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(1, 2))
	}
	return &Broker{
		cfg:          cfg,
		rnd:          rnd,
		aliasIn:      map[uint16]string{},
		aliasOut:     map[string]uint16{},
		aliasOutName: map[uint16]string{},
		inWait:       map[uint16]inWait{},
		released:     map[uint16]string{},
		forgotten:    map[uint16]uint32{},
		byID:         map[uint16]uint64{},
		received:     map[string]int{},
		lost:         map[string]Loss{},
		afterPubrel:  map[string]int{},
	}
}

// Received returns, per payload, how many times the broker delivered a
// message from the client onward: at each QoS 0 or QoS 1 PUBLISH, and at
// each QoS 2 PUBLISH whose packet identifier was not waiting for its
// PUBREL. The map is the broker's: read it, do not modify it.
func (b *Broker) Received() map[string]int { return b.received }

// Lost returns, per payload, the messages to the client that the broker
// gave up before their flow completed, and why. QoS 0 messages are never
// recorded. The map is the broker's: read it, do not modify it.
func (b *Broker) Lost() map[string]Loss { return b.lost }

// AfterPubrel returns, per payload, how many times the PublishAfterPubrel
// quirk sent a message's PUBLISH again after its PUBREL: each time allows
// the client one more delivery of it. The map is the broker's: read it,
// do not modify it.
func (b *Broker) AfterPubrel() map[string]int { return b.afterPubrel }

// Violations returns the client violations seen so far, in order, each
// starting with the statement it breaks ("MQTT-3.3.4-7: ...", or a section
// where the specification numbers no statement).
func (b *Broker) Violations() []string { return slices.Clone(b.violations) }

// Unacked returns the number of QoS 1 and 2 messages to the client not yet
// completed, sent or not.
func (b *Broker) Unacked() int { return b.pending }

// Connected reports whether a connection is open: Receive reads what it
// is given only then.
func (b *Broker) Connected() bool { return b.state == connOpen }

// maxQoS returns the highest QoS the client may publish with.
func (b *Broker) maxQoS() byte {
	if b.cfg.MaximumQoS == nil {
		return 2
	}
	return min(*b.cfg.MaximumQoS, 2)
}

// begin starts the packets of a call; end returns them.
func (b *Broker) begin() { b.mark = len(b.out) }

func (b *Broker) emit(p packets.Packet) {
	if len(b.out) == cap(b.out) {
		n := len(b.out) - b.mark
		grown := make([]packets.Packet, n, max(256, 2*n))
		copy(grown, b.out[b.mark:])
		b.out, b.mark = grown, 0
	}
	b.out = append(b.out, p)
}

func (b *Broker) end() []packets.Packet {
	if len(b.out) == b.mark {
		return nil
	}
	return b.out[b.mark:len(b.out):len(b.out)]
}

func (b *Broker) ack(kind packets.Type, id uint16, code packets.ReasonCode) *packets.Ack {
	a := b.acks.next()
	a.Kind, a.PacketID, a.ReasonCode = kind, id, code
	return a
}

// accepted returns the reason code of a PUBACK or PUBREC accepting a
// message.
func (b *Broker) accepted() packets.ReasonCode {
	if n := b.cfg.NoSubscribersOneIn; n > 0 && b.rnd.IntN(n) == 0 {
		return packets.NoMatchingSubscribers
	}
	return packets.Success
}

// violate records a client violation of statement id, described by format
// and args as fmt.Sprintf would. Unless the quirk says otherwise, it then
// sends DISCONNECT with code and closes the connection, and reports true:
// the packet is not processed further.
func (b *Broker) violate(id string, code packets.ReasonCode, format string, args ...any) bool {
	b.violations = append(b.violations, id+": "+fmt.Sprintf(format, args...))
	if b.cfg.Quirks.NoDisconnectOnViolation || b.state != connOpen {
		return false
	}
	b.emit(&packets.Disconnect{ReasonCode: code})
	b.close(connServerClosed)
	return true
}

// close ends the connection, if open, and the session with it when its
// Session Expiry Interval is 0 (§3.1.2.11.2; the model knows no time, so
// any other interval keeps the session until a restart discards it).
func (b *Broker) close(to connState) {
	was := b.state
	b.state = to
	if was == connOpen && b.expiry == 0 {
		b.discardSession()
	}
}

// discardSession drops the session state: the messages to the client are
// lost, and the QoS 2 flows from the client forgotten.
func (b *Broker) discardSession() {
	for i := range b.queue {
		if m := &b.queue[i]; m.state != outDone {
			b.lost[string(m.payload)] = LostSession
		}
	}
	clear(b.queue)
	b.base += uint64(len(b.queue))
	b.queue, b.head, b.cursor, b.onWire, b.pending = b.queue[:0], 0, 0, 0, 0
	clear(b.byID)
	for id := range b.inWait {
		b.forgotten[id] = b.conn + 1
	}
	for id := range b.released {
		b.forgotten[id] = b.conn + 1
	}
	clear(b.inWait)
	clear(b.released)
	b.inConn = 0
	b.session = false
}

// Connect opens a connection with the client's CONNECT and returns the
// CONNACK, then what the session has to resend (in the original order,
// PUBLISH with DUP 1 and PUBREL, MQTT-4.4.0-1, MQTT-4.6.0-1) and the queued
// messages the client's Receive Maximum allows. The session continues
// when the CONNECT has Clean Start 0 and the ClientID of the session;
// otherwise a new one starts, with Session Present 0. A CONNECT with an
// Authentication Method is refused (0x8C): the model has no enhanced
// authentication.
//
// A connection still open is taken over, as when a client reconnects
// before the broker noticed the cut: the session continues whatever its
// Session Expiry Interval. Call Drop first to model the cut itself.
func (b *Broker) Connect(p *packets.Connect) []packets.Packet {
	b.begin()
	b.state = connDown
	if _, err := packets.Size(p); err != nil {
		b.violations = append(b.violations, "MQTT-3.1.4-1: invalid CONNECT: "+err.Error())
		if !b.cfg.Quirks.NoDisconnectOnViolation || p == nil {
			b.emit(&packets.Connack{ReasonCode: connackCode(packets.CodeOf(err))})
			return b.end()
		}
	}
	if p.Properties.Has(packets.PropAuthMethod) {
		b.emit(&packets.Connack{ReasonCode: packets.BadAuthenticationMethod})
		return b.end()
	}
	present := b.session && !p.CleanStart && p.ClientID != "" && p.ClientID == b.clientID
	if !present {
		b.discardSession()
		b.session, b.clientID = true, p.ClientID
	}
	b.open(p)
	b.emit(b.connack(present, p.ClientID == ""))
	if present && b.cfg.Quirks.PublishAfterPubrel {
		b.republishReleased()
	}
	b.pump()
	return b.end()
}

// connackCode returns code if a CONNACK may carry it, else Protocol Error.
func connackCode(code packets.ReasonCode) packets.ReasonCode {
	if _, err := packets.Size(&packets.Connack{ReasonCode: code}); err != nil || !code.IsError() {
		return packets.ProtocolError
	}
	return code
}

// open starts a connection: the client's limits from its CONNECT, and
// fresh per-connection state (topic aliases, quotas, the resend cursor).
func (b *Broker) open(p *packets.Connect) {
	b.state = connOpen
	b.conn++
	pr := &p.Properties
	b.recvMax = int(pr.ReceiveMaximum)
	if b.recvMax == 0 {
		b.recvMax = 65535
	}
	b.maxOut = int(pr.MaximumPacketSize)
	b.aliasMax = pr.TopicAliasMaximum
	b.expiry = 0
	if pr.SessionExpiry != nil {
		b.expiry = *pr.SessionExpiry
	}
	clear(b.aliasIn)
	clear(b.aliasOut)
	clear(b.aliasOutName)
	clear(b.relHere[:])
	b.inConn = 0
	b.cursor, b.onWire = b.base, 0
	b.next1, b.next2 = b.base, b.base
}

func (b *Broker) connack(present, assign bool) *packets.Connack {
	c := &packets.Connack{SessionPresent: present}
	pr := &c.Properties
	pr.ReceiveMaximum = b.cfg.ReceiveMaximum
	pr.MaximumPacketSize = b.cfg.MaximumPacketSize
	pr.TopicAliasMaximum = b.cfg.TopicAliasMaximum
	if q := b.maxQoS(); q < 2 {
		pr.MaximumQoS = &q
	}
	if assign {
		pr.AssignedClientID = "sim-assigned"
	}
	return c
}

// republishReleased applies the PublishAfterPubrel quirk: each message in
// PUBREL state goes back, at random, to waiting for its PUBREC, so the
// resend sends its PUBLISH again.
func (b *Broker) republishReleased() {
	for i := range b.queue {
		m := &b.queue[i]
		if m.state == outReleased && b.rnd.IntN(2) == 0 {
			m.state = outPublished
			b.afterPubrel[string(m.payload)]++
		}
	}
}

// Drop ends the connection without DISCONNECT, as a cut does. The session
// is kept if the connection's Session Expiry Interval is above 0. It does
// nothing when no connection is open.
func (b *Broker) Drop() { b.close(connDown) }

// Restart restarts the broker: the connection, if any, ends as at Drop,
// and the session is discarded unless keepSessions.
func (b *Broker) Restart(keepSessions bool) {
	b.close(connDown)
	if !keepSessions {
		b.discardSession()
	}
}

// Inject queues a message to the client, as if another client had
// published it to a topic the client subscribes to with qos (0, 1 or 2),
// and returns what can be sent now. A QoS 1 or 2 message without a
// session is lost at once (LostSession); a QoS 0 message goes out only
// while a connection is open, and is never recorded. Inject panics on a
// topic that is not a valid Topic Name or a QoS above 2: those are the
// simulation's bugs.
func (b *Broker) Inject(topic string, payload []byte, qos byte) []packets.Packet {
	b.begin()
	size := b.publishSize(topic, payload, qos)
	if qos == 0 {
		if b.state == connOpen && (b.maxOut == 0 || size <= b.maxOut) {
			p := b.pubs.next()
			*p = packets.Publish{Topic: topic, Payload: slices.Clone(payload)}
			b.alias(p, size)
			b.emit(p)
		}
		return b.end()
	}
	if !b.session {
		b.lost[string(payload)] = LostSession
		return nil
	}
	b.queue = append(b.queue, outMsg{topic: topic, payload: slices.Clone(payload), size: size, qos: qos})
	b.pending++
	b.pump()
	return b.end()
}

func (b *Broker) publishSize(topic string, payload []byte, qos byte) int {
	if qos > 2 {
		panic(fmt.Sprintf("sim: Inject with QoS %d", qos))
	}
	p := &b.scratch
	*p = packets.Publish{QoS: qos, Topic: topic, Payload: payload}
	if qos > 0 {
		p.PacketID = 1
	}
	n, err := packets.Size(p)
	*p = packets.Publish{}
	if err != nil {
		panic("sim: Inject: " + err.Error())
	}
	return n
}

// at returns the message with sequence number seq.
func (b *Broker) at(seq uint64) *outMsg { return &b.queue[seq-b.base] }

// pump sends, in order, what the session owes the client on this
// connection: PUBRELs, PUBLISHes to resend (DUP 1), then queued messages,
// while the client's Receive Maximum allows (MQTT-3.3.4-9) and packet
// identifiers are free. A PUBREL needs no quota, but counts as in flight
// until its PUBCOMP, and waits its turn behind a PUBLISH that cannot go.
func (b *Broker) pump() {
	if b.state != connOpen {
		return
	}
	b.cursor = max(b.cursor, b.base)
	for b.cursor < b.base+uint64(len(b.queue)) {
		seq := b.cursor
		m := b.at(seq)
		switch {
		case m.state == outDone:
		case m.state == outReleased:
			b.emit(b.ack(packets.PUBREL, m.id, packets.Success))
			b.onWire++
		case !b.cfg.Quirks.IgnoreClientReceiveMaximum && b.onWire >= b.recvMax:
			return
		case b.maxOut != 0 && m.size > b.maxOut:
			b.finish(seq, LostTooLarge) // MQTT-3.1.2-25
		default:
			if m.state == outQueued {
				id, ok := b.freeID()
				if !ok {
					return
				}
				m.id, m.state = id, outPublished
				b.byID[id] = seq
			}
			b.sendPublish(m)
			b.onWire++
		}
		b.cursor++
	}
}

// freeID returns a packet identifier no message to the client holds
// (MQTT-2.2.1-3), or false when all are taken.
func (b *Broker) freeID() (uint16, bool) {
	if len(b.byID) >= 65535 {
		return 0, false
	}
	for {
		b.nextID++
		if b.nextID == 0 {
			b.nextID = 1
		}
		if _, used := b.byID[b.nextID]; !used {
			return b.nextID, true
		}
	}
}

func (b *Broker) sendPublish(m *outMsg) {
	p := b.pubs.next()
	*p = packets.Publish{Dup: m.sent, QoS: m.qos, Topic: m.topic, PacketID: m.id, Payload: m.payload}
	b.alias(p, m.size)
	m.sent = true
	b.emit(p)
}

// alias applies SendTopicAliases to p, whose size without an alias is
// size: it uses the topic's alias, or maps one (anew or in place of
// another topic), at random, within the client's Topic Alias Maximum and
// Maximum Packet Size.
func (b *Broker) alias(p *packets.Publish, size int) {
	if !b.cfg.SendTopicAliases || b.aliasMax == 0 {
		return
	}
	if a, ok := b.aliasOut[p.Topic]; ok && b.rnd.IntN(2) == 0 {
		p.Topic, p.Properties.TopicAlias = "", a
		return
	}
	const aliasBytes = 3 // property identifier and two-byte value
	if b.rnd.IntN(4) != 0 || b.maxOut != 0 && size+aliasBytes > b.maxOut {
		return
	}
	a := uint16(b.rnd.IntN(int(b.aliasMax))) + 1
	if old, ok := b.aliasOutName[a]; ok && b.aliasOut[old] == a {
		delete(b.aliasOut, old)
	}
	b.aliasOutName[a] = p.Topic
	b.aliasOut[p.Topic] = a
	p.Properties.TopicAlias = a
}

// finish ends the flow of the message with sequence number seq, lost for
// reason loss unless loss is 0, and frees its packet identifier.
func (b *Broker) finish(seq uint64, loss Loss) {
	m := b.at(seq)
	if loss != 0 {
		b.lost[string(m.payload)] = loss
	}
	if m.id != 0 {
		delete(b.byID, m.id)
	}
	if seq < b.cursor {
		b.onWire--
	}
	*m = outMsg{state: outDone}
	b.pending--
	for b.head < len(b.queue) && b.queue[b.head].state == outDone {
		b.head++
	}
	if b.head == len(b.queue) || b.head > 1024 && 2*b.head > len(b.queue) {
		n := copy(b.queue, b.queue[b.head:])
		clear(b.queue[n:])
		b.queue, b.base, b.head = b.queue[:n], b.base+uint64(b.head), 0
	}
}

// Receive processes one packet from the client and returns what the broker
// sends back: acknowledgements, then the queued messages the window now
// allows, or a DISCONNECT at a violation. Packets that arrive after the
// connection ended are discarded, as a closed socket would, except that
// one sent after the client's own DISCONNECT is a violation
// (MQTT-3.14.4-1).
func (b *Broker) Receive(p packets.Packet) []packets.Packet {
	b.begin()
	switch b.state {
	case connOpen:
		b.handle(p)
		b.pump()
	case connClientClosed:
		b.violate("MQTT-3.14.4-1", packets.ProtocolError, "%s after DISCONNECT", typeOf(p))
	}
	return b.end()
}

func typeOf(p packets.Packet) string {
	if p == nil {
		return "nil packet"
	}
	return p.Type().String()
}

func (b *Broker) handle(p packets.Packet) {
	switch p := p.(type) {
	case *packets.Publish:
		if p != nil {
			b.onPublish(p)
			return
		}
	case *packets.Ack:
		if p == nil || !b.valid(p, false) {
			return
		}
		if p.Kind == packets.PUBREL {
			b.onPubrel(p.PacketID)
		} else {
			b.onAck(p)
		}
		return
	case *packets.Subscribe:
		if p != nil && b.valid(p, false) && b.idFree(p.PacketID, "SUBSCRIBE") {
			b.emit(b.suback(p))
		}
		return
	case *packets.Unsubscribe:
		if p != nil && b.valid(p, false) && b.idFree(p.PacketID, "UNSUBSCRIBE") {
			b.emit(&packets.Unsuback{PacketID: p.PacketID, ReasonCodes: make([]packets.ReasonCode, len(p.Filters))})
		}
		return
	case *packets.Pingreq:
		if b.valid(p, false) {
			b.emit(&packets.Pingresp{})
		}
		return
	case *packets.Disconnect:
		if p != nil && b.valid(p, false) {
			b.onDisconnect(p)
		}
		return
	case *packets.Auth:
		b.violate("§4.12", packets.ProtocolError, "AUTH without an Authentication Method in CONNECT")
		return
	case *packets.Connect:
		b.violate("MQTT-3.1.0-2", packets.ProtocolError, "a second CONNECT")
		return
	case nil:
	default:
		b.violate("§2.1.2", packets.ProtocolError, "%s is sent by servers only", typeOf(p))
		return
	}
	b.violate("§2.1.2", packets.MalformedPacket, "nil packet")
}

// valid checks what every packet from the client must meet: the format
// (MQTT-3.14.1-1, §4.13) and the broker's Maximum Packet Size
// (MQTT-3.2.2-15). It reports false when the packet is not to be
// processed. reported tells a packet whose fault was reported already (under
// NoDisconnectOnViolation), which the format check would report again.
func (b *Broker) valid(p packets.Packet, reported bool) bool {
	n, err := packets.Size(p)
	if err != nil {
		if reported {
			return true
		}
		return !b.violate("§4.13", packets.CodeOf(err), "invalid %s: %v", typeOf(p), err)
	}
	if max := b.cfg.MaximumPacketSize; max != 0 && n > int(max) {
		return !b.violate("MQTT-3.2.2-15", packets.PacketTooLarge,
			"%s of %d bytes, above the Maximum Packet Size %d", typeOf(p), n, max)
	}
	return true
}

// idFree checks that a new SUBSCRIBE or UNSUBSCRIBE does not take the
// packet identifier of an unfinished QoS 2 PUBLISH (MQTT-2.2.1-3).
func (b *Broker) idFree(id uint16, what string) bool {
	if _, ok := b.inWait[id]; !ok {
		return true
	}
	return !b.violate("MQTT-2.2.1-3", packets.ProtocolError,
		"%s %d takes the identifier of an unfinished QoS 2 exchange", what, id)
}

func (b *Broker) suback(p *packets.Subscribe) *packets.Suback {
	codes := make([]packets.ReasonCode, len(p.Subscriptions))
	for i, s := range p.Subscriptions {
		codes[i] = packets.ReasonCode(min(s.QoS, b.maxQoS()))
	}
	return &packets.Suback{PacketID: p.PacketID, ReasonCodes: codes}
}

// onDisconnect ends the connection at the client's DISCONNECT, with the
// Session Expiry Interval it may carry.
func (b *Broker) onDisconnect(p *packets.Disconnect) {
	if v := p.Properties.SessionExpiry; v != nil {
		if b.expiry == 0 && *v != 0 {
			b.violate("§3.14.2.2.2", packets.ProtocolError,
				"DISCONNECT sets a Session Expiry Interval though CONNECT's was 0")
		} else {
			b.expiry = *v
		}
	}
	if b.state == connOpen {
		b.close(connClientClosed)
	}
}

// onAck processes a PUBACK, PUBREC or PUBCOMP for a message to the client.
// Each must answer a packet the broker sent on this connection
// (MQTT-2.2.1-5), of the right QoS, and PUBACKs and PUBRECs must come in
// the order of their PUBLISHes (MQTT-4.6.0-2, MQTT-4.6.0-3).
func (b *Broker) onAck(a *packets.Ack) {
	seq, ok := b.byID[a.PacketID]
	if !ok || seq >= b.cursor {
		b.violate("MQTT-2.2.1-5", packets.ProtocolError,
			"%v %d answers no packet sent on this connection", a.Kind, a.PacketID)
		return
	}
	m := b.at(seq)
	switch a.Kind {
	case packets.PUBACK, packets.PUBREC:
		want, qos, rule := &b.next1, byte(1), "MQTT-4.6.0-2"
		if a.Kind == packets.PUBREC {
			want, qos, rule = &b.next2, 2, "MQTT-4.6.0-3"
		}
		if m.qos != qos || m.state != outPublished {
			b.violate("MQTT-2.2.1-5", packets.ProtocolError,
				"%v %d answers a QoS %d message %s", a.Kind, a.PacketID, m.qos, m.state)
			return
		}
		if seq != b.expected(want, qos) &&
			b.violate(rule, packets.ProtocolError, "%v %d out of the PUBLISH order", a.Kind, a.PacketID) {
			return
		}
		switch {
		case a.ReasonCode.IsError():
			b.finish(seq, LostRefused)
		case qos == 1:
			b.finish(seq, 0)
		default:
			m.state = outReleased
			b.emit(b.ack(packets.PUBREL, m.id, packets.Success))
		}
	case packets.PUBCOMP:
		if m.state != outReleased {
			b.violate("MQTT-2.2.1-5", packets.ProtocolError,
				"PUBCOMP %d answers no PUBREL", a.PacketID)
			return
		}
		b.finish(seq, 0)
	}
}

// expected returns the sequence number of the message the next
// acknowledgement of QoS qos must answer: the first one sent on this
// connection still waiting for it. *from only moves forward within a
// connection.
func (b *Broker) expected(from *uint64, qos byte) uint64 {
	*from = max(*from, b.base)
	for ; *from < b.cursor; *from++ {
		if m := b.at(*from); m.state == outPublished && m.qos == qos {
			break
		}
	}
	return *from
}

// onPubrel ends a QoS 2 flow from the client with PUBCOMP. Some PUBRELs
// for an identifier not waiting for one are no fault, and are answered, at
// random, with Success or 0x92 (Packet Identifier not found), as brokers
// differ: one whose PUBCOMP was sent on an earlier connection and lost;
// one of a discarded session on a connection after the one whose CONNACK
// said so, as the client may never have received that CONNACK.
func (b *Broker) onPubrel(id uint16) {
	if w, ok := b.inWait[id]; ok {
		delete(b.inWait, id)
		if w.conn == b.conn {
			b.inConn--
		}
		b.released[id] = w.key
		b.relHere.add(id)
		b.emit(b.ack(packets.PUBCOMP, id, packets.Success))
		return
	}
	_, done := b.released[id]
	spConn, forgot := b.forgotten[id]
	switch {
	case done && b.relHere.has(id):
		if b.violate("MQTT-4.4.0-1", packets.ProtocolError, "PUBREL %d sent again on one connection", id) {
			return
		}
	case done, forgot && spConn != b.conn:
		code := packets.Success
		if b.rnd.IntN(2) == 0 {
			code = packets.PacketIdentifierNotFound
		}
		b.relHere.add(id)
		b.emit(b.ack(packets.PUBCOMP, id, code))
		return
	case forgot:
		if b.violate("MQTT-3.2.2-5", packets.ProtocolError,
			"PUBREL %d of a session the broker discarded (Session Present 0)", id) {
			return
		}
	case b.cfg.AcceptStrayPubrel:
	default:
		if b.violate("MQTT-2.2.1-5", packets.ProtocolError,
			"PUBREL %d answers no PUBREC", id) {
			return
		}
	}
	b.emit(b.ack(packets.PUBCOMP, id, packets.PacketIdentifierNotFound))
}

// onPublish processes a PUBLISH from the client.
func (b *Broker) onPublish(p *packets.Publish) {
	seen := len(b.violations)
	if !b.checkPublish(p) || !b.checkTopic(p) || !b.valid(p, len(b.violations) > seen) {
		return
	}
	switch p.QoS {
	case 0:
		b.deliver(p.Payload)
	case 1:
		b.onQoS1(p)
	default:
		b.onQoS2(p)
	}
}

// checkPublish checks the fixed header and properties of a PUBLISH. A
// PUBLISH with QoS 3, or QoS 1 or 2 and no packet identifier, cannot be
// answered: it is never processed.
func (b *Broker) checkPublish(p *packets.Publish) bool {
	id := p.PacketID
	switch {
	case p.QoS > 2:
		b.violate("MQTT-3.3.1-4", packets.MalformedPacket, "PUBLISH with QoS 3")
		return false
	case p.QoS > 0 && id == 0:
		b.violate("MQTT-2.2.1-3", packets.ProtocolError, "QoS %d PUBLISH with packet identifier 0", p.QoS)
		return false
	case p.QoS == 0 && p.Dup:
		return !b.violate("MQTT-3.3.1-2", packets.MalformedPacket, "QoS 0 PUBLISH with DUP 1")
	case p.QoS == 0 && id != 0:
		return !b.violate("MQTT-2.2.1-2", packets.ProtocolError, "QoS 0 PUBLISH with packet identifier %d", id)
	case p.QoS > b.maxQoS():
		return !b.violate("MQTT-3.2.2-11", packets.QoSNotSupported,
			"PUBLISH with QoS %d above the Maximum QoS %d", p.QoS, b.maxQoS())
	case len(p.Properties.SubscriptionIdentifier) > 0:
		return !b.violate("MQTT-3.3.4-6", packets.ProtocolError, "PUBLISH with a Subscription Identifier")
	}
	return true
}

// checkTopic resolves and checks the topic alias of a PUBLISH, which is
// valid on one connection only (MQTT-3.3.2-7), and its topic name.
func (b *Broker) checkTopic(p *packets.Publish) bool {
	topic := p.Topic
	if a := p.Properties.TopicAlias; a != 0 || p.Properties.Has(packets.PropTopicAlias) {
		max := b.cfg.TopicAliasMaximum
		switch {
		case a == 0:
			return !b.violate("MQTT-3.3.2-8", packets.TopicAliasInvalid, "topic alias 0")
		case max == 0:
			return !b.violate("MQTT-3.2.2-18", packets.TopicAliasInvalid, "topic alias %d, none allowed", a)
		case a > max:
			return !b.violate("MQTT-3.3.2-9", packets.TopicAliasInvalid, "topic alias %d above the maximum %d", a, max)
		case topic != "":
			b.aliasIn[a] = topic
			b.aliasSeen.add(a)
			return true
		}
		var ok bool
		if topic, ok = b.aliasIn[a]; !ok {
			rule := "§3.3.2.3.4"
			if b.aliasSeen.has(a) {
				rule = "MQTT-3.3.2-7"
			}
			return !b.violate(rule, packets.ProtocolError, "topic alias %d not set on this connection", a)
		}
	}
	if err := packets.ValidTopicName(topic); err != nil {
		rule := "MQTT-1.5.4-1"
		switch {
		case topic == "":
			rule = "MQTT-4.7.3-1"
		case strings.ContainsAny(topic, "+#"):
			rule = "MQTT-3.3.2-2"
		}
		return !b.violate(rule, packets.CodeOf(err), "PUBLISH topic: %v", err)
	}
	return true
}

// deliver counts a delivery onward of payload and returns it as a string.
func (b *Broker) deliver(payload []byte) string {
	k := string(payload)
	b.received[k]++
	return k
}

// quota checks a QoS>0 PUBLISH against the broker's Receive Maximum: the
// client may not have more of them unacknowledged than that
// (MQTT-3.3.4-7). The broker counts the QoS 2 ones whose PUBLISH came on
// this connection and whose PUBCOMP it has not sent (QoS 1 is answered at
// once): fewer than the client may count, never more. counted tells a
// PUBLISH already counted.
func (b *Broker) quota(counted bool) bool {
	rm := int(b.cfg.ReceiveMaximum)
	if rm == 0 {
		rm = 65535
	}
	if counted || b.inConn < rm {
		return true
	}
	return !b.violate("MQTT-3.3.4-7", packets.ReceiveMaximumExceeded,
		"more than %d unacknowledged QoS>0 PUBLISHes", rm)
}

// reuse notes that the client uses identifier id for a new message: a
// PUBREL for an earlier use of it can no longer be explained.
func (b *Broker) reuse(id uint16) {
	delete(b.released, id)
	b.relHere.del(id)
	delete(b.forgotten, id)
}

func (b *Broker) onQoS1(p *packets.Publish) {
	id := p.PacketID
	if _, ok := b.inWait[id]; ok && b.violate("MQTT-2.2.1-3", packets.ProtocolError,
		"QoS 1 PUBLISH %d takes the identifier of an unfinished QoS 2 exchange", id) {
		return
	}
	if !b.quota(false) {
		return
	}
	b.deliver(p.Payload)
	b.reuse(id)
	b.emit(b.ack(packets.PUBACK, id, b.accepted()))
}

// onQoS2 delivers a QoS 2 PUBLISH whose identifier is not waiting for its
// PUBREL, and answers every one with PUBREC (MQTT-4.3.3-10 for the
// receiver's side). Payloads are unique per message in the simulation, so
// a repeat that carries another payload is a new message under an
// identifier still in use, and one of a message already released is a
// PUBLISH sent after its PUBREL.
func (b *Broker) onQoS2(p *packets.Publish) {
	id := p.PacketID
	w, waiting := b.inWait[id]
	if !b.quota(waiting && w.conn == b.conn) {
		return
	}
	if !waiting {
		old, done := b.released[id]
		if done && old == string(p.Payload) && !b.cfg.PayloadsRepeat && b.violate("MQTT-4.3.3-6", packets.ProtocolError,
			"PUBLISH %d sent again after its PUBREL: delivered twice", id) {
			return
		}
		key := b.deliver(p.Payload)
		b.reuse(id)
		b.inWait[id] = inWait{key: key, conn: b.conn}
		b.inConn++
		b.emit(b.ack(packets.PUBREC, id, b.accepted()))
		return
	}
	var stop bool
	switch {
	case w.key != string(p.Payload):
		stop = b.violate("MQTT-2.2.1-3", packets.ProtocolError,
			"PUBLISH %d carries a new message under the identifier of an unfinished QoS 2 exchange: not delivered", id)
	case w.conn == b.conn:
		stop = b.violate("MQTT-4.4.0-1", packets.ProtocolError, "PUBLISH %d sent again on one connection", id)
	case !p.Dup:
		stop = b.violate("MQTT-3.3.1-1", packets.ProtocolError, "PUBLISH %d sent again with DUP 0", id)
	}
	if stop {
		return
	}
	if w.conn != b.conn {
		b.inWait[id] = inWait{key: w.key, conn: b.conn}
		b.inConn++
	}
	b.emit(b.ack(packets.PUBREC, id, packets.Success))
}
