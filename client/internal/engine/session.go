package engine

import (
	"log/slog"
	"time"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// Limits are the server's limits from its CONNACK.
type Limits struct {
	ReceiveMax    uint16
	MaxQoS        byte
	Retain        bool
	MaxPacket     uint32
	AliasMax      uint16
	Wildcard      bool
	SubID         bool
	Shared        bool
	SessionExpiry uint32
}

// DefaultLimits are the limits before any CONNACK: the protocol's own.
func DefaultLimits() Limits {
	return Limits{ReceiveMax: 65535, MaxQoS: 2, Retain: true, Wildcard: true, SubID: true, Shared: true}
}

// LimitsOf reads the server's limits from its CONNACK; expiry is the
// Session Expiry Interval the client asked for, in force unless the server
// says otherwise.
func LimitsOf(ca *packets.Connack, expiry uint32) Limits {
	pr := &ca.Properties
	lim := DefaultLimits()
	if pr.ReceiveMaximum != 0 {
		lim.ReceiveMax = pr.ReceiveMaximum
	}
	if pr.MaximumQoS != nil {
		lim.MaxQoS = *pr.MaximumQoS
	}
	if pr.RetainAvailable != nil {
		lim.Retain = *pr.RetainAvailable != 0
	}
	lim.MaxPacket = pr.MaximumPacketSize
	lim.AliasMax = pr.TopicAliasMaximum
	if pr.WildcardSubAvailable != nil {
		lim.Wildcard = *pr.WildcardSubAvailable != 0
	}
	if pr.SubIDAvailable != nil {
		lim.SubID = *pr.SubIDAvailable != 0
	}
	if pr.SharedSubAvailable != nil {
		lim.Shared = *pr.SharedSubAvailable != 0
	}
	lim.SessionExpiry = expiry
	if pr.SessionExpiry != nil {
		lim.SessionExpiry = *pr.SessionExpiry
	}
	return lim
}

// Limits returns the server's limits from the last CONNACK.
func (e *Engine) Limits() Limits { return e.lim }

// connState is the session's state of one connection.
type connState struct {
	gen      uint64
	link     Link
	writes   uint64            // numbered writes emitted (see ConnDown)
	base     uint64            // Engine.wrote when it began: its writes are numbered on from there
	maxOut   uint32            // the server's Maximum Packet Size, 0 for none
	aliasMax uint16            // the server's Topic Alias Maximum
	aliasOut map[string]uint16 // outbound topic → alias, this connection only (MQTT-3.3.2-7)
	aliasIn  []string          // inbound alias → topic, this connection only

	inState       []uint8    // per inbound packet identifier: in* states
	inCount       int        // inbound QoS>0 messages unacknowledged (our Receive Maximum)
	inq           []*Inbound // inbound QoS>0 messages not yet acknowledged, in arrival order
	held          []*Inbound // messages waiting for the crash window
	heldBytes     int
	overrunLogged bool
}

// numbered counts a numbered write on cn, live, and returns its number
// among cn's writes (Effect.Num); Engine.wrote numbers it among all.
func (e *Engine) numbered(cn *connState) uint64 {
	cn.writes++
	e.wrote++
	return cn.writes
}

// tooLarge reports whether p exceeds the server's Maximum Packet Size.
func (cn *connState) tooLarge(p packets.Packet) bool {
	if cn.maxOut == 0 {
		return false
	}
	n, err := packets.Size(p)
	return err != nil || uint32(n) > cn.maxOut
}

// Lost is an outbound message of a session the server no longer has.
type Lost struct {
	Ref string
	Pub *packets.Publish
}

// Loaded reports whether a session has been loaded, and for which key.
func (e *Engine) Loaded() (store.Key, bool) { return e.key, e.loaded }

// Load rebuilds the session from every record a store returned for k (and
// the corruption it reported, if any), at once: LoadStart and one Page
// holding the whole session. Publishes still pending are attached to their
// records again; those whose record is gone fail with ErrSessionLost.
//
// Records that cannot be used — reported corrupt by the store, or readable
// but not a valid record of this client — are left out, kept in the store,
// and reported (Corrupt). A packet identifier such a record holds stays
// reserved while the record exists: the server may still hold that
// identifier's exchange.
func (e *Engine) Load(k store.Key, recs []store.Record, corrupt *store.CorruptError) {
	e.LoadStart(k, true)
	e.Page(recs, corrupt, 0)
}

// leave hands the inbound QoS 2 messages still with the application to the
// session they came from, before the session of k is loaded in its place:
// acknowledged, they are recorded there (StoreAt), or in the loaded session
// again when the client is back in it.
func (e *Engine) leave(k store.Key) {
	home := e.key
	for _, in := range e.in2 {
		in.home = &home
		e.away = append(e.away, in)
	}
	clear(e.in2)
	n := 0
	for _, in := range e.away {
		switch {
		case in.acked:
		case *in.home == k:
			in.home = nil
			e.in2[in.ID] = in
		default:
			e.away[n] = in
			n++
		}
	}
	clear(e.away[n:])
	e.away = e.away[:n]
}

// Corrupt returns the records the last load left out, or nil.
func (e *Engine) Corrupt() *store.CorruptError { return e.corrupt }

// CorruptDiscarded reports that the driver deleted the corrupt records
// from the store: the packet identifiers they held are free.
func (e *Engine) CorruptDiscarded() {
	if e.corrupt != nil && e.corrupt.Key == e.key {
		for _, id := range e.corruptIDs {
			if e.byID[id] == nil {
				e.freeID(id)
			}
		}
	}
	e.corrupt, e.corruptIDs = nil, nil
}

// sorted returns the session's outbound messages in Seq order.
func (e *Engine) sorted() []*Out { return e.msgs.all() }

// Prepare decides, before a CONNECT, whether the session is kept (Clean
// Start 0) or dropped (Clean Start 1: no state held, the session expired
// locally, or Config.CleanStart on the first connection). Dropping it
// reports the messages lost.
func (e *Engine) Prepare(now time.Time, first bool) (clean bool, lost []Lost) {
	hasState := e.haveMeta && !e.meta.Expired(now)
	clean = !hasState || (e.cfg.CleanStart && first)
	if clean {
		if e.haveMeta && !hasState {
			e.log.Log(slog.LevelInfo, "session expired locally: discarding", "key", e.key.String())
		}
		lost = e.discard()
		if e.cfg.CleanStart && first {
			e.meta.Subs = nil
		}
	}
	return clean, lost
}

// Connected applies a successful CONNACK on a new connection: the server's
// limits, Session Present, then the resend of the stored session in Seq
// order (MQTT-4.4.0-1, MQTT-4.6.0-1) and of what was published meanwhile.
// A *ProtocolError says the CONNACK is a violation; nothing changed.
func (e *Engine) Connected(link Link, ca *packets.Connack, clean bool, now time.Time) (Connection, error) {
	var r Connection
	if ca.SessionPresent && clean {
		// MQTT-3.2.2-4: we hold no session, the server says it has one.
		return r, &ProtocolError{Code: packets.ProtocolError, Msg: "Session Present 1 in answer to Clean Start 1"}
	}
	if !ca.SessionPresent && !clean {
		// MQTT-3.2.2-5: the server lost the session; discard ours.
		e.log.Log(slog.LevelWarn, "server has no session: discarding stored state", "key", e.key.String())
		r.Lost = e.discard()
	}
	e.lim = LimitsOf(ca, e.cfg.SessionExpiry)
	e.quota = int(e.lim.ReceiveMax)
	e.gen++
	cn := &connState{gen: e.gen, link: link, base: e.wrote, maxOut: e.lim.MaxPacket, aliasMax: e.lim.AliasMax,
		aliasOut: make(map[string]uint16), aliasIn: make([]string, int(e.cfg.TopicAliasMaximum)+1),
		inState: make([]uint8, 65536)}
	e.meta.Expiry = e.lim.SessionExpiry
	resend := e.sorted()
	// The meta record is written anyway: let its Sent cover what this
	// connection sends first, so that no PUBLISH waits for a meta record
	// of its own.
	upTo := e.released() // the messages from there wait behind the tail
	first := e.frontier()
	for _, m := range resend {
		if m.seq >= upTo {
			break
		}
		if !m.sent && !m.pubrel {
			first = m.seq
			break
		}
	}
	e.meta.Sent = max(e.meta.Sent, first+e.sentAhead())
	e.putMeta(now)
	if !ca.SessionPresent {
		r.Resubscribe = e.meta.Subs
	}
	e.conn = cn
	e.resetWaiting()
	for _, m := range resend {
		m.onWire = false
		if m.seq >= upTo {
			continue
		}
		if m.sent {
			r.Resent++
		}
		e.waiting = append(e.waiting, m)
	}
	e.pump()
	for i, p := range e.queued0 {
		e.emit(action{kind: actPublish0, conn: cn, eff: Effect{Packet: p, Ticket: e.tickets0[i]}})
	}
	e.dropQueued0()
	return r, nil
}

// Connection is what Connected reports.
type Connection struct {
	Lost        []Lost // messages of a session the server no longer had
	Resubscribe []Sub  // subscriptions to make again: the server has none of them
	Resent      int    // stored messages being resent
}

// Generation returns the generation of the live connection, 0 when none.
func (e *Engine) Generation() uint64 {
	if e.conn == nil {
		return 0
	}
	return e.conn.gen
}

// Disconnected ends the live connection. handed is how many of its
// numbered writes (Write effects) the driver handed to the network: a
// PUBLISH in a later one never left the process, so it has not been sent
// (its first transmission must carry DUP 0, MQTT-3.3.1-1, and a lost
// session must not count it as in flight). The meta record takes the
// time, so that local expiry counts from now.
func (e *Engine) Disconnected(handed uint64, now time.Time) {
	cn := e.conn
	if cn == nil {
		return
	}
	e.conn = nil
	for _, m := range e.msgs.ms {
		if !m.tracked {
			continue
		}
		m.onWire = false
		if m.wnum > cn.base+handed {
			m.sent = m.sentPrev // its last write never left, on cn
		}
	}
	e.resetWaiting()
	if e.haveMeta {
		e.putMeta(now)
	}
}

// discard drops the session state as MQTT-3.1.2-4 and MQTT-3.2.2-5 ask:
// messages in flight are lost (or queued again as new messages when
// RepublishLost is set), PUBRELs are complete (the server had the
// message), inbound QoS 2 records go. Messages never sent are kept: they
// are not part of the MQTT session.
func (e *Engine) discard() []Lost {
	var lost []Lost
	for _, id := range e.abandonedIDs {
		e.ids.clear(id)
	}
	e.abandonedIDs = nil
	for _, m := range e.sorted() {
		if m.id == 0 || (!m.sent && !m.pubrel) {
			// Never reached the network: not part of the lost session. It
			// keeps its place, and any identifier it was given.
			continue
		}
		if !m.pubrel {
			if pub := e.pubOf(m); pub != nil {
				lost = append(lost, Lost{Ref: m.ref(), Pub: pub})
			}
			if e.cfg.RepublishLost && m.pub != nil {
				// A new message under the identifier it had, which the
				// server's new session does not hold: its record stays as
				// it is. Meta.Sent still covers it, as it may have been
				// sent.
				m.sent, m.onWire = false, false
				continue
			}
		}
		e.ids.clear(m.id)
		delete(e.byID, m.id)
		if m.pubrel {
			m.done = true
			e.untrack(m)
			e.addOp(store.Delete(m.seq))
			e.complete(m, nil)
			continue
		}
		m.done = true
		e.untrack(m)
		e.addOp(store.Delete(m.seq))
		e.complete(m, ErrSessionLost)
	}
	for id, seq := range e.inQoS2 {
		e.addOp(store.Delete(seq))
		delete(e.inQoS2, id)
	}
	e.scan.drop = e.scan.on // and those the scan has not reached yet
	clear(e.in2)            // their acks find themselves orphaned and record nothing
	return lost
}

// Moved is the outbound state a failover takes from one server's session
// to another's.
type Moved struct {
	msgs []*Out
	old  []store.Op // to apply on the old key once the move is durable
}

// OldOps returns the operations to apply on the old session's key once the
// moved messages are durable under the new one.
func (mv *Moved) OldOps() []store.Op { return mv.old }

// Len returns how many messages move.
func (mv *Moved) Len() int { return len(mv.msgs) }

// Detach starts a failover to another server's session (several Servers
// without Cluster): outbound PUBLISH messages, sent or not, move with the
// client and are sent to the new server as new messages, in order — at
// least once, so a QoS 2 message the old server had received may arrive
// twice. PUBRELs and inbound QoS 2 records stay with the old server's
// session (the old server has those messages); their publishes complete.
// Load the new session next, then Attach; on a failed load, Reattach.
//
// A QoS 2 message that may have reached the old server leaves a PUBREL in
// the old session in its place: that server may hold its identifier's
// exchange, and would take a new message under it for a repeat and drop it
// (MQTT-2.2.1-3). When the client comes back, the PUBREL ends the exchange
// (PUBCOMP, or 0x92 when the server never had it) and frees the identifier.
func (e *Engine) Detach() *Moved {
	mv := &Moved{}
	for _, m := range e.sorted() {
		if m.pubrel {
			m.done = true
			e.complete(m, nil)
			e.untrack(m)
			continue
		}
		if e.pubOf(m) == nil {
			continue
		}
		if m.qos == 2 && m.sent && m.id != 0 {
			mv.old = append(mv.old, store.Put(e.pubrelRecord(nil, m)))
		} else {
			mv.old = append(mv.old, store.Delete(m.seq))
		}
		e.untrack(m)
		mv.msgs = append(mv.msgs, m)
	}
	return mv
}

// Reattach undoes Detach after the new session could not be loaded.
func (e *Engine) Reattach(mv *Moved) {
	for _, m := range mv.msgs {
		e.track(m)
	}
}

// Attach adds the moved messages to the session loaded since Detach, as
// new messages after its own. They are put under the new key before the
// driver deletes them from the old one, so a crash in between duplicates
// rather than loses.
func (e *Engine) Attach(mv *Moved) {
	for _, m := range mv.msgs {
		nm := &Out{seq: e.nextSeq, qos: m.qos, pub: m.pub, app: m.app}
		m.app = nil
		e.nextSeq++
		e.track(nm)
		e.putRecord(nm)
	}
}

// Meta returns the session's metadata, and whether the session has any.
func (e *Engine) Meta() (Meta, bool) { return e.meta, e.haveMeta }

// putMeta queues the Put of the meta record with the time now.
func (e *Engine) putMeta(now time.Time) {
	e.meta.LastConnected = now
	e.haveMeta = true
	e.metaAt = now.UnixMilli()
	e.putMetaRecord()
}

// putMetaRecord queues the Put of the meta record as it is.
func (e *Engine) putMetaRecord() {
	e.sentQueued = e.meta.Sent
	b := e.meta.Encode()
	e.metaSize = len(b)
	e.addOp(store.Put(store.Record{Seq: store.MetaSeq, Dir: store.Meta, Packet: b}))
}

// Tick rewrites the meta record now and then while connected, so that a
// crash does not make a live session look expired.
func (e *Engine) Tick(now time.Time) {
	if !e.haveMeta || e.conn == nil || e.meta.Expiry == 0 || e.meta.Expiry == 0xFFFFFFFF {
		return // nothing to keep alive: the session ends with the connection, or never
	}
	every := min(time.Duration(e.meta.Expiry)*time.Second/4, time.Minute)
	if now.UnixMilli()-e.metaAt >= every.Milliseconds() {
		e.putMeta(now)
	}
}

// Subscribed records granted subscriptions in the meta record.
func (e *Engine) Subscribed(subs []Sub) {
	for _, s := range subs {
		e.meta.setSub(s)
	}
	if len(subs) > 0 && e.haveMeta {
		e.putMeta(e.meta.LastConnected)
	}
}

// Unsubscribed forgets the subscriptions to filters.
func (e *Engine) Unsubscribed(filters []string) {
	for _, f := range filters {
		e.meta.removeSub(f)
	}
	if len(filters) > 0 && e.haveMeta {
		e.putMeta(e.meta.LastConnected)
	}
}

// dropQueued0 forgets the QoS 0 messages queued while disconnected, which
// have been sent or failed.
func (e *Engine) dropQueued0() {
	for _, p := range e.queued0 {
		e.queuedBytes -= PubCost(p)
	}
	e.queued0, e.tickets0 = nil, nil
	e.effect(Effect{Kind: QueueRoom})
}

// Abort completes every pending publish with err, without ending any
// exchange: their records stay in the store for whoever holds the session
// next (the Client closing, or its lease taken by another process).
func (e *Engine) Abort(err error) {
	for _, m := range e.msgs.ms {
		if m.tracked {
			e.complete(m, err)
		}
	}
	for _, t := range e.tickets0 {
		e.effect(Effect{Kind: Complete, Ticket: t, Err: err})
	}
	e.dropQueued0()
}

// OutInfo describes one outbound message of the session (Client.Pending).
type OutInfo struct {
	Seq    uint64
	ID     uint16
	QoS    byte
	Ref    string
	Sent   bool
	Pubrel bool
	Pub    *packets.Publish // nil for a PUBREL loaded from the store
}

// Outbound lists the session's unfinished outbound messages in Seq order.
func (e *Engine) Outbound() []OutInfo {
	var out []OutInfo
	for _, m := range e.sorted() {
		if m.done {
			continue
		}
		pub := m.pub
		if pub == nil && m.raw != nil {
			pub = decodeStored(m.raw) // not kept: a listing does not grow the session
		}
		out = append(out, OutInfo{Seq: m.seq, ID: m.id, QoS: m.qos, Ref: m.ref(), Sent: m.sent, Pubrel: m.pubrel, Pub: pub})
	}
	return out
}

// NextSeq returns the next sequence number the session will use.
func (e *Engine) NextSeq() uint64 { return e.nextSeq }
