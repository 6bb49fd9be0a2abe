package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/packets"
)

const subSynopsis = "tether sub {-t FILTER}... [options]"

type subOpts struct {
	conn                       connOpts
	topics, filterOut, unsub   []string
	qos, count, retainHandling int
	wait                       time.Duration
	verbose, noEOL, json       bool
	noStale, retainedOnly      bool
	exitAfterSub               bool
	noLocal, rap               bool
	raw, escape                bool
	format                     string
}

func runSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := subOpts{}
	s := o.conn.commandOptions("tether sub", true, "")
	s.strs("t", "topic", "FILTER", "topic filter to subscribe to (repeatable)", &o.topics)
	s.strs("T", "filter-out", "FILTER", "do not print messages whose topic matches FILTER (repeatable)", &o.filterOut)
	s.strs("U", "unsubscribe", "FILTER", "unsubscribe from FILTER (repeatable; with -c or --store, ends a kept subscription)", &o.unsub)
	s.int("q", "qos", "QOS", "maximum QoS to receive: 0, 1 or 2 (default 0)", &o.qos, 0, 2)
	s.int("C", "count", "N", "exit after N messages", &o.count, 1, 1<<30)
	s.dur("W", "wait", "SECS", "exit after this long (exit code 27)", &o.wait)
	s.flag("v", "verbose", "print the topic, a space and the payload", &o.verbose)
	s.str("F", "format", "FORMAT", "print with FORMAT: %t topic, %p payload, %x hex, %l length, %q QoS, %r retain, %m id, %I time, %U unix time, %j JSON; or \"json\"", &o.format)
	s.flag("", "json", "print each message as a JSON object with its properties (as -F json)", &o.json)
	s.flag("N", "no-newline", "print no newline after each message", &o.noEOL)
	s.flag("R", "no-retained", "do not print retained (stale) messages", &o.noStale)
	s.flag("", "retained-only", "print only retained messages; exit at the first live one", &o.retainedOnly)
	s.flag("E", "exit-after-subscribe", "exit once subscribed", &o.exitAfterSub)
	s.flag("", "nl", "no local: do not receive this client's own messages", &o.noLocal)
	s.flag("", "rap", "retain as published", &o.rap)
	s.int("", "retain-handling", "N", "0: send retained messages on subscribe, 1: only for a new subscription (default with a durable --store), 2: never", &o.retainHandling, 0, 2)
	s.flag("", "raw", "print payloads as they are, even on a terminal", &o.raw)
	s.flag("", "escape", "escape control characters in topics and payloads (default on a terminal)", &o.escape)
	o.retainHandling = -1
	pos, ok, err := o.conn.parseArgs(s, args, stdout, subSynopsis)
	if !ok {
		return err
	}
	if t := o.conn.topicFromURL; t != "" {
		o.topics = append(o.topics, t)
	}
	o.topics = append(o.topics, pos...) // tether sub FILTER, as before
	if len(o.topics) == 0 && len(o.unsub) == 0 {
		return usageErrorf("tether sub: -t FILTER is required")
	}
	if o.json {
		o.format = "json"
	}
	if o.retainHandling < 0 {
		o.retainHandling = 0
		if o.conn.durable() || o.conn.noClean {
			o.retainHandling = 1
		}
	}
	if !o.raw && (o.escape || isTerminalWriter(stdout)) {
		o.escape = true
	}
	return o.run(ctx, stdout, stderr)
}

func (o *subOpts) run(ctx context.Context, stdout, stderr io.Writer) error {
	f := &formatter{verbose: o.verbose, format: o.format, noEOL: o.noEOL, escape: o.escape}
	var (
		mu      sync.Mutex
		printed int
		stopped bool
		done    = make(chan error, 1)
	)
	finish := func(err error) {
		select {
		case done <- err:
		default:
		}
	}
	// Each message is printed, then acknowledged: with a durable store, a
	// process killed in between gets it again on its next run, and no
	// message is acknowledged that was not printed.
	onMessage := func(m *client.Message) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return // not acknowledged: a later run with the same session gets it
		}
		show := !(o.noStale && m.Retain) && !matchesAny(o.filterOut, m.Topic)
		if o.retainedOnly && !m.Retain {
			stopped = true
			finish(nil)
			return
		}
		if show {
			if _, err := io.WriteString(stdout, f.line(m, time.Now())); err != nil {
				stopped = true
				finish(fmt.Errorf("write: %w", err))
				return
			}
		}
		_ = m.Ack()
		if show {
			printed++
			if o.count > 0 && printed == o.count {
				stopped = true
				finish(nil)
			}
		}
	}
	sess, err := o.conn.open("sub", stderr, func(cfg *client.Config) {
		cfg.OnMessage = onMessage
		cfg.ManualAck = true
	})
	if err != nil {
		return err
	}
	defer sess.close()
	if o.wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.wait)
		defer cancel()
	}
	if err := sess.connect(ctx, o.conn.timeout); err != nil {
		if o.wait > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &exitError{code: exitTimeout, err: fmt.Errorf("no connection within -W %s: %w", o.wait, err)}
		}
		return err
	}
	if len(o.unsub) > 0 {
		codes, err := sess.c.Unsubscribe(ctx, o.unsub...)
		if err != nil {
			return err
		}
		for i, c := range codes {
			if c.IsError() && i < len(o.unsub) {
				sess.status.printf("unsubscribe %q: %s", o.unsub[i], c)
			}
		}
	}
	if len(o.topics) > 0 {
		if err := o.subscribe(ctx, sess); err != nil {
			return err
		}
	}
	if o.exitAfterSub || len(o.topics) == 0 {
		return sess.c.Disconnect(context.WithoutCancel(ctx), packets.Success)
	}
	var result error
	select {
	case <-ctx.Done():
		if o.wait > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			result = &exitError{code: exitTimeout, err: fmt.Errorf("timed out after %s (-W)", o.wait)}
		}
	case result = <-done:
	}
	mu.Lock()
	stopped = true
	mu.Unlock()
	if err := sess.c.Disconnect(context.WithoutCancel(ctx), packets.Success); err != nil && result == nil {
		result = err
	}
	return result
}

func (o *subOpts) subscribe(ctx context.Context, sess *session) error {
	subs := make([]client.Subscription, len(o.topics))
	for i, t := range o.topics {
		subs[i] = client.Subscription{Filter: t}
		subs[i].QoS = byte(o.qos)
		subs[i].NoLocal = o.noLocal
		subs[i].RetainAsPublished = o.rap
		subs[i].RetainHandling = byte(o.retainHandling)
	}
	codes, err := sess.c.Subscribe(ctx, subs...)
	if err != nil {
		return err
	}
	refused := 0
	for i, c := range codes {
		if c.IsError() {
			refused++
			if i < len(o.topics) {
				sess.status.printf("subscribe %q refused: %s", o.topics[i], c)
			}
		}
	}
	if refused == len(o.topics) {
		return &exitError{code: exitNack, err: errors.New("every subscription was refused")}
	}
	return nil
}

// matchesAny reports whether topic matches one of the filters.
func matchesAny(filters []string, topic string) bool {
	for _, f := range filters {
		if topicMatch(f, topic) {
			return true
		}
	}
	return false
}

// topicMatch reports whether topic matches filter, with + and #; topics
// starting with $ match no filter starting with a wildcard (MQTT-4.7.2-1).
func topicMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) {
			return false
		}
		if f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}
