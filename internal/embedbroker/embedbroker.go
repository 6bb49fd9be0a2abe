// Package embedbroker runs an MQTT v5 broker inside the current process,
// built on github.com/mochi-mqtt/server/v2, listening on a loopback address.
// The zero-setup demo uses it so that tether can be tried without
// installing a broker, and tests use it as a second broker implementation
// beside Mosquitto.
//
// It is a module of its own, so that mochi-mqtt stays out of the library's
// module graph: the tether command (also a module of its own) links it,
// and tether's tests run it as a child process through the serve command
// in this module (internal/testenv's Mochi).
//
// The broker accepts every client (no authentication), keeps sessions in
// memory across client reconnects for as long as each client's Session
// Expiry Interval asks, and never expires a queued message on its own
// account: a QoS 1 or 2 message waiting for an offline persistent session
// is kept until delivered, until its own Message Expiry passes, or until
// the session expires. Nothing survives Close.
//
// Known limitations of mochi-mqtt v2.7.9 that matter to a client author:
//
//   - It keeps the packet identifiers of both directions of a session in
//     one table (upstream issues 519 and 545). A client that publishes at
//     QoS 1 or 2 with an identifier the broker is currently using for an
//     unacknowledged delivery to that same client makes the broker forget
//     that delivery: it is never completed nor resent.
//   - When a session resumes, it resends every unacknowledged or queued
//     message at once, each with DUP=1 (even one never sent before),
//     without regard to the client's Receive Maximum, and in an arbitrary
//     order among messages stored within the same second: it sorts them by
//     their creation time in whole seconds. A message that was held back
//     by the client's Receive Maximum may then be sent a second time, with
//     DUP=0, once an acknowledgement frees the quota.
//   - A message handed to a session at the moment its client reconnects
//     can be lost: the session's messages are copied to the new connection
//     while the message is added to the old one, which is then cleared.
//     And the broker acknowledges a PUBLISH (PUBACK, PUBREC) before it
//     hands the message to the subscriptions, so a publisher's PUBACK does
//     not prove the message is queued; a PINGRESP after it does, since
//     each connection's packets are handled in order.
//   - Its queue per session is bounded by the packet identifier space:
//     at most 65535 unacknowledged or queued QoS 1/2 messages (see
//     Options.MaxQueued); beyond that, new messages for the session are
//     dropped and counted in the broker's $SYS dropped-inflight figure.
package embedbroker

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Defaults for the zero values of Options.
const (
	// DefaultAddr is where the broker listens when Options.Addr is empty:
	// a free loopback port.
	DefaultAddr = "127.0.0.1:0"
	// DefaultReceiveMaximum is the Receive Maximum the broker announces
	// when Options.ReceiveMaximum is zero (mochi's own default).
	DefaultReceiveMaximum = 1024
	// MaxQueuedLimit is the largest per-session queue mochi supports: its
	// count of unacknowledged and queued QoS 1/2 messages is a uint16 and
	// each needs a packet identifier.
	MaxQueuedLimit = math.MaxUint16
)

// Options configures Start. The zero value is a usable broker.
type Options struct {
	// Addr is the TCP address to listen on. Empty means DefaultAddr.
	Addr string
	// ReceiveMaximum is the Receive Maximum announced in CONNACK: how many
	// unacknowledged QoS 1/2 PUBLISHes a client may have in flight towards
	// the broker. Zero means DefaultReceiveMaximum.
	ReceiveMaximum uint16
	// MaxQueued bounds the QoS 1/2 messages the broker holds per session
	// (in flight, waiting for the client's Receive Maximum, or queued while
	// the client is offline). Zero, or anything above MaxQueuedLimit, means
	// MaxQueuedLimit, the most mochi allows.
	MaxQueued int
	// Logger receives the broker's logs. Nil discards them.
	Logger *slog.Logger
}

// Broker is a running embedded broker. Its methods are safe for
// concurrent use.
type Broker struct {
	srv       *mqtt.Server
	ln        *listener
	closeOnce sync.Once
}

// listenerID names the broker's single listener inside mochi.
const listenerID = "tether-embedded"

// Start starts a broker listening on opts.Addr and returns once it accepts
// connections.
func Start(opts Options) (*Broker, error) {
	addr := opts.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.ReceiveMaximum = opts.ReceiveMaximum
	if caps.ReceiveMaximum == 0 {
		caps.ReceiveMaximum = DefaultReceiveMaximum
	}
	queued := opts.MaxQueued
	if queued <= 0 || queued > MaxQueuedLimit {
		queued = MaxQueuedLimit
	}
	// MaximumInflight is mochi's per-session store of QoS 1/2 messages;
	// it also caps the Receive Maximum a client announces.
	caps.MaximumInflight = uint16(queued)
	// Messages to an online client go through a channel of this size, and
	// mochi drops (and forgets) a QoS 1/2 message that finds it full. Make
	// room for every message the session may hold, plus some QoS 0.
	caps.MaximumClientWritesPending = int32(queued) + 1024
	// Mochi's default deletes every stored message and acknowledgement
	// after a day, whatever its own Message Expiry: a silent loss for a
	// long offline session. Zero leaves expiry to each message.
	caps.MaximumMessageExpiryInterval = 0
	// Keep each session as long as its client asks; 0xFFFFFFFF means never
	// expire.
	caps.MaximumSessionExpiryInterval = math.MaxUint32

	nl, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedbroker: listen on %s: %w", addr, err)
	}
	ln := &listener{ln: nl, conns: make(map[net.Conn]struct{})}
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       logger,
		// $SYS topics once a minute rather than every second: nobody
		// needs them here and they cost a wakeup.
		SysTopicResendInterval: 60,
	})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		_ = nl.Close()
		return nil, fmt.Errorf("embedbroker: add auth hook: %w", err)
	}
	if err := srv.AddListener(ln); err != nil {
		_ = nl.Close()
		return nil, fmt.Errorf("embedbroker: add listener: %w", err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("embedbroker: serve: %w", err)
	}
	return &Broker{srv: srv, ln: ln}, nil
}

// Addr returns the address the broker listens on, "host:port".
func (b *Broker) Addr() string { return b.ln.ln.Addr().String() }

// URL returns the broker's address as "mqtt://host:port".
func (b *Broker) URL() string { return "mqtt://" + b.Addr() }

// Server returns the underlying mochi server, for tests that need to look
// at its state (its Clients, Info or Topics).
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Close sends every connected client a DISCONNECT (Server shutting down),
// closes every connection and the listener, and waits for every connection
// handler to return. All sessions are lost. Calling it again does nothing.
//
// Two of mochi's goroutines end on their own a moment after Close returns,
// since mochi offers no way to wait for them: the server's housekeeping
// loop (mqtt.(*Server).eventLoop) and each connection's writer
// (mqtt.(*Client).WriteLoop). Both have already been told to stop and
// return without blocking; a leak check that retries for a moment, as
// goleak does, sees neither.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		// mochi's Close calls the listener's Close, which does the work.
		_ = b.srv.Close()
	})
	return nil
}

// listener is a mochi listener over a net.Listener that, unlike mochi's
// own TCP listener, tracks every connection it hands to the server, so
// that closing it closes them all and waits for their handlers. Mochi's
// listener leaves a connection that has not yet sent CONNECT blocked
// forever, which would hang the server's Close.
type listener struct {
	ln net.Listener

	mu     sync.Mutex // guards the fields below
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup // Serve and each connection handler; Add under mu while !closed
}

// ID names the listener.
func (l *listener) ID() string { return listenerID }

// Address returns the listening address.
func (l *listener) Address() string { return l.ln.Addr().String() }

// Protocol returns "tcp".
func (l *listener) Protocol() string { return "tcp" }

// Init does nothing: Start listens before creating the server, so that a
// bad address fails early and the port is known.
func (l *listener) Init(*slog.Logger) error { return nil }

// closeWriteGrace bounds how long the DISCONNECT sent to each client on
// Close may take to write: a client that does not read must not hang
// Close.
const closeWriteGrace = time.Second

// Serve accepts connections until the listener is closed, handing each to
// establish in its own goroutine.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (too many open files): back off a little.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			// establish returns when the client disconnects; mochi has
			// already logged why.
			_ = establish(listenerID, c)
			_ = c.Close()
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
		}()
	}
}

// Close disconnects the clients through closeClients, then closes the
// listener and every connection, and waits for Serve and every connection
// handler to return.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.wg.Wait()
		return
	}
	deadline := time.Now().Add(closeWriteGrace)
	for c := range l.conns {
		_ = c.SetWriteDeadline(deadline)
	}
	l.mu.Unlock()

	closeClients(listenerID)

	l.mu.Lock()
	l.closed = true
	_ = l.ln.Close()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// allowAll lets every client connect and use every topic. It does what
// mochi's auth.AllowHook does; that package is not used because it pulls
// in a YAML library the module does not otherwise need.
type allowAll struct {
	mqtt.HookBase
}

// ID names the hook.
func (*allowAll) ID() string { return "tether-allow-all" }

// Provides reports the two hooks that grant access.
func (*allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate accepts every client.
func (*allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck allows every topic, both ways.
func (*allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
