package client

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var clientSeq atomic.Int64

// uniqueID returns a ClientID no other test uses.
func uniqueID(t testing.TB) string {
	return fmt.Sprintf("tether-%s-%d", t.Name(), clientSeq.Add(1))
}

// collector gathers the messages a handler receives.
type collector struct {
	mu   sync.Mutex
	msgs []*Message
	ch   chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1)} }

func (c *collector) handle(m *Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *collector) snapshot() []*Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Message(nil), c.msgs...)
}

// waitFor waits until n messages have arrived, failing after d.
func (c *collector) waitFor(t testing.TB, n int, d time.Duration) []*Message {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		if c.count() >= n {
			return c.snapshot()
		}
		select {
		case <-c.ch:
		case <-deadline.C:
			t.Fatalf("got %d messages, want %d", c.count(), n)
		}
	}
}

// quiet checks that no more than n messages arrive within d: a bounded
// wait for something that must not happen.
func (c *collector) quiet(t testing.TB, n int, d time.Duration) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case <-c.ch:
			if got := c.count(); got > n {
				t.Fatalf("got %d messages, want %d", got, n)
			}
		case <-deadline.C:
			if got := c.count(); got != n {
				t.Fatalf("got %d messages, want %d", got, n)
			}
			return
		}
	}
}

// start returns a connected client, closed when the test ends.
func start(t testing.TB, cfg Config) *Client {
	t.Helper()
	if cfg.ReconnectBackoff.Min == 0 {
		cfg.ReconnectBackoff = Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	return c
}

// subscriber returns a client subscribed to filter at QoS 2 collecting what
// it receives.
func subscriber(t testing.TB, url, filter string) *collector {
	t.Helper()
	col := newCollector()
	c := start(t, Config{Servers: []string{url}, ClientID: uniqueID(t) + "-sub", OnMessage: col.handle,
		SessionExpiry: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, Subscription{Filter: filter, SubscribeOptions: subOpts(2)}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return col
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// records loads the session of c's first server from st.
func records(t testing.TB, st store.SessionStore, url, id string) []store.Record {
	t.Helper()
	sv, err := parseServer(url)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := st.Load(context.Background(), store.Key{Server: sv.canonical, ClientID: id})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func broker(t testing.TB, opts ...testenv.MosquittoOption) *testenv.Broker {
	t.Helper()
	return testenv.Mosquitto(t, opts...)
}

// testLogger returns a logger writing to the test's log, for debugging.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
