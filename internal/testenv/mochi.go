package testenv

import (
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// mochiHelper is the helper program (see helper.go) that runs the embedded
// broker of internal/embedbroker, a module of its own so that mochi-mqtt
// stays out of tether's module graph.
const mochiHelper = "internal/embedbroker/serve"

// mochiStartTimeout bounds starting the broker once its program is built.
const mochiStartTimeout = time.Minute

// MochiOptions configures Mochi; the zero value is the embedded broker's
// defaults (see internal/embedbroker's Options).
type MochiOptions struct {
	// Addr is the TCP address to listen on; empty means a free loopback
	// port.
	Addr string
	// ReceiveMaximum is the Receive Maximum announced in CONNACK; zero
	// means the embedded broker's default (1024).
	ReceiveMaximum uint16
	// MaxQueued bounds the QoS 1/2 messages held per session; zero means
	// the most mochi allows (65535).
	MaxQueued int
}

// MochiBroker is the embedded MQTT v5 broker (mochi-mqtt, through
// internal/embedbroker), run as a child process of the test binary: a
// second broker implementation beside Mosquitto, needing no installed
// binary (only the go command, which builds it on first use). It keeps
// everything in memory, so Stop, Kill and Restart lose every session. Its
// methods are safe for concurrent use.
type MochiBroker struct {
	t    testing.TB
	opts MochiOptions
	addr string
	log  string // the broker's standard error, across restarts

	mu sync.Mutex  // guards h
	h  *helperProc // nil while stopped
}

// Mochi starts an embedded broker on a free loopback port and stops it
// when the test ends. At most one MochiOptions may be given.
func Mochi(t testing.TB, opts ...MochiOptions) *MochiBroker {
	t.Helper()
	var o MochiOptions
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		t.Fatalf("testenv: Mochi takes at most one MochiOptions, got %d", len(opts))
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	m := &MochiBroker{t: t, opts: o, log: filepath.Join(t.TempDir(), "mochi.log")}
	h, err := m.startHelper()
	if err != nil {
		t.Fatalf("testenv: start mochi: %v", err)
	}
	m.h, m.addr = h, h.Addr
	m.opts.Addr = m.addr // Start reuses the port
	t.Cleanup(m.close)
	return m
}

// startHelper starts the broker's process with m.opts.
func (m *MochiBroker) startHelper() (*helperProc, error) {
	return startHelper(mochiHelper, m.log, mochiStartTimeout,
		"-addr", m.opts.Addr,
		"-receive-maximum", strconv.Itoa(int(m.opts.ReceiveMaximum)),
		"-max-queued", strconv.Itoa(m.opts.MaxQueued))
}

// Addr returns the broker's address, "127.0.0.1:PORT". It stays the same
// across Stop and Start.
func (m *MochiBroker) Addr() string { return m.addr }

// URL returns the broker's address as "mqtt://127.0.0.1:PORT".
func (m *MochiBroker) URL() string { return "mqtt://" + m.addr }

// Running reports whether the broker is running (started and not stopped).
func (m *MochiBroker) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.h != nil
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
	if m.h != nil {
		m.t.Fatalf("testenv: mochi.Start: already running on %s", m.addr)
	}
	h, err := m.startHelper()
	if err != nil {
		m.t.Fatalf("testenv: mochi.Start on %s: %v", m.addr, err)
	}
	m.h = h
}

// Restart is Stop followed by Start: the broker comes back on the same
// port with no sessions, as an in-memory broker does after a restart.
func (m *MochiBroker) Restart() {
	m.t.Helper()
	m.Stop()
	m.Start()
}

// close stops the running broker, if any, and waits for its process.
func (m *MochiBroker) close() {
	m.mu.Lock()
	h := m.h
	m.h = nil
	m.mu.Unlock()
	if h != nil {
		h.stop(stopTimeout)
	}
}
