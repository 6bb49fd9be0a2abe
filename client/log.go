package client

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// discardHandler is a slog.Handler that drops everything: a nil
// Config.Logger keeps the client silent.
type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (d discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discardHandler) WithGroup(string) slog.Handler           { return d }

// floodLog rate-limits the log lines a server can cause at will (an
// acknowledgement for an unknown identifier, a dropped QoS 0 message): at
// most one line per kind per interval, the next one saying how many were
// left out in between.
type floodLog struct {
	log      *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	kinds    map[string]*floodKind
}

type floodKind struct {
	last       time.Time
	suppressed int
}

func newFloodLog(l *slog.Logger) *floodLog {
	return &floodLog{log: l, interval: time.Second, kinds: make(map[string]*floodKind)}
}

// warn logs msg at WARN unless a line of the same msg was logged less than
// the interval ago.
func (f *floodLog) warn(msg string, args ...any) {
	if !f.log.Enabled(context.Background(), slog.LevelWarn) {
		return
	}
	now := time.Now()
	f.mu.Lock()
	k := f.kinds[msg]
	if k == nil {
		k = &floodKind{}
		f.kinds[msg] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < f.interval {
		k.suppressed++
		f.mu.Unlock()
		return
	}
	k.last = now
	n := k.suppressed
	k.suppressed = 0
	f.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	f.log.Warn(msg, args...)
}
