package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"

	"github.com/tethermq/tether/store"
)

// A session is loaded in pages, in Seq order (store.Scanner), so that a
// process restarting on a backlog of any size connects after the first
// pages and holds only what its window needs:
//
//   - LoadStart begins; Page takes each page the driver reads.
//   - CanConnect says when the pages so far hold what a CONNECT needs: the
//     meta record, and every outbound record that may have been sent.
//     Those come first: they lie within the meta record's Sent, and
//     identifiers are given in Seq order (giveAhead), so the stored
//     outbound records holding one are a prefix of the outbound records:
//     the first one without tells that the rest hold none, and so that
//     new identifiers may be given. The resend can start from there.
//   - The scan goes on while connected, to learn what only the whole
//     session tells: the inbound QoS 2 records (the driver holds inbound
//     PUBLISH and PUBREL packets until the scan ends, or a redelivery
//     could be delivered twice), the last Seq (new publishes wait for the
//     scan too, or they could take a stored message's Seq), and the
//     corrupt records.
//   - Messages without an identifier past LoadWindow stay in the store:
//     the tail. The engine asks for them (ReadTail) as its queue runs
//     low, in order, and the driver hands each page to Tail. Messages
//     published meanwhile wait behind the tail, in order, without
//     identifiers, so the prefix rule holds for the next process too.
//
// The driver reads a page without holding the engine and hands it over
// later; nothing is lost by the delay, since no one writes the records a
// page covers in between: the engine writes only records it has loaded
// (below the scan's position, outside the tail), the meta record (the
// first page's) and new records (above the session's last Seq, after the
// scan's end). A page read for a position the engine has left is ignored.

// scanState is a paged load in progress, and the tail it leaves.
type scanState struct {
	on       bool   // pages are still to come
	pages    int    // pages taken
	pos      uint64 // where the next page starts
	whole    bool   // keep every record in memory: no tail
	idsKnown bool   // every stored outbound identifier is known
	drop     bool   // the session was discarded meanwhile: inbound records found later go
	top      uint64 // the highest Seq seen
	sent     uint64 // the loaded meta record's Sent: Connected raises the session's
	bad      []uint64
	causes   []error
	old      map[uint64]*Out // publishes pending at LoadStart, to attach to their records

	tailFrom  uint64 // the first Seq the tail can hold; 0 for no tail
	tailLast  uint64 // the last
	tailN     int    // its messages, as counted by the scan
	tailBytes int    // and what they count against MaxQueuedBytes
	reading   bool   // a ReadTail is out
}

// LoadStart begins loading the session of k, in pages (Page). With whole
// set, or with publishes pending (a reload), every message is kept in
// memory; otherwise the messages beyond LoadWindow stay in the store until
// the queue reaches them. Nothing may be published (Publish) until the
// scan has ended (Scanning), since the session's last Seq is not known
// before.
func (e *Engine) LoadStart(k store.Key, whole bool) {
	var old map[uint64]*Out // pending publishes, to attach to their records again
	if e.msgs.live > 0 {
		whole = true
		old = make(map[uint64]*Out, e.msgs.live)
		for _, m := range e.msgs.all() {
			old[m.seq] = m
		}
	}
	if k != e.key {
		e.leave(k)
	}
	e.key = k
	for _, m := range e.msgs.ms {
		m.tracked = false
	}
	e.msgs = outList{}
	e.queuedBytes = 0
	e.byID = make(map[uint16]*Out)
	e.inQoS2 = make(map[uint16]uint64)
	e.ids.reset()
	e.corruptIDs = nil
	e.abandonedIDs = nil // they belonged to the session loaded before
	e.haveMeta, e.metaSeen = false, false
	e.meta = Meta{}
	e.sentQueued, e.sentDurable = 0, 0
	e.scan = scanState{on: true, whole: whole, old: old}
	e.resetWaiting()
	e.loaded = true
	e.corrupt = nil
}

// Unload forgets a paged load whose pages could not all be read before
// it could connect: the engine holds no session, as before LoadStart (on
// an engine that held none).
func (e *Engine) Unload() {
	e.LoadStart(e.key, true)
	e.Page(nil, nil, 0)
	e.loaded = false
}

// Page adds one page of the session LoadStart began: records in ascending
// Seq order, following those of the pages before, the corruption the
// store reported for them, and next, where the following page starts (0:
// this was the last). The corrupt records are reported (Corrupt) once the
// scan ends.
func (e *Engine) Page(recs []store.Record, corrupt *store.CorruptError, next uint64) {
	s := &e.scan
	if !s.on {
		return
	}
	s.pages++
	if corrupt != nil {
		s.bad = append(s.bad, corrupt.Seqs...)
		if corrupt.Err != nil {
			s.causes = append(s.causes, corrupt.Err)
		} else {
			s.causes = append(s.causes, errors.New("integrity check failed"))
		}
		for _, q := range corrupt.Seqs {
			if q < MaxSeq {
				s.top = max(s.top, q) // never overwrite a record the store could not read
			}
		}
	}
	if s.pages == 1 {
		e.metaSeen = slices.Contains(s.bad, store.MetaSeq) || (len(recs) > 0 && recs[0].Seq == store.MetaSeq)
	}
	known := s.idsKnown
	for _, r := range recs {
		if r.Seq < MaxSeq {
			s.top = max(s.top, r.Seq)
		}
		if err := e.pageRecord(r); err != nil {
			s.bad = append(s.bad, r.Seq)
			s.causes = append(s.causes, fmt.Errorf("seq %d: %w", r.Seq, err))
			if r.ID != 0 && r.Dir == store.Outbound && !e.ids.has(r.ID) {
				e.ids.set(r.ID)
				e.corruptIDs = append(e.corruptIDs, r.ID)
			}
		}
	}
	s.pos = next
	if next == 0 {
		e.scanEnd()
	}
	if s.idsKnown && !known {
		e.effect(Effect{Kind: IDFreed}) // requests waiting for an identifier may go
	}
	e.pump()
}

// pageRecord adds one record of a page to the session, or says why it
// cannot.
func (e *Engine) pageRecord(r store.Record) error {
	s := &e.scan
	pr, err := ParseRecord(r)
	if err != nil {
		return err
	}
	switch r.Dir {
	case store.Meta:
		e.meta, e.haveMeta = pr.Meta, true
		e.sentQueued, e.sentDurable, s.sent = e.meta.Sent, e.meta.Sent, e.meta.Sent
		return nil
	case store.Inbound:
		if s.drop {
			e.addOp(store.Delete(r.Seq)) // of the session discarded meanwhile
		} else {
			e.inQoS2[r.ID] = r.Seq
		}
		return nil
	}
	if r.ID == 0 {
		s.idsKnown = true // the first without: none after it has one
	} else if e.ids.has(r.ID) {
		return fmt.Errorf("packet identifier %d held by two records", r.ID)
	}
	if r.ID == 0 && !s.whole && (s.tailFrom != 0 || e.msgs.live >= e.cfg.LoadWindow || e.queuedBytes >= e.cfg.LoadWindowBytes) {
		// Left in the store until the queue reaches it.
		if s.tailFrom == 0 {
			s.tailFrom = r.Seq
		}
		s.tailN++
		s.tailBytes += rawCost(pr.Packet, pr.Ref)
		return nil
	}
	sent := pr.Pubrel || MaybeSent(Meta{Sent: s.sent}, e.metaSeen, r)
	m := &Out{seq: r.Seq, id: r.ID, stored: true, bare: r.ID == 0, sent: sent, app: refApp(pr.Ref), qos: 2, pubrel: pr.Pubrel}
	if pr.Pub != nil {
		// Keep the record's bytes, not the decoded packet (a third of the
		// memory): decoded again when the window reaches it.
		m.qos = pr.Pub.QoS
		m.raw = pr.Packet
	}
	if o := s.old[r.Seq]; o != nil && !o.done {
		if o.app != nil {
			m.app, o.app = o.app, nil // its ticket, with the same reference
		}
		if m.pub == nil && m.raw == nil {
			m.pub = o.pub // a PUBREL: keep the message for Pending
		}
		o.done = true
	}
	e.track(m)
	if m.id != 0 {
		e.byID[m.id] = m
		e.ids.set(m.id)
	}
	if e.conn != nil && s.tailFrom == 0 {
		e.waiting = append(e.waiting, m)
	}
	return nil
}

// scanEnd completes a paged load after its last page.
func (e *Engine) scanEnd() {
	s := &e.scan
	s.on, s.idsKnown, s.drop = false, true, false
	// A pending publish whose record is gone can only belong to a message
	// the store lost; it must not wait forever.
	for _, o := range s.old {
		if !o.done {
			o.done = true
			e.complete(o, ErrSessionLost)
		}
	}
	s.old = nil
	e.nextSeq = max(e.nextSeq, s.top+1)
	if s.tailFrom != 0 {
		s.tailLast = s.top
	}
	// What the store says was sent is covered. With a meta record that
	// has no Sent (corrupt, or from before Sent) every record may have
	// been sent, and the next meta record written says so before anything
	// is; without one, nothing was.
	if e.metaSeen && e.meta.Sent == 0 {
		e.meta.Sent = s.top
	}
	if len(s.bad) > 0 {
		bad := &store.CorruptError{Key: e.key, Seqs: s.bad}
		slices.Sort(bad.Seqs)
		bad.Seqs = slices.Compact(bad.Seqs)
		bad.Err = errors.Join(s.causes...)
		e.corrupt = bad
		e.log.Log(slog.LevelError, "corrupt session records left out (see Config.OnCorrupt and Client.DiscardCorrupt)",
			"key", e.key.String(), "seqs", bad.Seqs, "err", bad.Err)
	}
	s.bad, s.causes = nil, nil
}

// Discarding reports whether the session was discarded while its scan
// runs: the inbound records the scan has not reached yet belong to the
// discarded session and are deleted as it reaches them, so a process that
// stops before the scan ends leaves them behind. Close lets it end.
func (e *Engine) Discarding() bool { return e.scan.drop }

// Scanning reports whether a paged load is under way, and where its next
// page starts.
func (e *Engine) Scanning() (from uint64, ok bool) { return e.scan.pos, e.scan.on }

// CanConnect reports whether the pages so far hold all a CONNECT needs:
// the meta record (whether the session is still held, and what was sent)
// and every outbound record that may have been sent (what a lost session
// loses, and what is resent with DUP 1): those within the meta record's
// Sent, or, before the first record without an identifier, every record
// holding one. Records holding an identifier beyond Sent were given it
// ahead and never sent; they load as the scan reaches them and go out
// under it, while new identifiers wait until every stored one is known
// (idsKnown). A meta record without Sent (corrupt, or of an older version)
// takes the whole scan: every record holding an identifier up to the last
// may have been sent.
func (e *Engine) CanConnect() bool {
	s := &e.scan
	switch {
	case !s.on:
		return true
	case s.pages == 0 || (e.metaSeen && e.meta.Sent == 0):
		return false
	}
	return s.idsKnown || (e.haveMeta && s.pos > s.sent)
}

// released is the Seq from which messages wait behind the tail: they are
// not sent, nor given identifiers, before the tail's messages are.
func (e *Engine) released() uint64 {
	if e.scan.tailFrom != 0 {
		return e.scan.tailFrom
	}
	return math.MaxUint64
}

// frontier is the lowest Seq a message not in memory can have.
func (e *Engine) frontier() uint64 {
	switch s := &e.scan; {
	case s.tailFrom != 0:
		return s.tailFrom
	case s.on:
		return s.pos
	}
	return e.nextSeq
}

// wantTail asks the driver for the tail's next page (ReadTail) when the
// messages waiting to be sent run low.
func (e *Engine) wantTail() {
	s := &e.scan
	if s.tailFrom == 0 || s.on || s.reading || e.conn == nil {
		return
	}
	n := len(e.waiting) - e.waitHead
	if 2*n >= e.cfg.LoadWindow {
		return
	}
	s.reading = true
	e.effect(Effect{Kind: ReadTail, Num: s.tailFrom, Limit: e.cfg.LoadWindow - n})
}

// TailFrom returns where the tail starts: the messages stored but not yet
// loaded, which the driver reads with the store's Scanner from there and
// hands to Tail. ok is false when there is none.
func (e *Engine) TailFrom() (from uint64, ok bool) { return e.scan.tailFrom, e.scan.tailFrom != 0 }

// Tail adds a page of the tail read from from (the Num of a ReadTail, or
// TailFrom): the records of a scan from there, and where the next page
// starts. A page read from anywhere but the tail's start is stale and is
// ignored. The messages join the queue in order, with those published
// meanwhile behind them once the tail is done.
func (e *Engine) Tail(from uint64, recs []store.Record, next uint64) {
	s := &e.scan
	if s.tailFrom == 0 || from != s.tailFrom || s.on {
		return
	}
	s.reading = false
	var run []*Out
	for _, r := range recs {
		pr, ok := e.inTail(r)
		if !ok {
			continue
		}
		m := &Out{seq: r.Seq, stored: true, bare: true, qos: pr.Pub.QoS, raw: pr.Packet, app: refApp(pr.Ref)}
		m.cost = uint32(msgCost(m))
		e.queuedBytes += int(m.cost)
		s.tailN--
		s.tailBytes -= int(m.cost)
		run = append(run, m)
	}
	e.msgs.addRun(run)
	if next == 0 || next > s.tailLast {
		s.tailFrom, s.tailLast, s.tailN, s.tailBytes = 0, 0, 0, 0
	} else {
		s.tailFrom = next
	}
	if e.conn != nil {
		// The messages from the old start up to the new one (the ones just
		// read, and any loaded earlier) are released in Seq order.
		upTo := e.released()
		for _, m := range e.msgs.from(from) {
			if m.seq >= upTo {
				break
			}
			if m.tracked && !m.done {
				e.waiting = append(e.waiting, m)
			}
		}
		e.pump()
	}
}

// TailFailed reports that reading the tail's page failed: the next need
// asks again.
func (e *Engine) TailFailed() {
	e.scan.reading = false
	e.pump()
}

// TailOutbound describes the messages among recs (records of a scan from
// TailFrom) that are in the tail: those Tail would load. For listings
// (Client.Pending); nothing is kept.
func (e *Engine) TailOutbound(recs []store.Record) []OutInfo {
	var out []OutInfo
	for _, r := range recs {
		pr, ok := e.inTail(r)
		if !ok {
			continue
		}
		out = append(out, OutInfo{Seq: r.Seq, QoS: pr.Pub.QoS, Ref: pr.Ref, Pub: decodeStored(pr.Packet)})
	}
	return out
}

// inTail parses r when it is a message of the tail that memory does not
// hold. Records in the tail have no packet identifier; one that has, or
// that memory holds, was loaded by the scan; one that does not parse was
// reported when the scan met it.
func (e *Engine) inTail(r store.Record) (Record, bool) {
	s := &e.scan
	if s.tailFrom == 0 || r.Dir != store.Outbound || r.ID != 0 || r.Seq < s.tailFrom || r.Seq > s.tailLast || e.msgs.find(r.Seq) != nil {
		return Record{}, false
	}
	pr, err := ParseRecord(r)
	return pr, err == nil && pr.Pub != nil
}

// Held returns how many outbound messages the engine holds in memory (for
// tests): not those a paged load left in the store.
func (e *Engine) Held() int { return e.msgs.live }
