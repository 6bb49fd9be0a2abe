package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tethermq/tether/internal/testenv"
)

// cliChildEnv, set to 1, makes the test binary run as the tether command
// itself, so that tests can kill a real tether process.
const cliChildEnv = "TETHER_TEST_CLI_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(cliChildEnv) == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

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
			err := run(ctx, []string{"demo", "-broker", b.URL(), "-n", "400", "-cuts", "8", "-store", st, "-seed", "42"}, nil, &out, &errs)
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
	if err := run(ctx, []string{"demo", "-n", "300", "-cuts", "5"}, nil, &out, &errs); err != nil {
		t.Fatalf("demo: %v\n%s%s", err, out.String(), errs.String())
	}
	if !strings.Contains(out.String(), "OK: every message arrived exactly once") {
		t.Fatalf("unexpected demo output:\n%s", out.String())
	}
}
