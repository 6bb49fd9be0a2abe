package sessiontest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/conformance/internal/reexec"
	"github.com/tethermq/tether/store"
)

// childSpec is what a crash case tells its child process, as JSON in
// reexec.SessionEnv.
type childSpec struct {
	Config    string // conformance.ChildHarness.ChildConfig, for Options.OpenChild
	URL       string // the proxy
	ClientID  string
	Out, In   string // the topics it publishes to and subscribes to
	Gen       int    // the child's generation, from 1; tags its messages
	Count     int    // how many messages it publishes
	Subscribe bool   // subscribe to In first
}

// childPrefix starts every line of the child's protocol on its standard
// output, which it shares with the testing package.
const childPrefix = "tether-session-child: "

// childReceiveMax is the client's Receive Maximum in the child: it bounds
// the inbound QoS 2 messages whose handling a crash may catch between the
// handler's return and the durable record.
const childReceiveMax = 10

// childCrashWindow is the child's client.Config.CrashWindow: at most that
// many handled inbound messages may wait for their record to be durable,
// so a crash may hand at most that many to a handler again. The crash
// case enforces it.
const childCrashWindow = 4

// runChild is the child's side of a crash case: open the store from the
// parent's description, run a client on it, report every event on
// standard output, and wait to be killed (or told to finish by the end of
// standard input). It never returns.
func runChild(t *testing.T, opts Options, raw string) {
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "child: bad %s: %v\n", reexec.SessionEnv, err)
		os.Exit(2)
	}
	os.Exit(childMain(spec, opts))
}

func childMain(spec childSpec, opts Options) int {
	var mu sync.Mutex
	emit := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		// Unbuffered: the line is the parent's before the call returns.
		fmt.Fprintf(os.Stdout, childPrefix+format+"\n", args...)
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
		return 1
	}
	if opts.OpenChild == nil {
		return fail("sessiontest.Options.OpenChild is nil")
	}
	// No deadline of its own: the parent kills a child that stops making
	// progress.
	ctx := context.Background()
	raw, err := opts.OpenChild(ctx, spec.Config)
	if err != nil {
		return fail("OpenChild: %v", err)
	}
	// Every write reports the inbound QoS 2 records left and put, so that
	// the parent knows when the last exchanges (PUBREL, PUBCOMP) are done.
	recs, err := raw.Load(ctx, store.Key{Server: spec.URL, ClientID: spec.ClientID})
	if err != nil {
		return fail("Load: %v", err)
	}
	st, _ := watchStore(raw, recs, func(live, puts int) { emit("inbound %d %d", live, puts) })
	c, err := client.New(client.Config{
		Servers:          []string{spec.URL},
		ClientID:         spec.ClientID,
		Store:            st,
		SessionExpiry:    time.Hour,
		ReceiveMaximum:   childReceiveMax,
		CrashWindow:      childCrashWindow,
		ReconnectBackoff: client.Backoff{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		WaitForLease:     true,
		LeaseTTL:         time.Second,
		// The handler reports the message before it returns, that is
		// before the message is acknowledged.
		OnMessage: func(m *client.Message) { emit("got %s", m.Payload) },
	})
	if err != nil {
		return fail("client.New: %v", err)
	}
	if err := c.Connect(ctx); err != nil {
		return fail("Connect: %v", err)
	}
	emit("ready")
	if spec.Subscribe {
		sub := client.Subscription{Filter: spec.In}
		sub.QoS = 2
		if _, err := c.Subscribe(ctx, sub); err != nil {
			return fail("Subscribe: %v", err)
		}
		emit("subscribed")
	}
	toks := make([]*client.Token, spec.Count)
	for i := range toks {
		toks[i] = c.PublishAsync(&client.Message{Topic: spec.Out, Payload: fmt.Appendf(nil, "g%d-%d", spec.Gen, i), QoS: 2})
	}
	// The hand-over: a message reported stored is the library's to deliver
	// whatever happens to this process from then on.
	go func() {
		for i, tok := range toks {
			if tok.WaitStored(ctx) == nil {
				emit("stored g%d-%d", spec.Gen, i)
			}
		}
	}()
	for i, tok := range toks {
		if err := tok.Wait(ctx); err != nil {
			emit("fail g%d-%d %v", spec.Gen, i, err)
		} else {
			emit("done g%d-%d", spec.Gen, i)
		}
	}
	emit("published")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent says finish
	if err := c.Close(); err != nil {
		return fail("Close: %v", err)
	}
	if err := raw.Close(); err != nil {
		return fail("store Close: %v", err)
	}
	emit("closed")
	return 0
}

// child is a running child process, seen from the parent.
type child struct {
	gen    int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events *inbox        // its protocol lines, without the prefix; "eof" last
	read   chan struct{} // closed once standard output is drained
	stderr *bytes.Buffer // read only after cmd.Wait
	waited bool
}

// startChild re-executes the test binary in the child role.
func (s *sess) startChild(spec childSpec) *child {
	s.t.Helper()
	// The parent kills a child that stops making progress (its events are
	// the case's progress).
	cmd, err := reexec.Command(s.r.root, reexec.SessionEnv, spec)
	if err != nil {
		s.t.Fatal(err)
	}
	ch := &child{gen: spec.Gen, cmd: cmd, events: s.newInbox(), read: make(chan struct{}), stderr: new(bytes.Buffer)}
	cmd.Stderr = ch.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if ch.stdin, err = cmd.StdinPipe(); err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start child: %v", err)
	}
	s.t.Cleanup(func() { ch.kill() })
	go func() {
		defer close(ch.read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), childPrefix); ok {
				ch.events.add(line)
			}
		}
		ch.events.add("eof")
	}()
	return ch
}

// kill kills the child with SIGKILL (if it still runs) and waits for it.
func (ch *child) kill() {
	if ch.waited {
		return
	}
	_ = ch.cmd.Process.Kill()
	<-ch.read
	_ = ch.cmd.Wait()
	ch.waited = true
}

// has reports whether the child has reported ev.
func has(lines []string, ev string) bool {
	for _, l := range lines {
		if l == ev {
			return true
		}
	}
	return false
}

// clientEvents counts the events of a child that come from its client (a
// message handled, a publish completed, ...), leaving out the reports of
// its store writes: the kill points are drawn among the former.
func clientEvents(lines []string) int {
	n := 0
	for _, l := range lines {
		if !strings.HasPrefix(l, "inbound ") && !strings.HasPrefix(l, "stored ") {
			n++
		}
	}
	return n
}

// inboundSettled reports whether a child's events end, as far as inbound
// QoS 2 goes, with no record left and a record put for every message the
// child handled.
func inboundSettled(lines []string) bool {
	handled, live, puts := 0, -1, 0
	for _, l := range lines {
		if strings.HasPrefix(l, "got ") {
			handled++
		} else if arg, ok := strings.CutPrefix(l, "inbound "); ok {
			if _, err := fmt.Sscanf(arg, "%d %d", &live, &puts); err != nil {
				return false
			}
		}
	}
	return live == 0 && puts >= handled
}

// crashSize returns the generations (child processes), the messages each
// publishes, and the messages published to the client.
func crashSize() (gens, perGen, inbound int) {
	if testing.Short() {
		return 6, 20, 100
	}
	return 25, 100, 2000
}

// crash is the crash case: the client runs in a child process (the test
// binary re-executed) that is killed with SIGKILL at a random point of its
// run, then started again on the same store, generation after generation,
// while it publishes QoS 2 messages to a subscriber and a peer publishes
// QoS 2 messages to it. At the end:
//
//   - outbound, exactly once: the subscriber got every message whose
//     publish completed, none twice, all in order, and of each
//     generation's messages a prefix with no gap (a message is stored
//     before it is sent, in order, so if one reached the subscriber every
//     earlier one was stored too);
//   - inbound, nothing lost: every message reached a handler;
//   - inbound duplicates only in the documented window: a message is
//     handled again only after a generation that handled it was killed
//     (it died after the handler returned and before the inbound record
//     was durable, so the broker, which never got the PUBREC, sent it
//     again); how far back in that generation's handling the furthest
//     such message was is logged;
//   - the wire audit found no rule broken by any generation (a packet
//     identifier of the stored session is never reused while in flight).
func (s *sess) crash() {
	if !s.caps.Durable {
		s.t.Skip("the backend is not Durable: nothing survives a process")
	}
	childConfig := reexec.ChildConfig(s.h)
	switch {
	case childConfig == "":
		s.t.Fatal("the harness is Durable but gives a child process no way to open its storage, so the Crash case cannot run: " +
			"set conformance.HarnessFuncs.Child (or implement conformance.ChildHarness) and sessiontest.Options.OpenChild")
	case s.r.opts.OpenChild == nil:
		s.t.Fatal("the harness is Durable but sessiontest.Options.OpenChild is nil, so the Crash case cannot run: a child process cannot open the storage")
	}
	gens, perGen, nIn := crashSize()
	rng := rand.New(rand.NewPCG(s.seed(), 0xc4a5))
	out, in := s.newID("tether/crash-out"), s.newID("tether/crash-in")
	sub := s.newInbox()
	s.subscribe(s.peer(s.newID("sub"), sub.handler), out)
	pub := s.peer(s.newID("pub"), nil)
	p, aud := s.proxy()
	id := s.newID("crash")

	done := map[string]bool{}   // outbound messages whose publish completed
	stored := map[string]bool{} // outbound messages reported durable (handed over)
	gotBy := map[string][]int{} // inbound message → the generations that handled it
	gotIn := map[int][]string{} // generation → the inbound messages it handled, in order
	var firsts []string         // inbound messages in the order first handled
	killed := map[int]bool{}
	subscribed := false
	// The publisher ends when its publishes complete, or fail when the
	// case's end closes the peer.
	pubErr := make(chan error, 1)
	startPublisher := func() {
		go func() {
			toks := make([]*client.Token, nIn)
			for i := range toks {
				toks[i] = pub.PublishAsync(&client.Message{Topic: in, Payload: fmt.Appendf(nil, "i%d", i), QoS: 2})
			}
			for _, tok := range toks {
				if err := tok.Wait(s.ctx); err != nil {
					pubErr <- err
					return
				}
			}
			pubErr <- nil
		}()
	}
	// account takes in the events of a finished child.
	account := func(ch *child) {
		for _, l := range ch.events.snapshot() {
			kind, arg, _ := strings.Cut(l, " ")
			switch kind {
			case "done":
				done[arg] = true
			case "stored":
				stored[arg] = true
			case "got":
				if len(gotBy[arg]) == 0 {
					firsts = append(firsts, arg)
				}
				gotBy[arg] = append(gotBy[arg], ch.gen)
				gotIn[ch.gen] = append(gotIn[ch.gen], arg)
			case "fail":
				s.fatalf("generation %d: publish %s", ch.gen, arg)
			case "subscribed":
				subscribed = true
			}
		}
	}
	inboundDone := func(cur []string) bool {
		seen := len(gotBy)
		extra := map[string]bool{}
		for _, l := range cur {
			if arg, ok := strings.CutPrefix(l, "got "); ok && len(gotBy[arg]) == 0 && !extra[arg] {
				extra[arg] = true
				seen++
			}
		}
		return seen >= nIn
	}

	for g := 1; g <= gens; g++ {
		final := g == gens
		ch := s.startChild(childSpec{
			Config: childConfig, URL: s.url(p), ClientID: id, Out: out, In: in,
			Gen: g, Count: perGen, Subscribe: !subscribed,
		})
		if !subscribed {
			ev := ch.events.waitFor(s, "the child's subscription", func(l []string) bool {
				return has(l, "subscribed") || has(l, "eof")
			})
			if !has(ev, "subscribed") {
				ch.kill()
				s.fatalf("generation %d ended before subscribing:\n%s", g, ch.stderr)
			}
			subscribed = true
			startPublisher()
		}
		if !final {
			killAt := 1 + rng.IntN(3*childReceiveMax)
			ev := ch.events.waitFor(s, fmt.Sprintf("event %d of generation %d", killAt, g), func(l []string) bool {
				return clientEvents(l) >= killAt || has(l, "published") || has(l, "eof")
			})
			if has(ev, "eof") {
				ch.kill()
				s.fatalf("generation %d exited on its own:\n%s", g, ch.stderr)
			}
			ch.kill()
			killed[g] = true
			account(ch)
			continue
		}
		ev := ch.events.waitFor(s, "the last generation's publishes", func(l []string) bool {
			return has(l, "published") || has(l, "eof")
		})
		if !has(ev, "published") {
			ch.kill()
			s.fatalf("the last generation exited before its publishes completed:\n%s", ch.stderr)
		}
		for _, l := range ev {
			if arg, ok := strings.CutPrefix(l, "fail "); ok {
				s.fatalf("the last generation: publish %s", arg)
			}
		}
		sub.waitHas(s, fmt.Sprintf("g%d-%d", g, perGen-1))
		// Every inbound message handled, and every inbound exchange
		// finished: the last write left no inbound record, after a record
		// was put for each message this generation handled (a record is
		// put after its handler returns, so "no record left" alone can
		// come between the two).
		ev = ch.events.waitFor(s, "every inbound message and its PUBREL/PUBCOMP", func(l []string) bool {
			return (inboundDone(l) && inboundSettled(l)) || has(l, "eof")
		})
		if has(ev, "eof") {
			ch.kill()
			s.fatalf("the last generation exited before the end:\n%s", ch.stderr)
		}
		_ = ch.stdin.Close()
		s.wait(ch.read, "the last generation to exit")
		err := ch.cmd.Wait()
		ch.waited = true
		if err != nil {
			s.fatalf("the last generation: %v\n%s", err, ch.stderr)
		}
		account(ch)
	}
	select {
	case err := <-pubErr:
		if err != nil {
			s.fatalf("peer publisher: %v", err)
		}
	case <-s.ctx.Done():
		s.fatalf("peer publisher did not finish (%s)", s.timedOut())
	}

	// Outbound: strictly increasing (generation, index), a prefix of each
	// generation, every completed publish present.
	delivered := sub.snapshot()
	var lastG, lastI = 0, -1
	inSub := map[string]bool{}
	for _, m := range delivered {
		var g, i int
		if _, err := fmt.Sscanf(m, "g%d-%d", &g, &i); err != nil {
			s.fatalf("subscriber got %q", m)
		}
		switch {
		case g == lastG && i == lastI+1, g > lastG && i == 0:
		default:
			s.fatalf("subscriber: %q after g%d-%d: duplicate, out of order, or a gap (received %q)", m, lastG, lastI, delivered)
		}
		lastG, lastI = g, i
		inSub[m] = true
	}
	for m := range done {
		if !inSub[m] {
			s.fatalf("subscriber never got %s, whose publish completed", m)
		}
	}
	for m := range stored {
		if !inSub[m] {
			s.fatalf("subscriber never got %s, which its process had been told was stored (the hand-over)", m)
		}
	}
	// Inbound: nothing lost, first deliveries in order, duplicates only
	// right after a crash of a generation that handled the message.
	dups, widest := 0, 0
	for i := range nIn {
		m := fmt.Sprintf("i%d", i)
		by := gotBy[m]
		if len(by) == 0 {
			s.fatalf("inbound %s never reached a handler", m)
		}
		for j := 1; j < len(by); j++ {
			prev := by[j-1]
			if by[j] <= prev || !killed[prev] {
				s.fatalf("inbound %s handled by generations %v: a duplicate not explained by a crash", m, by)
			}
			// How far back in the killed generation's handling the
			// message was: within the window in which records may not
			// yet be durable (client.Config.CrashWindow).
			hist := gotIn[prev]
			back := len(hist) - slices.Index(hist, m)
			widest = max(widest, back)
			if back > childCrashWindow {
				s.fatalf("inbound %s handled again after generation %d was killed %d messages after handling it: beyond the crash window of %d",
					m, prev, back-1, childCrashWindow)
			}
			dups++
		}
		if firsts[i] != m {
			s.fatalf("inbound messages first handled in the order %q", firsts)
		}
	}
	s.t.Logf("%d generations (%d killed); %d outbound messages delivered, %d completed, %d handed over; %d inbound, %d handled again after a crash (the furthest %d messages back in the killed process's handling, crash window %d)",
		gens, len(killed), len(delivered), len(done), len(stored), nIn, dups, widest, childCrashWindow)
	s.checkAudit(aud)
	s.expectNoState(s.open(), s.url(p), id)
}
