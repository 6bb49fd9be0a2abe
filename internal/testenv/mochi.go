package testenv

import (
	"sync"
	"testing"

	"github.com/tethermq/tether/internal/embedbroker"
)

// MochiBroker is an embedded MQTT v5 broker (mochi-mqtt, through
// internal/embedbroker) running inside the test process: a second broker
// implementation beside Mosquitto, always available, needing no binary. It
// keeps everything in memory, so Stop, Kill and Restart lose every session.
// Its methods are safe for concurrent use.
type MochiBroker struct {
	t    testing.TB
	opts embedbroker.Options
	addr string

	mu sync.Mutex          // guards b
	b  *embedbroker.Broker // nil while stopped
}

// Mochi starts an embedded broker on a free loopback port and closes it
// when the test ends. At most one Options may be given; its Addr, when
// empty, defaults to a free loopback port, and its other zero fields to
// embedbroker's defaults (an unlimited-as-mochi-allows queue, so QoS 1/2
// messages for offline sessions are not dropped).
func Mochi(t testing.TB, opts ...embedbroker.Options) *MochiBroker {
	t.Helper()
	var o embedbroker.Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		t.Fatalf("testenv: Mochi takes at most one Options, got %d", len(opts))
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	b, err := embedbroker.Start(o)
	if err != nil {
		t.Fatalf("testenv: start mochi: %v", err)
	}
	m := &MochiBroker{t: t, opts: o, addr: b.Addr(), b: b}
	m.opts.Addr = m.addr // Start reuses the port
	t.Cleanup(m.close)
	return m
}

// Addr returns the broker's address, "127.0.0.1:PORT". It stays the same
// across Stop and Start.
func (m *MochiBroker) Addr() string { return m.addr }

// URL returns the broker's address as "mqtt://127.0.0.1:PORT".
func (m *MochiBroker) URL() string { return "mqtt://" + m.addr }

// Broker returns the running embedded broker, or nil while stopped.
func (m *MochiBroker) Broker() *embedbroker.Broker {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b
}

// Stop shuts the broker down: every connected client gets a DISCONNECT
// (Server shutting down), every connection is closed, and every session is
// lost. Stopping a stopped broker does nothing.
func (m *MochiBroker) Stop() {
	m.t.Helper()
	m.close()
}

// Kill is Stop: an in-memory broker has nothing to lose that Stop keeps.
// It exists so that tests written against Broker read the same.
func (m *MochiBroker) Kill() {
	m.t.Helper()
	m.close()
}

// Start starts a fresh broker, with the same options, on the same port. It
// fails the test if the broker is running or the port has been taken.
func (m *MochiBroker) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.b != nil {
		m.t.Fatalf("testenv: mochi.Start: already running on %s", m.addr)
	}
	b, err := embedbroker.Start(m.opts)
	if err != nil {
		m.t.Fatalf("testenv: mochi.Start on %s: %v", m.addr, err)
	}
	m.b = b
}

// Restart is Stop followed by Start: the broker comes back on the same
// port with no sessions, as an in-memory broker does after a restart.
func (m *MochiBroker) Restart() {
	m.t.Helper()
	m.Stop()
	m.Start()
}

// close closes the running broker, if any.
func (m *MochiBroker) close() {
	m.mu.Lock()
	b := m.b
	m.b = nil
	m.mu.Unlock()
	if b != nil {
		_ = b.Close()
	}
}
