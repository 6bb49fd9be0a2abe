package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
)

// Publish publishes m and waits until the exchange completes: PUBACK for
// QoS 1, PUBCOMP for QoS 2; for QoS 0, until the packet is queued on the
// connection (its write then coalesces with others). A
// QoS 1 or 2 message is persisted in the store before it is sent; from
// then on it completes whatever happens to ctx, which only bounds the wait:
// when ctx ends first, Publish returns ctx's error and the message is
// still delivered (by a later connection or a later Client on the same
// store, if need be). Publishing while disconnected stores the message and
// sends it, in order, on reconnection.
//
// A negative acknowledgement is returned as a *ReasonError.
//
// A QoS 0 message that finds the write buffer full (Config.MaxWriteBuffer)
// waits for room, within ctx; so does a message that finds the queue full
// (Config.MaxQueued, MaxQueuedBytes) unless Config.FailWhenQueueFull.
func (c *Client) Publish(ctx context.Context, m *Message) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := c.publish(ctx, m).Wait(ctx)
		if !errors.Is(err, ErrBufferFull) {
			return err
		}
		c.mu.Lock()
		cn := c.conn
		c.mu.Unlock()
		if cn == nil {
			return err // the offline queue is full: nothing will drain it soon
		}
		select {
		case <-cn.room():
		case <-cn.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// PublishAsync publishes m as Publish does, without waiting for the
// exchange: the Token tells when it has completed, and when the message is
// durable in the store (Token.Stored). Messages are sent in the order of
// the PublishAsync calls, pipelined up to the server's Receive Maximum. m
// is not retained: it may be reused once PublishAsync returns, but its
// Payload must not be changed until the Token is done.
//
// When the queue of unfinished messages is full (Config.MaxQueued,
// MaxQueuedBytes) PublishAsync waits for room, or fails the Token with
// ErrQueueFull under Config.FailWhenQueueFull; a QoS 0 message that finds
// the write buffer full fails with ErrBufferFull.
func (c *Client) PublishAsync(m *Message) *Token {
	return c.publish(context.Background(), m)
}

// PublishStored publishes m as PublishAsync does and waits, within ctx,
// until the message is durable in the store: from then on the library
// delivers it whatever happens to the process, so an application may mark
// its own copy (an outbox row) as handed over. It returns the Token, which
// completes when the exchange does. A QoS 0 message is never stored:
// PublishStored then waits for it to be queued on the connection. When ctx
// ends first, the message may still be stored and sent; the returned Token
// tells.
func (c *Client) PublishStored(ctx context.Context, m *Message) (*Token, error) {
	t := c.publish(ctx, m)
	return t, t.WaitStored(ctx)
}

// publishAlloc is what one publish needs, allocated at once: its token,
// its packet and, for QoS 1 and 2, its place in the session. They live as
// long as the longest-lived of them (usually the caller's Token).
type publishAlloc struct {
	tok Token
	pub packets.Publish
	om  engine.Out
}

// publish is PublishAsync, waiting within ctx for room in a full queue.
func (c *Client) publish(ctx context.Context, m *Message) *Token {
	a := &publishAlloc{tok: Token{done: make(chan struct{})}}
	t, p := &a.tok, &a.pub
	if err := c.newPublish(m, p); err != nil {
		t.complete(err)
		return t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkPublish(p); err != nil {
		t.complete(err)
		return t
	}
	if err := c.waitQueueRoom(ctx, p); err != nil {
		t.complete(err)
		return t
	}
	if p.QoS == 0 {
		if !c.eng.Publish0(p, t, c.cfg.QueueQoS0) {
			t.complete(ErrNotConnected)
		}
		c.flush()
		return t
	}
	if _, ok := c.eng.Loaded(); !ok {
		// Sequence numbers continue those of the stored session: load it
		// before assigning one, or a new process would overwrite records.
		if err := c.loadFirst(); err != nil {
			t.complete(err)
			return t
		}
	}
	c.eng.Publish(&a.om, p, m.Ref, t)
	c.flush()
	return t
}

// newPublish validates m and copies it into a PUBLISH packet.
func (c *Client) newPublish(m *Message, p *packets.Publish) error {
	switch {
	case m == nil:
		return fmt.Errorf("%w: nil message", ErrInvalidMessage)
	case m.QoS > 2:
		return fmt.Errorf("%w: QoS %d", ErrInvalidMessage, m.QoS)
	}
	if err := engine.ValidOutbound(m.Topic, &m.Properties); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	*p = packets.Publish{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Properties: m.Properties}
	return nil
}

// checkPublish checks p against the server's limits from its last
// CONNACK. mu held.
func (c *Client) checkPublish(p *packets.Publish) error {
	if c.closed {
		return ErrClosed
	}
	if c.fatal != nil {
		return c.fatal
	}
	lim := c.eng.Limits()
	if p.QoS > lim.MaxQoS { // MQTT-3.2.2-11
		return fmt.Errorf("%w: QoS %d, server maximum %d", ErrQoSNotSupported, p.QoS, lim.MaxQoS)
	}
	if p.Retain && !lim.Retain { // MQTT-3.2.2-14
		return ErrRetainNotSupported
	}
	if p.QoS > 0 {
		p.PacketID = 1 // for sizing and validation only
	}
	n, err := packets.Size(p)
	p.PacketID = 0
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	if lim.MaxPacket != 0 && uint32(n) > lim.MaxPacket { // MQTT-3.2.2-15
		return fmt.Errorf("%w: %d bytes, server maximum %d", ErrPacketTooLarge, n, lim.MaxPacket)
	}
	return nil
}

// request is a SUBSCRIBE or UNSUBSCRIBE waiting for its acknowledgement.
type request struct {
	kind     packets.Type
	subs     []Subscription // SUBSCRIBE
	filters  []string       // UNSUBSCRIBE
	internal bool           // a resubscription: no caller waits
	done     chan struct{}
	codes    []packets.ReasonCode
	err      error
}

func (r *request) finish(codes []packets.ReasonCode, err error) {
	r.codes, r.err = codes, err
	close(r.done)
}

// Subscribe subscribes to subs and returns the server's reason code for
// each (the granted QoS, or an error code); when a single subscription is
// refused, the error is also returned as a *ReasonError. It fails with
// ErrNotConnected while disconnected, and with ErrWildcardNotSupported,
// ErrSharedNotSupported or ErrSubIDNotSupported when the server said so in
// its CONNACK. Subscriptions granted are remembered in the session's meta
// record and made again when a server has lost the session.
func (c *Client) Subscribe(ctx context.Context, subs ...Subscription) ([]packets.ReasonCode, error) {
	if len(subs) == 0 {
		return nil, errors.New("client: subscribe: no subscriptions")
	}
	p := &packets.Subscribe{}
	id := subs[0].ID
	for _, s := range subs {
		if s.ID != id {
			return nil, errors.New("client: subscribe: subscriptions of one call must share one subscription identifier")
		}
		p.Subscriptions = append(p.Subscriptions, packets.Subscription{Filter: s.Filter, SubscribeOptions: s.SubscribeOptions})
		p.Properties.User = append(p.Properties.User, s.User...)
	}
	if id != 0 {
		p.Properties.SubscriptionIdentifier = []uint32{id}
	}
	for _, s := range subs {
		if err := packets.ValidTopicFilter(s.Filter); err != nil {
			return nil, fmt.Errorf("client: subscribe %q: %w", s.Filter, err)
		}
	}
	r := &request{kind: packets.SUBSCRIBE, subs: subs, done: make(chan struct{})}
	check := func() error {
		lim := c.eng.Limits()
		for _, s := range subs {
			shared := strings.HasPrefix(s.Filter, "$share/")
			if shared && !lim.Shared {
				return ErrSharedNotSupported
			}
			if !shared && strings.ContainsAny(s.Filter, "+#") && !lim.Wildcard {
				return ErrWildcardNotSupported
			}
		}
		if id != 0 && !lim.SubID {
			return ErrSubIDNotSupported
		}
		return nil
	}
	return c.roundTrip(ctx, r, check, func(pid uint16) packets.Packet { p.PacketID = pid; return p })
}

// Unsubscribe removes the subscriptions to filters and returns the
// server's reason code for each.
func (c *Client) Unsubscribe(ctx context.Context, filters ...string) ([]packets.ReasonCode, error) {
	if len(filters) == 0 {
		return nil, errors.New("client: unsubscribe: no filters")
	}
	for _, f := range filters {
		if err := packets.ValidTopicFilter(f); err != nil {
			return nil, fmt.Errorf("client: unsubscribe %q: %w", f, err)
		}
	}
	p := &packets.Unsubscribe{Filters: filters}
	r := &request{kind: packets.UNSUBSCRIBE, filters: filters, done: make(chan struct{})}
	return c.roundTrip(ctx, r, nil, func(pid uint16) packets.Packet { p.PacketID = pid; return p })
}

// roundTrip sends the packet of r with a fresh packet identifier (waiting,
// bounded by ctx, while all are in use) and waits for its acknowledgement.
func (c *Client) roundTrip(ctx context.Context, r *request, check func() error, build func(uint16) packets.Packet) ([]packets.ReasonCode, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		cn := c.conn
		if cn == nil || !cn.ready {
			c.mu.Unlock()
			return nil, ErrNotConnected
		}
		if check != nil {
			if err := check(); err != nil {
				c.mu.Unlock()
				return nil, err
			}
		}
		pid, ok := c.eng.AllocID()
		if ok {
			pk := build(pid)
			maxPacket := c.eng.Limits().MaxPacket
			if n, err := packets.Size(pk); err != nil || (maxPacket != 0 && uint32(n) > maxPacket) {
				c.eng.ReleaseID(pid)
				c.flush()
				c.mu.Unlock()
				if err != nil {
					return nil, fmt.Errorf("client: %w", err)
				}
				return nil, fmt.Errorf("%w: %d bytes, server maximum %d", ErrPacketTooLarge, n, maxPacket)
			}
		}
		if !ok {
			if c.idFreed == nil {
				c.idFreed = make(chan struct{})
			}
			freed := c.idFreed
			c.mu.Unlock()
			select {
			case <-freed:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		c.requests[pid] = r
		// In order with the acknowledgements queued before it.
		c.eng.Send(build(pid))
		c.flush()
		c.mu.Unlock()
		break
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, r.err
	}
	for _, code := range r.codes {
		if code.IsError() && len(r.codes) == 1 {
			return r.codes, &ReasonError{Packet: r.kind + 1, Code: code}
		}
	}
	return r.codes, nil
}

// finishRequest completes the SUBSCRIBE or UNSUBSCRIBE acknowledged by a
// SUBACK or UNSUBACK, and records granted subscriptions in the meta record.
func (c *Client) finishRequest(pid uint16, kind packets.Type, codes []packets.ReasonCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.requests[pid]
	if r == nil || r.kind+1 != kind {
		c.flood.warn("acknowledgement for unknown packet identifier", "type", engine.TypeName(kind), "id", pid)
		return
	}
	delete(c.requests, pid)
	c.eng.ReleaseID(pid)
	var granted []engine.Sub
	var removed []string
	for i, code := range codes {
		switch {
		case kind == packets.SUBACK && i < len(r.subs):
			if code.IsError() {
				c.log.Warn("subscription refused", "filter", r.subs[i].Filter, "reason", code.String(), "reason_string", reason)
			} else if !r.internal {
				s := r.subs[i]
				granted = append(granted, engine.Sub{Filter: s.Filter, Options: s.SubscribeOptions, ID: s.ID})
			}
		case kind == packets.UNSUBACK && i < len(r.filters):
			removed = append(removed, r.filters[i])
		}
	}
	c.eng.Subscribed(granted)
	c.eng.Unsubscribed(removed)
	c.flush()
	r.finish(codes, nil)
}

// resubscribe makes the remembered subscriptions again on a server that
// lost the session, one SUBSCRIBE per subscription identifier, ahead of
// anything else the connection sends. mu held.
func (c *Client) resubscribe(cn *conn, subs []engine.Sub) {
	groups := map[uint32][]Subscription{}
	var order []uint32
	for _, s := range subs {
		if _, ok := groups[s.ID]; !ok {
			order = append(order, s.ID)
		}
		groups[s.ID] = append(groups[s.ID], Subscription{Filter: s.Filter, SubscribeOptions: s.Options, ID: s.ID})
	}
	for _, id := range order {
		pid, ok := c.eng.AllocID()
		if !ok {
			return
		}
		p := &packets.Subscribe{PacketID: pid}
		for _, s := range groups[id] {
			p.Subscriptions = append(p.Subscriptions, packets.Subscription{Filter: s.Filter, SubscribeOptions: s.SubscribeOptions})
		}
		if id != 0 && c.eng.Limits().SubID {
			p.Properties.SubscriptionIdentifier = []uint32{id}
		}
		c.requests[pid] = &request{kind: packets.SUBSCRIBE, subs: groups[id], internal: true, done: make(chan struct{})}
		cn.write(p)
	}
	c.log.Info("resubscribed", "subscriptions", len(subs))
}

// Reauthenticate runs a re-authentication (MQTT v5 §4.12.1) with
// Config.Auth on the current connection and waits for its outcome.
func (c *Client) Reauthenticate(ctx context.Context) error {
	a := c.cfg.Auth
	if a == nil {
		return ErrNoAuthenticator
	}
	data, err := a.Start()
	if err != nil {
		return fmt.Errorf("client: authenticator: %w", err)
	}
	c.mu.Lock()
	cn := c.conn
	if cn == nil || !cn.ready {
		c.mu.Unlock()
		return ErrNotConnected
	}
	if cn.reauth != nil {
		c.mu.Unlock()
		return errors.New("client: a re-authentication is already in progress")
	}
	done := make(chan error, 1)
	cn.reauth = done
	cn.write(&packets.Auth{ReasonCode: packets.ReAuthenticate,
		Properties: packets.Properties{AuthMethod: a.Method(), AuthData: data}})
	c.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
