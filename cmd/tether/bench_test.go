package main

import (
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store/memory"
)

// benchRows returns the data rows of tether bench's table, as fields.
func benchRows(t *testing.T, out string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "msg/s") {
		t.Fatalf("no table in the output:\n%s", out)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

// TestBenchAgainstMosquitto runs tether bench briefly over every store,
// two publisher counts, QoS 1 and 2 and two payload sizes, and checks
// that a subscriber received every message the table reports, and that
// each row holds a rate, ordered latencies and allocation counts.
func TestBenchAgainstMosquitto(t *testing.T) {
	b := testenv.Mosquitto(t, testenv.WithMaxInflight(10))
	r := testenv.Redis(t)
	ctx := testCtx(t, 5*time.Minute)

	var got atomic.Int64
	sub, err := client.New(client.Config{Servers: []string{"mqtt://" + b.Addr()}, ClientID: "bench-counter", Store: memory.New(),
		OnMessage: func(*client.Message) { got.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(ctx, client.Subscription{Filter: "tbench/#", SubscribeOptions: packets.SubscribeOptions{QoS: 2}}); err != nil {
		t.Fatal(err)
	}

	const n = 150
	out, errs, code := tether(t, ctx, "", "bench", "-h", b.Addr(), "-t", "tbench", "--publishers", "1,2", "-q", "1,2",
		"--store", "memory,bolt,sqlite,"+r.URL(), "-s", "16,300", "-n", strconv.Itoa(n), "-w", "8", "--progress", "0.05s")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	rows := benchRows(t, out)
	if len(rows) != 2*2*4*2 {
		t.Fatalf("%d rows, want 32:\n%s", len(rows), out)
	}
	want := 0
	stores := map[string]bool{}
	for _, f := range rows {
		// publishers qos store size messages msg/s p50 p99 allocs/msg B/msg
		if len(f) != 10 {
			t.Fatalf("row %q: want 10 fields", f)
		}
		pubs, _ := strconv.Atoi(f[0])
		msgs, _ := strconv.Atoi(f[4])
		if msgs != pubs*n {
			t.Errorf("row %q: %d messages, want %d", f, msgs, pubs*n)
		}
		want += msgs
		stores[f[2]] = true
		if rate, err := strconv.ParseFloat(f[5], 64); err != nil || rate <= 0 {
			t.Errorf("row %q: rate %q", f, f[5])
		}
		p50, err1 := time.ParseDuration(f[6])
		p99, err2 := time.ParseDuration(f[7])
		if err1 != nil || err2 != nil || p50 <= 0 || p99 < p50 {
			t.Errorf("row %q: latencies p50 %q p99 %q", f, f[6], f[7])
		}
		if a, err := strconv.ParseFloat(f[8], 64); err != nil || a <= 0 {
			t.Errorf("row %q: allocs/msg %q", f, f[8])
		}
	}
	for _, s := range []string{"memory", "bolt", "sqlite", "redis"} {
		if !stores[s] {
			t.Errorf("no row for the %s store:\n%s", s, out)
		}
	}
	if !strings.Contains(errs, "case 32/32") || !strings.Contains(errs, "messages (") {
		t.Errorf("no progress on stderr:\n%s", errs)
	}
	if strings.Contains(out+errs, r.Addr()) && strings.Contains(out, "redis://") {
		t.Errorf("the table shows the Redis URL:\n%s", out)
	}
	// Every acknowledged message reached the subscriber (QoS 1 and 2: no
	// loss; one connection each: no duplicate).
	deadline := time.Now().Add(time.Minute)
	for got.Load() < int64(want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if g := got.Load(); g != int64(want) {
		t.Errorf("subscriber received %d messages, the table reports %d", g, want)
	}

	// QoS 0 completes when written: rows still have a rate and latencies.
	out = must(t, ctx, "bench", "-h", b.Addr(), "-t", "tbench0", "-q", "0", "-n", "100", "--quiet")
	if rows := benchRows(t, out); len(rows) != 1 || rows[0][4] != "100" {
		t.Errorf("QoS 0 run: %q", out)
	}
}

// TestBenchWindow: each publisher keeps --window publishes outstanding,
// no more, even when the server would take more: an auditing proxy in
// front of a Mosquitto taking 100 counts the unacknowledged PUBLISHes.
func TestBenchWindow(t *testing.T) {
	b := testenv.Mosquitto(t, testenv.WithMaxInflight(100))
	proxy, err := faultproxy.Start(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	audit := proxy.Audit()
	ctx := testCtx(t, time.Minute)
	for _, qos := range []string{"1", "2"} {
		must(t, ctx, "bench", "-L", proxy.URL(), "-t", "twindow", "-q", qos, "-n", "300", "-w", "5", "--quiet")
	}
	// 5 in practice; fewer only if every acknowledgement came before the
	// publisher filled its window.
	if p := audit.PeakInflight(); p > 5 || p < 2 {
		t.Errorf("at most %d PUBLISHes unacknowledged at once, want 5 (--window)", p)
	}
	if err := audit.Err(); err != nil {
		t.Error(err)
	}
}

// TestBenchUsage checks tether bench's command-line errors (exit 2) and
// help.
func TestBenchUsage(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	for _, args := range [][]string{
		{"-q", "3"},
		{"--publishers", "0"},
		{"--store", "tape"},
		{"-s", "x"},
		{"-n", "0"},
		{"extra"},
	} {
		_, errs, code := tether(t, ctx, "", append([]string{"bench", "-h", "127.0.0.1:1"}, args...)...)
		if code != exitUsage {
			t.Errorf("bench %v: exit %d, want %d (%s)", args, code, exitUsage, errs)
		}
	}
	out := must(t, ctx, "bench", "--help")
	for _, w := range []string{"--publishers", "--store", "--window", "p99"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q:\n%s", w, out)
		}
	}
	// No broker: the connection error's exit code, not a hang.
	_, _, code := tether(t, ctx, "", "bench", "-h", "127.0.0.1:1", "-n", "1", "--timeout", "2s", "--quiet")
	if code != exitConnect {
		t.Errorf("no broker: exit %d, want %d", code, exitConnect)
	}
}

// TestBenchTLS runs tether bench through Mosquitto's TLS listener with
// the TLS file options pub and sub take: a CA file alone, then a client
// certificate for a broker that demands one. The listener speaks only
// TLS, and the runs that leave an option out fail, so the options are
// what the bench's clients connected with.
func TestBenchTLS(t *testing.T) {
	pki := newCLIPKI(t)
	ctx := testCtx(t, 2*time.Minute)
	const n = 50
	bench := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		return tether(t, ctx, "", append([]string{"bench", "-t", "tlsbench", "-q", "1", "-n", strconv.Itoa(n), "-w", "5", "--quiet", "--timeout", "3"}, args...)...)
	}
	ran := func(t *testing.T, what string, args ...string) {
		t.Helper()
		out, errs, code := bench(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, code, out, errs)
		}
		if rows := benchRows(t, out); len(rows) != 1 || rows[0][4] != strconv.Itoa(n) {
			t.Fatalf("%s: want one row of %d messages:\n%s", what, n, out)
		}
	}
	failed := func(t *testing.T, what, want string, args ...string) {
		t.Helper()
		out, errs, code := bench(t, args...)
		if code != exitConnect || !strings.Contains(errs, want) {
			t.Fatalf("%s: exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", what, code, exitConnect, want, out, errs)
		}
	}

	t.Run("CAFile", func(t *testing.T) {
		b := testenv.Mosquitto(t, testenv.WithTLS(testenv.MosquittoTLS{CAFile: pki.ca, CertFile: pki.serverCert, KeyFile: pki.serverKey}))
		addr := strings.TrimPrefix(b.TLSURL(), "mqtts://")
		ran(t, "-h with --cafile", "-h", addr, "--cafile", pki.ca)
		ran(t, "-L mqtts:// with --cafile", "-L", b.TLSURL(), "--cafile", pki.ca)
		// Verification is on: without the CA file the server's
		// certificate is unknown.
		failed(t, "--tls without --cafile", "certificate", "-h", addr, "--tls")
		ran(t, "--insecure", "-h", addr, "--insecure")
	})

	t.Run("ClientCertificate", func(t *testing.T) {
		b := testenv.Mosquitto(t, testenv.WithTLS(testenv.MosquittoTLS{CAFile: pki.ca, CertFile: pki.serverCert, KeyFile: pki.serverKey, RequireCertificate: true}))
		addr := strings.TrimPrefix(b.TLSURL(), "mqtts://")
		ran(t, "--cafile, --cert and --key", "-h", addr, "--cafile", pki.ca, "--cert", pki.clientCert, "--key", pki.clientKey)
		// Without the client certificate the broker refuses the handshake.
		failed(t, "--cafile without --cert", "connect", "-h", addr, "--cafile", pki.ca)
	})
}

// TestBenchBadTLSOptions: a TLS option tether bench cannot use fails the
// command before anything connects, with pub's exit code and message.
func TestBenchBadTLSOptions(t *testing.T) {
	pki := newCLIPKI(t)
	ctx := testCtx(t, 30*time.Second)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name string
		opts []string
		code int
		msg  string
	}{
		{"missing CA file", []string{"--cafile", missing}, exitFailed, "tether: client: tls files: CA file: open " + missing},
		{"CA file without a certificate", []string{"--cafile", pki.clientKey}, exitFailed, "no PEM certificate"},
		{"missing key file", []string{"--cafile", pki.ca, "--cert", pki.clientCert, "--key", missing}, exitFailed, "client certificate"},
		{"certificate without key", []string{"--cert", pki.clientCert}, exitUsage, "tether: --cert and --key go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Nothing listens on port 1: an option checked only when
			// connecting would exit 3 (no connection) instead.
			_, pubErrs, pubCode := tether(t, ctx, "", append([]string{"pub", "-h", "127.0.0.1:1", "-t", "x", "-m", "x", "--timeout", "2"}, tc.opts...)...)
			if pubCode != tc.code || !strings.Contains(pubErrs, tc.msg) {
				t.Fatalf("pub: exit %d, want %d with %q:\n%s", pubCode, tc.code, tc.msg, pubErrs)
			}
			out, errs, code := tether(t, ctx, "", append([]string{"bench", "-h", "127.0.0.1:1", "-n", "1", "--timeout", "2"}, tc.opts...)...)
			if code != pubCode || errs != pubErrs {
				t.Errorf("bench: exit %d, stderr %q; want pub's exit %d, stderr %q", code, errs, pubCode, pubErrs)
			}
			if out != "" {
				t.Errorf("bench ran with a bad TLS option:\n%s", out)
			}
		})
	}
}
