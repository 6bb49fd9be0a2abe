package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/tethermq/tether/conformance/internal/limit"
	"github.com/tethermq/tether/conformance/internal/reexec"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// storeChildPrefix starts every line of a store child's protocol on its
// standard output.
const storeChildPrefix = "tether-store-child: "

// IsChild reports whether this process is a child that Run or
// sessiontest.Run started (re-executing the test binary) for a check that
// kills or traces a process. The child never calls the HarnessMaker: a test
// that starts a service (a Redis server, say) before it calls Run or
// sessiontest.Run should not do so in the child, and may pass a nil
// HarnessMaker there.
func IsChild() bool { return reexec.IsChild() }

// IsSessionChild is IsChild, under the name it had when only the session
// suite started children.
func IsSessionChild() bool { return IsChild() }

// Modes of a store child.
const (
	childKillSelf = "kill-self" // apply Batches batches, then SIGKILL itself at once
	childStream   = "stream"    // apply batches and report each, until killed
	childSync     = "sync"      // apply Batches batches between trace markers, then exit
)

// storeChildSpec is what a store check tells its child, as JSON in
// reexec.StoreEnv.
type storeChildSpec struct {
	Config   string // ChildHarness.ChildConfig, for Options.OpenChild
	Mode     string
	Server   string // the session's Key
	ClientID string
	Base     uint64 // the writer's base sequence number
	Batches  int
	Marker   string // childSync: the path prefix of the markers
}

// runStoreChild plays a store child's role and exits the process.
func runStoreChild(o Options, raw string) {
	var spec storeChildSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "store child: bad %s: %v\n", reexec.StoreEnv, err)
		os.Exit(2)
	}
	os.Exit(storeChildMain(o, spec))
}

func storeChildMain(o Options, spec storeChildSpec) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "store child: "+format+"\n", args...)
		return 1
	}
	if o.OpenChild == nil {
		return fail("Options.OpenChild is nil")
	}
	ctx := context.Background()
	s, err := o.OpenChild(ctx, spec.Config)
	if err != nil {
		return fail("OpenChild: %v", err)
	}
	k := store.Key{Server: spec.Server, ClientID: spec.ClientID}
	w := writer{base: spec.Base}
	switch spec.Mode {
	case childKillSelf:
		for n := range spec.Batches {
			if err := s.Apply(ctx, k, w.batch(n)...); err != nil {
				return fail("Apply of batch %d: %v", n, err)
			}
		}
		// At once: no Close, no flush, nothing after Apply returned.
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case childStream:
		for n := range spec.Batches {
			if err := s.Apply(ctx, k, w.batch(n)...); err != nil {
				return fail("Apply of batch %d: %v", n, err)
			}
			fmt.Fprintf(os.Stdout, "%sapplied %d\n", storeChildPrefix, n+1)
		}
		_, _ = io.Copy(io.Discard, os.Stdin) // wait to be killed
		return 0
	case childSync:
		// A first batch outside the markers: creating files and schemas
		// is not what is measured.
		if err := s.Apply(ctx, store.Key{Server: spec.Server, ClientID: spec.ClientID + "-warm-up"}, store.Put(rec(1, 0))); err != nil {
			return fail("Apply of the warm-up batch: %v", err)
		}
		for n := range spec.Batches {
			// The markers are system calls the trace shows: a check for a
			// file that does not exist.
			_ = syscall.Access(fmt.Sprintf("%s-begin-%d", spec.Marker, n), 0)
			err := s.Apply(ctx, k, w.batch(n)...)
			_ = syscall.Access(fmt.Sprintf("%s-end-%d", spec.Marker, n), 0)
			if err != nil {
				return fail("Apply of batch %d: %v", n, err)
			}
		}
		if err := s.Close(); err != nil {
			return fail("Close: %v", err)
		}
		return 0
	}
	return fail("unknown mode %q", spec.Mode)
}

// childConfig returns what a child needs to open the harness's storage, or
// ends the check: skipped for a harness that is not Durable, failed for a
// Durable one that gives a child no way in.
func (e *env) childConfig() string {
	e.t.Helper()
	if !e.caps.Durable {
		e.t.Skip("the harness is not Durable: nothing need survive the process")
	}
	cfg := reexec.ChildConfig(e.h)
	switch {
	case cfg == "":
		e.t.Fatal("the harness is Durable but gives a child process no way to open its storage: " +
			"set HarnessFuncs.Child (or implement ChildHarness) and pass Run an Options with OpenChild")
	case e.s.opts.OpenChild == nil:
		e.t.Fatal("the harness is Durable but Run got no Options.OpenChild: a child process cannot open the storage")
	}
	return cfg
}

// storeChild is a running child of a store check.
type storeChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // its protocol lines, without the prefix; closed at EOF
	stderr *bytes.Buffer
}

// startChild re-executes the test binary as a store child; wrap, if not
// empty, is a command line (strace ...) the binary runs under.
func (e *env) startChild(spec storeChildSpec, wrap ...string) *storeChild {
	e.t.Helper()
	cmd, err := reexec.Command(e.s.root, reexec.StoreEnv, spec, wrap...)
	if err != nil {
		e.t.Fatal(err)
	}
	ch := &storeChild{cmd: cmd, lines: make(chan string, 1024), stderr: new(bytes.Buffer)}
	cmd.Stderr = ch.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if ch.stdin, err = cmd.StdinPipe(); err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start child: %v", err)
	}
	e.prog.note()
	e.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	go func() {
		defer close(ch.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), storeChildPrefix); ok {
				e.prog.note()
				ch.lines <- line
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	return ch
}

// wait waits for the child to exit and returns its state; a child that
// makes no progress for the check's limit is killed and fails the check.
func (e *env) waitChild(ch *storeChild, what string) *os.ProcessState {
	e.t.Helper()
	done := make(chan struct{})
	go func() {
		for range ch.lines {
		}
		_ = ch.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-e.ctx.Done():
		_ = ch.cmd.Process.Kill()
		<-done
		e.t.Fatalf("%s: %s\n%s", what, limit.Stalled(e.ctx), ch.stderr)
	}
	e.prog.note()
	return ch.cmd.ProcessState
}

// unavailable skips the check for something missing on the machine, or
// fails it when TETHER_TEST_REQUIRE=1 (as CI sets it).
func (e *env) unavailable(format string, args ...any) {
	e.t.Helper()
	if os.Getenv(testenv.EnvRequire) == "1" {
		e.t.Fatalf(format+" ("+testenv.EnvRequire+"=1)", args...)
	}
	e.t.Skipf(format, args...)
}

// killedBySIGKILL reports whether ps is the state of a process that
// SIGKILL ended.
func killedBySIGKILL(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// checkKillAfterApply kills a process that wrote through the store, with
// SIGKILL, and reopens the storage: every Apply that returned is there,
// whole, and the one the kill interrupted is there whole or not at all.
func checkKillAfterApply(e *env) {
	cfg := e.childConfig()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 0x6b11))

	// The child kills itself the moment its last Apply returns.
	w := writer{base: 1 << 32}
	k := key("killed-after-apply")
	batches := 3 + rng.IntN(6)
	ch := e.startChild(storeChildSpec{Config: cfg, Mode: childKillSelf, Server: k.Server, ClientID: k.ClientID, Base: w.base, Batches: batches})
	ps := e.waitChild(ch, "the child applying batches")
	if !killedBySIGKILL(ps) {
		e.t.Fatalf("the child did not reach its kill (%v):\n%s", ps, ch.stderr)
	}
	s := e.open()
	if msg := diffRecords(e.load(s, k), w.after(batches)); msg != "" {
		e.t.Fatalf("after %d batches, each acknowledged by Apply, and a SIGKILL at once: Load(%s): %s", batches, k, msg)
	}
	if err := s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}

	// The parent kills the child while it writes, most likely in the
	// middle of an Apply.
	const most = 100_000
	w2 := writer{base: 2 << 32}
	k2 := key("killed-while-applying")
	killAt := 2 + rng.IntN(20)
	ch = e.startChild(storeChildSpec{Config: cfg, Mode: childStream, Server: k2.Server, ClientID: k2.ClientID, Base: w2.base, Batches: most})
	acked := 0
	for acked < killAt {
		var line string
		var ok bool
		select {
		case line, ok = <-ch.lines:
		case <-e.ctx.Done():
			e.t.Fatalf("waiting for the child's batch %d: %s\n%s", killAt, limit.Stalled(e.ctx), ch.stderr)
		}
		if !ok {
			e.waitChild(ch, "the child")
			e.t.Fatalf("the child exited after %d batches:\n%s", acked, ch.stderr)
		}
		if n, found := strings.CutPrefix(line, "applied "); found {
			acked, _ = strconv.Atoi(n)
		}
	}
	_ = ch.cmd.Process.Kill()
	e.waitChild(ch, "the killed child")
	s = e.open()
	recs := e.load(s, k2)
	m, ok := w2.consistent(recs, most)
	switch {
	case !ok:
		e.t.Fatalf("after a SIGKILL while applying: Load(%s) returned %d records that are not the state after any whole number of batches (%s)",
			k2, len(recs), diffRecords(recs, w2.after(max(m, acked))))
	case m < acked:
		e.t.Fatalf("after a SIGKILL while applying: Load(%s) holds %d whole batches, but %d were acknowledged by Apply", k2, m, acked)
	}
	e.t.Logf("first child killed after %d batches; second killed after %d acknowledged, %d found whole", batches, acked, m)
}

// syncCall matches the system calls that make written data durable;
// writeCall those that write it, with the file's path when strace -y
// gives it. A write to something that is not a file (the Go runtime's
// eventfd that wakes its network poller, a pipe, a socket) holds no data
// to make durable and is not counted.
var (
	syncCall  = regexp.MustCompile(`^(?:\d+\s+)?(?:fsync|fdatasync|sync_file_range|syncfs|sync|msync)\(`)
	writeCall = regexp.MustCompile(`^(?:\d+\s+)?(?:write|pwrite64|writev|pwritev|pwritev2)\((\d+)(<[^>]*>)?,`)
)

// syncRounds is how many traced Applies Store/SyncOnApply checks.
const syncRounds = 5

// checkSyncOnApply runs a child that applies batches under strace and
// checks that each Apply makes its data durable before it returns: a sync
// call (fsync, fdatasync, ...) comes after the Apply's last write and
// before it returns. A kill -9 cannot show this (the page cache survives
// the process); a power cut or a kernel crash would.
func checkSyncOnApply(e *env) {
	cfg := e.childConfig()
	if e.caps.ServerDurability {
		e.t.Skip("Capabilities.ServerDurability: the server's fsync and replication policy makes an Apply durable, not this process")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		e.unavailable("strace is not installed (Debian package strace): Store/SyncOnApply traces a child's system calls")
	}
	dir := e.t.TempDir()
	trace := dir + "/trace"
	marker := dir + "/tether-apply"
	k := key("synced")
	ch := e.startChild(storeChildSpec{Config: cfg, Mode: childSync, Server: k.Server, ClientID: k.ClientID, Base: 1, Batches: syncRounds, Marker: marker},
		strace, "-f", "-qq", "-y", "-o", trace,
		"-e", "trace=fsync,fdatasync,sync_file_range,syncfs,sync,msync,write,pwrite64,writev,pwritev,pwritev2,access,faccessat,faccessat2")
	_ = ch.stdin.Close()
	ps := e.waitChild(ch, "the traced child")
	if !ps.Success() {
		if strings.Contains(ch.stderr.String(), "ptrace") && strings.Contains(ch.stderr.String(), "not permitted") {
			e.unavailable("strace cannot trace here (ptrace refused; a container needs CAP_SYS_PTRACE): %s", strings.TrimSpace(ch.stderr.String()))
		}
		e.t.Fatalf("the traced child failed (%v):\n%s", ps, ch.stderr)
	}
	raw, err := os.ReadFile(trace)
	if err != nil {
		e.t.Fatal(err)
	}
	rounds, err := syncsPerApply(string(raw), marker, syncRounds)
	if err != nil {
		e.t.Fatal(err)
	}
	var bad []string
	total := 0
	for i, r := range rounds {
		total += r.syncs
		switch {
		case r.syncs == 0:
			bad = append(bad, fmt.Sprintf("Apply %d made %d write(s) and no fsync/fdatasync before it returned", i+1, r.writes))
		case !r.syncedLast:
			bad = append(bad, fmt.Sprintf("Apply %d wrote after its last fsync/fdatasync and returned without another:\n\t\t%s", i+1, strings.Join(r.unsynced, "\n\t\t")))
		}
	}
	if len(bad) > 0 {
		e.t.Fatalf("Apply returned before its data reached stable storage (a kill -9 keeps the page cache; a power cut does not):\n\t%s",
			strings.Join(bad, "\n\t"))
	}
	e.t.Logf("%d Applies traced: %d sync calls in all", syncRounds, total)
}

// applyRound is what the trace shows of one Apply.
type applyRound struct {
	syncs, writes int
	syncedLast    bool     // a sync call came after the last write
	unsynced      []string // the write calls after the last sync call
}

// syncsPerApply reads an strace output and returns, for each of n Applies
// framed by the markers, the sync and write calls made in between.
func syncsPerApply(trace, marker string, n int) ([]applyRound, error) {
	rounds := make([]applyRound, n)
	seen := make([]int, n) // 1: begun, 2: ended
	cur := -1
	for _, line := range strings.Split(trace, "\n") {
		if i := strings.Index(line, marker+"-begin-"); i >= 0 {
			if _, err := fmt.Sscanf(line[i+len(marker)+7:], "%d", &cur); err != nil || cur < 0 || cur >= n {
				return nil, fmt.Errorf("trace: bad marker line %q", line)
			}
			seen[cur] = 1
			continue
		}
		if i := strings.Index(line, marker+"-end-"); i >= 0 {
			if cur >= 0 {
				seen[cur] = 2
			}
			cur = -1
			continue
		}
		if cur < 0 {
			continue
		}
		if syncCall.MatchString(line) {
			rounds[cur].syncs++
			rounds[cur].syncedLast = true
			rounds[cur].unsynced = rounds[cur].unsynced[:0]
		} else if m := writeCall.FindStringSubmatch(line); m != nil && m[1] != "1" && m[1] != "2" && (m[2] == "" || strings.HasPrefix(m[2], "</")) {
			rounds[cur].writes++
			rounds[cur].syncedLast = false
			rounds[cur].unsynced = append(rounds[cur].unsynced, line)
		}
	}
	for i, s := range seen {
		if s != 2 {
			return nil, errors.New("trace: the markers of Apply " + strconv.Itoa(i+1) + " are missing (is the trace complete?)")
		}
	}
	return rounds, nil
}
