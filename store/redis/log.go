package redis

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// DefaultLogInterval is the least time between two lines of one kind that
// a store passes from go-redis to Options.Logger, when Options.LogInterval
// is zero.
const DefaultLogInterval = 10 * time.Second

// go-redis has one logger for the whole process, and with Redis down its
// connection pool writes "failed to dial" to stderr for every call that
// tries to connect, from a goroutine whose context says nothing of the
// caller. So each store hooks its client's dials (dialHook) and notes the
// text of every failure; the first New installs logRouter as go-redis's
// logger, which sends a line carrying a noted failure to that store's
// Options.Logger, rate-limited (or nowhere when it has none), and every
// other line (the application's own go-redis clients) to stderr, as
// go-redis's default logger writes it.

// dialHook notes the failed dials of a store's client.
type dialHook struct{ s *Store }

func (h dialHook) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			noteDialFailure(err.Error(), h.s)
		}
		return c, err
	}
}

func (dialHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (dialHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

// maxDialFailures bounds the failure texts remembered: the oldest goes
// first.
const maxDialFailures = 256

// dialFailures maps the text of a recent dial failure to the store whose
// client failed so. Guarded by dialMu.
var (
	dialMu       sync.Mutex
	dialFailures = map[string]*Store{}
	dialOrder    []string // the keys of dialFailures, oldest first
)

func noteDialFailure(text string, s *Store) {
	dialMu.Lock()
	defer dialMu.Unlock()
	if _, ok := dialFailures[text]; !ok {
		dialOrder = append(dialOrder, text)
		if len(dialOrder) > maxDialFailures {
			delete(dialFailures, dialOrder[0])
			dialOrder = dialOrder[1:]
		}
	}
	dialFailures[text] = s
}

func dialFailureStore(text string) *Store {
	dialMu.Lock()
	defer dialMu.Unlock()
	return dialFailures[text]
}

// forgetDialFailures drops the failures noted for s, once it is closed.
func forgetDialFailures(s *Store) {
	dialMu.Lock()
	defer dialMu.Unlock()
	kept := dialOrder[:0]
	for _, text := range dialOrder {
		if dialFailures[text] == s {
			delete(dialFailures, text)
			continue
		}
		kept = append(kept, text)
	}
	dialOrder = kept
}

type logRouter struct{ fallback *log.Logger }

func (r *logRouter) Printf(_ context.Context, format string, v ...any) {
	for _, a := range v {
		if err, ok := a.(error); ok {
			if s := dialFailureStore(err.Error()); s != nil {
				s.logs.line(format, fmt.Sprintf(format, v...))
				return
			}
		}
	}
	r.fallback.Printf(format, v...)
}

// stderr writes to whatever os.Stderr is at the time of the write.
type stderr struct{}

func (stderr) Write(p []byte) (int, error) { return os.Stderr.Write(p) }

var (
	routeLogs sync.Once
	router    *logRouter // installed by the first New
)

func installLogRouter() {
	routeLogs.Do(func() {
		router = &logRouter{fallback: log.New(stderr{}, "redis: ", log.LstdFlags)}
		goredis.SetLogger(router)
	})
}

// logLimiter passes at most one line of each kind (go-redis's format
// string) per interval to a logger, and counts the lines held back.
type logLimiter struct {
	log      *slog.Logger // nil: every line is dropped
	interval time.Duration

	mu    sync.Mutex
	kinds map[string]*logKind // guarded by mu; go-redis has a fixed set of formats
}

type logKind struct {
	last time.Time // when a line of this kind was last passed on
	held int       // lines held back since
}

func (l *logLimiter) line(format, text string) {
	if l.log == nil {
		return
	}
	now := time.Now()
	l.mu.Lock()
	k := l.kinds[format]
	if k == nil {
		k = &logKind{}
		l.kinds[format] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < l.interval {
		k.held++
		l.mu.Unlock()
		return
	}
	held := k.held
	k.last, k.held = now, 0
	l.mu.Unlock()
	attrs := []any{"source", "go-redis"}
	if held > 0 {
		attrs = append(attrs, "held_back", held)
	}
	l.log.Warn(strings.TrimPrefix(text, "redis: "), attrs...)
}
