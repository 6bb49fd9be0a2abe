package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// connectOnce dials sv, prepares the session, runs CONNECT/CONNACK and
// starts the connection's goroutines.
func (c *Client) connectOnce(stop chan struct{}, sv server) (*conn, error) {
	ctx, cancel := context.WithTimeout(c.storeCtx, c.cfg.ConnectTimeout)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	k := c.keyFor(sv)
	if err := c.acquireLease(ctx, k); err != nil {
		return nil, err
	}
	nc, err := c.dial(ctx, sv)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", sv.canonical, err)
	}
	cn := newConn(c.hooks(), nc)
	ok := false
	defer func() {
		if !ok {
			cn.close(nil)
		}
	}()
	lost, clean, err := c.prepareSession(ctx, k)
	c.reportCorrupt()
	if c.cfg.OnSessionLost != nil && len(lost) > 0 {
		c.cfg.OnSessionLost(lost, c.cfg.RepublishLost)
	}
	if err != nil {
		return nil, err
	}
	ca, err := c.handshake(ctx, cn, clean, sv)
	if err != nil {
		return nil, err
	}
	lost, info, err := c.established(cn, ca, clean, sv)
	if c.cfg.OnSessionLost != nil && len(lost) > 0 {
		c.cfg.OnSessionLost(lost, c.cfg.RepublishLost)
	}
	if err != nil {
		return nil, err
	}
	ok = true
	c.log.Info("connected", "server", sv.canonical, "session_present", ca.SessionPresent, "resent", info.Resent)
	if c.cfg.OnConnect != nil {
		c.cfg.OnConnect(info)
	}
	return cn, nil
}

// errStoreFailing stops a connection attempt while the store's writes fail:
// what the session must write before a CONNECT is not durable.
var errStoreFailing = errors.New("client: store writes are failing: not connecting until they succeed")

// prepareSession loads the session for k (when it is not the one in
// memory, or after a store error), drops it when it expired locally, and
// decides Clean Start: 1 when no session state is held.
func (c *Client) prepareSession(ctx context.Context, k store.Key) (lost []*Message, clean bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waitIdle()
	if c.eng.Failing() {
		return nil, false, errStoreFailing
	}
	switch loadedKey, loaded := c.eng.Loaded(); {
	case loaded && k != loadedKey:
		if err := c.failover(ctx, k); err != nil {
			return nil, false, err
		}
	case !loaded:
		if err := c.loadSession(ctx, k, true); err != nil {
			return nil, false, err
		}
	}
	clean, dropped := c.eng.Prepare(time.Now(), c.firstConn)
	c.flush()
	c.waitIdle()
	return lostMessages(dropped), clean, nil
}

// lostMessages gives the messages of a lost session to the application.
func lostMessages(lost []engine.Lost) []*Message {
	var ms []*Message
	for _, l := range lost {
		p := l.Pub
		ms = append(ms, &Message{Ref: l.Ref, Topic: p.Topic, Payload: p.Payload, QoS: p.QoS,
			Retain: p.Retain, Properties: p.Properties})
	}
	return ms
}

// failover moves the client from the session of one server to that of
// another (Config.Servers). Outbound PUBLISH messages, sent or not, move
// with the client and are sent to the new server as new messages, in
// order: at least once, so a QoS 2 message the old server had received may
// arrive twice. They are put under the new key before they are deleted from
// the old one, so a crash in between duplicates rather than loses. PUBRELs
// and inbound QoS 2 records stay with the old server's session (the old
// server has those messages); their publishes complete. mu held, the
// commit pipeline idle.
func (c *Client) failover(ctx context.Context, k store.Key) error {
	oldKey := c.key
	// Every message moves: the stored session read to its end, and the
	// messages left in the store loaded, and what that queued durable
	// under the old key.
	if err := c.waitScanned(ctx); err != nil {
		return err
	}
	if err := c.loadTail(ctx); err != nil {
		return err
	}
	c.waitIdle()
	if c.eng.Failing() {
		return errStoreFailing
	}
	mv := c.eng.Detach()
	c.flush()
	if err := c.loadSession(ctx, k, false); err != nil {
		c.eng.Reattach(mv)
		return err
	}
	c.eng.Attach(mv)
	c.flush()
	c.waitIdle()
	if c.eng.Failing() {
		// The moved messages are not durable under the new key: keep
		// them under the old one (at least once, never lost).
		c.log.Warn("failover: moved messages not stored yet; the old session keeps them", "key", oldKey.String())
	} else if ops := mv.OldOps(); len(ops) > 0 {
		if err := c.st.Apply(ctx, oldKey, ops...); err != nil {
			c.log.Warn("failover: could not remove moved messages from the old session", "key", oldKey.String(), "err", err)
		}
	}
	if mv.Len() > 0 {
		c.log.Info("failover: messages moved to the new server's session", "from", oldKey.Server, "to", k.Server, "messages", mv.Len())
	}
	return nil
}

// handshake sends CONNECT and waits for CONNACK, running enhanced
// authentication in between.
func (c *Client) handshake(ctx context.Context, cn *conn, clean bool, sv server) (*packets.Connack, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = cn.nc.SetDeadline(dl)
	}
	stopWatch := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(time.Unix(1, 0)) })
	defer stopWatch()

	p, err := c.connectPacket(clean, sv)
	if err != nil {
		return nil, err
	}
	b, err := packets.Append(nil, p)
	if err != nil {
		return nil, fmt.Errorf("client: encode CONNECT: %w", err)
	}
	if _, err := cn.nc.Write(b); err != nil {
		return nil, fmt.Errorf("client: write CONNECT: %w", err)
	}
	cn.r = packets.NewReader(cn.nc, int(min(c.cfg.MaximumPacketSize, protocolMaxPacket)))
	cn.r.ReuseAcks()    // handlePacket keeps no acknowledgement past the next Read,
	cn.r.ReusePublish() // and copies what it keeps of a PUBLISH into a Message
	for {
		pk, err := cn.r.Read()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("client: waiting for CONNACK: %w", ctx.Err())
			}
			return nil, fmt.Errorf("client: waiting for CONNACK: %w", err)
		}
		switch pk := pk.(type) {
		case *packets.Connack:
			if pk.ReasonCode.IsError() {
				return nil, &ReasonError{Packet: packets.CONNACK, Code: pk.ReasonCode, Reason: pk.Properties.ReasonString}
			}
			if a := c.cfg.Auth; a != nil {
				if err := a.Finish(pk.Properties.AuthData); err != nil {
					return nil, fmt.Errorf("client: authenticator: %w", err)
				}
			}
			_ = cn.nc.SetDeadline(time.Time{})
			return pk, nil
		case *packets.Auth:
			a := c.cfg.Auth
			if a == nil || pk.ReasonCode != packets.ContinueAuthentication {
				return nil, &protoError{Code: packets.ProtocolError, Msg: "unexpected AUTH during connect"}
			}
			data, err := a.Continue(pk.Properties.AuthData)
			if err != nil {
				return nil, fmt.Errorf("client: authenticator: %w", err)
			}
			resp := &packets.Auth{ReasonCode: packets.ContinueAuthentication,
				Properties: packets.Properties{AuthMethod: a.Method(), AuthData: data}}
			b, err := packets.Append(nil, resp)
			if err != nil {
				return nil, fmt.Errorf("client: encode AUTH: %w", err)
			}
			if _, err := cn.nc.Write(b); err != nil {
				return nil, fmt.Errorf("client: write AUTH: %w", err)
			}
		default:
			return nil, &protoError{Code: packets.ProtocolError, Msg: "expected CONNACK, got " + engine.TypeName(pk.Type())}
		}
	}
}

// connectPacket builds the CONNECT for sv: Clean Start, our limits, the
// credentials (the server URL's, if any), the Will and the start of
// enhanced authentication.
func (c *Client) connectPacket(clean bool, sv server) (*packets.Connect, error) {
	p := &packets.Connect{CleanStart: clean, ClientID: c.cfg.ClientID, Properties: c.cfg.Properties}
	p.Properties.User = c.cfg.Properties.User
	if c.cfg.KeepAlive > 0 {
		p.KeepAlive = uint16(min(max(c.cfg.KeepAlive/time.Second, 1), 65535))
	}
	exp := c.expirySeconds()
	if exp > 0 {
		p.Properties.SessionExpiry = &exp
	} else {
		p.Properties.SessionExpiry = nil
	}
	if c.recvMax != 65535 {
		p.Properties.ReceiveMaximum = c.recvMax
	}
	p.Properties.MaximumPacketSize = c.cfg.MaximumPacketSize
	if c.cfg.MaximumPacketSize >= protocolMaxPacket {
		p.Properties.MaximumPacketSize = 0 // the protocol's own limit: nothing to announce
	}
	p.Properties.TopicAliasMaximum = c.cfg.TopicAliasMaximum
	if c.cfg.Username != "" {
		p.Username, p.HasUsername = c.cfg.Username, true
	}
	if c.cfg.Password != nil {
		p.Password, p.HasPassword = c.cfg.Password, true
	}
	if sv.hasUser { // mqtt://user:pass@host: the URL names this server's credentials
		p.Username, p.HasUsername = sv.user, true
		p.Password, p.HasPassword = sv.pass, sv.hasPass
	}
	if w := c.cfg.Will; w != nil {
		p.Will = &packets.Will{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain, Properties: w.Properties}
	}
	if a := c.cfg.Auth; a != nil {
		data, err := a.Start()
		if err != nil {
			return nil, fmt.Errorf("client: authenticator: %w", err)
		}
		p.Properties.AuthMethod, p.Properties.AuthData = a.Method(), data
	} else {
		p.Properties.AuthMethod, p.Properties.AuthData = "", nil
	}
	return p, nil
}

func (c *Client) expirySeconds() uint32 {
	s := c.cfg.SessionExpiry / time.Second
	if s >= 0xFFFFFFFF {
		return 0xFFFFFFFF
	}
	if s < 0 {
		return 0
	}
	return uint32(s)
}

// established applies a successful CONNACK: the server's limits, Session
// Present, the resend of the stored session, resubscription; then starts
// the connection's goroutines.
func (c *Client) established(cn *conn, ca *packets.Connack, clean bool, sv server) ([]*Message, *ConnectInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, ErrClosed
	}
	r, err := c.eng.Connected(cn, ca, clean, time.Now())
	if err != nil {
		// The writer does not run yet: say why directly, then close.
		if b, e := packets.Append(nil, &packets.Disconnect{ReasonCode: packets.ProtocolError}); e == nil {
			_ = cn.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = cn.nc.Write(b)
		}
		return nil, nil, err
	}
	c.firstConn = false
	cn.gen = c.eng.Generation()
	cn.keepAlive = c.cfg.KeepAlive
	if ka := ca.Properties.ServerKeepAlive; ka != nil { // MQTT-3.2.2-21
		cn.keepAlive = time.Duration(*ka) * time.Second
	}
	if cn.keepAlive < 0 {
		cn.keepAlive = 0
	}
	c.conn = cn
	cn.ready = true
	if len(r.Resubscribe) > 0 {
		c.resubscribe(cn, r.Resubscribe) // before the resend the engine queued
	}
	c.flush()

	cn.wg.Add(2)
	go cn.readLoop()
	go cn.writeLoop()
	if cn.keepAlive > 0 {
		cn.wg.Add(1)
		go cn.keepAliveLoop()
	}
	info := &ConnectInfo{Server: sv.canonical, SessionPresent: ca.SessionPresent, Resent: r.Resent, Connack: ca}
	return lostMessages(r.Lost), info, nil
}

// connectionLost cleans up after a connection ended: requests waiting on
// it fail, the time is recorded in the meta record.
func (c *Client) connectionLost(cn *conn) error {
	err := cn.Err()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == cn {
		c.conn = nil
	}
	for id, r := range c.requests {
		delete(c.requests, id)
		c.eng.ReleaseID(id)
		r.finish(nil, wrap(ErrConnectionLost, err))
	}
	if cn.reauth != nil {
		cn.reauth <- wrap(ErrConnectionLost, err)
		cn.reauth = nil
	}
	c.eng.Disconnected(cn.handedOver(), time.Now())
	c.flush()
	// Wait for the meta record's write: a store that fences (store.Owner)
	// refuses it when another process took the session over, and the
	// application must then hear ErrSessionTaken, not a plain connection
	// loss.
	c.waitIdle()
	if c.fatal != nil {
		err = wrap(c.fatal, err)
	}
	c.log.Info("connection lost", "err", err)
	return err
}

// refreshMeta rewrites the meta record now and then while connected, so
// that a crash does not make a live session look expired. Called by the
// keep-alive loop.
func (c *Client) refreshMeta() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.eng.Tick(time.Now())
		c.flush()
	}
}
