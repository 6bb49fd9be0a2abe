package faultproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"

	"github.com/tethermq/tether/packets"
)

// Auditor decodes the packets a Proxy carries and checks the client's
// behaviour against the rules of MQTT v5 that can be seen on the wire,
// recording every violation. Rules that span connections (packet
// identifiers and redelivery) are tracked per session: per ClientID, until
// a Clean Start or a CONNACK with Session Present 0 ends the session.
//
// Client-to-server packets are audited as the proxy reads them, whether or
// not a fault then keeps them from the server, since the rules are about
// what the client does. Server-to-client packets are audited just before
// they are forwarded, and only if they are: a packet a fault swallows was
// never seen by the client. Auditing a packet before the peer can see it
// keeps the cross-direction checks (such as the send quota) free of false
// alarms.
//
// The checks, by rule identifier:
//
//   - MQTT-3.1.0-1: the client's first packet is CONNECT (MQTT-3.1.0-2 for
//     a second CONNECT).
//   - MQTT-3.14.4-1: nothing follows the client's DISCONNECT.
//   - MQTT-2.2.1-2: no packet identifier in a QoS 0 PUBLISH; MQTT-3.3.1-2:
//     DUP 0 on QoS 0 (both seen as packets that do not decode).
//   - MQTT-2.2.1-3: a new QoS 1/2 PUBLISH does not reuse the identifier of
//     an unacknowledged one of the session (a different message).
//   - MQTT-4.3.2-2 / MQTT-4.3.3-2: a new message is first sent with DUP 0.
//   - MQTT-3.3.1-1: a redelivery (same identifier and message, on a later
//     connection) has DUP 1.
//   - MQTT-4.4.0-1: a message is resent only on a new connection.
//   - MQTT-4.3.3-6: no PUBLISH with an identifier whose PUBREL has been
//     sent, until its PUBCOMP; checked on the server's side too (a server
//     resending a QoS 2 PUBLISH after its PUBREL).
//   - MQTT-3.3.4-7: at most the server's Receive Maximum of QoS 1/2
//     PUBLISHes unacknowledged on the connection (send quota, 4.9.0-1).
//   - MQTT-3.3.2-8 / -9: topic alias never 0, never above the server's
//     Topic Alias Maximum; MQTT-3.3.2-7: an alias is used on a connection
//     only after it was set on that connection.
//   - MQTT-3.3.4-6: no Subscription Identifier in a client PUBLISH.
//   - MQTT-4.6.0-2 / -3: PUBACKs and PUBRECs in the order the server's QoS 1
//     and QoS 2 PUBLISHes arrived; MQTT-4.6.0-4: PUBRELs in the order the
//     PUBRECs arrived (each within one connection).
//   - "decode": a packet that does not decode, charged to its sender.
//
// One check concerns the server, for tests of the client's own flow
// control: MQTT-3.3.4-7 charged to the server when it has more QoS 1/2
// PUBLISHes unacknowledged on a connection than the client's Receive
// Maximum. Violations say which side broke the rule; Err reports only the
// client's.
//
// Packets larger than MaxAuditSize are forwarded unchanged and counted,
// but not decoded (see Untracked). An Auditor's methods are safe for
// concurrent use.
type Auditor struct {
	mu         sync.Mutex // guards everything below
	conns      map[int]*connAudit
	sessions   map[string]*sessionAudit
	violations []Violation
	counts     [2][16]int // by direction and packet type
	published  [3]int     // client PUBLISHes by QoS
	redelivery int        // client PUBLISHes with DUP 1
	peakOut    int        // the most client QoS 1/2 PUBLISHes unacknowledged on one connection
	untracked  int
	changed    chan struct{} // closed and replaced when a violation is recorded
}

// MaxAuditSize is the largest packet the auditor decodes; larger ones are
// only counted.
const MaxAuditSize = 16 << 20

// defaultReceiveMaximum applies when CONNECT or CONNACK has none
// (MQTT v5 §3.1.2.11.3, §3.2.2.3.3).
const defaultReceiveMaximum = 65535

// Violation is one breach of a rule seen on the wire.
type Violation struct {
	Rule   string    // the specification's identifier, "MQTT-2.2.1-3", or "decode"
	Conn   int       // the connection, numbered from 1 in the order the proxy accepted them
	By     Direction // ClientToServer when the client broke the rule, ServerToClient for the server
	Packet string    // the offending packet, summarised: "PUBLISH qos=1 id=7 dup=0"
	Detail string    // what was wrong
}

// String formats the violation on one line.
func (v Violation) String() string {
	who := "client"
	if v.By == ServerToClient {
		who = "server"
	}
	return fmt.Sprintf("%s (%s, conn %d, %s): %s", v.Rule, who, v.Conn, v.Packet, v.Detail)
}

// ErrViolation is matched (errors.Is) by the errors of Auditor.Err and
// Auditor.ServerErr.
var ErrViolation = errors.New("faultproxy: MQTT rule violated")

// connAudit is the state of one connection.
type connAudit struct {
	id         int
	sess       *sessionAudit // nil until CONNECT
	seenFirst  bool          // the client has sent a packet
	connected  bool          // the client has sent CONNECT
	disconnect bool          // the client has sent DISCONNECT

	serverRecvMax  int    // from CONNACK
	serverAliasMax uint16 // from CONNACK
	clientRecvMax  int    // from CONNECT

	aliases     map[uint16]string // the client's alias mappings on this connection
	outInflight int               // the session's client PUBLISHes last sent on this connection and not completed

	inQ1, inQ2 []uint16            // server QoS 1 / QoS 2 PUBLISHes awaiting the client's PUBACK / PUBREC, in arrival order
	recQ       []uint16            // server PUBRECs (success) awaiting the client's PUBREL, in arrival order
	serverOut  map[uint16]struct{} // server QoS 1/2 PUBLISHes unacknowledged on this connection
}

// sessionAudit is the client-side session state the auditor infers.
type sessionAudit struct {
	out        map[uint16]*outMsg // client QoS 1/2 PUBLISHes not yet completed
	done       map[uint16]uint64  // the last completed message of each identifier, by sum
	aliasConns map[uint16]int     // for messages: the last connection that set each alias
	// cut is set once a connection of the session ended without the
	// client's DISCONNECT. The client may have written a PUBLISH to that
	// connection that never reached the proxy, and rightly sends it with
	// DUP 1 on the next: from then on the auditor cannot tell such a resend
	// from a new message, so MQTT-4.3.2-2 / 4.3.3-2 are no longer checked.
	cut bool
	// srvReleased holds the identifiers of server QoS 2 messages whose
	// PUBREL the server has sent and the client has not yet answered with
	// PUBCOMP: a server PUBLISH with one of them breaks MQTT-4.3.3-6 on the
	// server's side, and would be taken by the client for a new message.
	srvReleased map[uint16]bool
}

// outMsg is one client QoS 1/2 message in flight.
type outMsg struct {
	sum      uint64 // identity: QoS, retain, topic and payload
	conn     int    // the connection it was last sent on
	released bool   // the client has sent PUBREL
}

func newAuditor() *Auditor {
	return &Auditor{
		conns:    make(map[int]*connAudit),
		sessions: make(map[string]*sessionAudit),
		changed:  make(chan struct{}),
	}
}

// Audit turns on auditing for the connections the proxy carries from now
// on and returns the auditor; later calls return the same one. Enable it
// before the client connects: connections already open are not audited.
func (p *Proxy) Audit() *Auditor {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.auditor == nil {
		p.auditor = newAuditor()
	}
	return p.auditor
}

// Violations returns every violation recorded so far, by either side, in
// the order found.
func (a *Auditor) Violations() []Violation {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.violations)
}

// Err returns nil when the client has broken no rule, else an error that
// lists its violations and matches ErrViolation.
func (a *Auditor) Err() error { return a.errBy(ClientToServer) }

// ServerErr is Err for the server's violations.
func (a *Auditor) ServerErr() error { return a.errBy(ServerToClient) }

func (a *Auditor) errBy(by Direction) error {
	var lines []string
	for _, v := range a.Violations() {
		if v.By == by {
			lines = append(lines, v.String())
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d violation(s):\n\t%s", ErrViolation, len(lines), strings.Join(lines, "\n\t"))
}

// WaitFor waits until a violation of rule has been recorded, and returns
// the first one. It returns ctx's error if ctx ends first.
func (a *Auditor) WaitFor(ctx context.Context, rule string) (Violation, error) {
	for {
		a.mu.Lock()
		for _, v := range a.violations {
			if v.Rule == rule {
				a.mu.Unlock()
				return v, nil
			}
		}
		changed := a.changed
		a.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Violation{}, fmt.Errorf("faultproxy: wait for a violation of %s: %w", rule, ctx.Err())
		}
	}
}

// Published returns how many PUBLISH packets of the given QoS the client
// has sent, resends included.
func (a *Auditor) Published(qos byte) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if int(qos) >= len(a.published) {
		return 0
	}
	return a.published[qos]
}

// PeakInflight returns the most QoS 1 and 2 PUBLISHes the client had
// unacknowledged at once on one connection.
func (a *Auditor) PeakInflight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.peakOut
}

// Redelivered returns how many PUBLISH packets the client sent with DUP 1.
func (a *Auditor) Redelivered() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.redelivery
}

// Count returns how many packets of type t went in direction dir, those
// too large to decode included.
func (a *Auditor) Count(dir Direction, t packets.Type) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if dir < 0 || int(dir) >= len(a.counts) || int(t) >= len(a.counts[0]) {
		return 0
	}
	return a.counts[dir][t]
}

// Untracked returns how many packets were larger than MaxAuditSize and so
// not checked.
func (a *Auditor) Untracked() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.untracked
}

// observe audits one whole packet (fixed header included) travelling in
// dir on connection conn. It does not keep pkt.
func (a *Auditor) observe(conn int, dir Direction, pkt []byte) {
	typ := packets.Type(pkt[0] >> 4)
	var p packets.Packet
	var err error
	if len(pkt) <= MaxAuditSize {
		p, err = packets.Decode(pkt, 0)
	}
	var sum uint64
	if pub, ok := p.(*packets.Publish); ok {
		sum = messageSum(pub, "")
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts[dir][typ]++
	c := a.conns[conn]
	if c == nil {
		c = &connAudit{
			id:            conn,
			serverRecvMax: defaultReceiveMaximum,
			clientRecvMax: defaultReceiveMaximum,
			aliases:       make(map[uint16]string),
			serverOut:     make(map[uint16]struct{}),
		}
		a.conns[conn] = c
	}
	if dir == ClientToServer {
		a.clientFirst(c, typ)
	}
	switch {
	case len(pkt) > MaxAuditSize:
		a.untracked++
		return
	case err != nil:
		a.decodeFailed(c, dir, pkt, err)
		return
	}
	if dir == ClientToServer {
		a.fromClient(c, p, sum)
	} else {
		a.fromServer(c, p)
	}
}

// closed forgets a connection that has ended.
func (a *Auditor) closed(conn int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.conns[conn]; c != nil && c.sess != nil && !c.disconnect {
		c.sess.cut = true
	}
	delete(a.conns, conn)
}

// flag records a violation.
func (a *Auditor) flag(c *connAudit, by Direction, rule, pkt, format string, args ...any) {
	a.violations = append(a.violations, Violation{
		Rule: rule, Conn: c.id, By: by, Packet: pkt, Detail: fmt.Sprintf(format, args...),
	})
	close(a.changed)
	a.changed = make(chan struct{})
}

// clientFirst checks the rules about the client's first and last packets.
func (a *Auditor) clientFirst(c *connAudit, typ packets.Type) {
	switch {
	case !c.seenFirst && typ != packets.CONNECT:
		a.flag(c, ClientToServer, "MQTT-3.1.0-1", typ.String(), "the first packet on the connection is not CONNECT")
	case c.seenFirst && typ == packets.CONNECT:
		a.flag(c, ClientToServer, "MQTT-3.1.0-2", typ.String(), "a second CONNECT on the connection")
	case c.disconnect:
		a.flag(c, ClientToServer, "MQTT-3.14.4-1", typ.String(), "sent after the client's DISCONNECT")
	}
	c.seenFirst = true
}

// decodeFailed records a packet that does not decode, naming the rule when
// it is one the client-side checks know.
func (a *Auditor) decodeFailed(c *connAudit, dir Direction, pkt []byte, err error) {
	typ := packets.Type(pkt[0] >> 4)
	desc := typ.String()
	if dir == ClientToServer && typ == packets.PUBLISH {
		qos, dup := pkt[0]>>1&3, pkt[0]&0x08 != 0
		desc = fmt.Sprintf("PUBLISH qos=%d dup=%d", qos, b2i(dup))
		switch {
		case qos == 0 && dup:
			a.flag(c, dir, "MQTT-3.3.1-2", desc, "DUP set on a QoS 0 PUBLISH")
			return
		case publishAliasZero(pkt):
			a.flag(c, dir, "MQTT-3.3.2-8", desc, "topic alias 0")
			return
		case qos == 0 && decodesWithPacketID(pkt):
			a.flag(c, dir, "MQTT-2.2.1-2", desc, "a packet identifier in a QoS 0 PUBLISH")
			return
		}
	}
	a.flag(c, dir, "decode", desc, "%v", err)
}

// fromClient audits a decoded client-to-server packet.
func (a *Auditor) fromClient(c *connAudit, p packets.Packet, sum uint64) {
	switch p := p.(type) {
	case *packets.Connect:
		a.connect(c, p)
	case *packets.Disconnect:
		c.disconnect = true
	case *packets.Publish:
		a.clientPublish(c, p, sum)
	case *packets.Ack:
		a.clientAck(c, p)
	}
}

// connect attaches the connection to its session.
func (a *Auditor) connect(c *connAudit, p *packets.Connect) {
	c.connected = true
	if p.Properties.ReceiveMaximum != 0 {
		c.clientRecvMax = int(p.Properties.ReceiveMaximum)
	}
	id := p.ClientID
	if id == "" {
		// The server assigns one in CONNACK; until then the session is
		// this connection's own, and always new.
		id = fmt.Sprintf("\x00conn-%d", c.id)
	}
	s := a.sessions[id]
	if s == nil {
		s = &sessionAudit{out: make(map[uint16]*outMsg), done: make(map[uint16]uint64), aliasConns: make(map[uint16]int),
			srvReleased: make(map[uint16]bool)}
		a.sessions[id] = s
	}
	c.sess = s
	if p.CleanStart {
		a.endSession(c)
	}
}

// endSession drops the session's messages sent on earlier connections: the
// client and the server have discarded them.
func (a *Auditor) endSession(c *connAudit) {
	clear(c.sess.srvReleased)
	for id, m := range c.sess.out {
		if m.conn != c.id {
			a.complete(c.sess, id)
		}
	}
}

// complete forgets a client message that the server has acknowledged.
func (a *Auditor) complete(s *sessionAudit, id uint16) {
	m := s.out[id]
	if m == nil {
		return
	}
	if c := a.conns[m.conn]; c != nil {
		c.outInflight--
	}
	delete(s.out, id)
	s.done[id] = m.sum
}

// clientPublish checks a client PUBLISH.
func (a *Auditor) clientPublish(c *connAudit, p *packets.Publish, sum uint64) {
	a.published[p.QoS]++
	if p.Dup {
		a.redelivery++
	}
	desc := describe(p)
	if len(p.Properties.SubscriptionIdentifier) > 0 {
		a.flag(c, ClientToServer, "MQTT-3.3.4-6", desc, "a Subscription Identifier in a client PUBLISH")
	}
	if alias := p.Properties.TopicAlias; alias != 0 {
		if alias > c.serverAliasMax {
			a.flag(c, ClientToServer, "MQTT-3.3.2-9", desc, "topic alias %d above the server's Topic Alias Maximum %d", alias, c.serverAliasMax)
		}
		switch topic, ok := c.aliases[alias]; {
		case p.Topic != "":
			c.aliases[alias] = p.Topic
			if c.sess != nil {
				c.sess.aliasConns[alias] = c.id
			}
		case ok:
			sum = messageSum(p, topic)
		default:
			where := "never set"
			if c.sess != nil {
				if prev, ok := c.sess.aliasConns[alias]; ok {
					where = fmt.Sprintf("set on connection %d only", prev)
				}
			}
			a.flag(c, ClientToServer, "MQTT-3.3.2-7", desc, "topic alias %d used without a topic before being set on this connection (%s)", alias, where)
		}
	}
	if p.QoS == 0 || c.sess == nil {
		return
	}
	s := c.sess
	m := s.out[p.PacketID]
	switch {
	case m == nil:
		// A resend of a message the server has acknowledged is no new
		// message: the client may have lost the acknowledgement (a crash
		// before it was processed).
		if p.Dup && s.done[p.PacketID] != sum && !s.cut {
			rule := "MQTT-4.3.2-2"
			if p.QoS == 2 {
				rule = "MQTT-4.3.3-2"
			}
			a.flag(c, ClientToServer, rule, desc, "a new message sent with DUP 1")
		}
	case m.released:
		a.flag(c, ClientToServer, "MQTT-4.3.3-6", desc, "PUBLISH with identifier %d after its PUBREL, before PUBCOMP", p.PacketID)
		return
	case m.sum != sum:
		a.flag(c, ClientToServer, "MQTT-2.2.1-3", desc, "identifier %d is in use by an unacknowledged PUBLISH of the session (sent on connection %d)", p.PacketID, m.conn)
		a.complete(s, p.PacketID) // track the new message from here on
		m = nil
	case m.conn == c.id:
		a.flag(c, ClientToServer, "MQTT-4.4.0-1", desc, "message %d resent on the connection it was sent on", p.PacketID)
		return
	default:
		if !p.Dup {
			a.flag(c, ClientToServer, "MQTT-3.3.1-1", desc, "redelivery of message %d (first sent on connection %d) without DUP", p.PacketID, m.conn)
		}
		a.complete(s, p.PacketID) // re-added below, on this connection
		m = nil
	}
	if m == nil {
		delete(s.done, p.PacketID)
		s.out[p.PacketID] = &outMsg{sum: sum, conn: c.id}
		c.outInflight++
		a.peakOut = max(a.peakOut, c.outInflight)
		if c.outInflight > c.serverRecvMax {
			a.flag(c, ClientToServer, "MQTT-3.3.4-7", desc, "%d unacknowledged QoS 1/2 PUBLISHes, above the server's Receive Maximum %d", c.outInflight, c.serverRecvMax)
		}
	}
}

// clientAck checks a client PUBACK, PUBREC, PUBREL or PUBCOMP.
func (a *Auditor) clientAck(c *connAudit, p *packets.Ack) {
	desc := describe(p)
	switch p.Kind {
	case packets.PUBACK:
		a.inOrder(c, &c.inQ1, p.PacketID, "MQTT-4.6.0-2", desc, "QoS 1 PUBLISHes")
		delete(c.serverOut, p.PacketID)
	case packets.PUBREC:
		a.inOrder(c, &c.inQ2, p.PacketID, "MQTT-4.6.0-3", desc, "QoS 2 PUBLISHes")
		if p.ReasonCode >= 0x80 {
			delete(c.serverOut, p.PacketID)
		}
	case packets.PUBCOMP:
		delete(c.serverOut, p.PacketID)
		if c.sess != nil {
			delete(c.sess.srvReleased, p.PacketID)
		}
	case packets.PUBREL:
		a.inOrder(c, &c.recQ, p.PacketID, "MQTT-4.6.0-4", desc, "PUBRECs")
		if c.sess != nil {
			if m := c.sess.out[p.PacketID]; m != nil {
				m.released = true
			}
		}
	}
}

// inOrder checks that id is the oldest entry of q, if q holds it, and
// removes it.
func (a *Auditor) inOrder(c *connAudit, q *[]uint16, id uint16, rule, desc, what string) {
	i := slices.Index(*q, id)
	if i < 0 {
		return
	}
	if i > 0 {
		a.flag(c, ClientToServer, rule, desc, "sent before the acknowledgement of %d: not in the order the %s arrived (%v)", (*q)[0], what, *q)
	}
	*q = slices.Delete(*q, i, i+1)
}

// fromServer audits a decoded server-to-client packet.
func (a *Auditor) fromServer(c *connAudit, p packets.Packet) {
	switch p := p.(type) {
	case *packets.Connack:
		a.connack(c, p)
	case *packets.Publish:
		if p.QoS == 0 {
			return
		}
		if c.sess != nil && c.sess.srvReleased[p.PacketID] {
			a.flag(c, ServerToClient, "MQTT-4.3.3-6", describe(p), "PUBLISH with identifier %d after the server's PUBREL, before the client's PUBCOMP", p.PacketID)
		}
		if _, ok := c.serverOut[p.PacketID]; !ok {
			c.serverOut[p.PacketID] = struct{}{}
			if len(c.serverOut) > c.clientRecvMax {
				a.flag(c, ServerToClient, "MQTT-3.3.4-7", describe(p), "%d unacknowledged QoS 1/2 PUBLISHes, above the client's Receive Maximum %d", len(c.serverOut), c.clientRecvMax)
			}
		}
		q := &c.inQ1
		if p.QoS == 2 {
			q = &c.inQ2
		}
		if !slices.Contains(*q, p.PacketID) {
			*q = append(*q, p.PacketID)
		}
	case *packets.Ack:
		if c.sess == nil {
			return
		}
		switch {
		case p.Kind == packets.PUBACK, p.Kind == packets.PUBCOMP,
			p.Kind == packets.PUBREC && p.ReasonCode >= 0x80:
			a.complete(c.sess, p.PacketID)
		case p.Kind == packets.PUBREC:
			if !slices.Contains(c.recQ, p.PacketID) {
				c.recQ = append(c.recQ, p.PacketID)
			}
		case p.Kind == packets.PUBREL:
			c.sess.srvReleased[p.PacketID] = true
		}
	}
}

// connack takes the server's limits and learns whether the session
// survived.
func (a *Auditor) connack(c *connAudit, p *packets.Connack) {
	if p.Properties.ReceiveMaximum != 0 {
		c.serverRecvMax = int(p.Properties.ReceiveMaximum)
	}
	c.serverAliasMax = p.Properties.TopicAliasMaximum
	if c.sess == nil || p.ReasonCode >= 0x80 {
		return
	}
	if id := p.Properties.AssignedClientID; id != "" {
		a.sessions[id] = c.sess
	}
	if !p.SessionPresent {
		a.endSession(c)
	}
}

// messageSum identifies a message for telling a redelivery from a new
// message that reuses an identifier. topic, when not empty, stands for the
// packet's own (an alias's topic).
func messageSum(p *packets.Publish, topic string) uint64 {
	if topic == "" {
		topic = p.Topic
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte{p.QoS, byte(b2i(p.Retain))})
	_, _ = h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(topic))))
	_, _ = h.Write([]byte(topic))
	_, _ = h.Write(p.Payload)
	return h.Sum64()
}

// describe summarises a packet for a Violation.
func describe(p packets.Packet) string {
	switch p := p.(type) {
	case *packets.Publish:
		s := fmt.Sprintf("PUBLISH qos=%d", p.QoS)
		if p.QoS > 0 {
			s += fmt.Sprintf(" id=%d", p.PacketID)
		}
		s += fmt.Sprintf(" dup=%d topic=%q", b2i(p.Dup), p.Topic)
		if p.Properties.TopicAlias != 0 {
			s += fmt.Sprintf(" alias=%d", p.Properties.TopicAlias)
		}
		return s
	case *packets.Ack:
		return fmt.Sprintf("%v id=%d", p.Kind, p.PacketID)
	}
	return p.Type().String()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// decodesWithPacketID reports whether a QoS 0 PUBLISH that does not decode
// would decode with QoS 1: that is, whether it carries a packet identifier.
func decodesWithPacketID(pkt []byte) bool {
	b := slices.Clone(pkt)
	b[0] |= 1 << 1
	_, err := packets.Decode(b, 0)
	return err == nil
}

// publishAliasZero reports whether a PUBLISH carries a Topic Alias
// property of 0, which the codec refuses to decode. It walks the
// variable header and the properties by hand.
func publishAliasZero(pkt []byte) bool {
	qos := pkt[0] >> 1 & 3
	_, n, ok := varInt(pkt[1:])
	if !ok {
		return false
	}
	b := pkt[1+n:]
	if len(b) < 2 {
		return false
	}
	skip := 2 + int(binary.BigEndian.Uint16(b))
	if qos > 0 {
		skip += 2
	}
	if len(b) < skip {
		return false
	}
	b = b[skip:]
	plen, n, ok := varInt(b)
	if !ok || len(b) < n+plen {
		return false
	}
	props := b[n : n+plen]
	for len(props) > 0 {
		id := props[0]
		props = props[1:]
		var size int
		switch id {
		case 0x01: // Payload Format Indicator
			size = 1
		case 0x23: // Topic Alias
			if len(props) < 2 {
				return false
			}
			if binary.BigEndian.Uint16(props) == 0 {
				return true
			}
			size = 2
		case 0x02: // Message Expiry Interval
			size = 4
		case 0x03, 0x08, 0x09: // Content Type, Response Topic, Correlation Data
			if len(props) < 2 {
				return false
			}
			size = 2 + int(binary.BigEndian.Uint16(props))
		case 0x26: // User Property: two strings
			if len(props) < 2 {
				return false
			}
			k := 2 + int(binary.BigEndian.Uint16(props))
			if len(props) < k+2 {
				return false
			}
			size = k + 2 + int(binary.BigEndian.Uint16(props[k:]))
		case 0x0B: // Subscription Identifier
			_, size, ok = varInt(props)
			if !ok {
				return false
			}
		default:
			return false
		}
		if len(props) < size {
			return false
		}
		props = props[size:]
	}
	return false
}

// varInt decodes a variable byte integer, returning its value and length.
func varInt(b []byte) (v, n int, ok bool) {
	shift := 0
	for i := 0; i < 4 && i < len(b); i++ {
		v |= int(b[i]&0x7f) << shift
		shift += 7
		if b[i]&0x80 == 0 {
			return v, i + 1, true
		}
	}
	return 0, 0, false
}
