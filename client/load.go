package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// maxSeq bounds the sequence numbers the client accepts from a store. The
// client counts from 1 and never gets near it (2^62 records at ten million
// a second take 14,000 years), so a record above it can only be damage or
// tampering; taken at face value it would make the sequence wrap and a new
// message overwrite a stored one, or the Meta record.
const maxSeq = 1 << 62

// loadSession rebuilds the in-memory session from the store for key k.
// The commit pipeline is idle and mu held: this runs once per connection,
// not on the hot path. Pending tokens are attached to their records again.
//
// Records that cannot be used — reported corrupt by the store, or
// readable but not a valid record of this client — are left out, kept
// in the store, and reported (Config.OnCorrupt, Client.DiscardCorrupt). A
// packet identifier such a record holds stays reserved while the record
// exists: the server may still hold that identifier's exchange.
func (c *Client) loadSession(ctx context.Context, k store.Key) error {
	recs, err := c.st.Load(ctx, k)
	var corrupt *store.CorruptError
	if err != nil && !errors.As(err, &corrupt) {
		return fmt.Errorf("client: load session %s: %w", k, err)
	}
	bad := &store.CorruptError{Key: k}
	var causes []error // errors.Is finds each, the store's own included
	if corrupt != nil {
		bad.Seqs = append(bad.Seqs, corrupt.Seqs...)
		if corrupt.Err != nil {
			causes = append(causes, corrupt.Err)
		} else {
			causes = append(causes, errors.New("integrity check failed"))
		}
	}
	old := c.msgs
	c.key = k
	c.msgs = make(map[uint64]*outMsg, len(recs))
	c.queuedBytes = 0
	c.byID = make(map[uint16]*outMsg)
	c.inQoS2 = make(map[uint16]uint64)
	if k != c.loadedKey {
		clear(c.in2) // those belong to another server's session
	}
	c.ids.reset()
	c.corruptIDs = nil
	c.abandonedIDs = nil // they belonged to the session loaded before
	c.haveMeta = false
	c.meta = meta{}
	var top uint64
	for _, s := range bad.Seqs {
		if s < maxSeq {
			top = max(top, s) // never overwrite a record the store could not read
		}
	}
	for _, r := range recs {
		if r.Seq < maxSeq {
			top = max(top, r.Seq)
		}
		if err := c.loadRecord(r, old); err != nil {
			bad.Seqs = append(bad.Seqs, r.Seq)
			causes = append(causes, fmt.Errorf("seq %d: %w", r.Seq, err))
			if r.ID != 0 && r.Dir == store.Outbound {
				c.ids.set(r.ID)
				c.corruptIDs = append(c.corruptIDs, r.ID)
			}
		}
	}
	// A pending token whose record is gone can only belong to a message the
	// store lost; it must not wait forever.
	for _, o := range old {
		if !o.done {
			o.done = true
			o.tok.complete(ErrSessionLost)
		}
	}
	c.nextSeq = max(c.nextSeq, top+1)
	c.waiting, c.waitHead = c.waiting[:0], 0
	c.loaded = true
	c.loadedKey = k
	c.corrupt = nil
	if len(bad.Seqs) > 0 {
		slices.Sort(bad.Seqs)
		bad.Seqs = slices.Compact(bad.Seqs)
		bad.Err = errors.Join(causes...)
		c.corrupt = bad
		c.corruptReported = false
		c.log.Error("corrupt session records left out (see Config.OnCorrupt and Client.DiscardCorrupt)",
			"key", k.String(), "seqs", bad.Seqs, "err", bad.Err)
	}
	return nil
}

// parsedRecord is what one stored record says, decoded and checked.
type parsedRecord struct {
	meta   meta             // store.Meta
	pub    *packets.Publish // an outbound PUBLISH: DUP and packet identifier cleared
	pubrel bool             // an outbound PUBREL
	ref    string           // Message.Ref of an outbound record
}

// parseRecord decodes r, or says why it is not a record this client could
// have written: the one check both the session load and DescribeRecord
// make.
func parseRecord(r store.Record) (parsedRecord, error) {
	var pr parsedRecord
	if r.Seq >= maxSeq {
		return pr, fmt.Errorf("sequence number %d out of range", r.Seq)
	}
	switch r.Dir {
	case store.Meta:
		if r.Seq != store.MetaSeq {
			return pr, errors.New("meta record outside the meta sequence number")
		}
		m, err := decodeMeta(r.Packet)
		pr.meta = m
		return pr, err
	case store.Inbound:
		if r.ID == 0 || r.Seq == store.MetaSeq {
			return pr, errors.New("inbound record without a packet identifier")
		}
		return pr, nil
	case store.Outbound:
	default:
		return pr, fmt.Errorf("unknown direction %d", r.Dir)
	}
	if r.Seq == store.MetaSeq {
		return pr, errors.New("outbound record at the meta sequence number")
	}
	pkt, ref, err := splitRef(r.Packet)
	if err != nil {
		return pr, err
	}
	pr.ref = ref
	p, err := packets.Decode(pkt, 0)
	if err != nil {
		return pr, err
	}
	switch p := p.(type) {
	case *packets.Publish:
		pr.pub = p
		if p.QoS == 0 {
			return pr, errors.New("stored PUBLISH of QoS 0")
		}
		if err := validOutbound(p.Topic, &p.Properties); err != nil {
			return pr, err
		}
		p.Dup = false
		p.PacketID = 0
	case *packets.Ack:
		if p.Kind != packets.PUBREL || r.ID == 0 {
			return pr, fmt.Errorf("stored %s is not a PUBREL with a packet identifier", typeName(p.Kind))
		}
		pr.pubrel = true
	default:
		return pr, fmt.Errorf("stored %s is not a PUBLISH or PUBREL", typeName(p.Type()))
	}
	return pr, nil
}

// loadRecord adds one stored record to the session, or says why it cannot.
// mu held.
func (c *Client) loadRecord(r store.Record, old map[uint64]*outMsg) error {
	pr, err := parseRecord(r)
	if err != nil {
		return err
	}
	switch r.Dir {
	case store.Meta:
		c.meta, c.haveMeta = pr.meta, true
		return nil
	case store.Inbound:
		c.inQoS2[r.ID] = r.Seq
		return nil
	}
	m := &outMsg{seq: r.Seq, id: r.ID, stored: true, sent: r.ID != 0, ref: pr.ref, pub: pr.pub, qos: 2, pubrel: pr.pubrel}
	if pr.pub != nil {
		m.qos = pr.pub.QoS
	}
	if m.id != 0 && c.ids.has(m.id) {
		return fmt.Errorf("packet identifier %d held by two records", m.id)
	}
	if o := old[r.Seq]; o != nil && !o.done {
		m.tok = o.tok
		if m.pub == nil {
			m.pub = o.pub
		}
		o.done = true
	}
	c.track(m)
	if m.id != 0 {
		c.byID[m.id] = m
		c.ids.set(m.id)
	}
	return nil
}

// validOutbound checks what makes a PUBLISH sendable by this client
// whatever the server: a full topic name without wildcards and none of the
// properties a client never sends. Publish checks it before a message is
// stored; loading checks it again, since a store may hand back anything.
func validOutbound(topic string, pr *packets.Properties) error {
	if err := packets.ValidTopicName(topic); err != nil {
		return fmt.Errorf("topic %q: %w", topic, err)
	}
	switch {
	case len(pr.SubscriptionIdentifier) > 0: // MQTT-3.3.4-6
		return errors.New("subscription identifier in an outbound PUBLISH")
	case pr.TopicAlias != 0:
		return errors.New("topic aliases are assigned by the client (Config.OutboundTopicAliases)")
	}
	if pr.ResponseTopic != "" || pr.Has(packets.PropResponseTopic) {
		if err := packets.ValidTopicName(pr.ResponseTopic); err != nil { // MQTT-3.3.2-14
			return fmt.Errorf("response topic %q: %w", pr.ResponseTopic, err)
		}
	}
	return nil
}

// reportCorrupt hands a corruption found by the last load to
// Config.OnCorrupt, once. Called without mu.
func (c *Client) reportCorrupt() {
	c.mu.Lock()
	bad := c.corrupt
	report := bad != nil && !c.corruptReported
	c.corruptReported = true
	c.mu.Unlock()
	if report && c.cfg.OnCorrupt != nil {
		c.cfg.OnCorrupt(bad)
	}
}

// Corrupt returns the records the last load of the session left out
// because they were corrupt, or nil when there were none (or they have been
// discarded). The session goes on without them; the records stay in the
// store, and the packet identifiers they hold stay reserved, until
// DiscardCorrupt removes them.
func (c *Client) Corrupt() *store.CorruptError {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corrupt == nil {
		return nil
	}
	cp := *c.corrupt
	cp.Seqs = slices.Clone(cp.Seqs)
	return &cp
}

// DiscardCorrupt deletes from the store the records the last load found
// corrupt (see Corrupt) and frees the packet identifiers they held. It
// returns how many records it deleted. Whatever exchange such a record
// belonged to is abandoned: for an outbound message, the server may or may
// not have it.
func (c *Client) DiscardCorrupt(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	c.waitIdle()
	bad := c.corrupt
	if bad == nil {
		return 0, nil
	}
	ops := make([]store.Op, len(bad.Seqs))
	for i, s := range bad.Seqs {
		ops[i] = store.Delete(s)
	}
	if err := c.st.Apply(ctx, bad.Key, ops...); err != nil {
		return 0, fmt.Errorf("client: discard corrupt records: %w", err)
	}
	if bad.Key == c.key {
		for _, id := range c.corruptIDs {
			if c.byID[id] == nil {
				c.freeID(id)
			}
		}
	}
	c.corrupt, c.corruptIDs = nil, nil
	return len(ops), nil
}
