package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// MosquittoConfig is the configuration of a started Mosquitto. Its zero
// value is a non-persistent broker with Mosquitto's default Receive Maximum
// and an unlimited queue.
type MosquittoConfig struct {
	// Persistence turns on persistence, with persistence_location in the
	// test's temporary directory. Stop uses SIGTERM, so the broker saves
	// its sessions; Kill loses what it held in memory.
	Persistence bool
	// MaxInflight is max_inflight_messages, which Mosquitto announces as
	// its Receive Maximum. Zero keeps Mosquitto's default (20).
	MaxInflight int
	// MaxQueued is max_queued_messages. Zero means unlimited (0 is written
	// to the configuration), so that tests never see the silent drops of
	// Mosquitto's default limit of 1000.
	MaxQueued int
	// MaxPacketSize is max_packet_size; zero leaves it unset.
	MaxPacketSize int
	// Extra holds further configuration lines, appended verbatim.
	Extra string
	// WebSockets adds a second listener, on its own free loopback port,
	// with "protocol websockets" (Mosquitto starts one only beside a plain
	// MQTT listener). Broker.WebSocketURL returns its ws:// URL. Local
	// brokers only.
	WebSockets bool
	// TLS, when set, adds a TLS listener on its own free loopback port
	// with these files. Broker.TLSURL returns its mqtts:// URL. Local
	// brokers only.
	TLS *MosquittoTLS
}

// MosquittoTLS configures the TLS listener of WithTLS: PEM files, and
// whether the broker demands a client certificate signed by the CA file.
type MosquittoTLS struct {
	CAFile, CertFile, KeyFile string
	RequireCertificate        bool
}

// WithWebSockets adds a websockets listener; see MosquittoConfig.WebSockets.
func WithWebSockets() MosquittoOption {
	return func(c *MosquittoConfig) { c.WebSockets = true }
}

// WithTLS adds a TLS listener; see MosquittoConfig.TLS.
func WithTLS(t MosquittoTLS) MosquittoOption {
	return func(c *MosquittoConfig) { c.TLS = &t }
}

// MosquittoOption changes the configuration of a started Mosquitto.
type MosquittoOption func(*MosquittoConfig)

// WithPersistence turns on Mosquitto's persistence, so that sessions survive
// Stop and Start (but not Kill).
func WithPersistence() MosquittoOption {
	return func(c *MosquittoConfig) { c.Persistence = true }
}

// WithMaxInflight sets max_inflight_messages, the Receive Maximum the broker
// announces.
func WithMaxInflight(n int) MosquittoOption {
	return func(c *MosquittoConfig) { c.MaxInflight = n }
}

// WithConfig lets f change any field of the configuration.
func WithConfig(f func(*MosquittoConfig)) MosquittoOption {
	return func(c *MosquittoConfig) { f(c) }
}

// Broker is a Mosquitto the test started (or an external one).
type Broker struct {
	s       service
	wsAddr  string // the websockets listener's address, if any
	tlsAddr string // the TLS listener's address, if any
}

// Mosquitto returns an MQTT broker for the test: the one named by
// TETHER_TEST_MQTT, else a local mosquitto started on a free loopback port
// with its configuration, persistence and logs in t.TempDir(), else an
// eclipse-mosquitto:2 container. It skips the test (fails under
// TETHER_TEST_REQUIRE=1) when none is available. The broker is killed when
// the test ends.
func Mosquitto(t testing.TB, opts ...MosquittoOption) *Broker {
	t.Helper()
	var cfg MosquittoConfig
	for _, o := range opts {
		o(&cfg)
	}
	b := &Broker{s: service{t: t, name: "mosquitto"}}
	if addr := os.Getenv(EnvMQTT); addr != "" {
		if cfg != (MosquittoConfig{}) {
			t.Logf("testenv: external broker %s: configuration options ignored", addr)
		}
		b.s.addr, b.s.origin = addr, "external ("+EnvMQTT+")"
		return b
	}
	bin, ok := findBinary("mosquitto")
	if !ok && (cfg.WebSockets || cfg.TLS != nil) {
		unavailable(t, "testenv: a Mosquitto with a websockets or TLS listener needs a local mosquitto binary")
	}
	if ok {
		dir := t.TempDir()
		confPath := filepath.Join(dir, "mosquitto.conf")
		logPath := filepath.Join(dir, "mosquitto.log")
		p := &process{
			t: t, name: "mosquitto", bin: bin, dir: dir,
			args: []string{"-c", confPath},
			logs: []string{filepath.Join(dir, "mosquitto.out"), logPath},
		}
		nports := 1
		if cfg.WebSockets {
			nports++
		}
		if cfg.TLS != nil {
			nports++
		}
		err := startFresh(p, nports, func(ports []int) error {
			b.s.addr = loopback(ports[0])
			paths := mosquittoConfPaths{
				listener: fmt.Sprintf("listener %d 127.0.0.1", ports[0]),
				dataDir:  dir + string(filepath.Separator),
				logDest:  "log_dest file " + logPath,
				asRoot:   os.Geteuid() == 0,
			}
			ready := []string{b.s.addr}
			next := 1
			if cfg.WebSockets {
				b.wsAddr = loopback(ports[next])
				next++
				ready = append(ready, b.wsAddr)
				paths.listener += fmt.Sprintf("\nlistener %d 127.0.0.1\nprotocol websockets", ports[next-1])
			}
			if cfg.TLS != nil {
				b.tlsAddr = loopback(ports[next])
				ready = append(ready, b.tlsAddr)
				paths.listener += fmt.Sprintf("\nlistener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate %t",
					ports[next], cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.RequireCertificate)
			}
			p.ready = func(ctx context.Context) error {
				for _, a := range ready {
					if err := dialReady(a)(ctx); err != nil {
						return err
					}
				}
				return nil
			}
			if err := os.WriteFile(confPath, []byte(mosquittoConf(cfg, paths)), 0o644); err != nil {
				return fmt.Errorf("testenv: write mosquitto.conf: %w", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("testenv: start mosquitto: %v", err)
		}
		b.s.proc = p
		return b
	}
	if ok, why := dockerAvailable(); ok {
		b.s.addr = mosquittoContainer(t, cfg)
		b.s.origin = "a container"
		return b
	} else {
		unavailable(t, "testenv: no MQTT broker: set %s, install mosquitto, or run a Docker engine (%s)", EnvMQTT, why)
	}
	return b
}

// mosquittoConfPaths holds what differs between a local and a container
// broker's configuration.
type mosquittoConfPaths struct {
	listener string // the listener line
	dataDir  string // persistence_location, with its trailing slash
	logDest  string // the log_dest line
	asRoot   bool   // add "user root", so that the broker can write a root-owned directory
}

// mosquittoConf renders a Mosquitto 2.0 configuration file.
func mosquittoConf(cfg MosquittoConfig, p mosquittoConfPaths) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("# written by tether's internal/testenv")
	line("%s", p.listener)
	line("allow_anonymous true")
	if p.asRoot {
		line("user root")
	}
	line("set_tcp_nodelay true")
	line("%s", p.logDest)
	line("log_type error")
	line("log_type warning")
	line("log_type notice")
	line("log_type information")
	line("log_timestamp true")
	if cfg.Persistence {
		line("persistence true")
		line("persistence_location %s", p.dataDir)
	} else {
		line("persistence false")
	}
	if cfg.MaxInflight > 0 {
		line("max_inflight_messages %d", cfg.MaxInflight)
	}
	line("max_queued_messages %d", cfg.MaxQueued)
	if cfg.MaxPacketSize > 0 {
		line("max_packet_size %d", cfg.MaxPacketSize)
	}
	if cfg.Extra != "" {
		line("%s", strings.TrimRight(cfg.Extra, "\n"))
	}
	return b.String()
}

// Addr returns the broker's address, "127.0.0.1:PORT" when started locally.
func (b *Broker) Addr() string { return b.s.addr }

// URL returns the broker's address as "mqtt://host:port".
func (b *Broker) URL() string { return "mqtt://" + b.s.addr }

// WebSocketURL returns the websockets listener's "ws://host:port/mqtt"
// (WithWebSockets), or "" when there is none.
func (b *Broker) WebSocketURL() string {
	if b.wsAddr == "" {
		return ""
	}
	return "ws://" + b.wsAddr + "/mqtt"
}

// TLSURL returns the TLS listener's "mqtts://host:port" (WithTLS), or ""
// when there is none.
func (b *Broker) TLSURL() string {
	if b.tlsAddr == "" {
		return ""
	}
	return "mqtts://" + b.tlsAddr
}

// Stop shuts the broker down with SIGTERM (with persistence on, it saves its
// sessions) and waits for it to exit. Its port stays its own for Start.
func (b *Broker) Stop() {
	b.s.t.Helper()
	b.s.stop()
}

// Kill kills the broker with SIGKILL and waits for it to exit. A persistent
// broker loses whatever it had not saved.
func (b *Broker) Kill() {
	b.s.t.Helper()
	b.s.kill()
}

// Start starts the stopped broker again on the same port with the same
// configuration, and waits until it accepts connections. It fails the test
// if the broker does not come up.
func (b *Broker) Start() {
	b.s.t.Helper()
	b.s.start()
}

// Restart is Stop followed by Start.
func (b *Broker) Restart() {
	b.s.t.Helper()
	b.Stop()
	b.Start()
}
