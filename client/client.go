package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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

	// storedWaiters counts tokens whose Stored someone waits on, not yet
	// closed: while there are any, every batch is committed at once.
	storedWaiters atomic.Int32

	mu       sync.Mutex // guards every field below
	idleCond *sync.Cond // signalled when the committer is idle
	// commitNow: commit the next batch even if nothing waits for it
	// (waitIdle, or the lazy delay ran out); lazyKicked: the committer was
	// told of a batch that may wait, and will commit it within lazyDelay.
	commitNow, lazyKicked bool

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
	scanDone        chan struct{}       // closed when the paged load of the session has read its last page
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
	if err := cfg.check(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg.withDefaults(), log: cfg.Logger, st: cfg.Store}
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
	c.storeCtx, c.cancel = context.WithCancel(context.Background())
	c.idleCond = sync.NewCond(&c.mu)
	c.commitKick = make(chan struct{}, 1)
	c.commitStop = make(chan struct{})
	c.requests = make(map[uint16]*request)
	c.firstConn = true
	c.key = c.keyFor(c.servers[0])
	_, depth := c.pipeliner()
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
		LoadWindow:           c.cfg.LoadWindow,
		Pipeline:             depth,
		Log:                  engineLog{c.log, c.flood},
	})
	c.deliv = newDelivery(c)
	c.wg.Add(2)
	go c.committer()
	go c.deliv.run()
	return c, nil
}

// check reports what makes cfg unusable.
func (cfg *Config) check() error {
	if cfg.ClientID == "" {
		return errors.New("client: Config.ClientID is required")
	}
	if len(cfg.Servers) == 0 {
		return errors.New("client: Config.Servers is empty")
	}
	if cfg.OnMessageTx != nil {
		if _, ok := cfg.Store.(store.Transactor); !ok {
			return errors.New("client: Config.OnMessageTx needs a Store that implements store.Transactor (bolt, sqlite)")
		}
		if cfg.OnMessage != nil || cfg.ManualAck {
			return errors.New("client: Config.OnMessageTx excludes OnMessage and ManualAck")
		}
	}
	return nil
}

// withDefaults returns cfg with the documented default in every optional
// bound left at zero.
func (cfg Config) withDefaults() Config {
	setDefault(&cfg.MaxQueuedQoS0, 10000)
	setDefault(&cfg.MaxInboundBytes, DefaultMaxInboundBytes)
	setDefault(&cfg.MaxQueued, DefaultMaxQueued)
	setDefault(&cfg.MaxQueuedBytes, DefaultMaxQueuedBytes)
	setDefault(&cfg.MaxWriteBuffer, DefaultMaxWriteBuffer)
	setDefault(&cfg.WriteTimeout, 30*time.Second)
	setDefault(&cfg.ConnectTimeout, 10*time.Second)
	setDefault(&cfg.ReconnectBackoff.Min, 100*time.Millisecond)
	if cfg.MaximumPacketSize == 0 {
		cfg.MaximumPacketSize = DefaultMaximumPacketSize
	}
	if cfg.ReconnectBackoff.Max < cfg.ReconnectBackoff.Min {
		cfg.ReconnectBackoff.Max = max(30*time.Second, cfg.ReconnectBackoff.Min)
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 60 * time.Second // a negative one turns keep alive off
	}
	return cfg
}

// setDefault sets *v to def when it is zero or negative.
func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
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
			if c.serve(cn, stop) >= backoff {
				// A connection that lived at least as long as the wait
				// before it resets the backoff; one dropped at once (a
				// takeover fight, a server refusing after CONNACK) keeps it
				// growing.
				backoff = c.cfg.ReconnectBackoff.Min
			}
		} else if c.connectFailed(idx, err, everConnected) {
			return
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

// serve waits for the connection to end, or for the loop to stop, cleans
// up after it, and returns how long it lived.
func (c *Client) serve(cn *conn, stop chan struct{}) time.Duration {
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
	lived := time.Since(upSince)
	lostErr := c.connectionLost(cn)
	c.mu.Lock()
	userStop := c.stopping
	c.mu.Unlock()
	if !userStop && c.cfg.OnConnectionLost != nil {
		c.cfg.OnConnectionLost(lostErr)
	}
	return lived
}

// connectFailed records why connecting to server idx failed, moves on to
// the next server, and reports whether the loop must stop: the session is
// taken, the client closed, or the very first attempt was refused.
func (c *Client) connectFailed(idx int, err error, everConnected bool) bool {
	c.log.Info("connect failed", "server", c.servers[idx].canonical, "err", err)
	c.mu.Lock()
	c.connectErr = err
	if len(c.servers) > 1 {
		c.srvIdx = (c.srvIdx + 1) % len(c.servers)
	}
	c.mu.Unlock()
	if errors.Is(err, ErrSessionTaken) || errors.Is(err, ErrClosed) {
		return true
	}
	var re *ReasonError
	var pe *protoError
	refused := errors.As(err, &re) || errors.As(err, &pe) || errors.Is(err, store.ErrRefused)
	return !everConnected && refused
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
	if c.eng.Discarding() {
		// Inbound records of a discarded session are still being
		// reached by the scan; left in the store, the next process would
		// take a new message under one of their identifiers for a
		// repeat. Let the scan end, for a while.
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ConnectTimeout)
		_ = c.waitScanned(ctx)
		cancel()
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
