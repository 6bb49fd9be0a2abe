package sim

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// Options shape one simulated run. Random draws from the seed fill in the
// client's and the broker's configuration, so every seed explores its own
// combination.
type Options struct {
	Seed  uint64
	Steps int // steps of traffic and faults, before the drain
	// Trace keeps a readable record of every step, for a failing seed.
	Trace bool
}

// Failure is a broken invariant: the step it was found at, what broke, and
// the trace of the run when Options.Trace was set.
type Failure struct {
	Seed  uint64
	Step  int
	Msg   string
	Trace []string
}

func (f *Failure) Error() string { return fmt.Sprintf("seed %d, step %d: %s", f.Seed, f.Step, f.Msg) }

// Stats is what a run did.
type Stats struct {
	Steps, Published, Injected, Cuts, Crashes, Restarts, CommitFailures, Connects int
	// Overlapped counts batches begun while others were on their way;
	// FailedApplied, failed batches the store applied all the same.
	Overlapped, FailedApplied int
}

// link is the engine's view of one simulated connection.
type link struct{ closed bool }

func (l *link) Closed() bool { return l.closed }

// ticket is one publish of the application, in one process life.
type ticket struct {
	payload string
	qos     byte
	life    int
	done    bool
	err     error
	stored  bool
}

// outMsg is what the application knows of one of its messages, across
// process lives.
type outRec struct {
	qos    byte
	stored bool // its record became durable (the application may forget it)
	okDone bool // a publish of it completed with success
	lost   bool // reported lost with the session (Session Present 0)
	failed bool // its publish failed before it was stored
	big    bool // larger than the server's maximum: it must fail, never arrive
	// resurrected: reported lost with a session the server no longer had,
	// then resent by the next process, because the process stopped before
	// the discard was durable — the documented window in which a message
	// of a lost session may arrive twice.
	resurrected int
	// maybeSent: loaded from the store with a packet identifier, which
	// the client must take for sent (it cannot know).
	maybeSent bool
	// moved: sent to one server, then moved to another's session by a
	// failover: at least once, so a QoS 2 message may arrive twice.
	moved int
}

// inRec is one message the broker sent to the client.
type inRec struct {
	qos        byte
	deliveries int
	lastLife   int // the process life it was last delivered in
	quirkUsed  int // repeats the broker's PublishAfterPubrel quirk explains
	// unrecorded: acknowledged after a failover, its record could not be
	// written to the session it came from, so it may come once more.
	unrecorded int
}

// frame is a packet in flight, encoded.
type frame struct {
	b       []byte
	num     uint64 // the engine's numbered write, 0 for none
	payload string // of a QoS>0 PUBLISH
	id      uint16
}

type staleKey struct {
	server string
	seq    uint64
}

// world is one simulated run.
type world struct {
	opts  Options
	rnd   *rand.Rand
	step  int
	stats Stats
	trace []string

	cfg     engine.Config
	bcfg    Config
	brokers []*Broker // one, or two for a client with two servers (failover)
	srv     int       // the server the client uses
	broker  *Broker   // brokers[srv]

	// The store: what is durable per session key, and the batch being
	// applied.
	durable    map[string]map[uint64]store.Record // by Key.Server
	committing bool
	slowStore  bool // a seed whose store commits seldom: the process runs ahead of it
	// lazy: a seed whose committer seldom takes a batch nothing waits for
	// (engine.Urgent), as the client's holds one back for a while.
	lazy       bool
	qos1Mostly bool // a seed publishing mostly at QoS 1, which does not wait for the store
	// flights: the batches the engine handed over (Commit) and the store
	// has not yet applied, oldest first, so that what the process does
	// meanwhile accumulates in the next one, as with the client's
	// committer and a slow store. committing with no flights: the
	// committer was woken but has not taken its batch yet. pipe: how many
	// batches may be on their way at once (store.Pipeliner).
	flights [][]store.Op
	pipe    int
	// moving: a failover's move is being committed. Its batch failing yet
	// applied, then a crash before the retry, leaves a message in both
	// sessions (a known window: see failover), so the model of a batch
	// applied despite its error is off for it.
	moving     bool
	storeFails bool // the store fails writes for a while
	// paged: the process loads its session in pages (store.Scanner) and
	// keeps at most LoadWindow queued messages in memory; tailReq is the
	// ReadTail the engine asked for, not yet served.
	paged   bool
	tailReq *engine.Effect
	read    *pageRead // a page read from the store, not yet handed to the engine

	// The process.
	life     int
	eng      *engine.Engine
	now      time.Time
	link     *link
	toBroker []frame // handed to the network
	wbuf     []frame // written, not yet handed to the network
	handed   uint64
	toClient [][]byte
	unacked  []*engine.Inbound // delivered, the application has not acknowledged yet
	tickets  []*ticket

	// The application's knowledge, across lives.
	nextOut  int
	outs     map[string]*outRec
	nextIn   int
	ins      map[string]*inRec
	crashDup map[int]int // per ended life: messages delivered again after it

	faults bool
	// discardPending: the engine dropped a session (Session Present 0 or
	// local expiry) and the deletions may not all be durable yet;
	// discarded holds the durable records that discard deletes (a message
	// that never reached the network is kept: it is not part of the
	// session).
	discardPending bool
	discarded      map[staleKey]bool
	staleSeqs      map[staleKey]bool // records a crash in that window left behind
	acking         string            // the message being acknowledged

	everHanded map[string]bool     // outbound messages whose PUBLISH reached the network
	ids        []map[uint16]string // per server: packet identifier → the message holding it
	lastFirst  int                 // the newest outbound message the broker has received (order)
}

// Run runs one seeded simulation and returns its statistics, or the first
// invariant it found broken.
func Run(opts Options) (Stats, error) {
	w := newWorld(opts)
	err := w.run()
	return w.stats, err
}

func newWorld(opts Options) *world {
	r := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9E3779B97F4A7C15))
	w := &world{opts: opts, rnd: r, durable: map[string]map[uint64]store.Record{}, outs: map[string]*outRec{},
		ins: map[string]*inRec{}, crashDup: map[int]int{}, staleSeqs: map[staleKey]bool{}, discarded: map[staleKey]bool{},
		everHanded: map[string]bool{}, now: time.Unix(1_800_000_000, 0), faults: true}
	rm := uint16(1 + r.IntN(20))
	w.cfg = engine.Config{
		ReceiveMaximum:       rm,
		CrashWindow:          1 + r.IntN(int(rm)),
		TopicAliasMaximum:    uint16(r.IntN(4)),
		OutboundTopicAliases: r.IntN(2) == 0,
		SessionExpiry:        3600,
		MaxQueued:            1 << 30,
		MaxQueuedBytes:       1 << 40,
		MaxPacketID:          uint16(2 + r.IntN(30)),
	}
	w.bcfg = Config{
		ReceiveMaximum:    uint16(1 + r.IntN(10)),
		TopicAliasMaximum: uint16(r.IntN(3)),
		SendTopicAliases:  r.IntN(2) == 0,
	}
	if r.IntN(3) == 0 {
		w.bcfg.MaximumPacketSize = 200
	}
	w.slowStore = r.IntN(3) == 0
	w.pipe = 1
	if r.IntN(3) == 0 {
		w.pipe = 2 + r.IntN(3)
		w.cfg.Pipeline = w.pipe
	}
	if w.lazy = r.IntN(2) == 0; w.lazy && r.IntN(2) == 0 {
		// Identifiers to spare, so that freeing one is seldom urgent.
		w.cfg.MaxPacketID = uint16(100 + r.IntN(100))
	}
	if r.IntN(2) == 0 {
		// Meta.Sent close behind: identifiers given ahead lie beyond it.
		w.cfg.SentAhead = uint64(1 + r.IntN(4))
	}
	if w.paged = r.IntN(3) != 0; w.paged {
		w.cfg.LoadWindow = 1 + r.IntN(6)
		if r.IntN(2) == 0 {
			w.cfg.LoadWindowBytes = 150 + r.IntN(400) // a message or a few
		}
	}
	if w.qos1Mostly = r.IntN(3) == 0; w.qos1Mostly && r.IntN(2) == 0 {
		// Room in the server's window: a QoS 1 PUBLISH leaves as it is
		// published, and its PUBACK may overtake its record.
		w.bcfg.ReceiveMaximum = 100
		w.cfg.MaxPacketID = 200
	}
	w.bcfg.Quirks.IgnoreClientReceiveMaximum = r.IntN(3) == 0
	w.bcfg.Quirks.PublishAfterPubrel = r.IntN(3) == 0
	servers := 1
	if r.IntN(3) == 0 {
		servers = 2
		w.bcfg.AcceptStrayPubrel = true
		w.bcfg.PayloadsRepeat = true
	}
	for i := range servers {
		w.brokers = append(w.brokers, New(w.bcfg, rand.New(rand.NewPCG(opts.Seed+1+uint64(i), opts.Seed+2))))
		w.ids = append(w.ids, map[uint16]string{})
		w.durable[serverName(i)] = map[uint64]store.Record{}
	}
	w.broker = w.brokers[0]
	w.boot()
	return w
}

func serverName(i int) string { return "mqtt://sim" + strconv.Itoa(i) + ":1883" }

func keyOf(i int) store.Key { return store.Key{Server: serverName(i), ClientID: "sim"} }

// records returns the durable session of server i, in Seq order, as a
// process loading it would.
func (w *world) records(i int) []store.Record {
	db := w.durable[serverName(i)]
	meta, haveMeta := w.durableMeta(db)
	recs := make([]store.Record, 0, len(db))
	for _, r := range db {
		recs = append(recs, r)
		if r.Dir == store.Outbound && engine.MaybeSent(meta, haveMeta, r) {
			if pr, err := engine.ParseRecord(r); err == nil && pr.Pub != nil {
				if o := w.outs[payloadKey(pr.Pub.Payload)]; o != nil {
					o.maybeSent = true
				}
			}
		}
	}
	slices.SortFunc(recs, func(a, b store.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return recs
}

func (w *world) logf(format string, args ...any) {
	if w.opts.Trace {
		w.trace = append(w.trace, fmt.Sprintf("%6d life %d  ", w.step, w.life)+fmt.Sprintf(format, args...))
	}
}

func (w *world) fail(format string, args ...any) error {
	f := &Failure{Seed: w.opts.Seed, Step: w.step, Msg: fmt.Sprintf(format, args...)}
	if w.opts.Trace {
		f.Trace = w.trace
	}
	return f
}

// pageRead is a page the driver has read from the store and hands to the
// engine at a later step, as the client's goroutines do: meanwhile the
// engine and the store move on.
type pageRead struct {
	tail bool // a page of the tail (Tail), not of the scan (Page)
	from uint64
	recs []store.Record
	next uint64
}

// boot starts a process: a new engine that loads the durable session,
// whole or (paged) in pages until it can connect, the rest as scanStep
// comes.
func (w *world) boot() {
	w.life++
	w.eng = engine.New(w.cfg)
	recs := w.records(w.srv)
	w.tickets = nil
	w.unacked = nil
	w.committing, w.flights = false, nil
	w.tailReq, w.read = nil, nil
	if !w.paged {
		w.eng.Load(keyOf(w.srv), recs, nil)
		w.logf("boot: %d records", len(recs))
		return
	}
	w.eng.LoadStart(keyOf(w.srv), false)
	for !w.eng.CanConnect() {
		w.page()
	}
	w.logf("boot: %d records, paged", len(recs))
}

// scan reads records of the durable session of the loaded key, as
// store.Scanner does: at most limit, with Seq from from on, and where the
// next page starts (0 at the end).
func (w *world) scan(from uint64, limit int) ([]store.Record, uint64) {
	k, _ := w.eng.Loaded()
	db := w.durable[k.Server]
	var seqs []uint64
	for seq := range db {
		if seq >= from {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var next uint64
	if len(seqs) > limit {
		next, seqs = seqs[limit], seqs[:limit]
	}
	recs := make([]store.Record, len(seqs))
	for i, seq := range seqs {
		r := db[seq]
		r.Packet = slices.Clone(r.Packet)
		recs[i] = r
	}
	return recs, next
}

// page hands the engine the next page of its paged load.
func (w *world) page() {
	from, _ := w.eng.Scanning()
	recs, next := w.scan(from, 1+w.rnd.IntN(4))
	w.eng.Page(recs, nil, next)
	w.logf("page from %d: %d records, next %d", from, len(recs), next)
}

// scanStep hands the engine the page read at an earlier step, or reads
// the next page of the session's scan, or of the tail the engine asked
// for. A scan page read for a position the scan has left (a synchronous
// page came between, as Close and a failover read) is dropped, as the
// client's scanRest drops it.
func (w *world) scanStep() error {
	if rd := w.read; rd != nil {
		w.read = nil
		if rd.tail {
			w.eng.Tail(rd.from, rd.recs, rd.next)
			w.logf("tail from %d: %d records, next %d", rd.from, len(rd.recs), rd.next)
		} else if at, ok := w.eng.Scanning(); ok && at == rd.from {
			w.eng.Page(rd.recs, nil, rd.next)
			w.logf("page from %d: %d records, next %d", rd.from, len(rd.recs), rd.next)
		}
		return w.effects()
	}
	if from, ok := w.eng.Scanning(); ok {
		recs, next := w.scan(from, 1+w.rnd.IntN(4))
		w.read = &pageRead{from: from, recs: recs, next: next}
		return nil
	}
	if f := w.tailReq; f != nil {
		w.tailReq = nil
		recs, next := w.scan(f.Num, f.Limit)
		w.read = &pageRead{tail: true, from: f.Num, recs: recs, next: next}
	}
	return nil
}

// loadAll ends the scan and reads the whole tail, as the client does
// before a failover.
func (w *world) loadAll() error {
	for {
		if _, ok := w.eng.Scanning(); ok {
			w.page()
		} else if from, ok := w.eng.TailFrom(); ok {
			recs, next := w.scan(from, 1+w.rnd.IntN(4))
			w.eng.Tail(from, recs, next)
		} else {
			w.tailReq = nil
			return w.effects()
		}
		if err := w.effects(); err != nil {
			return err
		}
	}
}

func (w *world) run() error {
	for w.step = 1; w.step <= w.opts.Steps; w.step++ {
		if err := w.chaosStep(); err != nil {
			return err
		}
		if err := w.check(); err != nil {
			return err
		}
	}
	return w.drain()
}

// chaosStep takes one random step: traffic, progress or a fault.
func (w *world) chaosStep() error {
	w.stats.Steps++
	w.now = w.now.Add(time.Duration(w.rnd.IntN(50)) * time.Millisecond)
	switch n := w.rnd.IntN(100); {
	case n < 12:
		return w.publish()
	case n < 20:
		return w.inject()
	case n < 35:
		if w.slowStore && w.rnd.IntN(8) != 0 {
			break
		}
		return w.commitStep()
	case n < 45:
		return w.hand()
	case n < 60:
		return w.toBrokerStep()
	case n < 75:
		return w.toClientStep()
	case n < 85:
		return w.ackStep()
	case n < 88:
		if w.faults {
			return w.cut("cut")
		}
	case n < 89:
		if w.faults && w.rnd.IntN(3) == 0 {
			return w.crash()
		}
	case n < 90:
		if w.faults && w.rnd.IntN(4) == 0 {
			return w.restartBroker()
		}
	case n < 91:
		if w.faults {
			w.storeFails = !w.storeFails && w.rnd.IntN(3) == 0
		}
	case n < 92:
		if w.faults && w.rnd.IntN(3) == 0 {
			return w.close()
		}
	case n < 94:
		if w.faults {
			return w.bogusAck()
		}
	case n < 96:
		if w.rnd.IntN(2) == 0 {
			return w.failover()
		}
	case n < 97:
		if w.faults && w.rnd.IntN(4) == 0 {
			return w.leaseLost()
		}
	case n < 98:
		if w.faults && w.rnd.IntN(2) == 0 {
			return w.badAlias()
		}
	case n < 99:
		return w.scanStep()
	default:
		return w.connectStep()
	}
	return w.effects()
}

// drain stops the faults and runs until every exchange has ended, then
// checks what must hold at rest.
func (w *world) drain() error {
	w.faults = false
	w.storeFails = false
	for i := 0; i < 200_000; i++ {
		w.step++
		w.stats.Steps++
		if w.quiet() {
			other := 1 - w.srv
			if len(w.brokers) < 2 || !w.pendingAt(other) {
				return w.final()
			}
			if err := w.disconnect(); err != nil {
				return err
			}
			if err := w.waitIdle(); err != nil {
				return err
			}
			if err := w.failover(); err != nil {
				return err
			}
			continue
		}
		var err error
		switch {
		case w.rnd.IntN(4) == 0:
			err = w.scanStep()
		case w.link == nil:
			if err = w.connectStep(); err == nil && w.link == nil {
				err = w.commitStep()
			}
		case w.rnd.IntN(2) == 0:
			err = w.commitStep()
		default:
			switch w.rnd.IntN(4) {
			case 0:
				err = w.hand()
			case 1:
				err = w.toBrokerStep()
			case 2:
				err = w.toClientStep()
			default:
				err = w.ackStep()
			}
		}
		if err == nil {
			err = w.check()
		}
		if err != nil {
			return err
		}
	}
	return w.fail("no quiescence after 200,000 drain steps: %d unacknowledged at the broker, %d tickets open, link up %v, commit pending %v",
		w.broker.Unacked(), w.openTickets(), w.link != nil, w.eng.NeedsCommit() || w.committing)
}

func (w *world) openTickets() int {
	n := 0
	for _, t := range w.tickets {
		if !t.done {
			n++
		}
	}
	return n
}

// quiet reports whether nothing is left to do.
func (w *world) quiet() bool {
	_, scanning := w.eng.Scanning()
	_, tail := w.eng.TailFrom()
	return !scanning && !tail && w.read == nil && w.link != nil && !w.link.closed && !w.committing && !w.eng.NeedsCommit() && len(w.wbuf) == 0 &&
		len(w.toBroker) == 0 && len(w.toClient) == 0 && len(w.unacked) == 0 && w.broker.Unacked() == 0 &&
		w.openTickets() == 0
}

func (w *world) publish() error {
	if _, ok := w.eng.Scanning(); ok {
		return nil // the client's Publish waits for the scan's end
	}
	w.nextOut++
	payload := "o" + strconv.Itoa(w.nextOut)
	qos := byte(1 + w.rnd.IntN(2))
	if w.qos1Mostly && w.rnd.IntN(10) != 0 {
		qos = 1
	}
	if w.rnd.IntN(10) == 0 {
		qos = 0
	}
	body := []byte(payload)
	if w.bcfg.MaximumPacketSize != 0 && w.rnd.IntN(30) == 0 {
		body = append(body, make([]byte, 300)...) // too large for this broker
	}
	p := &packets.Publish{Topic: "t/" + strconv.Itoa(w.rnd.IntN(5)), QoS: qos, Payload: body}
	t := &ticket{payload: payload, qos: qos, life: w.life}
	w.tickets = append(w.tickets, t)
	w.stats.Published++
	if qos == 0 {
		if !w.eng.Publish0(p, t, false) {
			t.done, t.err = true, engine.ErrNotConnected
		}
		w.logf("publish %s QoS 0", payload)
		return w.effects()
	}
	w.outs[payload] = &outRec{qos: qos, big: len(body) > 200}
	w.eng.Publish(new(engine.Msg), p, "", t)
	w.logf("publish %s QoS %d (%d bytes)", payload, qos, len(body))
	return w.effects()
}

func (w *world) inject() error {
	w.nextIn++
	payload := "i" + strconv.Itoa(w.nextIn)
	qos := byte(w.rnd.IntN(3))
	if qos > 0 {
		w.ins[payload] = &inRec{qos: qos}
	}
	w.stats.Injected++
	w.logf("inject %s QoS %d", payload, qos)
	b := w.brokers[w.rnd.IntN(len(w.brokers))]
	pkts := b.Inject("t/in", []byte(payload), qos)
	if b == w.broker {
		w.sendToClient(pkts)
	}
	return nil
}

// waitIdle commits until every batch is durable or the store fails, as
// the client's waitIdle does.
func (w *world) waitIdle() error {
	for !w.eng.Idle() {
		w.committing = true
		if err := w.commitStep(); err != nil {
			return err
		}
	}
	return nil
}

// takeBatch returns the oldest batch to apply now, taking it from the
// engine unless it was taken already.
func (w *world) takeBatch() []store.Op {
	if len(w.flights) == 0 {
		return w.eng.Commit()
	}
	ops := w.flights[0]
	w.flights = w.flights[1:]
	return ops
}

// commitStep starts or ends a store batch, or (pipe) begins another one
// while earlier ones are on their way.
func (w *world) commitStep() error {
	if !w.committing {
		if !w.eng.NeedsCommit() || w.lazy && !w.eng.Urgent() && w.rnd.IntN(6) != 0 {
			return nil
		}
		w.committing = true
		if w.rnd.IntN(2) == 0 {
			w.flights = append(w.flights, w.eng.Commit())
		}
		return nil
	}
	if n := len(w.flights); n > 0 && n < w.pipe && w.eng.NeedsCommit() && w.rnd.IntN(3) != 0 {
		w.flights = append(w.flights, w.eng.Commit())
		w.stats.Overlapped++
		w.logf("commit of %d ops begun, %d before it", len(w.flights[n]), n)
		return nil
	}
	ops := w.takeBatch()
	if w.storeFails && w.rnd.IntN(2) == 0 {
		// The batch may have been applied all the same (a reply lost),
		// and then so may some of those begun after it, in order.
		applied := !w.moving && w.rnd.IntN(4) == 0
		if applied {
			w.stats.FailedApplied++
			w.apply(ops)
			for _, later := range w.flights {
				if w.rnd.IntN(2) == 0 {
					break
				}
				w.apply(later)
			}
		}
		w.committing, w.flights = false, nil
		w.stats.CommitFailures++
		w.logf("commit of %d ops fails (applied %v)", len(ops), applied)
		w.eng.CommitFailed(errors.New("sim: store down"))
		return w.effects()
	}
	w.apply(ops)
	w.committing = len(w.flights) > 0
	w.logf("commit %d ops", len(ops))
	w.eng.Committed()
	err := w.effects()
	if _, scanning := w.eng.Scanning(); !w.eng.NeedsCommit() && !scanning {
		// The scan deletes the discarded session's inbound records it
		// has not reached yet as it reaches them.
		w.discardPending = false
		clear(w.discarded)
	}
	return err
}

func (w *world) apply(ops []store.Op) {
	k, _ := w.eng.Loaded()
	w.applyTo(k, ops)
}

func (w *world) applyTo(k store.Key, ops []store.Op) {
	db := w.durable[k.Server]
	for _, op := range ops {
		if op.Kind == store.OpPut {
			r := op.Record
			r.Packet = slices.Clone(r.Packet)
			db[r.Seq] = r
			if r.Dir == store.Outbound {
				if pr, err := engine.ParseRecord(r); err == nil && pr.Pub != nil {
					if o := w.outs[payloadKey(pr.Pub.Payload)]; o != nil {
						o.stored = true
					}
				}
			}
		} else {
			delete(db, op.Record.Seq)
		}
	}
}

// payloadKey is the message name at the start of a payload.
func payloadKey(b []byte) string {
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// hand gives what the client wrote to the network.
func (w *world) hand() error {
	if len(w.wbuf) == 0 {
		return nil
	}
	for _, x := range w.wbuf {
		if x.num != 0 {
			w.handed = x.num
		}
		if x.payload != "" {
			w.everHanded[x.payload] = true
			if err := w.idInUse(x.id, x.payload); err != nil {
				return err
			}
		}
	}
	w.toBroker = append(w.toBroker, w.wbuf...)
	w.wbuf = w.wbuf[:0]
	return nil
}

func (w *world) toBrokerStep() error {
	if len(w.toBroker) == 0 || w.link == nil {
		return nil
	}
	x := w.toBroker[0]
	w.toBroker = w.toBroker[1:]
	p, err := packets.Decode(x.b, 0)
	if err != nil {
		return w.fail("the client wrote an undecodable packet: %v", err)
	}
	w.logf("→ %s", describe(p))
	first := ""
	if pub, ok := p.(*packets.Publish); ok && pub.QoS > 0 && w.received(payloadKey(pub.Payload)) == 0 {
		first = payloadKey(pub.Payload)
	}
	w.sendToClient(w.broker.Receive(p))
	if first != "" && w.received(first) > 0 {
		if err := w.inOrder(first); err != nil {
			return err
		}
	}
	if !w.broker.Connected() {
		return w.cut("broker closed")
	}
	return nil
}

func (w *world) sendToClient(ps []packets.Packet) {
	for _, p := range ps {
		b, err := packets.Append(nil, p)
		if err != nil {
			panic(fmt.Sprintf("sim: the broker model built a bad packet: %v", err))
		}
		if w.link != nil {
			w.toClient = append(w.toClient, b)
		}
	}
}

func (w *world) toClientStep() error {
	if len(w.toClient) == 0 || w.link == nil {
		return nil
	}
	b := w.toClient[0]
	if _, ok := w.eng.Scanning(); ok {
		// The driver holds inbound PUBLISH and PUBREL packets, and what
		// follows them, until the scan has read every inbound record.
		if t := packets.Type(b[0] >> 4); t == packets.PUBLISH || t == packets.PUBREL {
			return nil
		}
	}
	w.toClient = w.toClient[1:]
	p, err := packets.Decode(b, 0)
	if err != nil {
		return w.fail("broker packet undecodable: %v", err)
	}
	w.logf("← %s", describe(p))
	switch p := p.(type) {
	case *packets.Publish:
		if err := w.eng.Resolve(p); err != nil {
			return w.fail("client refused a valid PUBLISH: %v", err)
		}
		key := payloadKey(p.Payload)
		if p.QoS == 0 {
			return nil
		}
		if err := w.eng.Arrived(&engine.Inbound{App: key, QoS: p.QoS, ID: p.PacketID, Dup: p.Dup, Cost: len(p.Payload)}); err != nil {
			var pe *engine.ProtocolError
			if errors.As(err, &pe) && pe.Code == packets.ReceiveMaximumExceeded && w.bcfg.Quirks.IgnoreClientReceiveMaximum {
				return w.cut("receive maximum exceeded")
			}
			return w.fail("client refused a PUBLISH: %v", err)
		}
	case *packets.Ack:
		if p.Kind == packets.PUBACK || p.Kind == packets.PUBCOMP || (p.Kind == packets.PUBREC && p.ReasonCode.IsError()) {
			delete(w.ids[w.srv], p.PacketID)
		}
		w.eng.Received(p)
	case *packets.Disconnect:
		return w.cut("server DISCONNECT " + p.ReasonCode.String())
	}
	return w.effects()
}

// ackStep acknowledges one delivered message, in any order, sometimes after
// its connection has gone.
func (w *world) ackStep() error {
	if len(w.unacked) == 0 {
		return nil
	}
	i := w.rnd.IntN(len(w.unacked))
	in := w.unacked[i]
	w.unacked = slices.Delete(w.unacked, i, i+1)
	w.acking = in.App.(string)
	err := w.eng.Ack(in)
	w.logf("ack %v: %v", in.App, err)
	if err != nil && !errors.Is(err, engine.ErrNotConnected) && !errors.Is(err, engine.ErrSessionLost) {
		return w.fail("ack: %v", err)
	}
	return w.effects()
}

// effects performs what the engine asked for.
func (w *world) effects() (err error) {
	// Nothing below may call the engine while its effects are read (they
	// share its buffer): a connection to end is ended after the loop.
	var failed error
	defer func() {
		if failed != nil && err == nil {
			err = w.cut("engine: " + failed.Error())
		}
	}()
	for _, f := range w.eng.Effects() {
		switch f.Kind {
		case engine.Write, engine.Publish0:
			if w.link == nil || w.link.closed || f.Conn != w.eng.Generation() {
				if f.Kind == engine.Publish0 {
					if err := w.complete(f.Ticket.(*ticket), engine.ErrNotConnected); err != nil {
						return err
					}
				}
				continue
			}
			if err := w.durableFirst(f.Packet); err != nil {
				return err
			}
			b, err := packets.Append(nil, f.Packet)
			if err != nil {
				return w.fail("encode %T: %v", f.Packet, err)
			}
			if lim := w.bcfg.MaximumPacketSize; lim != 0 && len(b) > int(lim) {
				return w.fail("packet of %d bytes exceeds the server's maximum %d", len(b), lim)
			}
			fr := frame{b: b, num: f.Num}
			if p, ok := f.Packet.(*packets.Publish); ok && p.QoS > 0 {
				fr.payload, fr.id = payloadKey(p.Payload), p.PacketID
			}
			w.wbuf = append(w.wbuf, fr)
			if f.Kind == engine.Publish0 {
				if err := w.complete(f.Ticket.(*ticket), nil); err != nil {
					return err
				}
			}
		case engine.Deliver:
			key := f.In.App.(string)
			r := w.ins[key]
			if r == nil {
				return w.fail("delivered %s, which the broker never sent", key)
			}
			r.deliveries++
			if r.deliveries > 1 && r.qos == 2 {
				// A QoS 2 message comes again only as the copy a quirky
				// broker sends after its PUBREL, or after a crash ended
				// the life it was handled in, within the crash window.
				switch {
				case r.quirkUsed < w.afterPubrel(key):
					r.quirkUsed++
				case r.unrecorded > 0:
					r.unrecorded--
				case r.lastLife == w.life:
					return w.fail("QoS 2 message %s delivered twice in one process life", key)
				default:
					w.crashDup[r.lastLife]++
					if w.crashDup[r.lastLife] > w.cfg.CrashWindow {
						return w.fail("%d messages delivered again after the crash ending life %d, crash window %d",
							w.crashDup[r.lastLife], r.lastLife, w.cfg.CrashWindow)
					}
				}
			}
			r.lastLife = w.life
			w.unacked = append(w.unacked, f.In)
			w.logf("deliver %s", key)
		case engine.Complete:
			if err := w.complete(f.Ticket.(*ticket), f.Err); err != nil {
				return err
			}
		case engine.Stored:
			t := f.Ticket.(*ticket)
			t.stored = true
			if !w.isDurable(t.payload) {
				// Token.Stored hands the message over to the store: a
				// crash from here on must not lose it.
				return w.fail("Stored reported for message %s whose record is not durable", t.payload)
			}
		case engine.ReadTail:
			if w.tailReq != nil {
				return w.fail("ReadTail from %d while one from %d is out", f.Num, w.tailReq.Num)
			}
			f := f
			w.tailReq = &f
		case engine.Fail:
			failed = f.Err
		case engine.StoreAt:
			if !w.storeFails {
				w.applyTo(f.Key, f.Ops)
				w.logf("stored %d ops at %s", len(f.Ops), f.Key.Server)
			} else if r := w.ins[w.acking]; r != nil {
				r.unrecorded++ // its redelivery is delivered again, as the client logs
				w.logf("could not store %d ops at %s", len(f.Ops), f.Key.Server)
			}
		}
	}
	return nil
}

// inOrder checks that the first arrival of outbound QoS 1 and 2 messages
// at the broker follows the order they were published in (MQTT-4.6.0-1
// and §4.6: resends in order, and no new message before them). Failover
// between servers and a lost session's messages sent again are the
// exceptions, as documented.
func (w *world) inOrder(key string) error {
	if len(w.brokers) > 1 {
		return nil
	}
	if o := w.outs[key]; o == nil || o.resurrected > 0 {
		return nil
	}
	n, _ := strconv.Atoi(key[1:])
	if n < w.lastFirst {
		return w.fail("message %s reached the broker after o%d, published later", key, w.lastFirst)
	}
	w.lastFirst = n
	return nil
}

// idInUse checks that a PUBLISH does not reuse a packet identifier another
// message still holds at this server (MQTT-2.2.1-3: until PUBACK, PUBCOMP
// or a PUBREC with an error code), QoS 1 included, which a broker cannot
// tell.
func (w *world) idInUse(id uint16, payload string) error {
	if prev, ok := w.ids[w.srv][id]; ok && prev != payload {
		return w.fail("PUBLISH %s reuses packet identifier %d, still held by %s", payload, id, prev)
	}
	w.ids[w.srv][id] = payload
	return nil
}

// durableMeta returns the meta record of a durable session (the zero Meta
// if it cannot be read), and whether there is one.
func (w *world) durableMeta(db map[uint64]store.Record) (engine.Meta, bool) {
	r, ok := db[store.MetaSeq]
	if !ok {
		return engine.Meta{}, false
	}
	m, _ := engine.DecodeMeta(r.Packet)
	return m, true
}

// isDurable reports whether the loaded session's store holds the PUBLISH
// record of the message with payload key. (Stored comes with a message's
// first record, its PUBLISH: a PUBREL replaces it only later.)
func (w *world) isDurable(key string) bool {
	k, _ := w.eng.Loaded()
	for _, rec := range w.durable[k.Server] {
		if rec.Dir != store.Outbound {
			continue
		}
		if pr, err := engine.ParseRecord(rec); err == nil && pr.Pub != nil && payloadKey(pr.Pub.Payload) == key {
			return true
		}
	}
	return false
}

// durableFirst checks, as a packet goes on the wire, that the store change
// it depends on is durable (DESIGN: what must be durable before which
// packet): a QoS>0 PUBLISH its record, a PUBREL its replacement of the
// PUBLISH, a PUBREC the inbound record, a PUBCOMP that record's deletion.
func (w *world) durableFirst(p packets.Packet) error {
	k, _ := w.eng.Loaded()
	db := w.durable[k.Server]
	find := func(dir store.Direction, id uint16) (store.Record, bool) {
		for _, r := range db {
			if r.Dir == dir && r.ID == id {
				return r, true
			}
		}
		return store.Record{}, false
	}
	switch p := p.(type) {
	case *packets.Publish:
		if p.QoS == 0 {
			return nil
		}
		key := payloadKey(p.Payload)
		r, ok := find(store.Outbound, p.PacketID)
		if p.QoS == 1 {
			// A QoS 1 PUBLISH may leave before its record is durable, but
			// not before a record of it without this identifier, and only
			// within a durable Sent, so that its record, once durable, is
			// taken for maybe sent.
			ok = false
			for _, rec := range db {
				if pr, err := engine.ParseRecord(rec); rec.Dir == store.Outbound && err == nil && pr.Pub != nil && payloadKey(pr.Pub.Payload) == key {
					if rec.ID != p.PacketID {
						return w.fail("QoS 1 PUBLISH %s id %d written while its durable record has identifier %d", key, p.PacketID, rec.ID)
					}
					r, ok = rec, true
				}
			}
			if !ok {
				seq, _ := w.eng.OutSeq(p.PacketID)
				if m, ok := w.durableMeta(db); !ok || seq > m.Sent {
					return w.fail("QoS 1 PUBLISH %s id %d (seq %d) written before a durable meta record covered it (Sent %d)", key, p.PacketID, seq, m.Sent)
				}
				return nil
			}
		}
		if pr, err := engine.ParseRecord(r); !ok || err != nil || pr.Pub == nil || payloadKey(pr.Pub.Payload) != key {
			return w.fail("PUBLISH %s id %d written before its record was durable", key, p.PacketID)
		}
		// A process loading the session after a crash must take it for
		// maybe sent.
		if m, ok := w.durableMeta(db); !engine.MaybeSent(m, ok, r) {
			return w.fail("PUBLISH %s id %d (seq %d) written before a durable meta record covered it (Sent %d)",
				key, p.PacketID, r.Seq, m.Sent)
		}
	case *packets.Ack:
		switch {
		case p.Kind == packets.PUBREL && p.ReasonCode == packets.Success:
			r, ok := find(store.Outbound, p.PacketID)
			if pr, err := engine.ParseRecord(r); !ok || err != nil || !pr.Pubrel {
				return w.fail("PUBREL id %d written before the PUBLISH→PUBREL replacement was durable", p.PacketID)
			}
		case p.Kind == packets.PUBREC && p.ReasonCode == packets.Success:
			if _, ok := find(store.Inbound, p.PacketID); !ok {
				return w.fail("PUBREC id %d written before the inbound record was durable", p.PacketID)
			}
		case p.Kind == packets.PUBCOMP:
			if _, ok := find(store.Inbound, p.PacketID); ok {
				return w.fail("PUBCOMP id %d written before the inbound record's deletion was durable", p.PacketID)
			}
		}
	}
	return nil
}

func (w *world) complete(t *ticket, err error) error {
	if t.life != w.life {
		return w.fail("a publish of an earlier process life completed")
	}
	if t.done {
		return w.fail("publish %s completed twice (%v, then %v)", t.payload, t.err, err)
	}
	t.done, t.err = true, err
	w.logf("complete %s: %v", t.payload, err)
	o := w.outs[t.payload]
	if o == nil {
		return nil
	}
	switch {
	case err == nil:
		o.okDone = true
		if w.received(t.payload) == 0 {
			return w.fail("publish %s completed but the broker never received it", t.payload)
		}
	case errors.Is(err, engine.ErrSessionLost):
		o.lost = true
	case errors.Is(err, engine.ErrPacketTooLarge):
		o.failed = true
	case errors.Is(err, errClosed), errors.Is(err, errTaken):
		// Still stored: a later process sends it.
	default:
		o.failed = true
	}
	return nil
}

// cut ends the connection: the client learns which of its writes reached
// the network, the broker sees the connection drop.
func (w *world) cut(why string) error {
	if w.link == nil {
		return nil
	}
	w.stats.Cuts++
	w.logf("cut (%s): %d writes handed", why, w.handed)
	return w.dropLink()
}

// dropLink ends the connection at both ends and tells the process, which
// lives on, which of its writes reached the network.
func (w *world) dropLink() error {
	if w.link == nil {
		return nil
	}
	w.closeLink()
	w.eng.Disconnected(w.handed, w.now)
	return w.effects()
}

// closeLink ends the connection at both ends and empties the network.
func (w *world) closeLink() {
	if w.link == nil {
		return
	}
	w.link.closed = true
	w.link = nil
	w.wbuf, w.toBroker, w.toClient = w.wbuf[:0], w.toBroker[:0], w.toClient[:0]
	w.broker.Drop()
}

// crash kills the process: the store keeps exactly the batches reported
// durable and, at random, the one being applied.
func (w *world) crash() error {
	w.stats.Crashes++
	if w.committing && w.rnd.IntN(2) == 0 {
		// The store kept the batch being applied, and maybe some of
		// those begun after it, in order.
		w.apply(w.takeBatch())
		for len(w.flights) > 0 && w.rnd.IntN(2) == 0 {
			w.apply(w.takeBatch())
		}
		w.logf("crash, with the batch in progress applied")
	} else {
		w.logf("crash")
	}
	w.markStale()
	w.closeLink() // the process stops: nobody to tell
	w.boot()
	return w.effects()
}

// close stops the process as Client.Close does: pending store writes
// finish, pending publishes fail with errClosed while their messages stay
// stored, and a new process takes over the store.
func (w *world) close() error {
	for w.eng.Discarding() {
		// The discarded session's inbound records the scan has not
		// reached yet are deleted as it reaches them: Close lets it end.
		w.page()
		if err := w.effects(); err != nil {
			return err
		}
	}
	for w.committing || w.eng.NeedsCommit() {
		if w.storeFails {
			return nil // Close waits for a store that is down no longer than its timeout; try later
		}
		w.committing = true
		if err := w.commitStep(); err != nil {
			return err
		}
	}
	w.logf("close")
	w.eng.Abort(errClosed)
	if err := w.effects(); err != nil {
		return err
	}
	w.closeLink() // the process stops: nobody to tell
	w.boot()
	return w.effects()
}

var (
	errClosed = errors.New("sim: closed")
	errTaken  = errors.New("sim: session taken")
)

// leaseLost: another process took the session over (store.Owner). This
// one's pending publishes fail while their messages stay stored, the write
// in progress is refused by the fencing token, and the new owner resumes
// from the store.
func (w *world) leaseLost() error {
	w.stats.Crashes++
	w.logf("lease lost: another process takes over")
	w.markStale()
	w.eng.Abort(errTaken)
	if err := w.effects(); err != nil {
		return err
	}
	w.closeLink() // the process stops: nobody to tell
	w.boot()
	return w.effects()
}

// badAlias makes the broker send a PUBLISH whose topic alias exceeds the
// client's Topic Alias Maximum: the client must refuse it with 0x94
// (MQTT-3.3.2-10) and end the connection.
func (w *world) badAlias() error {
	if w.link == nil {
		return nil
	}
	p := &packets.Publish{QoS: 1, PacketID: 1, Payload: []byte("bad"),
		Properties: packets.Properties{TopicAlias: w.cfg.TopicAliasMaximum + 1}}
	err := w.eng.Resolve(p)
	var pe *engine.ProtocolError
	if !errors.As(err, &pe) || pe.Code != packets.TopicAliasInvalid {
		return w.fail("a PUBLISH with topic alias %d (maximum %d) gave %v, want 0x94", p.Properties.TopicAlias, w.cfg.TopicAliasMaximum, err)
	}
	return w.cut("client refused topic alias")
}

// failover moves the client, disconnected, to the other server's session
// as the client does when a connection to its server fails: outbound
// PUBLISH messages move with it (at least once: a QoS 2 message the old
// server had may arrive twice), PUBRELs and inbound records stay with the
// old session. The old records are deleted only once the moved ones are
// durable under the new key.
func (w *world) failover() error {
	if len(w.brokers) < 2 || w.link != nil || w.committing || w.eng.NeedsCommit() {
		return nil
	}
	if err := w.loadAll(); err != nil {
		return err
	}
	// What the scan queued belongs to this session.
	if !w.eng.Idle() && w.storeFails {
		return nil
	}
	if err := w.waitIdle(); err != nil {
		return err
	}
	from, to := w.srv, 1-w.srv
	for _, m := range w.eng.Outbound() {
		if m.Pub != nil && !m.Pubrel && m.Sent {
			if o := w.outs[payloadKey(m.Pub.Payload)]; o != nil {
				o.moved++
			}
		}
	}
	mv := w.eng.Detach()
	if err := w.effects(); err != nil {
		return err
	}
	// The QoS 1 exchanges with the old server are abandoned (it keeps no
	// state for them); QoS 2 ones end with the PUBREL left in their place.
	for id, key := range w.ids[from] {
		if o := w.outs[key]; o != nil && o.qos == 1 {
			delete(w.ids[from], id)
		}
	}
	w.srv, w.broker = to, w.brokers[to]
	w.eng.Load(keyOf(to), w.records(to), nil)
	w.eng.Attach(mv)
	w.logf("failover from server %d to %d: %d messages move", from, to, mv.Len())
	if err := w.effects(); err != nil {
		return err
	}
	// As the client: until the move is durable, or failed.
	w.moving = true
	err := w.waitIdle()
	w.moving = false
	if err != nil {
		return err
	}
	if w.eng.Failing() {
		// The moved messages failed in the new session; the old records
		// stay, and are sent when the client comes back.
		w.logf("failover: the move failed; the old records stay")
		return nil
	}
	w.applyTo(keyOf(from), mv.OldOps())
	return nil
}

// pendingAt reports whether server i still has work for the client: a
// record in its session, or messages its broker holds for the client.
func (w *world) pendingAt(i int) bool {
	for seq := range w.durable[serverName(i)] {
		if seq != store.MetaSeq && !w.staleSeqs[staleKey{serverName(i), seq}] {
			return true
		}
	}
	return w.brokers[i].Unacked() > 0
}

// bogusAck makes the broker misbehave: a PUBACK or PUBCOMP for a packet
// identifier the client does not use, which the client must shrug off.
// (A stray PUBREC or PUBREL is answered, with 0x92, which the broker
// model would rightly take for a response to nothing it sent.)
func (w *world) bogusAck() error {
	if w.link == nil {
		return nil
	}
	kinds := []packets.Type{packets.PUBACK, packets.PUBCOMP}
	a := &packets.Ack{Kind: kinds[w.rnd.IntN(len(kinds))], PacketID: uint16(1 + w.rnd.IntN(65535))}
	if w.eng.IDInUse(a.PacketID) {
		return nil
	}
	w.logf("← bogus %s", describe(a))
	w.eng.Received(a)
	return w.effects()
}

// disconnect ends a quiet connection on purpose.
func (w *world) disconnect() error {
	w.logf("disconnect")
	return w.dropLink()
}

// markStale notes, as a process stops without finishing its writes, the
// records of a session discarded (Session Present 0) whose deletions are
// not all durable: the next process resumes that stale session.
func (w *world) markStale() {
	if !w.discardPending {
		return
	}
	k, _ := w.eng.Loaded()
	for seq, r := range w.durable[k.Server] {
		if !w.discarded[staleKey{k.Server, seq}] {
			continue
		}
		w.staleSeqs[staleKey{k.Server, seq}] = true
		if pr, err := engine.ParseRecord(r); err == nil && pr.Pub != nil {
			if o := w.outs[payloadKey(pr.Pub.Payload)]; o != nil && o.lost {
				o.resurrected++
			}
		}
	}
	w.logf("stopped before the discard of a lost session was durable: %d stale records", len(w.staleSeqs))
}

func (w *world) restartBroker() error {
	keep := w.rnd.IntN(3) != 0
	w.stats.Restarts++
	w.logf("broker restart, keep sessions %v", keep)
	err := w.dropLink()
	w.broker.Restart(keep)
	return err
}

// connectStep connects when disconnected and the store is idle, as the
// client does (it waits for its pending writes before a CONNECT).
func (w *world) connectStep() error {
	if w.link != nil || w.committing || w.eng.NeedsCommit() {
		return nil
	}
	clean, lost := w.eng.Prepare(w.now, false)
	if err := w.markLost(lost); err != nil {
		return err
	}
	if clean {
		w.discard(lost)
	}
	if err := w.effects(); err != nil {
		return err
	}
	if w.eng.NeedsCommit() {
		return nil // the discarded session's deletions first
	}
	exp := w.cfg.SessionExpiry
	c := &packets.Connect{CleanStart: clean, ClientID: "sim", Properties: packets.Properties{
		SessionExpiry: &exp, ReceiveMaximum: w.cfg.ReceiveMaximum, TopicAliasMaximum: w.cfg.TopicAliasMaximum}}
	resp := w.broker.Connect(c)
	ca, ok := resp[0].(*packets.Connack)
	if !ok || ca.ReasonCode.IsError() {
		return w.fail("broker refused CONNECT: %v", describe(resp[0]))
	}
	w.stats.Connects++
	w.link = &link{}
	w.handed = 0
	r, err := w.eng.Connected(w.link, ca, clean, w.now)
	if err != nil {
		return w.fail("CONNACK refused: %v", err)
	}
	if err := w.markLost(r.Lost); err != nil {
		return err
	}
	w.releaseForgotten()
	if !ca.SessionPresent {
		w.discard(r.Lost)
		clear(w.ids[w.srv]) // a new session: nothing of the old one is in use
	}
	w.logf("connected: clean %v, session present %v, resent %d", clean, ca.SessionPresent, r.Resent)
	w.sendToClient(resp[1:])
	return w.effects()
}

// releaseForgotten frees, as a connection comes up, the packet
// identifiers of QoS 1 messages the client no longer holds: one that went
// out before its record was durable, then failed with the store or died
// with its process. No server keeps anything of a QoS 1 exchange past its
// connection's end (MQTT-4.3.2-5), and the client never sends it again.
func (w *world) releaseForgotten() {
	held := map[string]bool{}
	for _, m := range w.eng.Outbound() {
		if m.Pub != nil {
			held[payloadKey(m.Pub.Payload)] = true
		}
	}
	for id, key := range w.ids[w.srv] {
		if o := w.outs[key]; o != nil && o.qos == 1 && !held[key] {
			delete(w.ids[w.srv], id)
		}
	}
}

// discard notes the records the engine's discard of a session deletes:
// inbound ones, PUBRELs, and the messages reported lost (unless they are
// republished under their records).
func (w *world) discard(lost []engine.Lost) {
	w.discardPending = true
	gone := map[string]bool{}
	for _, l := range lost {
		gone[payloadKey(l.Pub.Payload)] = !w.cfg.RepublishLost
	}
	k, _ := w.eng.Loaded()
	for seq, r := range w.durable[k.Server] {
		pr, err := engine.ParseRecord(r)
		if seq == store.MetaSeq || err != nil {
			continue
		}
		if r.Dir == store.Inbound || pr.Pubrel || (pr.Pub != nil && gone[payloadKey(pr.Pub.Payload)]) {
			w.discarded[staleKey{k.Server, seq}] = true
		}
	}
}

func (w *world) markLost(lost []engine.Lost) error {
	for _, l := range lost {
		key := payloadKey(l.Pub.Payload)
		if o := w.outs[key]; o != nil {
			o.lost = true
			if !w.everHanded[key] && !o.maybeSent && o.resurrected == 0 {
				return w.fail("message %s reported lost with the session, but it never reached the network", key)
			}
		}
	}
	return nil
}

// check verifies what must hold after every step.
func (w *world) check() error {
	for i, b := range w.brokers {
		if v := b.Violations(); len(v) > 0 {
			return w.fail("protocol violation at server %d: %s", i, strings.Join(v, "; "))
		}
	}
	return nil
}

// received returns how many times the brokers passed an outbound message
// on, across servers.
func (w *world) received(key string) int {
	n := 0
	for _, b := range w.brokers {
		n += b.Received()[key]
	}
	return n
}

// afterPubrel returns how many copies of an inbound message the brokers'
// PublishAfterPubrel quirk sent.
func (w *world) afterPubrel(key string) int {
	n := 0
	for _, b := range w.brokers {
		n += b.AfterPubrel()[key]
	}
	return n
}

// final checks what must hold once everything has settled.
func (w *world) final() error {
	for key, o := range w.outs {
		n := w.received(key)
		switch {
		case o.qos == 2 && n > 1+o.resurrected+o.moved:
			return w.fail("QoS 2 message %s reached subscribers %d times", key, n)
		case o.okDone && n == 0:
			return w.fail("message %s completed but never arrived", key)
		case o.big && n > 0:
			return w.fail("message %s, larger than the server's maximum, arrived", key)
		case o.stored && !o.lost && !o.failed && !o.big && n == 0:
			return w.fail("message %s was stored but never arrived", key)
		}
	}
	for key, r := range w.ins {
		lost := false
		for _, b := range w.brokers {
			lost = lost || b.Lost()[key] != 0
		}
		if r.deliveries == 0 && !lost {
			return w.fail("message %s from the broker never delivered", key)
		}
	}
	for server, db := range w.durable {
		for seq, r := range db {
			if seq != store.MetaSeq && !w.staleSeqs[staleKey{server, seq}] {
				return w.fail("record %d (%s, id %d) of %s left in the store after every exchange ended", seq, r.Dir, r.ID, server)
			}
		}
	}
	return nil
}

// describe names a packet for the trace.
func describe(p packets.Packet) string {
	switch p := p.(type) {
	case *packets.Publish:
		s := fmt.Sprintf("PUBLISH %s q%d id %d", payloadKey(p.Payload), p.QoS, p.PacketID)
		if p.Dup {
			s += " dup"
		}
		return s
	case *packets.Ack:
		return fmt.Sprintf("%s id %d %s", engine.TypeName(p.Kind), p.PacketID, p.ReasonCode)
	case *packets.Connack:
		return fmt.Sprintf("CONNACK present %v %s", p.SessionPresent, p.ReasonCode)
	}
	return engine.TypeName(p.Type())
}
