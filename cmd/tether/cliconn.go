package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
)

// PasswordEnv names the environment variable a password is read from when
// neither -P nor --pw-file gives one: unlike an argument, it does not show
// in the process list.
const PasswordEnv = "TETHER_PASSWORD"

// connOpts are the options of a connecting command, named as
// mosquitto_pub and mosquitto_sub name them: those every connecting
// command takes (registerConn) and those of a client session of the
// command's own (registerSession).
type connOpts struct {
	host, port, urls       string
	username, password     string
	passwordFile           string
	passwordSet            bool
	id, idPrefix           string
	keepAlive              int
	noClean                bool
	expiry                 time.Duration
	expirySet              bool
	storeSpec              string
	caFile, certFile, key  string
	serverName             string
	insecure, tlsOn        bool
	timeout                time.Duration
	debug, quiet           bool
	willTopic, willPayload string
	willQoS                int
	willRetain             bool
	version                string
	topicFromURL           string
	red                    *redactor
	session                bool // the session options are registered
}

// commandOptions returns the option set of the connecting command name
// ("tether pub") with the options every connecting command shares
// (registerConn; timeoutNote completes the help of --timeout) and, with
// session, those of a client session of the command's own
// (registerSession). The command adds its own options to it, then calls
// parseArgs. Keeping them here keeps pub, sub and bench from drifting
// apart.
func (o *connOpts) commandOptions(name string, session bool, timeoutNote string) *optionSet {
	o.red = &redactor{}
	s := &optionSet{name: name}
	o.registerConn(s, timeoutNote)
	if session {
		o.registerSession(s)
	}
	o.session = session
	return s
}

// registerConn registers the options that say how to reach and
// authenticate to the broker: host, port or URLs, credentials, TLS, the
// protocol version and --timeout (its help completed by timeoutNote).
// config turns them into a client.Config.
func (o *connOpts) registerConn(s *optionSet, timeoutNote string) {
	o.port, o.timeout = "", 30*time.Second
	s.str("h", "host", "HOST", "broker host, or HOST:PORT (default localhost)", &o.host)
	s.str("p", "port", "PORT", "broker port (default 1883, 8883 with TLS)", &o.port)
	s.str("L", "url,broker", "URL", "broker URL: mqtt://, mqtts://, ws://, wss:// or HOST:PORT; [user[:pass]@] taken as credentials; comma-separated for failover", &o.urls)
	s.str("u", "username", "USER", "username", &o.username)
	s.add("P", "pw,password", "PASS", "password (visible to other users in the process list: prefer --pw-file or $"+PasswordEnv+")", func(v string) error {
		o.password, o.passwordSet = v, true
		return nil
	})
	s.str("", "pw-file,password-file", "FILE", "read the password from the first line of FILE", &o.passwordFile)
	s.str("", "cafile", "FILE", "PEM file of the certificate authorities to trust (turns TLS on)", &o.caFile)
	s.str("", "cert", "FILE", "PEM client certificate for mutual TLS (with --key)", &o.certFile)
	s.str("", "key", "FILE", "PEM private key of --cert", &o.key)
	s.str("", "tls-server-name", "NAME", "name the server's certificate must hold (default: the host)", &o.serverName)
	s.flag("", "insecure", "do not verify the server's certificate (tests only)", &o.insecure)
	s.flag("", "tls", "use TLS (mqtts) with the system's authorities", &o.tlsOn)
	s.str("V", "protocol-version", "VERSION", "MQTT version: only 5 (mqttv5) is spoken", &o.version)
	s.dur("", "timeout", "SECS", "give up when no connection is made in this time (default 30s)"+timeoutNote, &o.timeout)
}

// registerSession registers the options of a client session of the
// command's own: identifier, keep alive, -c, -x, --store, the Will, -d
// and --quiet. open applies them.
func (o *connOpts) registerSession(s *optionSet) {
	o.keepAlive, o.storeSpec = 60, ""
	s.str("i", "id", "ID", "client identifier (default: unique per run; with a durable --store, stable for that store)", &o.id)
	s.str("I", "id-prefix", "PREFIX", "client identifier PREFIX followed by a unique suffix", &o.idPrefix)
	s.int("k", "keepalive", "SECS", "keep alive interval in seconds (0: off)", &o.keepAlive, 0, 65535)
	s.flag("c", "disable-clean-session", "keep the session after disconnecting, on the broker and in the store (expiry from -x, else 1 day)", &o.noClean)
	s.add("x", "session-expiry,expiry", "SECS", "session expiry interval in seconds or as a duration (1h)", func(v string) error {
		d, err := parseSeconds(v)
		o.expiry, o.expirySet = d, true
		return err
	})
	s.str("", "store", "SPEC", "session store: memory, bolt:PATH, sqlite:PATH or redis://HOST:PORT; durable ones keep the session across runs and crashes (default: memory; with -c, the user's "+defaultStoreName+")", &o.storeSpec)
	s.flag("d", "debug", "log connections and store writes to standard error", &o.debug)
	s.flag("", "quiet", "print no status, progress or error lines", &o.quiet)
	s.str("", "will-topic", "TOPIC", "topic of the Will message", &o.willTopic)
	s.str("", "will-payload", "MSG", "payload of the Will message", &o.willPayload)
	s.int("", "will-qos", "QOS", "QoS of the Will message", &o.willQoS, 0, 2)
	s.flag("", "will-retain", "retain the Will message", &o.willRetain)
}

// parseArgs parses the command line of a command whose options
// commandOptions made, and checks the shared options: the protocol
// version, the broker URLs and, with the session options, the store.
// What it rejects is a usage error (exit 2). --help prints the help
// (synopsis, then the options) on stdout and returns ok false and no
// error, so that the command returns nil (exit 0); ok is false on an
// error too.
func (o *connOpts) parseArgs(s *optionSet, args []string, stdout io.Writer, synopsis string) (pos []string, ok bool, err error) {
	pos, ok, err = s.parseCommand(args, stdout, synopsis)
	if !ok {
		return nil, false, err
	}
	if _, err := o.servers(); err != nil {
		return nil, false, err
	}
	if o.session {
		if err := o.settleStore(); err != nil {
			return nil, false, err
		}
	}
	return pos, true, nil
}

// servers returns the broker URLs the options name, with any credentials
// moved out of them into the options.
func (o *connOpts) servers() ([]string, error) {
	switch strings.ToLower(o.version) {
	case "", "5", "mqttv5", "v5", "mqttv50":
	default:
		return nil, usageErrorf("tether speaks MQTT v5 only, not %q", o.version)
	}
	tls := o.tlsOn || o.caFile != "" || o.certFile != "" || o.insecure
	if o.urls == "" {
		host := o.host
		if host == "" {
			host = "localhost"
		}
		port := o.port
		if h, p, err := net.SplitHostPort(host); err == nil && port == "" {
			host, port = h, p
		}
		if port == "" {
			port = "1883"
			if tls {
				port = "8883"
			}
		}
		scheme := "mqtt"
		if tls {
			scheme = "mqtts"
		}
		return []string{scheme + "://" + net.JoinHostPort(host, port)}, nil
	}
	if o.host != "" || o.port != "" {
		return nil, usageErrorf("give either -L (a URL) or -h and -p, not both")
	}
	var out []string
	for _, s := range strings.Split(o.urls, ",") {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "://") {
			// HOST:PORT, as mosquitto users type it.
			scheme := "mqtt://"
			if tls {
				scheme = "mqtts://"
			}
			s = scheme + s
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, usageErrorf("broker URL %q: %v", o.red.redact(s), o.red.redact(err.Error()))
		}
		if u.User != nil {
			if o.username == "" {
				o.username = u.User.Username()
			}
			if p, ok := u.User.Password(); ok {
				o.red.add(p)
				if !o.passwordSet {
					o.password, o.passwordSet = p, true
				}
			}
			u.User = nil
		}
		switch strings.ToLower(u.Scheme) {
		case "mqtt", "mqtts", "tcp", "tls", "ssl":
			// As in mosquitto's -L, the path names the topic.
			if t := strings.TrimPrefix(u.Path, "/"); t != "" && o.topicFromURL == "" {
				o.topicFromURL = t
			}
			u.Path, u.RawPath = "", ""
		}
		out = append(out, u.String())
	}
	return out, nil
}

// readPassword settles the password: -P, else --pw-file, else the
// environment.
func (o *connOpts) readPassword() error {
	if o.passwordFile != "" {
		if o.passwordSet {
			return usageErrorf("give the password once: -P or --pw-file")
		}
		b, err := os.ReadFile(o.passwordFile)
		if err != nil {
			return fmt.Errorf("password file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		o.password, o.passwordSet = strings.TrimSuffix(line, "\r"), true
	} else if v, ok := os.LookupEnv(PasswordEnv); ok && !o.passwordSet {
		o.password, o.passwordSet = v, true
	}
	o.red.add(o.password)
	return nil
}

// defaultStoreName is the store -c uses when --store is not given, under
// the user's cache directory ($XDG_CACHE_HOME or ~/.cache on Linux).
const defaultStoreName = "tether/sessions.sqlite"

// settleStore picks the store when --store is not given: memory, or with
// -c a SQLite file in the user's cache directory, since a session kept on
// the broker can only be continued by a client that kept its own half
// (SQLite, because several tether processes may use it at once).
func (o *connOpts) settleStore() error {
	if o.storeSpec != "" {
		return nil
	}
	if !o.noClean {
		o.storeSpec = "memory"
		return nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return fmt.Errorf("-c without --store keeps sessions in the user's cache directory: %w", err)
	}
	path := filepath.Join(dir, defaultStoreName)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	o.storeSpec = "sqlite:" + path
	return nil
}

// durable reports whether the store outlives the process.
func (o *connOpts) durable() bool { return o.storeSpec != "memory" && o.storeSpec != "" }

// clientID returns the client identifier: -i, -I plus a unique suffix, a
// stable one derived from a durable store (so that a second run continues
// the session), or a unique one.
func (o *connOpts) clientID(cmd string) string {
	switch {
	case o.id != "":
		return o.id
	case o.idPrefix != "":
		return o.idPrefix + randomHex(6)
	case o.durable():
		host, _ := os.Hostname()
		spec := o.storeSpec
		if kind, path, ok := strings.Cut(spec, ":"); ok && (kind == "bolt" || kind == "sqlite") {
			if abs, err := filepath.Abs(path); err == nil {
				spec = kind + ":" + abs
			}
		}
		sum := sha256.Sum256([]byte(cmd + "\x00" + host + "\x00" + o.red.redact(spec)))
		return "tether-" + cmd + "-" + hex.EncodeToString(sum[:6])
	}
	return "tether-" + cmd + "-" + randomHex(6)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// session is a client, its store and the command's reporting.
type session struct {
	c      *client.Client
	st     *countingStore
	id     string
	status *statusLog
}

// config returns the part of a client.Config that registerConn's
// options describe: servers, credentials, TLS and the connect timeout.
// It settles the password (-P, --pw-file or the environment) and reads
// the TLS files, so that a bad one is reported before anything connects,
// as every connecting command reports it. Call it once per command.
func (o *connOpts) config() (client.Config, error) {
	if err := o.readPassword(); err != nil {
		return client.Config{}, err
	}
	servers, err := o.servers()
	if err != nil {
		return client.Config{}, err
	}
	if (o.certFile == "") != (o.key == "") {
		return client.Config{}, usageErrorf("--cert and --key go together")
	}
	cfg := client.Config{
		Servers:               servers,
		Username:              o.username,
		TLSCAFile:             o.caFile,
		TLSCertFile:           o.certFile,
		TLSKeyFile:            o.key,
		TLSServerName:         o.serverName,
		TLSInsecureSkipVerify: o.insecure,
		ConnectTimeout:        min(o.timeout, 10*time.Second),
	}
	if o.passwordSet {
		cfg.Password = []byte(o.password)
	}
	if err := client.CheckTLSFiles(cfg); err != nil {
		return client.Config{}, err
	}
	return cfg, nil
}

// open builds the client the options describe. mod completes the Config.
func (o *connOpts) open(cmd string, stderr io.Writer, mod func(*client.Config)) (*session, error) {
	cfg, err := o.config()
	if err != nil {
		return nil, err
	}
	if err := o.settleStore(); err != nil {
		return nil, err
	}
	raw, err := openStore(o.storeSpec)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", o.red.redact(o.storeSpec), err)
	}
	st := newCountingStore(raw)
	status := &statusLog{w: stderr, quiet: o.quiet, debug: o.debug, red: o.red}
	cfg.ClientID = o.clientID(cmd)
	cfg.Store = st.handle()
	cfg.ReconnectBackoff = client.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	cfg.Logger = slog.New(status)
	cfg.OnConnectionLost = func(err error) {
		status.printf("connection lost: %v", err)
	}
	switch {
	case o.keepAlive == 0:
		cfg.KeepAlive = -1
	default:
		cfg.KeepAlive = time.Duration(o.keepAlive) * time.Second
	}
	cfg.CleanStart = !o.noClean && !o.durable()
	switch {
	case o.expirySet:
		cfg.SessionExpiry = o.expiry
	case o.noClean || o.durable():
		cfg.SessionExpiry = 24 * time.Hour
	}
	if o.willTopic != "" {
		cfg.Will = &client.Will{Topic: o.willTopic, Payload: []byte(o.willPayload), QoS: byte(o.willQoS), Retain: o.willRetain}
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	return &session{c: c, st: st, id: cfg.ClientID, status: status}, nil
}

func (s *session) close() {
	s.c.Close()
	s.st.Close()
}

// connect connects within timeout, printing a status line on stderr when
// the broker does not answer within a few seconds.
func (s *session) connect(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.c.Connect(ctx) }()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case err := <-done:
			if err != nil {
				if last := s.status.lastConnectError(); last != "" && errors.Is(err, context.DeadlineExceeded) {
					return &exitError{code: exitConnect, err: fmt.Errorf("no connection after %s: %s", timeout, last)}
				}
				return connectExit(err)
			}
			return nil
		case <-t.C:
			last := s.status.lastConnectError()
			if last == "" {
				last = "no answer yet"
			}
			s.status.printf("still connecting after %s (up to %s): %s", time.Since(start).Round(time.Second), timeout, last)
		}
	}
}

// connectExit maps a failed connection to an exit code.
func connectExit(err error) error {
	var re *client.ReasonError
	if errors.As(err, &re) {
		return &exitError{code: exitRefused, err: err}
	}
	return &exitError{code: exitConnect, err: err}
}

// statusLog is the client's slog.Handler: with -d it prints every record;
// it always remembers why the last connection attempt failed, for the
// status line.
type statusLog struct {
	w     io.Writer
	quiet bool
	debug bool
	red   *redactor

	mu      sync.Mutex
	lastErr string
}

func (l *statusLog) printf(format string, args ...any) {
	if l.quiet {
		return
	}
	msg := l.red.redact(fmt.Sprintf(format, args...))
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.w, "tether:", escapeTerminal([]byte(msg), false))
}

func (l *statusLog) lastConnectError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

func (l *statusLog) Enabled(_ context.Context, lv slog.Level) bool {
	return l.debug || lv >= slog.LevelInfo
}

func (l *statusLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "connect failed" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				l.mu.Lock()
				l.lastErr = l.red.redact(a.Value.String())
				l.mu.Unlock()
			}
			return true
		})
	}
	if !l.debug {
		return nil
	}
	var sb strings.Builder
	sb.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		sb.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	l.printf("%s", sb.String())
	return nil
}

func (l *statusLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *statusLog) WithGroup(string) slog.Handler      { return l }

// countingStore passes a store through and keeps count of the outbound
// records it holds for each session, so that a command knows when
// everything it stored (in this run or an earlier one) has been
// delivered, and how many of its messages are durable. The client gets
// handle(), which adds store.Scanner when the inner store has it.
type countingStore struct {
	store.SessionStore
	mu     sync.Mutex
	out    map[store.Key]map[uint64]uint64 // outbound Seqs held, each with the tick it was counted at
	stored int                             // outbound PUBLISH records written in this run
	paged  map[store.Key]uint64            // sessions read in part by Scan: the Seq reached

	// A read (Load, a page of Scan) may overlap writes that it may or may
	// not see. Every count takes the next tick. While reads are out, wrote
	// keeps the tick of the last write to each Seq, and cleared that of
	// the last Clear, so that a read leaves alone what was written after
	// it began: that write has counted it already.
	tick    uint64
	reads   int
	wrote   map[store.Key]map[uint64]uint64
	cleared map[store.Key]uint64
}

func newCountingStore(st store.SessionStore) *countingStore {
	return &countingStore{
		SessionStore: st,
		out:          make(map[store.Key]map[uint64]uint64),
		paged:        make(map[store.Key]uint64),
		wrote:        make(map[store.Key]map[uint64]uint64),
		cleared:      make(map[store.Key]uint64),
	}
}

// handle returns the store to give the client: c, with store.Scanner when
// the inner store implements it, so that the client reads a long session
// in pages. The other optional interfaces stay hidden.
func (c *countingStore) handle() store.SessionStore {
	if sc, ok := c.SessionStore.(store.Scanner); ok {
		return &countingScanner{countingStore: c, sc: sc}
	}
	return c
}

// countingScanner is a countingStore over a store.Scanner.
type countingScanner struct {
	*countingStore
	sc store.Scanner
}

// Scan reads a page and counts it as Load counts a whole session.
func (c *countingScanner) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	t := c.readStart()
	recs, next, err := c.sc.Scan(ctx, k, from, limit)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.counted(k, t, from, next, recs, err) {
		return recs, next, err
	}
	// A page that goes on from the start of the session, or from where
	// its read has reached, takes the read further; the last one ends it.
	if at, ok := c.paged[k]; from == 0 || (ok && from <= at) {
		if next == 0 {
			delete(c.paged, k)
		} else {
			c.paged[k] = max(at, next)
		}
	}
	return recs, next, err
}

func (c *countingStore) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	t := c.readStart()
	recs, err := c.SessionStore.Load(ctx, k)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counted(k, t, 0, 0, recs, err) {
		delete(c.paged, k)
	}
	return recs, err
}

// readStart notes a read that begins, and returns its tick.
func (c *countingStore) readStart() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return c.tick
}

// counted ends a read of session k that began at tick t and found recs,
// which are every record with from <= Seq < next (next 0: to the end)
// but for corrupt ones: the outbound Seqs of that range held become those
// of recs. It reports false when the read changed nothing: it failed, or
// a Clear came after it began. mu held.
func (c *countingStore) counted(k store.Key, t, from, next uint64, recs []store.Record, err error) bool {
	defer func() {
		c.reads--
		if c.reads == 0 {
			clear(c.wrote)
			clear(c.cleared)
		}
	}()
	var corrupt *store.CorruptError
	if (err != nil && !errors.As(err, &corrupt)) || c.cleared[k] > t {
		return false
	}
	c.tick++
	m := c.session(k)
	w := c.wrote[k] // nil (every tick 0) when no write overlapped
	found := make(map[uint64]bool, len(recs))
	for _, r := range recs {
		if r.Dir == store.Outbound {
			found[r.Seq] = true
		}
	}
	gone := func(q uint64) {
		if !found[q] && w[q] <= t {
			delete(m, q)
		}
	}
	// Look for Seqs gone from the range through the range or through m,
	// whichever is shorter.
	if next != 0 && next-from <= uint64(len(m)) {
		for q := from; q < next; q++ {
			if _, ok := m[q]; ok {
				gone(q)
			}
		}
	} else {
		for q := range m {
			if q >= from && (next == 0 || q < next) {
				gone(q)
			}
		}
	}
	for q := range found {
		if _, ok := m[q]; !ok && w[q] <= t {
			m[q] = c.tick
		}
	}
	return true
}

// session returns the outbound Seqs held for k. mu held.
func (c *countingStore) session(k store.Key) map[uint64]uint64 {
	m := c.out[k]
	if m == nil {
		m = make(map[uint64]uint64)
		c.out[k] = m
	}
	return m
}

func (c *countingStore) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	c.mu.Lock()
	since := c.tick
	c.mu.Unlock()
	if err := c.SessionStore.Apply(ctx, k, ops...); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick++
	m := c.session(k)
	for _, op := range ops {
		q := op.Record.Seq
		if c.reads > 0 {
			if c.wrote[k] == nil {
				c.wrote[k] = make(map[uint64]uint64)
			}
			c.wrote[k][q] = c.tick
		}
		switch {
		case op.Kind == store.OpDelete:
			delete(m, q)
		case op.Record.Dir == store.Outbound:
			// A Seq that a read counted since this Apply began may be
			// this very record: it is new all the same.
			at, held := m[q]
			isNew := !held || (at > since && at < c.tick)
			if isNew && len(op.Record.Packet) > 0 && packets.Type(op.Record.Packet[0]>>4) == packets.PUBLISH {
				c.stored++
			}
			m[q] = c.tick
		}
	}
	return nil
}

func (c *countingStore) Clear(ctx context.Context, k store.Key) error {
	if err := c.SessionStore.Clear(ctx, k); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick++
	delete(c.out, k)
	delete(c.paged, k)
	if c.reads > 0 {
		c.cleared[k] = c.tick
	}
	return nil
}

// outbound returns how many outbound records the store holds across its
// sessions, and how many PUBLISH records this run wrote.
func (c *countingStore) outbound() (held, stored int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.out {
		held += len(m)
	}
	return held, c.stored
}

// reading reports whether a session is being read in pages: until its
// last page, held leaves out the records past those read.
func (c *countingStore) reading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.paged) > 0
}

// Exit codes, for scripts.
const (
	exitOK      = 0
	exitFailed  = 1  // anything else: a failed publish, a store error
	exitUsage   = 2  // the command line cannot be run
	exitConnect = 3  // no connection to the broker (unreachable, TLS, timeout)
	exitRefused = 4  // the broker refused the connection (CONNACK reason code)
	exitNack    = 5  // the broker refused a publish or subscription
	exitTimeout = 27 // sub -W: the time ran out (as mosquitto_sub)
)

// exitError carries an exit code with an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return "exit " + strconv.Itoa(e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// exitCode returns the exit code err calls for.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, errUsage):
		return exitUsage
	}
	var re *client.ReasonError
	if errors.As(err, &re) {
		if re.Packet == packets.CONNACK {
			return exitRefused
		}
		return exitNack
	}
	return exitFailed
}
