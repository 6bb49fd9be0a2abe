// Package engine holds the MQTT session rules of the client as a state
// machine without I/O: packet identifiers, the outbound and inbound QoS 1
// and 2 flows, flow control both ways, topic aliases, resend order,
// Session Present, local session expiry, failover between servers and the
// crash window. Inputs go in (an application call, a packet read, a store
// batch that became durable or failed, a page of the stored session, a
// connection that came up or went down, the time); effects come out, in
// the order they must happen: store operations, packets to write,
// messages to deliver, publishes to complete.
//
// The engine starts no goroutine, takes no lock, reads no clock, sets no
// timer and does no I/O (a test over its source checks it). Its caller, the
// driver, serialises every call, runs the store batches the engine hands
// it one at a time (or, with Config.Pipeline, several on their way at once,
// applied in order), and performs the effects in order. The client package
// is the driver over real connections and stores; the simulation in
// client/internal/sim drives it over models of both.
//
// # What must be durable before which packet
//
// Every store operation goes into the batch being accumulated. An effect
// that depends on the store — a QoS 2 PUBLISH on its record (a QoS 1
// PUBLISH only on a meta record whose Sent covers it: see mayLeave), a
// PUBREL on the PUBLISH→PUBREL replacement, a PUBREC on the inbound
// record, a PUBCOMP on that record's deletion — waits until every
// operation queued before it is durable (Engine.Commit, Engine.Committed),
// and so does every effect queued after one that waits: nothing ever
// overtakes the store write it depends on, nor a packet queued before it.
package engine

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// Sentinel errors the engine completes publishes with. The client package
// exports them under the same names.
var (
	ErrPacketTooLarge = errors.New("client: packet too large for the server")
	ErrSessionLost    = errors.New("client: session lost")
	ErrNotConnected   = errors.New("client: not connected")
	ErrSessionTaken   = store.ErrSessionTaken
)

// AckError is a negative acknowledgement (PUBACK or PUBREC with a reason
// code of 0x80 or more) that ended an outbound exchange.
type AckError struct {
	Packet packets.Type
	Code   packets.ReasonCode
	Reason string
}

func (e *AckError) Error() string {
	return fmt.Sprintf("client: %s: %s (0x%02x)", TypeName(e.Packet), e.Code, byte(e.Code))
}

// ProtocolError is a protocol violation by the server: the connection ends
// with a DISCONNECT carrying Code.
type ProtocolError struct {
	Code packets.ReasonCode
	Msg  string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("client: protocol violation by server: %s (DISCONNECT 0x%02x %s)", e.Msg, byte(e.Code), e.Code)
}

// Logger receives what the engine has to say. Flood is for warnings a
// server can trigger at will, which the driver rate-limits.
type Logger interface {
	Log(level slog.Level, msg string, args ...any)
	Flood(msg string, args ...any)
}

// Link is the engine's view of one connection: whether it has closed.
// Packets for a closed link are not written, acknowledgements are not
// sent on it, and held messages stay held.
type Link interface {
	Closed() bool
}

// Config is what the engine needs of the client's configuration.
type Config struct {
	ReceiveMaximum       uint16 // ours, announced in CONNECT
	CrashWindow          int    // at most ReceiveMaximum
	StrictReceiveMaximum bool
	TopicAliasMaximum    uint16 // ours, announced in CONNECT
	OutboundTopicAliases bool
	RepublishLost        bool
	CleanStart           bool
	SessionExpiry        uint32 // seconds, as announced in CONNECT
	MaxQueued            int
	MaxQueuedBytes       int
	// MaxPacketID is the highest packet identifier used; 0 means 65,535.
	// Tests lower it to exhaust identifiers with a few messages.
	MaxPacketID uint16
	// SentAhead fixes how far Meta.Sent runs ahead of the messages sent;
	// 0 means the adaptive default (sentAhead). The simulation lowers it,
	// so that identifiers given ahead lie beyond Sent.
	SentAhead uint64
	// LoadWindow is how many messages without a packet identifier a paged
	// load keeps in memory ahead of those sent (LoadStart), and
	// LoadWindowBytes what they may count against MaxQueuedBytes; the
	// rest wait in the store. 0 means 1,024 and 8 MiB.
	LoadWindow      int
	LoadWindowBytes int
	// Pipeline is how many batches may be on their way to the store at
	// once (a store.Pipeliner); 0 or 1 means one. A batch begun while
	// another is still being applied must be urgent (see Urgent).
	Pipeline int
	Log      Logger
}

// EffectKind says what the driver must do for an Effect.
type EffectKind uint8

// The kinds of effect.
const (
	// Write Packet on the connection of generation Conn, if it is still the
	// live one. A QoS 1 or 2 PUBLISH counts as one of the connection's
	// numbered writes (see Engine.ConnDown); so does every Write.
	Write EffectKind = iota + 1
	// Publish0 writes the QoS 0 PUBLISH Packet on connection Conn and
	// completes Ticket: with nil, or ErrBufferFull (the driver's) when the
	// write buffer is full. Not a numbered write.
	Publish0
	// Deliver In to the application.
	Deliver
	// Complete the publish of Ticket with Err.
	Complete
	// Stored: the message of Ticket is durable in the store.
	Stored
	// IDFreed: a packet identifier became free (wake waiting requests).
	IDFreed
	// QueueRoom: a message left the outbound queue (wake waiting publishers).
	QueueRoom
	// Fail ends connection Conn with Err (a protocol violation or a store
	// failure), with a DISCONNECT when Err is a *ProtocolError.
	Fail
	// ReadTail asks for the next page of the messages left in the store
	// by a paged load: a Scan of the session from Num, of at most Limit
	// records, handed to Tail with Num.
	ReadTail
	// StoreAt applies Ops to the session of Key, another server's than
	// the one loaded: the record of a message acknowledged after a
	// failover, which belongs to the session it came from. A failure is
	// logged: the message then comes again.
	StoreAt
)

// Effect is one thing the driver must do, in order.
type Effect struct {
	Kind   EffectKind
	Conn   uint64 // connection generation, for Write, Publish0 and Fail
	Num    uint64 // a Write's number among its connection's numbered writes; ReadTail's Seq
	Limit  int    // ReadTail: records wanted
	Packet packets.Packet
	In     *Inbound
	Ticket any
	Err    error
	Key    store.Key  // StoreAt
	Ops    []store.Op // StoreAt
}

// action is an effect waiting for the store, or one decided only when it
// runs (a PUBLISH is written only if its message is still unfinished).
type action struct {
	kind  uint8
	m     *Out
	eff   Effect // actEffect: Ticket and Packet of actPublish0
	pkt   packets.Type
	id    uint16
	code  packets.ReasonCode
	conn  *connState
	in    *Inbound
	after int // how many of its batch's operations precede it
	// deferred: an outbound-flow action counted in waitingOut until it runs.
	deferred bool
}

const (
	actEffect   = iota + 1 // emit eff as is (a Write: on conn, if live)
	actPublish             // write m's PUBLISH on conn
	actPublish0            // write the QoS 0 PUBLISH eff.Packet on conn, complete eff.Ticket
	actAck                 // write an Ack of pkt/id/code on conn
	actFreeID              // packet identifier id may be reused
	actInDone              // delivered message in is done with: its acknowledgement is out, or will never be
)

// MaxBatchOps bounds the operations of one group commit, so that a burst
// (a backlog queued while disconnected, thousands of publishers at once)
// becomes several Applies of bounded size rather than one that holds the
// store — a Redis server runs a batch as one script and serves nothing
// else meanwhile — for as long as the whole burst takes.
const MaxBatchOps = 1024

// batch is a group commit: store operations and the actions that wait for
// them, and the messages whose first Put is among the operations.
type batch struct {
	ops  []store.Op
	acts []action
	msgs []*Out
	dead int // operations taken back (Kind 0), dropped when the batch is taken
	// urgent: something waits for the batch (see Engine.Urgent).
	urgent bool
}

func (b *batch) empty() bool { return len(b.ops) == b.dead && len(b.acts) == 0 }

func (b *batch) reset() {
	clear(b.ops)
	clear(b.acts)
	clear(b.msgs)
	b.ops, b.acts, b.msgs, b.dead, b.urgent = b.ops[:0], b.acts[:0], b.msgs[:0], 0, false
}

// compact drops the operations taken back, keeping each action behind the
// operations that preceded it. Actions are queued in order, so their
// after counts never decrease.
func (b *batch) compact() {
	if b.dead == 0 {
		return
	}
	n, ai := 0, 0
	for i := range b.ops {
		for ; ai < len(b.acts) && b.acts[ai].after <= i; ai++ {
			b.acts[ai].after = n
		}
		if b.ops[i].Kind != 0 {
			b.ops[n] = b.ops[i]
			n++
		}
	}
	for ; ai < len(b.acts); ai++ {
		b.acts[ai].after = n
	}
	clear(b.ops[n:])
	b.ops, b.dead = b.ops[:n], 0
}

// split keeps the first k operations in b, with the actions that wait for
// no more than them and the messages whose first Put is among them, and
// returns the rest as a batch of its own.
func (b *batch) split(k int) batch {
	rest := batch{urgent: true} // the rest of a batch taken: it goes next
	rest.ops = append(rest.ops, b.ops[k:]...)
	clear(b.ops[k:])
	b.ops = b.ops[:k]
	n := 0
	for _, a := range b.acts {
		if a.after <= k {
			b.acts[n] = a
			n++
		} else {
			a.after -= k
			rest.acts = append(rest.acts, a)
		}
	}
	clear(b.acts[n:])
	b.acts = b.acts[:n]
	here := make(map[uint64]bool, k)
	for _, op := range b.ops {
		if op.Kind == store.OpPut {
			here[op.Record.Seq] = true
		}
	}
	n = 0
	for _, m := range b.msgs {
		if here[m.seq] {
			b.msgs[n] = m
			n++
		} else {
			rest.msgs = append(rest.msgs, m)
		}
	}
	clear(b.msgs[n:])
	b.msgs = b.msgs[:n]
	return rest
}

// Engine is one client's session. It is not safe for concurrent use: the
// driver serialises every call.
type Engine struct {
	cfg Config
	log Logger

	key      store.Key // the session loaded
	loaded   bool      // a session has been loaded (Load)
	nextSeq  uint64
	haveMeta bool
	meta     Meta
	metaAt   int64 // unix ms the meta record was last written
	// sentQueued is the Meta.Sent of the last meta record queued for the
	// store, sentDurable that of the last one durable: a PUBLISH goes on
	// the wire only once its Seq is within sentDurable.
	sentQueued, sentDurable uint64
	metaSeen                bool // the loaded session has a meta record, maybe corrupt
	metaSize                int  // bytes of the last meta record written
	ahead                   int  // how far Meta.Sent must run ahead, as learnt (sentAhead)
	raisedEarly             bool // Meta.Sent was last moved before a PUBLISH needed it

	msgs     outList         // outbound messages in Seq order
	byID     map[uint16]*Out // outbound messages holding a packet identifier
	ids      idSet
	inQoS2   map[uint16]uint64   // inbound QoS 2 identifiers recorded → Seq
	in2      map[uint16]*Inbound // inbound QoS 2 messages with the application, not yet recorded
	away     []*Inbound          // such messages of other servers' sessions (failover)
	waiting  []*Out              // to send on this connection, in Seq order
	waitHead int
	giveAt   int // waiting[giveAt:] have not been looked at by giveAhead
	quota    int // the server's Receive Maximum left
	peak     int // the most QoS>0 PUBLISHes in flight at once (for tests)
	lim      Limits
	conn     *connState // nil when disconnected
	gen      uint64     // generation of the last connection
	wrote    uint64     // numbered writes of every connection (numbered)
	heldPuts []store.Op // Commit's scratch: the young Puts it moves to the next batch
	young    []*Out     // and their messages
	handling int        // delivered messages not yet done with (the crash window)
	// waitingOut counts PUBLISH and PUBREL actions waiting for a batch:
	// while there are any, a PUBLISH that needs nothing from the store
	// waits too.
	waitingOut int
	// curOut: one of those waits in the batch being gathered (see
	// outInflight).
	curOut bool

	queued0     []*packets.Publish // QoS 0 published while disconnected
	tickets0    []any
	queuedBytes int

	scan scanState // a paged load, and the tail it leaves (scan.go)

	corrupt      *store.CorruptError
	corruptIDs   []uint16
	abandonedIDs []uint16 // identifiers of dropped QoS 2 messages the server may hold

	cur    batch  // the group commit being accumulated
	curGen uint32 // changes whenever cur is replaced
	// flights are the group commits being applied (Commit .. Committed),
	// oldest first: one, or up to Config.Pipeline with a store.Pipeliner.
	flights []batch
	spare   batch // an applied batch's buffers, for the next one
	failing bool  // the last commit failed; the driver is retrying

	recBufs [][]byte
	recPub  packets.Publish
	recAck  packets.Ack

	fx   []Effect                 // effects for the driver, in order
	pubs scratch[packets.Publish] // packets of the Write effects in fx
	acks scratch[packets.Ack]
}

// New returns an engine with no session loaded.
func New(cfg Config) *Engine {
	if cfg.MaxPacketID == 0 {
		cfg.MaxPacketID = 65535
	}
	if cfg.ReceiveMaximum == 0 {
		cfg.ReceiveMaximum = 65535
	}
	if cfg.CrashWindow <= 0 || cfg.CrashWindow > int(cfg.ReceiveMaximum) {
		cfg.CrashWindow = int(cfg.ReceiveMaximum)
	}
	if cfg.Log == nil {
		cfg.Log = nopLog{}
	}
	if cfg.LoadWindow <= 0 {
		cfg.LoadWindow = 1024
	}
	if cfg.LoadWindowBytes <= 0 {
		cfg.LoadWindowBytes = 8 << 20
	}
	cfg.Pipeline = max(cfg.Pipeline, 1)
	e := &Engine{cfg: cfg, log: cfg.Log, nextSeq: 1, lim: DefaultLimits()}
	e.ids.max = cfg.MaxPacketID
	e.scan.idsKnown = true // nothing is stored until a session is loaded
	e.byID = make(map[uint16]*Out)
	e.inQoS2 = make(map[uint16]uint64)
	e.in2 = make(map[uint16]*Inbound)
	return e
}

type nopLog struct{}

func (nopLog) Log(slog.Level, string, ...any) {}
func (nopLog) Flood(string, ...any)           {}

// Effects returns the effects queued so far and forgets them. The slice is
// reused by the next call: perform them before calling the engine again.
func (e *Engine) Effects() []Effect {
	fx := e.fx
	e.fx = e.fx[:0]
	e.pubs.reset()
	e.acks.reset()
	return fx
}

// scratch hands out values for the packets of Write effects, valid until
// the next Effects call, and reuses them after it.
type scratch[T any] struct {
	items []*T
	n     int
}

func (s *scratch[T]) next() *T {
	if s.n == len(s.items) {
		s.items = append(s.items, new(T))
	}
	v := s.items[s.n]
	s.n++
	return v
}

// reset makes every value reusable, keeping no more of them than a usual
// call needs: a resend can write a whole Receive Maximum at once.
func (s *scratch[T]) reset() {
	const keep = 256
	s.n = 0
	if len(s.items) > keep {
		clear(s.items[keep:])
		s.items = s.items[:keep]
	}
}

// Send writes p (a SUBSCRIBE or UNSUBSCRIBE the driver built) on the live
// connection, in order behind every packet queued before it.
func (e *Engine) Send(p packets.Packet) {
	if e.conn != nil {
		e.emit(action{kind: actEffect, conn: e.conn, eff: Effect{Kind: Write, Packet: p}})
	}
}

// live reports whether cn is the connection in use and still open.
func (e *Engine) live(cn *connState) bool { return cn != nil && cn == e.conn && !cn.link.Closed() }

// Pending reports whether effects wait to be taken.
func (e *Engine) Pending() bool { return len(e.fx) > 0 }

func (e *Engine) effect(f Effect) { e.fx = append(e.fx, f) }

// addOp queues a store operation for the next group commit.
func (e *Engine) addOp(op store.Op) { e.cur.ops = append(e.cur.ops, op) }

// emit runs a at once when nothing waits for the store, and otherwise after
// every store change queued before it is durable.
func (e *Engine) emit(a action) {
	if e.committing() || !e.cur.empty() {
		a.after = len(e.cur.ops)
		e.cur.acts = append(e.cur.acts, a)
		e.cur.urgent = e.cur.urgent || a.kind != actFreeID
		return
	}
	e.run(&a)
}

// emitOut emits an action of the outbound flow: a PUBLISH or a PUBREL.
// One that needs nothing from the store (ready: a PUBLISH whose record,
// with its identifier, is durable already, or a QoS 0 one) goes at once,
// rather than behind deletions and acknowledgement state that have nothing
// to do with it — unless another PUBLISH or PUBREL waits for a batch: the
// outbound flow leaves in order (Seq order on a resend, MQTT-4.6.0-1).
func (e *Engine) emitOut(a action, ready bool) {
	if ready && e.waitingOut == 0 {
		e.run(&a)
		return
	}
	if ready && e.outInflight() {
		// Behind a PUBLISH or PUBREL that waits for a batch being
		// applied, and needing nothing more: it runs right after the
		// newest such batch. Queued behind the batch being gathered, it
		// would hold every later one there too, each batch becoming
		// urgent in turn.
		b := &e.flights[len(e.flights)-1]
		a.deferred, a.after = true, len(b.ops)
		e.waitingOut++
		b.acts = append(b.acts, a)
		return
	}
	if e.committing() || !e.cur.empty() {
		a.deferred = true
		e.waitingOut++
		e.curOut = true // it waits in the batch being gathered
	}
	e.emit(a)
}

// outInflight reports whether the PUBLISH and PUBREL actions waiting for
// a batch all wait for batches being applied (or one whose actions are
// being run), none for the batch being gathered: one needing nothing from
// the store then runs right after the newest batch being applied.
func (e *Engine) outInflight() bool { return e.waitingOut > 0 && !e.curOut && e.committing() }

// committing reports whether a batch is being applied.
func (e *Engine) committing() bool { return len(e.flights) > 0 }

// NeedsCommit reports whether a batch waits to be committed, and may be:
// none is being applied, or (Config.Pipeline) fewer than the pipeline
// holds, this one is urgent, and the store is not failing.
func (e *Engine) NeedsCommit() bool {
	if e.cur.empty() {
		return false
	}
	n := len(e.flights)
	return n == 0 || n < e.cfg.Pipeline && !e.failing && e.Urgent()
}

// Urgent reports whether something waits for the batch being accumulated:
// a packet or another step of a flow (any action but freeing a packet
// identifier, unless identifiers run low), a failed batch to retry, or
// a batch as large as one Apply takes. Otherwise the batch only records:
// first Puts of QoS 1 messages already sent, deletions of finished
// messages, identifiers to free. Such a batch may wait (the driver
// commits it within a few milliseconds, or at once when the application
// waits for Token.Stored): every PUBACK that comes meanwhile takes a Put
// back, so that under load most QoS 1 messages cost the store nothing
// and the store is not kept busy with writes nothing needs yet.
func (e *Engine) Urgent() bool {
	return e.cur.urgent || e.failing || len(e.cur.ops)-e.cur.dead >= MaxBatchOps || e.idsLow()
}

// Idle reports whether nothing waits for the store, or the store is
// failing (the driver retries with backoff).
func (e *Engine) Idle() bool { return (!e.committing() && e.cur.empty()) || e.failing }

// Failing reports whether the last commit failed.
func (e *Engine) Failing() bool { return e.failing }

// Commit takes the next batch for the driver to apply. The operations
// (possibly none) stay valid until Committed or CommitFailed reports on
// the batch. With Config.Pipeline, Commit may be called again while
// batches are being applied (whenever NeedsCommit says so): each of
// Committed and CommitFailed then reports on the oldest batch taken, and
// the store must apply the batches in the order taken, each only if every
// one before it was applied (store.Pipeliner).
//
// The first Put of a QoS 1 message that holds its packet identifier
// (young) waits for the next batch, once: its PUBLISH does not need it —
// it went out before it, waits only for the meta record's bound on what
// was sent, or waits in the queue for a slot — and its PUBACK usually
// comes before the next batch is taken, and then takes the Put back
// (unput), so that under load most QoS 1 messages cost the store
// nothing. Nothing waits for that record but Token.Stored: until the
// record is durable or the PUBACK is in, the message is still the
// application's (see mayLeave). While the store fails, nothing moves.
func (e *Engine) Commit() []store.Op {
	b := e.cur
	e.cur, e.spare = e.spare, batch{}
	e.curGen++
	young := e.takeYoung(&b)
	b.compact()
	// The outbound actions waiting are all in the batches being applied,
	// unless this one is split.
	e.curOut = false
	if len(b.ops) > MaxBatchOps {
		e.cur = b.split(MaxBatchOps) // next, before anything queued later
		e.curOut = e.waitingOut > 0
	}
	for i, m := range young {
		e.cur.ops = append(e.cur.ops, e.heldPuts[i])
		m.putGen, m.putAt = e.curGen, uint16(min(len(e.cur.ops)-1, noPutAt))
		e.cur.msgs = append(e.cur.msgs, m)
	}
	clear(e.heldPuts)
	clear(young)
	e.heldPuts = e.heldPuts[:0]
	e.flights = append(e.flights, b)
	return b.ops
}

// takeYoung takes the first Puts of the young messages out of b, which
// Commit has just taken, into heldPuts, in order, and returns their
// messages. No action of b waits for them: a QoS 1 PUBLISH needs no
// record, and no other message's step needs this one's.
func (e *Engine) takeYoung(b *batch) []*Out {
	young := e.young[:0]
	n := 0
	for _, m := range b.msgs {
		if m.young {
			m.young = false
			if !m.done && !e.failing && m.puts == 1 && m.putGen == e.curGen-1 && m.putAt != noPutAt &&
				isPutOf(&b.ops[m.putAt], m) {
				op := &b.ops[m.putAt]
				e.heldPuts = append(e.heldPuts, *op)
				*op = store.Op{}
				b.dead++
				young = append(young, m)
				continue
			}
		}
		b.msgs[n] = m
		n++
	}
	clear(b.msgs[n:])
	b.msgs = b.msgs[:n]
	e.young = young
	return young
}

// isPutOf reports whether op is a Put of m's record.
func isPutOf(op *store.Op, m *Out) bool {
	return op.Kind == store.OpPut && op.Record.Dir == store.Outbound && op.Record.Seq == m.seq
}

// Committed reports that the oldest batch Commit returned is durable: the
// actions that waited for it run.
func (e *Engine) Committed() {
	b := &e.flights[0]
	for i := range b.ops {
		op := &b.ops[i]
		if op.Kind != store.OpPut {
			continue
		}
		switch op.Record.Dir {
		case store.Meta:
			if sent, ok := sentOf(op.Record.Packet); ok {
				e.sentDurable = max(e.sentDurable, sent)
			}
		case store.Outbound:
			if m := e.msgs.find(op.Record.Seq); m != nil && m.puts > 0 {
				m.puts--
				m.bare = m.bare && op.Record.ID == 0
			}
		}
	}
	e.recycle(b.ops)
	for _, m := range b.msgs {
		m.stored = true
		if t := m.ticket(); t != nil {
			e.effect(Effect{Kind: Stored, Ticket: t})
		}
	}
	e.failing = false
	done := *b
	n := copy(e.flights, e.flights[1:])
	e.flights[n] = batch{}
	e.flights = e.flights[:n]
	for i := range done.acts {
		e.run(&done.acts[i])
	}
	done.reset()
	e.spare = done
}

// CommitFailed reports that the oldest batch Commit returned failed with
// err. The batches taken after it failed with it, applied or not: the
// driver drops them, and takes no batch before their store calls have
// ended. Messages whose first record was in one of them fail with err,
// and were never sent — but for a QoS 1 message whose PUBLISH left
// alongside its record (mayLeave): that one may still reach the server,
// which at least once allows. The batch may still have been applied (a
// store whose reply was lost, such as Redis), so the retry starts by
// deleting those records, and their packet identifiers are freed only
// once that deletion is durable: a later connection or process never
// sends a message whose publish failed, and no identifier is held by two
// records. The batch's
// other operations and its actions go back to the front of the queue: the
// session in memory stays the truth and the store catches up. The
// connection is ended, since packets that waited for the batch were not
// sent; the next connection resends.
func (e *Engine) CommitFailed(err error) {
	flights := e.flights
	e.flights = nil
	e.failing = true
	failed := map[uint64]bool{}
	var undo []store.Op
	var freeIDs []action
	nops, nacts := len(e.cur.ops), len(e.cur.acts)
	for i := range flights {
		b := &flights[i]
		nops, nacts = nops+len(b.ops), nacts+len(b.acts)
		for _, m := range b.msgs {
			if m.done {
				continue
			}
			failed[m.seq] = true
			m.done = true
			e.untrack(m)
			undo = append(undo, store.Delete(m.seq))
			if m.id != 0 {
				delete(e.byID, m.id)
				freeIDs = append(freeIDs, action{kind: actFreeID, id: m.id})
			}
			e.complete(m, err)
		}
	}
	// A batch after the first may still be on its way to the store: its
	// buffers are left to it, not reused.
	ops := make([]store.Op, 0, len(undo)+nops)
	ops = append(ops, undo...)
	for i := range flights {
		for _, op := range flights[i].ops {
			if !failed[op.Record.Seq] {
				ops = append(ops, op)
			}
		}
	}
	for _, op := range e.cur.ops {
		if op.Kind != 0 && !failed[op.Record.Seq] {
			ops = append(ops, op)
		}
	}
	acts := make([]action, 0, nacts+len(freeIDs))
	for i := range flights {
		acts = append(acts, flights[i].acts...)
	}
	acts = append(append(acts, freeIDs...), e.cur.acts...)
	for i := range acts {
		acts[i].after = len(ops) // after the whole retry: the order is rebuilt
	}
	var msgs []*Out
	for _, m := range e.cur.msgs {
		if !failed[m.seq] {
			msgs = append(msgs, m)
		}
	}
	e.cur = batch{ops: ops, acts: acts, msgs: msgs, urgent: true}
	e.curGen++
	e.curOut = e.waitingOut > 0
	if cn := e.conn; cn != nil {
		e.effect(Effect{Kind: Fail, Conn: cn.gen, Err: err})
	}
}

// run performs one action whose store dependencies are durable.
func (e *Engine) run(a *action) {
	if a.deferred {
		a.deferred = false
		e.waitingOut--
	}
	switch a.kind {
	case actEffect:
		if a.eff.Kind == Write {
			if !e.live(a.conn) {
				return // that connection is gone; the next one resends
			}
			a.eff.Conn, a.eff.Num = a.conn.gen, e.numbered(a.conn)
		}
		e.effect(a.eff)
	case actPublish:
		e.writePublish(a.conn, a.m)
	case actPublish0:
		e.writePublish0(a.conn, a.eff.Packet.(*packets.Publish), a.eff.Ticket)
	case actAck:
		if !e.live(a.conn) {
			return
		}
		ack := e.acks.next()
		*ack = packets.Ack{Kind: a.pkt, PacketID: a.id, ReasonCode: a.code}
		e.effect(Effect{Kind: Write, Conn: a.conn.gen, Num: e.numbered(a.conn), Packet: ack})
	case actFreeID:
		e.freeID(a.id)
	case actInDone:
		e.inboundDone(a.in)
	}
}

// recycle keeps the record buffers of an applied batch for later records:
// a store never retains the caller's slices once Apply has returned.
func (e *Engine) recycle(ops []store.Op) {
	for i := range ops {
		if r := &ops[i].Record; ops[i].Kind == store.OpPut && r.Dir == store.Outbound {
			e.keepBuf(r.Packet)
		}
	}
}

// keepBuf keeps the buffer of an outbound record no store holds, unless
// it is large or enough are kept.
func (e *Engine) keepBuf(b []byte) {
	if cap(b) <= 4096 && len(e.recBufs) < 4096 {
		e.recBufs = append(e.recBufs, b[:0])
	}
}

func (e *Engine) recBuf() []byte {
	if n := len(e.recBufs); n > 0 {
		b := e.recBufs[n-1]
		e.recBufs = e.recBufs[:n-1]
		return b
	}
	return nil
}

// TypeName returns the name of a packet type, for errors and logs.
func TypeName(t packets.Type) string {
	names := [...]string{"", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL",
		"PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP",
		"DISCONNECT", "AUTH"}
	if int(t) < len(names) && t > 0 {
		return names[t]
	}
	return fmt.Sprintf("packet type %d", t)
}
