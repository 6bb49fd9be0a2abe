package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
)

// tether runs one command line in this process and returns its output and
// exit code.
func tether(t *testing.T, ctx context.Context, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errs syncBuffer
	err := run(ctx, args, strings.NewReader(stdin), &out, &errs)
	if err != nil {
		printError(&errs, err)
	}
	return out.String(), errs.String(), exitCode(err)
}

// must runs a command line that must succeed.
func must(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, errs, code := tether(t, ctx, "", args...)
	if code != 0 {
		t.Fatalf("tether %s: exit %d\nstdout: %q\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// testCtx returns a context for the test, and points the user's cache
// directory (where -c keeps sessions) into the test's own.
func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startSub starts tether sub in the background and returns a function
// that waits for it and returns its output.
func startSub(t *testing.T, ctx context.Context, args ...string) func() (string, string, int) {
	t.Helper()
	var out, errs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"sub"}, args...), nil, &out, &errs) }()
	return func() (string, string, int) {
		err := <-done
		if err != nil {
			printError(&errs, err)
		}
		return out.String(), errs.String(), exitCode(err)
	}
}

// waitSubscribed waits until a retained probe published to topic comes
// back through a fresh subscriber, so that a sub started before is
// subscribed too. Simpler: tether sub -E exits once subscribed; the tests
// use a persistent session subscribed that way first.
func subscribeFirst(t *testing.T, ctx context.Context, host string, args ...string) {
	t.Helper()
	must(t, ctx, append([]string{"sub", "-h", host, "-E"}, args...)...)
}

func TestPubSubMosquittoStyle(t *testing.T) {
	b := testenv.Mosquitto(t)
	ctx := testCtx(t, 60*time.Second)
	host, port, _ := net.SplitHostPort(b.Addr())

	// A persistent subscription first (-c, fixed id), then messages.
	subscribeFirst(t, ctx, b.Addr(), "-i", "cli-sub", "-c", "-t", "cli/#", "-q", "2")
	// -h and -p, flags after the message, host:port without a scheme, -L
	// with the topic in its path, -n, -f and -s.
	must(t, ctx, "pub", "-h", host, "-p", port, "-t", "cli/a", "-q", "1", "-m", "one")
	must(t, ctx, "pub", "-t", "cli/b", "two", "-q", "2", "-h", b.Addr())
	must(t, ctx, "pub", "-L", b.Addr(), "-t", "cli/c", "-m", "three", "-q", "1")
	must(t, ctx, "pub", "-L", "mqtt://"+b.Addr()+"/cli/d", "-m", "four", "-q", "1")
	must(t, ctx, "pub", "--host", b.Addr(), "--topic", "cli/e", "--null-message", "--qos", "1")
	file := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(file, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, ctx, "pub", "-h", b.Addr(), "-t", "cli/f", "-f", file, "-q", "1")
	if _, errs, code := tether(t, ctx, "all of stdin\nin one", "pub", "-h", b.Addr(), "-t", "cli/g", "-s", "-q", "1"); code != 0 {
		t.Fatalf("pub -s: %d %s", code, errs)
	}
	out := must(t, ctx, "sub", "-h", b.Addr(), "-i", "cli-sub", "-c", "-t", "cli/#", "-q", "2", "-v", "-C", "7", "-W", "20")
	want := "cli/a one\ncli/b two\ncli/c three\ncli/d four\ncli/e \ncli/f from a file\ncli/g all of stdin\nin one\n"
	if out != want {
		t.Fatalf("sub -v printed\n%q\nwant\n%q", out, want)
	}

	// Plain output is the payload alone; -F formats; -T filters out.
	subscribeFirst(t, ctx, b.Addr(), "-i", "cli-fmt", "-c", "-t", "fmt/#", "-q", "1")
	must(t, ctx, "pub", "-h", b.Addr(), "-t", "fmt/skip", "-m", "no", "-q", "1")
	must(t, ctx, "pub", "-h", b.Addr(), "-t", "fmt/x", "-m", "hi", "-q", "1", "-r")
	out = must(t, ctx, "sub", "-h", b.Addr(), "-i", "cli-fmt", "-c", "-t", "fmt/#", "-q", "1", "-T", "fmt/skip", "-F", "%t|%p|%q|%r|%l|%x", "-C", "1", "-W", "20")
	if out != "fmt/x|hi|1|0|2|6869\n" {
		t.Fatalf("sub -F printed %q", out)
	}
	out = must(t, ctx, "sub", "-h", b.Addr(), "-t", "fmt/x", "-C", "1", "-W", "20")
	if out != "hi\n" {
		t.Fatalf("plain sub of a retained message printed %q", out)
	}

	// Two subs without -i do not share a client id (they would take each
	// other's connection over).
	o1 := connOpts{storeSpec: "memory", red: &redactor{}}
	if a, b := o1.clientID("sub"), o1.clientID("sub"); a == b {
		t.Fatalf("default client ids repeat: %s", a)
	}
	o2 := connOpts{storeSpec: "bolt:/tmp/x.db", red: &redactor{}}
	if a, b := o2.clientID("pub"), o2.clientID("pub"); a != b {
		t.Fatalf("a durable store's default client id changes: %s, %s", a, b)
	}

	// Usage errors exit 2.
	for _, args := range [][]string{
		{"pub", "-h", b.Addr(), "-m", "x"},                 // no topic
		{"pub", "-h", b.Addr(), "-t", "x"},                 // no message
		{"pub", "-h", b.Addr(), "-t", "x", "-q", "3", "m"}, // bad QoS
		{"pub", "-t", "x", "-m", "m", "-V", "mqttv311"},    // MQTT v5 only
		{"sub", "-h", b.Addr(), "--bogus"},
	} {
		if _, errs, code := tether(t, ctx, "", args...); code != exitUsage {
			t.Errorf("tether %s: exit %d, want %d (%s)", strings.Join(args, " "), code, exitUsage, errs)
		}
	}
	if out, _, code := tether(t, ctx, "", "pub", "--help"); code != 0 || !strings.Contains(out, "--stdin-line") {
		t.Errorf("pub --help: exit %d\n%s", code, out)
	}
}

// TestConnOptionsShared: pub, sub and bench take the same connection
// options (broker, credentials, TLS, protocol version, --timeout), with
// the same help, and pub and sub the same session options.
func TestConnOptionsShared(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	helpLines := func(cmd string) map[string]bool {
		t.Helper()
		lines := map[string]bool{}
		for _, l := range strings.Split(must(t, ctx, cmd, "--help"), "\n") {
			lines[l] = true
		}
		return lines
	}
	want := func(register func(*connOpts, *optionSet)) []string {
		var o connOpts
		s := &optionSet{name: "want"}
		register(&o, s)
		var b strings.Builder
		s.printHelp(&b, "x")
		_, opts, _ := strings.Cut(b.String(), "options:\n")
		return strings.Split(strings.TrimSuffix(opts, "\n"), "\n")
	}
	conn := want(func(o *connOpts, s *optionSet) { o.registerConn(s, "") })
	session := want((*connOpts).registerSession)
	for _, names := range []string{"-h, --host", "-p, --port", "-L, --url, --broker", "-u, --username", "-P, --pw, --password",
		"--cafile", "--cert", "--key", "--insecure", "--tls", "--tls-server-name", "-V, --protocol-version", "--timeout"} {
		if !slices.ContainsFunc(conn, func(l string) bool { return strings.HasPrefix(l, "  "+names+" ") }) {
			t.Errorf("the connection options lack %s", names)
		}
	}
	pub, sub, bench := helpLines("pub"), helpLines("sub"), helpLines("bench")
	for _, l := range conn {
		if strings.HasPrefix(l, "  --timeout ") {
			// pub's --timeout says more: what becomes of its messages.
			l = strings.TrimRight(l, " ")
			if !pub[l+"; with a durable --store the messages stay stored"] {
				t.Errorf("pub --help lacks %q with its note", l)
			}
			if !sub[l] || !bench[l] {
				t.Errorf("sub or bench --help lacks %q", l)
			}
			continue
		}
		for cmd, lines := range map[string]map[string]bool{"pub": pub, "sub": sub, "bench": bench} {
			if !lines[l] {
				t.Errorf("%s --help lacks %q", cmd, l)
			}
		}
	}
	for _, l := range session {
		if !pub[l] || !sub[l] {
			t.Errorf("pub or sub --help lacks %q", l)
		}
	}

	// A command's own option cannot shadow a shared one.
	defer func() {
		if recover() == nil {
			t.Error("an option registered twice did not panic")
		}
	}()
	var o connOpts
	s := o.commandOptions("tether test", false, "")
	s.str("", "cafile", "FILE", "shadows the shared --cafile", new(string))
}

func TestSubJSONWithProperties(t *testing.T) {
	b := testenv.Mosquitto(t)
	ctx := testCtx(t, 30*time.Second)
	subscribeFirst(t, ctx, b.Addr(), "-i", "json-sub", "-c", "-t", "j/#", "-q", "1")
	c, err := client.New(client.Config{Servers: []string{b.URL()}, ClientID: "json-pub"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	m := &client.Message{Topic: "j/1", QoS: 1, Payload: []byte{0xff, 0x00}}
	m.Properties.ContentType = "application/octet-stream"
	m.Properties.User = []packets.UserProperty{{Key: "k", Value: "v"}}
	m.Properties.CorrelationData = []byte("corr")
	if err := c.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	// A UTF-8 payload is printed as a string, its controls escaped by JSON.
	if err := c.Publish(ctx, &client.Message{Topic: "j/2", QoS: 1, Payload: []byte("p\x1b[2J\u009b")}); err != nil {
		t.Fatal(err)
	}
	out := must(t, ctx, "sub", "-h", b.Addr(), "-i", "json-sub", "-c", "-t", "j/#", "-q", "1", "--json", "-C", "2", "-W", "20")
	if strings.ContainsRune(out, 0x1b) || strings.ContainsRune(out, 0x9b) {
		t.Fatalf("JSON output holds a raw control: %q", out)
	}
	type msg struct {
		Topic         string `json:"topic"`
		QoS           int    `json:"qos"`
		Payload       string `json:"payload"`
		PayloadBase64 string `json:"payload_base64"`
		Properties    struct {
			ContentType string              `json:"content-type"`
			Correlation string              `json:"correlation-data"`
			User        []map[string]string `json:"user-properties"`
		} `json:"properties"`
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("sub --json printed %q", out)
	}
	var got, got2 msg
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("sub --json printed %q: %v", out, err)
	}
	if got.Topic != "j/1" || got.QoS != 1 || got.PayloadBase64 != "/wA=" || got.Properties.ContentType != "application/octet-stream" ||
		got.Properties.Correlation != "Y29ycg==" || len(got.Properties.User) != 1 || got.Properties.User[0]["k"] != "v" {
		t.Fatalf("sub --json: %+v from %q", got, out)
	}
	if err := json.Unmarshal([]byte(lines[1]), &got2); err != nil || got2.Payload != "p\x1b[2J\u009b" {
		t.Fatalf("sub --json second line %q: %+v %v", lines[1], got2, err)
	}
}

func TestOutputEscapesTerminalControls(t *testing.T) {
	b := testenv.Mosquitto(t)
	ctx := testCtx(t, 30*time.Second)
	evil := "title\x1b]0;pwned\x07 csi\u009b2J bad\xff tab\tend"
	subscribeFirst(t, ctx, b.Addr(), "-i", "esc-sub", "-c", "-t", "e/#", "-q", "1")
	must(t, ctx, "pub", "-h", b.Addr(), "-t", "e/1", "-q", "1", "-m", evil)
	must(t, ctx, "pub", "-h", b.Addr(), "-t", "e/2", "-q", "1", "-m", evil)
	out := must(t, ctx, "sub", "-h", b.Addr(), "-i", "esc-sub", "-c", "-t", "e/#", "-q", "1", "--escape", "-C", "1", "-W", "20")
	if want := `title\x1b]0;pwned\x07 csi\u009b2J bad\xff tab` + "\tend\n"; out != want {
		t.Fatalf("escaped output %q, want %q", out, want)
	}
	out = must(t, ctx, "sub", "-h", b.Addr(), "-i", "esc-sub", "-c", "-t", "e/#", "-q", "1", "--raw", "-C", "1", "-W", "20")
	if out != evil+"\n" {
		t.Fatalf("--raw output %q, want the payload as sent", out)
	}

	// A server's Reason String goes through the same escaping.
	var errs syncBuffer
	printError(&errs, &client.ReasonError{Packet: packets.PUBACK, Code: packets.NotAuthorized, Reason: "no\x1b[31m red"})
	if strings.ContainsRune(errs.String(), 0x1b) || !strings.Contains(errs.String(), `no\x1b[31m red`) {
		t.Fatalf("error line %q", errs.String())
	}
	if got := exitCode(&client.ReasonError{Packet: packets.PUBACK, Code: packets.NotAuthorized}); got != exitNack {
		t.Errorf("exit code of a refused publish: %d", got)
	}
}

func TestPubUnreachableBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	ctx := testCtx(t, 30*time.Second)
	start := time.Now()
	_, errs, code := tether(t, ctx, "", "pub", "-L", "mqtt://user:s3cret@"+addr, "-t", "x", "-m", "m", "--timeout", "3")
	if code != exitConnect {
		t.Fatalf("exit %d, want %d\n%s", code, exitConnect, errs)
	}
	if !strings.Contains(errs, "still connecting") || !strings.Contains(errs, "refused") {
		t.Errorf("no status line naming the failure:\n%s", errs)
	}
	if strings.Contains(errs, "s3cret") {
		t.Errorf("the password is printed:\n%s", errs)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("gave up after %s with --timeout 3", d)
	}
	// A store URL's password is not printed either.
	_, errs, code = tether(t, ctx, "", "sessions", "list", "--store", "redis://:r3dispw@"+addr)
	if code == 0 || strings.Contains(errs, "r3dispw") {
		t.Errorf("sessions list on an unreachable Redis: exit %d\n%s", code, errs)
	}
}

// TestPubLinesUnreachableBroker: `pub -l` whose connection fails gives up
// with the connect error even while standard input stays open with nothing
// to read (a terminal, a pipe nobody writes): the read in progress does
// not hold it up.
func TestPubLinesUnreachableBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx := testCtx(t, 30*time.Second)
	stdin, w := io.Pipe()
	t.Cleanup(func() { w.Close() }) // ends the reader left in its read
	go func() { _, _ = io.WriteString(w, "first line\n") }()
	var out, errs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"pub", "-L", "mqtt://" + addr, "-t", "x", "-l", "--timeout", "2"}, stdin, &out, &errs)
	}()
	select {
	case err := <-done:
		if code := exitCode(err); code != exitConnect {
			t.Fatalf("exit %d (%v), want %d\n%s", code, err, exitConnect, errs.String())
		}
	case <-ctx.Done():
		t.Fatalf("pub -l still running with standard input open and no broker\n%s", errs.String())
	}
}

func TestPasswordFromEnvironmentAndFile(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pwFile, "alice", "wonder land").CombinedOutput(); err != nil {
		t.Skipf("mosquitto_passwd: %v %s", err, out)
	}
	if err := os.Chmod(pwFile, 0o644); err != nil {
		t.Fatal(err)
	}
	b := testenv.Mosquitto(t, testenv.WithConfig(func(c *testenv.MosquittoConfig) {
		c.Extra = "password_file " + pwFile
	}))
	ctx := testCtx(t, 30*time.Second)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("wonder land\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, ctx, "pub", "-h", b.Addr(), "-u", "alice", "--pw-file", secret, "-t", "pw", "-m", "x")
	t.Setenv(PasswordEnv, "wonder land")
	must(t, ctx, "pub", "-h", b.Addr(), "-u", "alice", "-t", "pw", "-m", "x")
	// -P wins over the environment; a wrong password is a refusal (exit 4)
	// and is never printed.
	_, errs, code := tether(t, ctx, "", "pub", "-h", b.Addr(), "-u", "alice", "-P", "wrong-pw", "-t", "pw", "-m", "x")
	if code != exitRefused || strings.Contains(errs, "wrong-pw") {
		t.Fatalf("wrong password: exit %d\n%s", code, errs)
	}
	// A password in the URL is used, and not printed.
	_, errs, code = tether(t, ctx, "", "pub", "-L", "mqtt://alice:bad-url-pw@"+b.Addr()+"/pw", "-m", "x")
	if code != exitRefused || strings.Contains(errs, "bad-url-pw") {
		t.Fatalf("URL password: exit %d\n%s", code, errs)
	}
	os.Unsetenv(PasswordEnv)
	must(t, ctx, "pub", "-L", "mqtt://alice:wonder%20land@"+b.Addr()+"/pw", "-m", "x")
}

func TestSessionsCommands(t *testing.T) {
	b := testenv.Mosquitto(t)
	ctx := testCtx(t, 60*time.Second)
	dir := t.TempDir()
	db := "bolt:" + filepath.Join(dir, "cli.db")

	// The broker is down: pub --store keeps the message (exit 3).
	b.Stop()
	_, errs, code := tether(t, ctx, "", "pub", "-h", b.Addr(), "-i", "cli-pub", "--store", db, "-t", "s/a", "-q", "2", "-m", "kept", "--timeout", "1")
	if code != exitConnect || !strings.Contains(errs, "kept in") {
		t.Fatalf("pub to a stopped broker: exit %d\n%s", code, errs)
	}
	server := "mqtt://" + b.Addr()
	list := must(t, ctx, "sessions", "list", "--store", db)
	if !strings.Contains(list, "cli-pub") || !strings.Contains(list, server) {
		t.Fatalf("sessions list:\n%s", list)
	}
	show := must(t, ctx, "sessions", "show", "--store", db, "-i", "cli-pub")
	if !strings.Contains(show, "queued, not sent") || !strings.Contains(show, "s/a") {
		t.Fatalf("sessions show:\n%s", show)
	}

	// The broker is back: --flush delivers what the store kept.
	b.Start()
	wait := startSub(t, ctx, "-h", b.Addr(), "-t", "s/#", "-q", "2", "-C", "1", "-W", "30", "-v")
	time.Sleep(500 * time.Millisecond) // the flush must come after the subscription; -W bounds a miss
	must(t, ctx, "pub", "-h", b.Addr(), "-i", "cli-pub", "--store", db, "--flush")
	if out, errs, code := wait(); code != 0 || out != "s/a kept\n" {
		t.Fatalf("sub after --flush: exit %d %q\n%s", code, out, errs)
	}
	show = must(t, ctx, "sessions", "show", "--store", db, "-i", "cli-pub")
	if strings.Contains(show, "queued") {
		t.Fatalf("still queued after --flush:\n%s", show)
	}

	// Unknown sessions are errors; clear clears.
	if _, errs, code := tether(t, ctx, "", "sessions", "clear", "--store", db, "-i", "nobody"); code == 0 || !strings.Contains(errs, "no such session") {
		t.Fatalf("clear of an unknown session: exit %d %s", code, errs)
	}
	if _, errs, code := tether(t, ctx, "", "sessions", "show", "--store", db, "-i", "nobody"); code == 0 || !strings.Contains(errs, "no such session") {
		t.Fatalf("show of an unknown session: exit %d %s", code, errs)
	}
	must(t, ctx, "sessions", "clear", "--store", db, "-i", "cli-pub", "--server", server)
	if list := must(t, ctx, "sessions", "list", "--store", db); strings.Contains(list, "cli-pub") {
		t.Fatalf("listed after clear:\n%s", list)
	}

	// A read never creates a store.
	for _, kind := range []string{"bolt", "sqlite"} {
		path := filepath.Join(dir, "typo-"+kind)
		if _, _, code := tether(t, ctx, "", "sessions", "list", "--store", kind+":"+path); code == 0 {
			t.Errorf("list of a missing %s file succeeded", kind)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("sessions list created %s (%v)", path, err)
		}
	}
	// The single-dash long options of earlier releases still work.
	must(t, ctx, "sessions", "-store", db, "list")
}

func TestCLIWebSocketAndMutualTLS(t *testing.T) {
	pki := newCLIPKI(t)
	b := testenv.Mosquitto(t, testenv.WithWebSockets(),
		testenv.WithTLS(testenv.MosquittoTLS{CAFile: pki.ca, CertFile: pki.serverCert, KeyFile: pki.serverKey, RequireCertificate: true}))
	ctx := testCtx(t, 60*time.Second)
	tlsAddr := strings.TrimPrefix(b.TLSURL(), "mqtts://")
	tlsArgs := []string{"--cafile", pki.ca, "--cert", pki.clientCert, "--key", pki.clientKey}

	// The session is keyed by its server URL: subscribe over WebSocket too.
	must(t, ctx, "sub", "-L", b.WebSocketURL(), "-E", "-i", "ws-sub", "-c", "-t", "w/#", "-q", "1")
	must(t, ctx, "pub", "-L", b.WebSocketURL(), "-t", "w/ws", "-m", "over websocket", "-q", "1")
	must(t, ctx, append([]string{"pub", "-h", tlsAddr, "-t", "w/tls", "-m", "over mutual TLS", "-q", "1"}, tlsArgs...)...)
	out := must(t, ctx, "sub", "-L", b.WebSocketURL(), "-i", "ws-sub", "-c", "-t", "w/#", "-q", "1", "-v", "-C", "2", "-W", "20")
	if out != "w/ws over websocket\nw/tls over mutual TLS\n" {
		t.Fatalf("sub over WebSocket printed %q", out)
	}
	// Without the client certificate the broker refuses the handshake.
	_, errs, code := tether(t, ctx, "", "pub", "-h", tlsAddr, "--cafile", pki.ca, "-t", "w/x", "-m", "x", "--timeout", "2")
	if code != exitConnect {
		t.Fatalf("TLS without a client certificate: exit %d\n%s", code, errs)
	}
	// A missing key file is reported before connecting.
	_, errs, code = tether(t, ctx, "", "pub", "-h", tlsAddr, "--cafile", pki.ca, "--cert", pki.clientCert, "--key", pki.clientKey+".missing", "-t", "w/x", "-m", "x")
	if code == 0 || !strings.Contains(errs, "client certificate") {
		t.Fatalf("missing key: exit %d\n%s", code, errs)
	}
}

// TestSessionsCorruptRecords: show flags the records the client would
// leave out as corrupt (and shows each message's Ref); discard-corrupt
// deletes exactly those.
func TestSessionsCorruptRecords(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	path := filepath.Join(t.TempDir(), "c.db")
	st, err := bolt.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := store.Key{Server: "mqtt://127.0.0.1:1883", ClientID: "damaged"}
	good, _ := packets.Append(nil, &packets.Publish{Topic: "t/ok", QoS: 1, PacketID: 1, Payload: []byte("x")})
	good = append(good, 0xE1, 5, 'r', 'o', 'w', '-', '7') // the client's Ref trailer
	bad := &packets.Publish{Topic: "", QoS: 1, PacketID: 2}
	bad.Properties.TopicAlias = 4
	badB, _ := packets.Append(nil, bad)
	if err := st.Apply(ctx, k,
		store.Put(store.Record{Seq: 1, Dir: store.Outbound, Packet: good}),
		store.Put(store.Record{Seq: 2, Dir: store.Outbound, ID: 2, Packet: badB})); err != nil {
		t.Fatal(err)
	}
	st.Close()
	db := "bolt:" + path
	show, errs, code := tether(t, ctx, "", "sessions", "show", "--store", db, "-i", "damaged")
	if code != 0 || !strings.Contains(show, "row-7") || !strings.Contains(show, "CORRUPT") || !strings.Contains(errs, "discard-corrupt") {
		t.Fatalf("show: exit %d\n%s\n%s", code, show, errs)
	}
	out := must(t, ctx, "sessions", "discard-corrupt", "--store", db, "-i", "damaged")
	if !strings.Contains(out, "discarded 1 corrupt") {
		t.Fatalf("discard-corrupt: %s", out)
	}
	show = must(t, ctx, "sessions", "show", "--store", db, "-i", "damaged")
	if strings.Contains(show, "CORRUPT") || !strings.Contains(show, "t/ok") {
		t.Fatalf("show after discard-corrupt:\n%s", show)
	}
}
