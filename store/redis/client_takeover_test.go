//go:build linux

package redis_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store/redis"
)

// The takeover test runs two instances of one application in two processes:
// this test binary, run again with takeoverEnv+"ROLE" set to "a" or "b"
// and the rest of its settings in further takeoverEnv variables. When the
// test fails and TETHER_TAKEOVER_DUMP names a directory, every line each
// instance printed is written there (a.log, b.log).
const takeoverEnv = "TETHER_TAKEOVER_"

const (
	// takeoverTTL is the lease TTL of both instances: B takes over at
	// most this long after A's last renewal.
	takeoverTTL = 1500 * time.Millisecond
	// takeoverInflight is the broker's max_inflight_messages: it has at
	// most about this many inbound QoS 2 messages unanswered by PUBREC
	// towards an instance, which bounds the handler's duplicates across a
	// kill. (The instances keep the default Receive Maximum: Mosquitto
	// 2.0.11 overshoots a small one, see TestClientReceiveMaximumQoS2.)
	// The check allows twice as many, since Mosquitto overshoots its own
	// limit too.
	takeoverInflight = 16
	// takeoverInbound is how many messages the parent publishes to the
	// instances, never more than takeoverBacklog ahead of what they saw.
	takeoverInbound = 600
	takeoverBacklog = 100
	// takeoverKillAt: A is killed once it completed this many publishes
	// and saw this many inbound messages.
	takeoverKillAt = 150
	// takeoverMore is how many new messages B publishes beyond the last
	// one A started.
	takeoverMore = 50
)

// TestClientTakeover kills an instance of a clustered application with
// SIGKILL in the middle of a stream of QoS 2 publishes and of a stream of
// inbound QoS 2 deliveries; a second instance in another process, waiting
// for the session's lease, takes the session over once the lease lapses,
// finishes what the first left in flight and publishes the rest.
//
// Outbound, the subscriber must receive every message exactly once: all
// that A reported completed and all whose PUBLISH was in the store when A
// died, and none twice. B resends each stored PUBLISH with its packet
// identifier and DUP=1 (the broker, holding that identifier for the
// session, does not deliver it again) and each stored PUBREL; it never
// resends a PUBLISH whose PUBREL went out, since A made the replacement
// durable before sending the PUBREL. (PUBREL records carry no payload, so
// the messages they stand for are checked through the final count.)
//
// Inbound, the handlers of A and B together must see every message, and
// the only duplicates possible across the kill are messages that reach
// both handlers, once each, in this window: A's handler ran (and printed
// the message) but A died before the inbound QoS 2 record, which the
// acknowledgement queues after the handler returns, was durable in Redis.
// The PUBREC waits for that record, so the broker never got it; it
// redelivers the message (DUP=1) to B, whose session holds no record for
// that packet identifier, and B's handler gets it too. Such a message is
// one of the last A handled, since the broker has at most its
// max_inflight_messages messages without PUBREC towards A (the check
// allows twice that: Mosquitto 2.0.11 overshoots). A message whose record
// was durable is answered by B with PUBREC (or its PUBREL with PUBCOMP)
// and never delivered again; a message A received but had not yet handled
// was never printed by A. Neither instance sees a message twice itself.
func TestClientTakeover(t *testing.T) {
	if role := os.Getenv(takeoverEnv + "ROLE"); role != "" {
		takeoverChild(t, role)
		return
	}
	redisSrv := testenv.Redis(t)
	broker := testenv.Mosquitto(t, testenv.WithMaxInflight(takeoverInflight))
	admin := newRedisAdmin(t, redisSrv.Addr())
	id := randomID(4)
	env := map[string]string{
		"REDIS":  redisSrv.URL(),
		"BROKER": broker.URL(),
		"PREFIX": "takeover-" + id,
		"CLIENT": "app-" + id,
		"OUT":    "takeover/" + id + "/out",
		"IN":     "takeover/" + id + "/in",
	}
	coll := subscribe(t, broker.URL(), env["OUT"])
	bd := newBoard()
	a := startChild(t, bd, "a", env)
	bd.wait(t, 20*time.Second, "A connected and subscribed", func() bool { return bd.ready["a"] })
	b := startChild(t, bd, "b", env)
	bd.wait(t, 20*time.Second, "B waiting for the lease", func() bool { return bd.waiting["b"] })

	// The inbound stream: numbered QoS 2 messages, kept at most
	// takeoverBacklog ahead of what the instances have seen, so that it is
	// still running when A dies and while B takes over.
	pub, err := client.New(client.Config{Servers: []string{broker.URL()}, ClientID: "pub-" + id, SessionExpiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	connect(t, pub, 10*time.Second)
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	var inPublished atomic.Int32
	var published sync.WaitGroup
	published.Add(1)
	go func() {
		defer published.Done()
		for n := 1; n <= takeoverInbound; n++ {
			if !bd.await(stop, func() bool { return bd.seenIn() >= n-takeoverBacklog }) {
				pubDone <- fmt.Errorf("stopped before message %d", n)
				return
			}
			if err := publish2(pub, env["IN"], "i"+strconv.Itoa(n), 20*time.Second); err != nil {
				pubDone <- fmt.Errorf("publish i%d: %w", n, err)
				return
			}
			inPublished.Store(int32(n))
		}
		pubDone <- nil
	}()
	defer published.Wait()
	defer close(stop)

	bd.wait(t, 30*time.Second, "A in the middle of both streams", func() bool {
		return len(bd.done["a"]) >= takeoverKillAt && len(bd.in["a"]) >= takeoverKillAt
	})
	// The lease value before and after the snapshot of the store: equal,
	// it shows that B wrote nothing in between.
	leases := admin.leaseKeys(env["PREFIX"])
	if len(leases) != 1 {
		t.Fatalf("lease keys under the prefix: %v, want one", leases)
	}
	ctx := context.Background()
	leaseBefore := admin.rdb.Get(ctx, leases[0]).Val()
	a.kill(t)
	bd.mu.Lock()
	aDone := append([]int(nil), bd.done["a"]...)
	aStarted := bd.started["a"]
	aIn := append([]int(nil), bd.in["a"]...)
	bd.mu.Unlock()
	inbound := inPublished.Load()
	reader := admin.open(env["PREFIX"])
	k := sessionKey(broker.URL(), env["CLIENT"])
	snap := loadStored(t, reader, k)
	if after := admin.rdb.Get(ctx, leases[0]).Val(); after != leaseBefore {
		t.Fatalf("B took the lease over (%q → %q) before the store could be read after A died", leaseBefore, after)
	}
	t.Logf("A killed after starting %d publishes (%d completed) and handling %d of %d inbound messages (%d published so far); "+
		"the store held %d PUBLISH, %d PUBREL and %d inbound records",
		aStarted, len(aDone), len(aIn), takeoverInbound, inbound, len(snap.publishes), snap.pubrels, snap.inbound)
	killed := time.Now()

	bd.wait(t, 20*time.Second, "B connected", func() bool { return bd.connects["b"] > 0 })
	bd.mu.Lock()
	bInfo := bd.connInfo["b"]
	bd.mu.Unlock()
	t.Logf("B connected %v after the kill: %s", time.Since(killed).Round(time.Millisecond), bInfo)
	if !strings.Contains(bInfo, "sp=true") {
		t.Errorf("B's CONNACK: %s, want Session Present", bInfo)
	}

	// B resends what A left in flight before anything new, and the broker
	// keeps the order of one session's messages: once B's "sync" arrives,
	// everything of A's that will ever arrive has arrived.
	b.send(t, "pub sync")
	coll.waitFor(t, "sync", 20*time.Second)
	got := coll.snapshot()
	for _, n := range aDone {
		if got["o"+strconv.Itoa(n)] == 0 {
			t.Errorf("o%d: A reported it completed, the subscriber never got it", n)
		}
	}
	for _, p := range snap.publishes {
		if got[p] == 0 {
			t.Errorf("%s: persisted when A died, the subscriber never got it", p)
		}
	}
	if d := coll.duplicates(); len(d) > 0 {
		t.Errorf("duplicates at the subscriber after the takeover: %s", short(d))
	}
	// B publishes what never arrived (A started it, but it was not yet
	// persisted when A died, so it was never sent) and takeoverMore new
	// ones, then an end marker.
	total := aStarted + takeoverMore
	var rest, all []string
	for n := 1; n <= total; n++ {
		p := "o" + strconv.Itoa(n)
		all = append(all, p)
		if got[p] == 0 {
			rest = append(rest, p)
		}
	}
	t.Logf("%d messages of A's arrived; B publishes %d (%d lost with A before they were persisted)",
		len(got)-1, len(rest), len(rest)-takeoverMore)
	b.send(t, "pub "+strings.Join(rest, " ")+" end")
	coll.waitFor(t, "end", 30*time.Second)
	checkExactlyOnce(t, coll, all, "sync", "end")

	// Inbound: every message seen by A or B, none twice by one of them,
	// and the ones both saw among the last A handled.
	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatalf("inbound publisher: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("inbound publisher did not finish within 30s")
	}
	bd.wait(t, 30*time.Second, "every inbound message handled", func() bool { return bd.seenIn() == takeoverInbound })
	bd.mu.Lock()
	bIn := append([]int(nil), bd.in["b"]...)
	bDup := bd.inDup["b"]
	twice := append([]string(nil), bd.twice...)
	bd.mu.Unlock()
	if len(twice) > 0 {
		t.Errorf("an instance's handler saw a message twice: %v", twice)
	}
	lastA := make(map[int]bool)
	for _, n := range aIn[max(0, len(aIn)-2*takeoverInflight):] {
		lastA[n] = true
	}
	inA := make(map[int]bool, len(aIn))
	for _, n := range aIn {
		inA[n] = true
	}
	var both []string
	for _, n := range bIn {
		if !inA[n] {
			continue
		}
		both = append(both, fmt.Sprintf("i%d(dup=%v)", n, bDup[n]))
		if !lastA[n] {
			t.Errorf("i%d reached both handlers, but was not among the last %d A handled", n, 2*takeoverInflight)
		}
	}
	t.Logf("inbound: A handled %d, B %d; %d reached both handlers (A died before their records were durable): %v",
		len(aIn), len(bIn), len(both), both)

	b.send(t, "quit")
	b.wait(t)
}

// takeoverChild is one instance of the application. It prints progress
// lines starting with "@@ " on stdout: "ready", "waiting", "connected …",
// "start N" before publishing oN, "done oN" once that publish completed,
// "fail oN …", "in iN dup=…" from the message handler, "lost …".
// Instance A subscribes and publishes until it is killed; instance B waits
// for the lease, then publishes what the parent asks on stdin ("pub P…")
// until "quit".
func takeoverChild(t *testing.T, role string) {
	env := func(k string) string { return os.Getenv(takeoverEnv + k) }
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(os.Stdout, "@@ "+format+"\n", args...)
	}
	st, err := redis.Open(env("REDIS"), &redis.Options{Prefix: env("PREFIX")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := client.New(client.Config{
		Servers:          []string{env("BROKER")},
		ClientID:         env("CLIENT"),
		Store:            st,
		SessionExpiry:    5 * time.Minute,
		WaitForLease:     true,
		LeaseTTL:         takeoverTTL,
		ConnectTimeout:   30 * time.Second,
		ReconnectBackoff: client.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		OnMessage:        func(m *client.Message) { say("in %s dup=%v", m.Payload, m.Dup) },
		OnConnect:        func(ci *client.ConnectInfo) { say("connected sp=%v resent=%d", ci.SessionPresent, ci.Resent) },
		OnConnectionLost: func(err error) { say("lost %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if role == "b" {
		say("waiting")
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.Connect(cctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if role == "a" {
		sub := client.Subscription{Filter: env("IN"), SubscribeOptions: packets.SubscribeOptions{QoS: 2}}
		if _, err := c.Subscribe(cctx, sub); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		say("ready")
		type pending struct {
			n   int
			tok *client.Token
		}
		// A window of publishes in flight; it runs until the kill.
		window := make(chan pending, 8)
		go func() {
			for p := range window {
				if err := p.tok.Wait(ctx); err != nil {
					say("fail o%d %v", p.n, err)
				} else {
					say("done o%d", p.n)
				}
			}
		}()
		for n := 1; ; n++ {
			say("start %d", n)
			window <- pending{n, c.PublishAsync(&client.Message{Topic: env("OUT"), Payload: []byte("o" + strconv.Itoa(n)), QoS: 2})}
		}
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			break
		}
		toks := make([]*client.Token, len(f)-1)
		for i, p := range f[1:] {
			toks[i] = c.PublishAsync(&client.Message{Topic: env("OUT"), Payload: []byte(p), QoS: 2})
		}
		for i, tok := range toks {
			if err := tok.Wait(ctx); err != nil {
				say("fail %s %v", f[i+1], err)
			} else {
				say("done %s", f[i+1])
			}
		}
	}
}

// board gathers what the children print, for the parent to wait on.
type board struct {
	mu       sync.Mutex
	changed  chan struct{}           // closed and replaced on every change
	ready    map[string]bool         // role printed "ready"
	waiting  map[string]bool         // role printed "waiting"
	connects map[string]int          // CONNACKs per role
	connInfo map[string]string       // the last "connected" line per role
	started  map[string]int          // highest N of "start N"
	done     map[string][]int        // N of "done oN", in order
	in       map[string][]int        // N of "in iN", in order
	inDup    map[string]map[int]bool // the DUP flag of each inbound message
	seen     map[int]bool            // inbound messages seen by either
	twice    []string                // inbound messages one role saw twice
	lines    map[string][]string     // every line, for failure messages
}

func newBoard() *board {
	return &board{
		changed: make(chan struct{}), ready: map[string]bool{}, waiting: map[string]bool{},
		connects: map[string]int{}, connInfo: map[string]string{}, started: map[string]int{},
		done: map[string][]int{}, in: map[string][]int{}, inDup: map[string]map[int]bool{},
		seen: map[int]bool{}, lines: map[string][]string{},
	}
}

// seenIn is how many distinct inbound messages the instances saw. mu held.
func (b *board) seenIn() int { return len(b.seen) }

// line records one line printed by role.
func (b *board) line(role, s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines[role] = append(b.lines[role], s)
	if !strings.HasPrefix(s, "@@ ") {
		return
	}
	f := strings.Fields(strings.TrimPrefix(s, "@@ "))
	if len(f) == 0 {
		return
	}
	num := func(s, prefix string) int {
		n, _ := strconv.Atoi(strings.TrimPrefix(s, prefix))
		return n
	}
	switch f[0] {
	case "ready":
		b.ready[role] = true
	case "waiting":
		b.waiting[role] = true
	case "connected":
		b.connects[role]++
		b.connInfo[role] = strings.Join(f[1:], " ")
	case "start":
		b.started[role] = num(f[1], "")
	case "done":
		if strings.HasPrefix(f[1], "o") {
			b.done[role] = append(b.done[role], num(f[1], "o"))
		}
	case "in":
		n := num(f[1], "i")
		if b.inDup[role] == nil {
			b.inDup[role] = map[int]bool{}
		}
		if _, ok := b.inDup[role][n]; ok {
			b.twice = append(b.twice, role+":"+f[1])
		}
		b.inDup[role][n] = len(f) > 2 && f[2] == "dup=true"
		b.in[role] = append(b.in[role], n)
		b.seen[n] = true
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// await waits until cond (run with mu held) holds; false if stop closed.
func (b *board) await(stop <-chan struct{}, cond func() bool) bool {
	for {
		b.mu.Lock()
		ok, ch := cond(), b.changed
		b.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-stop:
			return false
		}
	}
}

// wait waits until cond (run with mu held) holds, failing the test after d.
func (b *board) wait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	stop := make(chan struct{})
	go func() {
		select {
		case <-timer.C:
			close(stop)
		case <-stop:
		}
	}()
	ok := b.await(stop, cond)
	if !ok {
		t.Fatalf("timed out after %v waiting for %s; children's last lines:\n%s", d, what, b.tails())
	}
	select {
	case <-stop:
	default:
		close(stop)
	}
}

func (b *board) tails() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var roles []string
	for r := range b.lines {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	var s strings.Builder
	for _, r := range roles {
		ls := b.lines[r]
		for _, l := range ls[max(0, len(ls)-10):] {
			fmt.Fprintf(&s, "  %s: %s\n", r, l)
		}
	}
	return s.String()
}

// child is one instance process.
type child struct {
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	eof   chan struct{} // closed once its stdout is drained
	bd    *board
}

// startChild runs this test binary again as instance role. The child dies
// with the test binary (Pdeathsig) and is killed when the test ends.
func startChild(t *testing.T, bd *board, role string, env map[string]string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestClientTakeover$", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), takeoverEnv+"ROLE="+role)
	for k, v := range env {
		cmd.Env = append(cmd.Env, takeoverEnv+k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = &prefixWriter{bd: bd, role: role + "(stderr)"}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{role: role, cmd: cmd, stdin: in, eof: make(chan struct{}), bd: bd}
	go func() {
		defer close(c.eof)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			bd.line(role, sc.Text())
		}
	}()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			<-c.eof
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("instance %s's last lines:\n%s", role, bd.tails())
			if dir := os.Getenv(takeoverEnv + "DUMP"); dir != "" {
				bd.mu.Lock()
				_ = os.WriteFile(dir+"/"+role+".log", []byte(strings.Join(bd.lines[role], "\n")), 0o644)
				bd.mu.Unlock()
			}
		}
	})
	return c
}

// kill kills the child with SIGKILL and waits until all it printed is read.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", c.role, err)
	}
	<-c.eof
	_ = c.cmd.Wait()
}

// send writes a command line to the child's stdin.
func (c *child) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		t.Fatalf("write to %s: %v", c.role, err)
	}
}

// wait waits for the child to exit by itself, and fails the test unless
// it succeeded (its own test, goleak included, passed).
func (c *child) wait(t *testing.T) {
	t.Helper()
	select {
	case <-c.eof:
	case <-time.After(20 * time.Second):
		t.Fatalf("instance %s did not exit within 20s", c.role)
	}
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("instance %s: %v", c.role, err)
	}
}

// prefixWriter feeds a child's stderr lines to the board (for failure
// messages only).
type prefixWriter struct {
	bd   *board
	role string
	mu   sync.Mutex
	buf  []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.bd.line(w.role, string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
