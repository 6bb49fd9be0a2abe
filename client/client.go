package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tethermq/tether/client/internal/engine"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// Client is an MQTT v5 client for one session (ClientID) that keeps its
// session state in a store.SessionStore, so that the session survives
// reconnects, process restarts and, with a shared store, failover to
// another process. It manages its own connection: after Connect it
// reconnects by itself, with backoff, across Config.Servers, until Close.
//
// Every method is safe for concurrent use. Callbacks (Config.OnMessage,
// OnConnect, OnConnectionLost, OnSessionLost, OnServerDisconnect) must not
// call Close or Disconnect, which wait for them to return: call those from
// another goroutine.
type Client struct {
	cfg      Config
	log      *slog.Logger
	flood    *floodLog // rate-limited warnings a server can trigger at will
	st       store.SessionStore
	ownStore bool
	servers  []server
	recvMax  uint16
	window   int             // Config.CrashWindow, at most recvMax
	storeCtx context.Context // cancelled by Close: bounds store calls
	cancel   context.CancelFunc

	wg         sync.WaitGroup // committer, delivery, connection loop
	commitKick chan struct{}
	commitStop chan struct{}
	deliv      *delivery

	mu       sync.Mutex // guards every field below
	idleCond *sync.Cond // signalled when the committer is idle

	closed     bool
	stopping   bool          // Connect gave up, or Disconnect/Close: no OnConnectionLost
	fatal      error         // stops reconnection (session taken)
	loopStop   chan struct{} // closed to end the connection loop; nil when not running
	loopDone   chan struct{}
	connected  chan struct{} // closed at the first CONNACK of a Connect
	connectErr error         // why the first connection of a Connect failed for good
	srvIdx     int           // server being used or tried
	lease      store.Lease
	leaseStop  chan struct{}

	// The session lives in eng; the fields below are the driver's.
	eng             *engine.Engine
	key             store.Key           // the session key loaded, or to load first
	firstConn       bool                // the next CONNACK will be the first of this Client
	conn            *conn               // the live connection, nil when disconnected
	requests        map[uint16]*request // SUBSCRIBE/UNSUBSCRIBE waiting for their ack
	idFreed         chan struct{}       // closed when a packet identifier is freed
	queueRoom       chan struct{}       // closed when a queued message leaves; nil when nobody waits
	corruptReported *store.CorruptError // handed to Config.OnCorrupt already
}

// Defaults of the resource bounds in Config; README's "Resource limits and
// security" gives the worst-case memory they add up to.
const (
	DefaultMaximumPacketSize = 1 << 20  // Config.MaximumPacketSize
	DefaultMaxInboundBytes   = 64 << 20 // Config.MaxInboundBytes
	DefaultMaxWriteBuffer    = 4 << 20  // Config.MaxWriteBuffer
	DefaultCrashWindow       = 32       // Config.CrashWindow

	// protocolMaxPacket is the largest packet MQTT allows: a fixed header
	// byte, four length bytes and 268,435,455 bytes.
	protocolMaxPacket = 1 + 4 + 268435455
)

// New returns a Client for cfg. It does not connect: call Connect. Its
// background goroutines run until Close, which must be called.
func New(cfg Config) (*Client, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("client: Config.ClientID is required")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("client: Config.Servers is empty")
	}
	if cfg.OnMessageTx != nil {
		if _, ok := cfg.Store.(store.Transactor); !ok {
			return nil, errors.New("client: Config.OnMessageTx needs a Store that implements store.Transactor (bolt, sqlite)")
		}
		if cfg.OnMessage != nil || cfg.ManualAck {
			return nil, errors.New("client: Config.OnMessageTx excludes OnMessage and ManualAck")
		}
	}
	c := &Client{cfg: cfg, log: cfg.Logger, st: cfg.Store}
	for _, s := range cfg.Servers {
		sv, err := parseServer(s)
		if err != nil {
			return nil, err
		}
		c.servers = append(c.servers, sv)
	}
	if c.log == nil {
		c.log = slog.New(discardHandler{})
	}
	c.log = c.log.With("client_id", cfg.ClientID)
	c.flood = newFloodLog(c.log)
	if c.st == nil {
		c.st, c.ownStore = memory.New(), true
	}
	c.recvMax = cfg.ReceiveMaximum
	if c.recvMax == 0 {
		c.recvMax = 1024
	}
	c.window = c.cfg.CrashWindow
	if c.window <= 0 {
		c.window = DefaultCrashWindow
	}
	c.window = min(c.window, int(c.recvMax))
	if c.cfg.MaxQueuedQoS0 <= 0 {
		c.cfg.MaxQueuedQoS0 = 10000
	}
	if c.cfg.MaxInboundBytes <= 0 {
		c.cfg.MaxInboundBytes = DefaultMaxInboundBytes
	}
	if c.cfg.MaxQueued <= 0 {
		c.cfg.MaxQueued = DefaultMaxQueued
	}
	if c.cfg.MaxQueuedBytes <= 0 {
		c.cfg.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if c.cfg.MaxWriteBuffer <= 0 {
		c.cfg.MaxWriteBuffer = DefaultMaxWriteBuffer
	}
	if c.cfg.WriteTimeout <= 0 {
		c.cfg.WriteTimeout = 30 * time.Second
	}
	if c.cfg.MaximumPacketSize == 0 {
		c.cfg.MaximumPacketSize = DefaultMaximumPacketSize
	}
	if c.cfg.ConnectTimeout <= 0 {
		c.cfg.ConnectTimeout = 10 * time.Second
	}
	if c.cfg.ReconnectBackoff.Min <= 0 {
		c.cfg.ReconnectBackoff.Min = 100 * time.Millisecond
	}
	if c.cfg.ReconnectBackoff.Max < c.cfg.ReconnectBackoff.Min {
		c.cfg.ReconnectBackoff.Max = max(30*time.Second, c.cfg.ReconnectBackoff.Min)
	}
	if c.cfg.KeepAlive == 0 {
		c.cfg.KeepAlive = 60 * time.Second
	}
	c.storeCtx, c.cancel = context.WithCancel(context.Background())
	c.idleCond = sync.NewCond(&c.mu)
	c.commitKick = make(chan struct{}, 1)
	c.commitStop = make(chan struct{})
	c.requests = make(map[uint16]*request)
	c.firstConn = true
	c.key = c.keyFor(c.servers[0])
	c.eng = engine.New(engine.Config{
		ReceiveMaximum:       c.recvMax,
		CrashWindow:          c.window,
		StrictReceiveMaximum: c.cfg.StrictReceiveMaximum,
		TopicAliasMaximum:    c.cfg.TopicAliasMaximum,
		OutboundTopicAliases: c.cfg.OutboundTopicAliases,
		RepublishLost:        c.cfg.RepublishLost,
		CleanStart:           c.cfg.CleanStart,
		SessionExpiry:        c.expirySeconds(),
		MaxQueued:            c.cfg.MaxQueued,
		MaxQueuedBytes:       c.cfg.MaxQueuedBytes,
		MaxPacketID:          maxPacketID,
		Log:                  engineLog{c.log, c.flood},
	})
	c.deliv = newDelivery(c)
	c.wg.Add(2)
	go c.committer()
	go c.deliv.run()
	return c, nil
}

// keyFor returns the store key of the session on sv: one per server, or
// one for the whole cluster (Config.Cluster).
func (c *Client) keyFor(sv server) store.Key {
	if c.cfg.Cluster != "" {
		return store.Key{Server: "cluster:" + c.cfg.Cluster, ClientID: c.cfg.ClientID}
	}
	return store.Key{Server: sv.canonical, ClientID: c.cfg.ClientID}
}

// Connect starts the connection loop and waits for the first CONNACK. It
// returns nil once connected; afterwards the client reconnects by itself
// whenever the connection drops, until Close. It fails (and stops trying)
// when ctx ends first, when the server refuses the connection (a
// *ReasonError), or when the store's session lease is held elsewhere
// (ErrSessionTaken). Connect on a connected Client returns nil.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.fatal != nil {
		c.mu.Unlock()
		return c.fatal
	}
	if c.loopDone != nil {
		select {
		case <-c.loopDone:
			c.loopStop = nil // the last loop gave up (a refusal): try again
		default:
		}
	}
	if c.loopStop == nil {
		c.loopStop = make(chan struct{})
		c.loopDone = make(chan struct{})
		c.connected = make(chan struct{})
		c.connectErr = nil
		c.wg.Add(1)
		go c.run(c.loopStop, c.loopDone, c.connected)
	}
	connected, loopDone := c.connected, c.loopDone
	c.mu.Unlock()

	select {
	case <-connected:
		return nil
	case <-loopDone:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.connectErr != nil {
			return c.connectErr
		}
		if c.fatal != nil {
			return c.fatal
		}
		return ErrClosed
	case <-ctx.Done():
		select {
		case <-connected:
			return nil
		default:
		}
		c.mu.Lock()
		err := c.connectErr
		c.mu.Unlock()
		c.stopLoop()
		if err != nil {
			return fmt.Errorf("client: connect: %w (last attempt: %w)", ctx.Err(), err)
		}
		return fmt.Errorf("client: connect: %w", ctx.Err())
	}
}

// stopLoop ends the connection loop and waits for it.
func (c *Client) stopLoop() {
	c.mu.Lock()
	c.stopping = true
	stop, done := c.loopStop, c.loopDone
	if stop != nil {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}
	cn := c.conn
	c.mu.Unlock()
	if stop == nil {
		return
	}
	if cn != nil {
		cn.close(ErrClosed)
	}
	<-done
	c.mu.Lock()
	if c.loopStop == stop {
		c.loopStop = nil
	}
	c.stopping = false
	c.mu.Unlock()
}

// run is the connection loop: connect, serve until the connection drops,
// wait a backoff, connect again, trying the servers in order.
func (c *Client) run(stop, done, connected chan struct{}) {
	defer c.wg.Done()
	defer close(done)
	backoff := c.cfg.ReconnectBackoff.Min
	everConnected := false
	for {
		select {
		case <-stop:
			return
		default:
		}
		c.mu.Lock()
		idx := c.srvIdx
		c.mu.Unlock()
		cn, err := c.connectOnce(stop, c.servers[idx])
		if err == nil {
			if !everConnected {
				everConnected = true
				close(connected)
			}
			upSince := time.Now()
			select {
			case <-cn.done:
			case <-stop:
				// Whoever stopped the loop closes the connection, with a
				// DISCONNECT when it is Disconnect; do not cut it short.
				t := time.NewTimer(3 * time.Second)
				select {
				case <-cn.done:
				case <-t.C:
					cn.close(ErrClosed)
				}
				t.Stop()
			}
			cn.wg.Wait()
			if time.Since(upSince) >= backoff {
				// A connection that lived at least as long as the wait
				// before it resets the backoff; one dropped at once (a
				// takeover fight, a server refusing after CONNACK) keeps it
				// growing.
				backoff = c.cfg.ReconnectBackoff.Min
			}
			lostErr := c.connectionLost(cn)
			c.mu.Lock()
			userStop := c.stopping
			c.mu.Unlock()
			if !userStop && c.cfg.OnConnectionLost != nil {
				c.cfg.OnConnectionLost(lostErr)
			}
			select {
			case <-stop:
				return
			default:
			}
		} else {
			c.log.Info("connect failed", "server", c.servers[idx].canonical, "err", err)
			var re *ReasonError
			fatal := errors.Is(err, ErrSessionTaken) || errors.Is(err, ErrClosed)
			c.mu.Lock()
			c.connectErr = err
			if len(c.servers) > 1 {
				c.srvIdx = (c.srvIdx + 1) % len(c.servers)
			}
			c.mu.Unlock()
			var pe *protoError
			refused := errors.As(err, &re) || errors.As(err, &pe) || errors.Is(err, store.ErrRefused)
			if fatal || (!everConnected && refused) {
				return
			}
		}
		// Jitter over the upper half of the doubling window, so that many
		// clients cut at once do not come back in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, c.cfg.ReconnectBackoff.Max)
		t := time.NewTimer(wait)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

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
	cn := newConn(c, nc)
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

// prepareSession loads the session for k (when it is not the one in
// memory, or after a store error), drops it when it expired locally, and
// decides Clean Start: 1 when no session state is held.
func (c *Client) prepareSession(ctx context.Context, k store.Key) (lost []*Message, clean bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waitIdle()
	if c.eng.Failing() {
		return nil, false, errors.New("client: store writes are failing: not connecting until they succeed")
	}
	switch loadedKey, loaded := c.eng.Loaded(); {
	case loaded && k != loadedKey:
		if err := c.failover(ctx, k); err != nil {
			return nil, false, err
		}
	case !loaded:
		if err := c.loadSession(ctx, k); err != nil {
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
	mv := c.eng.Detach()
	c.flush()
	if err := c.loadSession(ctx, k); err != nil {
		c.eng.Reattach(mv)
		return err
	}
	c.eng.Attach(mv)
	c.flush()
	c.waitIdle()
	if dels := mv.Deletes(); len(dels) > 0 {
		if err := c.st.Apply(ctx, oldKey, dels...); err != nil {
			c.log.Warn("failover: could not delete moved messages from the old session", "key", oldKey.String(), "err", err)
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

// setFatal records an error that stops reconnection. mu held.
func (c *Client) setFatal(err error) {
	if c.fatal == nil {
		c.fatal = err
	}
	// This Client will complete none of its pending publishes; their
	// records stay in the store for whoever holds the session now.
	c.eng.Abort(err)
	c.flush()
	if c.loopStop != nil {
		select {
		case <-c.loopStop:
		default:
			close(c.loopStop)
		}
	}
}

// acquireLease takes the store's lease on k when the store has leases
// (store.Owner) and the client does not hold it yet.
func (c *Client) acquireLease(ctx context.Context, k store.Key) error {
	ow, ok := c.st.(store.Owner)
	if !ok {
		return nil
	}
	c.mu.Lock()
	held := c.lease
	c.mu.Unlock()
	if held != nil && held.Key() == k {
		select {
		case <-held.Lost():
		default:
			return nil
		}
	}
	if held != nil {
		c.releaseLease()
	}
	l, err := ow.Acquire(ctx, k, store.LeaseOptions{TTL: c.cfg.LeaseTTL, Wait: c.cfg.WaitForLease})
	if err != nil {
		if errors.Is(err, store.ErrSessionTaken) {
			c.mu.Lock()
			c.setFatal(ErrSessionTaken)
			c.mu.Unlock()
		}
		return fmt.Errorf("client: acquire session lease %s: %w", k, err)
	}
	stop := make(chan struct{})
	c.mu.Lock()
	c.lease, c.leaseStop = l, stop
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		select {
		case <-l.Lost():
			c.log.Error("session lease lost: stopping", "key", k.String())
			c.mu.Lock()
			c.setFatal(ErrSessionTaken)
			cn := c.conn
			c.mu.Unlock()
			if cn != nil {
				cn.fail(ErrSessionTaken, packets.NormalDisconnection, true)
			}
		case <-stop:
		}
	}()
	return nil
}

func (c *Client) releaseLease() {
	c.mu.Lock()
	l, stop := c.lease, c.leaseStop
	c.lease, c.leaseStop = nil, nil
	c.mu.Unlock()
	if l == nil {
		return
	}
	close(stop)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.storeCtx), 5*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil {
		c.log.Warn("release session lease", "err", err)
	}
}

// Disconnect sends DISCONNECT with reason (0 for a normal disconnection;
// packets.DisconnectWithWill to have the server publish the Will), then
// closes the client as Close does. Stored session state stays in the store
// for a later Client.
func (c *Client) Disconnect(ctx context.Context, reason packets.ReasonCode) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	stop := c.loopStop
	cn := c.conn
	c.stopping = true
	if stop != nil {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}
	c.mu.Unlock()
	var err error
	if cn != nil {
		cn.shutdown(&packets.Disconnect{ReasonCode: reason})
		select {
		case <-cn.done:
		case <-ctx.Done():
			err = ctx.Err()
			cn.close(ErrClosed)
		}
	}
	c.shutdown()
	return err
}

// Close disconnects normally (waiting at most a few seconds for the
// DISCONNECT to be written), ends every goroutine of the client, releases
// the session lease and, when the client made its own memory store, drops
// it. Publishes still pending fail with ErrClosed; their messages stay
// stored and a later Client on the same store sends them. Close is
// idempotent.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := c.Disconnect(ctx, packets.NormalDisconnection)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// shutdown stops the loop, waits for pending store writes, then stops the
// committer and delivery.
func (c *Client) shutdown() {
	c.stopLoop()
	// Let a running handler finish, so that its acknowledgement reaches the
	// store before the committer stops.
	c.deliv.stop()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.waitIdle()
	c.eng.Abort(ErrClosed)
	c.flush()
	if c.idFreed != nil {
		close(c.idFreed)
		c.idFreed = nil
	}
	c.mu.Unlock()
	close(c.commitStop)
	c.releaseLease()
	c.wg.Wait()
	c.cancel()
	if c.ownStore {
		_ = c.st.Close()
	}
}
