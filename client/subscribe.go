package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
)

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

// Subscription is one topic filter to subscribe to, with its options.
type Subscription struct {
	Filter string
	packets.SubscribeOptions
	// ID is the Subscription Identifier sent with the SUBSCRIBE, or 0 for
	// none. All subscriptions of one Subscribe call share one identifier.
	ID uint32
	// User holds User Properties sent with the SUBSCRIBE.
	User []packets.UserProperty
}
