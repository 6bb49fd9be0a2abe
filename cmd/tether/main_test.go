package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tethermq/tether/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a command
// and the reads of the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDemoAgainstMosquitto(t *testing.T) {
	b := testenv.Mosquitto(t)
	for _, st := range []string{"bolt", "sqlite", "memory"} {
		t.Run(st, func(t *testing.T) {
			var out, errs syncBuffer
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			err := run(ctx, []string{"demo", "-broker", b.URL(), "-n", "400", "-cuts", "8", "-store", st, "-seed", "42"}, &out, &errs)
			if err != nil {
				t.Fatalf("demo: %v\n%s%s", err, out.String(), errs.String())
			}
			if !strings.Contains(out.String(), "received 400 of 400 distinct messages, 0 duplicates") {
				t.Fatalf("demo output lacks the exactly-once summary:\n%s", out.String())
			}
		})
	}
}

func TestDemoZeroSetup(t *testing.T) {
	var out, errs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := run(ctx, []string{"demo", "-n", "300", "-cuts", "5"}, &out, &errs); err != nil {
		t.Fatalf("demo: %v\n%s%s", err, out.String(), errs.String())
	}
	if !strings.Contains(out.String(), "OK: every message arrived exactly once") {
		t.Fatalf("unexpected demo output:\n%s", out.String())
	}
}

func TestPubSubSessions(t *testing.T) {
	b := testenv.Mosquitto(t)
	db := "bolt:" + filepath.Join(t.TempDir(), "cli.db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := func(args ...string) string {
		t.Helper()
		var out, errs syncBuffer
		if err := run(ctx, args, &out, &errs); err != nil {
			t.Fatalf("tether %s: %v\n%s", strings.Join(args, " "), err, errs.String())
		}
		return out.String()
	}

	// A retained message is there for the subscriber whenever it comes.
	cmd("pub", "-broker", b.URL(), "-id", "cli-pub", "-store", db, "-topic", "cli/a", "-qos", "2", "-retain", "hello")
	if got := cmd("sub", "-broker", b.URL(), "-id", "cli-sub", "-topic", "cli/#", "-qos", "2", "-count", "1"); got != "cli/a\thello\n" {
		t.Fatalf("sub printed %q", got)
	}

	list := cmd("sessions", "-store", db, "list")
	server := "mqtt://" + b.Addr()
	if !strings.Contains(list, server+"\tcli-pub\t0\t0") {
		t.Fatalf("sessions list lacks the publisher's session %s/cli-pub:\n%s", server, list)
	}
	cmd("sessions", "-store", db, "-server", server, "-id", "cli-pub", "clear")
	if list := cmd("sessions", "-store", db, "list"); strings.Contains(list, "cli-pub") {
		t.Fatalf("session still listed after clear:\n%s", list)
	}

	var out, errs syncBuffer
	if err := run(ctx, []string{"pub", "-broker", b.URL()}, &out, &errs); err == nil {
		t.Fatal("pub without -topic succeeded")
	}
	if err := run(ctx, []string{"sessions", "-store", "nosuch:x"}, &out, &errs); err == nil || !strings.Contains(err.Error(), "unknown store") {
		t.Fatalf("unknown store spec: %v", err)
	}
}
