package redis

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// TestRefused: a wrong password, no password, an ACL that denies the
// store's commands or keys, and a database index the server lacks fail
// every method at once with ErrRefused and a message saying why, never
// with store.ErrUnavailable (which a caller retries) and never by waiting
// out the context.
func TestRefused(t *testing.T) {
	srv := testenv.Redis(t,
		testenv.WithRedisPassword("s3cret"),
		testenv.WithRedisUser("limited on >pw ~other:* +@all"),
		testenv.WithRedisUser("noscript on >pw ~* +@all -@scripting"),
		testenv.WithRedisUser("noscan on >pw ~* +@all -scan"),
	)
	addr := srv.Addr()
	cases := []struct {
		name, url, why string
	}{
		{"WRONGPASS", "redis://:wrong@" + addr, "wrong user name or password"},
		{"WRONGPASSUser", "redis://nobody:pw@" + addr, "wrong user name or password"},
		{"NOAUTH", "redis://" + addr, "requires a password"},
		{"NOPERMKeys", "redis://limited:pw@" + addr, "lacks a permission"},
		{"NOPERMScripts", "redis://noscript:pw@" + addr, "lacks a permission"},
		{"BadDB", "redis://:s3cret@" + addr + "/99", "no database of the index"},
	}
	k := testKey("refused")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t, c.url, nil)
			calls := []struct {
				name string
				f    func(ctx context.Context) error
			}{
				{"Load", func(ctx context.Context) error { _, err := s.Load(ctx, k); return err }},
				{"Apply", func(ctx context.Context) error { return s.Apply(ctx, k, store.Put(record(1, "x"))) }},
				{"Clear", func(ctx context.Context) error { return s.Clear(ctx, k) }},
				{"Acquire", func(ctx context.Context) error {
					l, err := s.Acquire(ctx, k, store.LeaseOptions{Wait: true})
					if l != nil {
						_ = l.Release(ctx)
					}
					return err
				}},
			}
			if c.name != "NOPERMScripts" && c.name != "NOPERMKeys" {
				calls = append(calls, struct {
					name string
					f    func(ctx context.Context) error
				}{"Sessions", func(ctx context.Context) error { _, err := s.Sessions(ctx); return err }})
			}
			for _, call := range calls {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := call.f(ctx)
				expired := ctx.Err() != nil
				cancel()
				if !errors.Is(err, ErrRefused) {
					t.Errorf("%s returned %v, want ErrRefused", call.name, err)
					continue
				}
				if errors.Is(err, store.ErrUnavailable) {
					t.Errorf("%s returned %v, which matches store.ErrUnavailable: callers would retry it", call.name, err)
				}
				if expired {
					t.Errorf("%s waited out its context before failing", call.name)
				}
				if !strings.Contains(err.Error(), c.why) {
					t.Errorf("%s error %q does not say %q", call.name, err, c.why)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("%s error %q holds the password", call.name, err)
				}
			}
		})
	}
	// The ACL user that may not SCAN can still use every other method.
	t.Run("NOPERMScan", func(t *testing.T) {
		s := openStore(t, "redis://noscan:pw@"+addr, nil)
		ctx := context.Background()
		if err := s.Apply(ctx, k, store.Put(record(1, "x"))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sessions(ctx); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "lacks a permission") {
			t.Errorf("Sessions without SCAN permission returned %v, want ErrRefused", err)
		}
	})
	// The right password works.
	t.Run("Authenticated", func(t *testing.T) {
		s := openStore(t, "redis://:s3cret@"+addr, nil)
		ctx := context.Background()
		if err := s.Apply(ctx, k, store.Put(record(1, "x"))); err != nil {
			t.Fatal(err)
		}
		expectRecords(t, s, k, record(1, "x"))
	})
}

// TestOpenRedactsPassword: a URL that cannot be parsed is named in the
// error without its password, and so is the parser's own message.
func TestOpenRedactsPassword(t *testing.T) {
	for _, u := range []string{
		"redis://user:s3cret@localhost:notaport",
		"redis://:s3cret@local host:6379",
		"redis://user:s3cret@localhost:6379/notadb",
		"redis://user:s3cret@localhost:6379/0?dial_timeout=s3cret",
		"unknown://user:s3cret@localhost:6379",
		"redis://user:s3%63ret@localhost:6379/x",
		"redis://user:s3cret@[::1",
	} {
		s, err := Open(u, nil)
		if err == nil {
			_ = s.Close()
			t.Errorf("Open(%q) succeeded", u)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "s3cret") || strings.Contains(msg, "s3%63ret") {
			t.Errorf("Open error %q holds the password", msg)
		}
		if !strings.HasPrefix(msg, "redis: open ") || !strings.Contains(msg, "xxxxx@") {
			t.Errorf("Open error %q does not name the redacted URL", msg)
		}
	}
}

// records collects slog records.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) snapshot() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.recs...)
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDialLogsRouted: with Redis down, go-redis's "failed to dial" lines
// from the store's calls reach the store's Logger, at most one per
// LogInterval, with the number held back, and never stderr.
func TestDialLogsRouted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	var got records
	const interval = 1500 * time.Millisecond
	s := openStore(t, "redis://"+addr, &Options{Logger: slog.New(&got), LogInterval: interval})
	var stderrLines syncBuffer
	router.fallback.SetOutput(&stderrLines)
	defer router.fallback.SetOutput(stderr{})
	k := testKey("down")
	start := time.Now()
	calls := 0
	// Calls until two intervals and a half have passed, each dialling
	// anew: go-redis logs a line per failed call, several per interval.
	for time.Since(start) < 2*interval+interval/2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.Load(ctx, k)
		cancel()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Load with nothing listening returned %v, want store.ErrUnavailable", err)
		}
		calls++
	}
	took := time.Since(start)
	recs := got.snapshot()
	if len(recs) == 0 {
		t.Fatalf("%d calls with Redis down over %v logged nothing to the store's Logger", calls, took)
	}
	if max := int(took/interval) + 1; len(recs) > max {
		t.Errorf("%d lines in %v with a LogInterval of %v: more than %d", len(recs), took, interval, max)
	}
	held := 0
	for _, r := range recs {
		if r.Level != slog.LevelWarn || !strings.Contains(r.Message, "failed to dial") || !strings.Contains(r.Message, addr) {
			t.Errorf("logged %v %q, want Warn \"... failed to dial ... %s ...\"", r.Level, r.Message, addr)
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "held_back" {
				held += int(a.Value.Int64())
			}
			return true
		})
	}
	t.Logf("%d calls over %v: %d lines logged, %d reported held back", calls, took.Round(time.Millisecond), len(recs), held)
	if held == 0 {
		t.Errorf("no line reported lines held back, over %v with go-redis logging at every failed call", took)
	}
	if strings.Contains(stderrLines.String(), addr) {
		t.Errorf("go-redis's lines about the store's client reached stderr:\n%s", stderrLines.String())
	}
}

// TestClientConnectRefused: a client whose Redis store is refused (a wrong
// password) fails Connect at once with an error matching store.ErrRefused,
// instead of retrying until its context ends.
func TestClientConnectRefused(t *testing.T) {
	srv := testenv.Redis(t, testenv.WithRedisPassword("s3cret"))
	broker := testenv.Mosquitto(t)
	s := openStore(t, "redis://:wrong@"+srv.Addr(), nil)
	if !errors.Is(ErrRefused, store.ErrRefused) {
		t.Fatal("redis.ErrRefused does not match store.ErrRefused")
	}
	c, err := client.New(client.Config{Servers: []string{broker.URL()}, ClientID: "refused", Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	err = c.Connect(ctx)
	if !errors.Is(err, store.ErrRefused) || ctx.Err() != nil {
		t.Fatalf("Connect: %v after %v, want store.ErrRefused at once", err, time.Since(began))
	}
}
