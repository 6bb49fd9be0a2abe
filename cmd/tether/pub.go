package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/packets"
)

const pubSynopsis = "tether pub {-t TOPIC} {-m MSG | -f FILE | -s | -l | -n | MSG | --flush} [options]"

// pubWindow bounds the messages read and not yet acknowledged, so that
// -l on a long input holds at most this many in memory.
const pubWindow = 1000

type pubOpts struct {
	conn                        connOpts
	topic, message, file        string
	stdinLines, stdinFile, null bool
	qos                         int
	retain, flush, progress     bool
	repeat                      int
	repeatDelay                 time.Duration
	stdin                       io.Reader
}

func runPub(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o := pubOpts{qos: 0, repeat: 1, stdin: stdin}
	s := o.conn.commandOptions("tether pub", true, "; with a durable --store the messages stay stored")
	s.str("t", "topic", "TOPIC", "topic to publish to", &o.topic)
	s.str("m", "message", "MSG", "the message", &o.message)
	s.str("f", "file", "FILE", "send the contents of FILE as the message", &o.file)
	s.flag("l", "stdin-line", "send each line of standard input as a message (resumable with a durable --store)", &o.stdinLines)
	s.flag("s", "stdin-file", "send all of standard input as one message", &o.stdinFile)
	s.flag("n", "null-message", "send a zero-length message", &o.null)
	s.int("q", "qos", "QOS", "quality of service: 0, 1 or 2 (default 0)", &o.qos, 0, 2)
	s.flag("r", "retain", "retain the message", &o.retain)
	s.int("", "repeat", "N", "publish the message N times", &o.repeat, 1, 1<<30)
	s.dur("", "repeat-delay", "SECS", "wait between repeats", &o.repeatDelay)
	s.flag("", "flush", "send only what the --store still holds from an earlier run", &o.flush)
	s.flag("", "progress", "print progress (lines, rate, in flight) to standard error; on by default for -l on a terminal", &o.progress)
	// mosquitto_pub's -h is the host: help is --help.
	pos, ok, err := o.conn.parseArgs(s, args, stdout, pubSynopsis)
	if !ok {
		return err
	}
	if o.topic == "" {
		o.topic = o.conn.topicFromURL
	}
	sources := 0
	for _, b := range []bool{o.message != "", o.file != "", o.stdinLines, o.stdinFile, o.null, len(pos) > 0, o.flush} {
		if b {
			sources++
		}
	}
	switch {
	case len(pos) > 1:
		return usageErrorf("tether pub: one message only, got %d arguments (quote the message)", len(pos))
	case sources != 1:
		return usageErrorf("tether pub: give exactly one message source: -m, -f, -s, -l, -n, a MSG argument or --flush (see --help)")
	case o.topic == "" && !o.flush:
		return usageErrorf("tether pub: -t TOPIC is required")
	case o.flush && !o.conn.durable():
		return usageErrorf("tether pub: --flush needs a durable --store")
	}
	if len(pos) == 1 {
		o.message = pos[0]
	}
	if isTerminalWriter(stderr) && o.stdinLines {
		o.progress = true
	}
	return o.run(ctx, stderr)
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}

func (o *pubOpts) run(ctx context.Context, stderr io.Writer) error {
	sess, err := o.conn.open("pub", stderr, func(cfg *client.Config) { cfg.QueueQoS0 = true })
	if err != nil {
		return err
	}
	defer sess.close()
	p := &publisher{o: o, sess: sess, start: time.Now()}

	// The messages are stored before the connection is made, so that a
	// durable store keeps them while the broker is down.
	connErr := make(chan error, 1)
	go func() { connErr <- sess.connect(ctx, o.conn.timeout) }()

	sendErr := make(chan error, 1)
	go func() { sendErr <- p.send(ctx) }()

	var stopProgress func()
	if o.progress && !o.conn.quiet {
		stopProgress = p.reportProgress(stderr)
	}
	defer func() {
		if stopProgress != nil {
			stopProgress()
		}
	}()

	connected := false
	var sent error
	sendDone := false
	for !connected || !sendDone {
		select {
		case err := <-connErr:
			if err != nil {
				<-p.stopSending(sendErr, sendDone)
				return p.offline(err)
			}
			connected = true
		case sent = <-sendErr:
			sendDone = true
			if sent != nil && !connected {
				return sent
			}
		}
	}
	if sent != nil {
		return sent
	}
	if err := p.waitDelivered(ctx); err != nil {
		return err
	}
	if stopProgress != nil {
		stopProgress()
		stopProgress = nil
	}
	return sess.c.Disconnect(context.WithoutCancel(ctx), packets.Success)
}

// publisher sends the messages of one tether pub.
type publisher struct {
	o     *pubOpts
	sess  *session
	start time.Time

	mu     sync.Mutex // guards the fields below
	read   int        // messages handed to the client
	acked  int
	failed error           // the first publish that failed, reaped before anyone waited on it
	tokens []*client.Token // not yet known to be done, in order
	cancel context.CancelFunc
}

// stopSending ends the sender (which may wait on a full window) and
// returns a channel closed once it has returned.
func (p *publisher) stopSending(sendErr chan error, done bool) <-chan struct{} {
	ch := make(chan struct{})
	p.mu.Lock()
	cancel := p.cancel
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	go func() {
		if !done {
			<-sendErr
		}
		close(ch)
	}()
	return ch
}

// offline reports a connection that could not be made; what a durable
// store holds is delivered by a later run.
func (p *publisher) offline(err error) error {
	// Close writes out what is pending in the store before it returns.
	p.sess.c.Close()
	held, _ := p.sess.st.outbound()
	partial := p.sess.st.reading() // the session was not read to its end
	n := strconv.Itoa(held)
	if partial {
		n = "at least " + n
	}
	if p.o.conn.durable() && (held > 0 || partial) {
		p.sess.status.printf("%s message(s) kept in %s for client %s: run tether pub --flush (or publish again) with the same --store to deliver them",
			n, p.o.conn.red.redact(p.o.conn.storeSpec), p.sess.id)
	}
	return err
}

func (p *publisher) track(ctx context.Context, t *client.Token) error {
	p.mu.Lock()
	p.read++
	p.tokens = append(p.tokens, t)
	p.mu.Unlock()
	for {
		p.mu.Lock()
		p.reap()
		n := len(p.tokens)
		var first *client.Token
		if n > 0 {
			first = p.tokens[0]
		}
		p.mu.Unlock()
		if n < pubWindow {
			return nil
		}
		select {
		case <-first.Done():
		case <-ctx.Done():
			return nil
		}
		if err := first.Err(); err != nil {
			return p.publishErr(err)
		}
	}
}

// reap drops the done tokens at the front. mu held.
func (p *publisher) reap() {
	for len(p.tokens) > 0 {
		select {
		case <-p.tokens[0].Done():
			if err := p.tokens[0].Err(); err != nil {
				if p.failed == nil {
					p.failed = err
				}
			} else {
				p.acked++
			}
			p.tokens = p.tokens[1:]
		default:
			return
		}
	}
}

func (p *publisher) publishErr(err error) error {
	var re *client.ReasonError
	if errors.As(err, &re) {
		return &exitError{code: exitNack, err: fmt.Errorf("publish refused: %w", err)}
	}
	return err
}

func (p *publisher) message(payload []byte) *client.Message {
	return &client.Message{Topic: p.o.topic, Payload: payload, QoS: byte(p.o.qos), Retain: p.o.retain}
}

// send hands every message to the client.
func (p *publisher) send(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	p.mu.Lock()
	p.cancel = cancel
	p.mu.Unlock()
	defer cancel()
	o := p.o
	switch {
	case o.flush:
		return nil
	case o.stdinLines:
		lines := readLines(ctx, o.stdin)
		for {
			var l line
			var ok bool
			select {
			case l, ok = <-lines:
			case <-ctx.Done():
				return nil
			}
			switch {
			case !ok:
				return nil
			case l.err != nil:
				return fmt.Errorf("read standard input: %w", l.err)
			}
			if err := p.track(ctx, p.sess.c.PublishAsync(p.message(l.b))); err != nil {
				return err
			}
		}
	}
	var payload []byte
	switch {
	case o.file != "":
		b, err := os.ReadFile(o.file)
		if err != nil {
			return fmt.Errorf("message file: %w", err)
		}
		payload = b
	case o.stdinFile:
		b, err := io.ReadAll(o.stdin)
		if err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		payload = b
	case o.null:
	default:
		payload = []byte(o.message)
	}
	for i := range o.repeat {
		if i > 0 && o.repeatDelay > 0 {
			select {
			case <-time.After(o.repeatDelay):
			case <-ctx.Done():
				return nil
			}
		}
		if err := p.track(ctx, p.sess.c.PublishAsync(p.message(payload))); err != nil {
			return err
		}
	}
	return nil
}

// line is one line of input without its newline, or the error that ended
// the input.
type line struct {
	b   []byte
	err error
}

// readLines reads r's lines in a goroutine of its own and hands them over
// until r ends (EOF ends the channel, another error comes as a line) or ctx
// is done: a read that blocks (a terminal, a pipe nobody writes) then no
// longer holds up the publisher, which stops at once; the reader ends with
// its read.
func readLines(ctx context.Context, r io.Reader) <-chan line {
	ch := make(chan line)
	go func() {
		defer close(ch)
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			b, err := br.ReadBytes('\n')
			if len(b) > 0 {
				if b[len(b)-1] == '\n' {
					b = b[:len(b)-1]
				}
				select {
				case ch <- line{b: b}:
				case <-ctx.Done():
					return
				}
			}
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				select {
				case ch <- line{err: err}:
				case <-ctx.Done():
				}
				return
			}
		}
	}()
	return ch
}

// waitDelivered waits until every message of this run is acknowledged
// and the store holds nothing an earlier run left.
func (p *publisher) waitDelivered(ctx context.Context) error {
	p.mu.Lock()
	tokens := append([]*client.Token(nil), p.tokens...)
	p.mu.Unlock()
	for _, t := range tokens {
		if err := t.Wait(ctx); err != nil {
			return p.publishErr(err)
		}
	}
	p.mu.Lock()
	p.reap()
	failed := p.failed
	p.mu.Unlock()
	if failed != nil {
		return p.publishErr(failed)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		// A session read in pages is counted page by page: wait for
		// its last page too.
		if held, _ := p.sess.st.outbound(); held == 0 && !p.sess.st.reading() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// reportProgress prints a progress line every second until stopped.
func (p *publisher) reportProgress(w io.Writer) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastAt := 0, time.Now()
		for {
			select {
			case <-stop:
				p.printProgress(w, &last, &lastAt)
				return
			case <-t.C:
				p.printProgress(w, &last, &lastAt)
			}
		}
	}()
	var once bool
	return func() {
		if !once {
			once = true
			close(stop)
			<-done
		}
	}
}

func (p *publisher) printProgress(w io.Writer, last *int, lastAt *time.Time) {
	p.mu.Lock()
	p.reap()
	read, acked, inflight := p.read, p.acked, len(p.tokens)
	p.mu.Unlock()
	held, stored := p.sess.st.outbound()
	now := time.Now()
	rate := float64(acked-*last) / now.Sub(*lastAt).Seconds()
	*last, *lastAt = acked, now
	line := fmt.Sprintf("%d read, %d acknowledged, %d in flight, %.0f/s", read, acked, inflight, rate)
	if p.o.conn.durable() {
		line += fmt.Sprintf("; %d stored this run, %d held in the store", stored, held)
	}
	p.sess.status.printf("%s", line)
}
