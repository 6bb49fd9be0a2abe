package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/internal/testenv"
)

// lineWatcher collects the lines a child writes to one of its outputs.
type lineWatcher struct {
	mu    sync.Mutex
	lines []string
	kick  chan struct{}
	done  chan struct{}
}

func watchLines(r io.Reader) *lineWatcher {
	w := &lineWatcher{kick: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			w.mu.Unlock()
			select {
			case w.kick <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

func (w *lineWatcher) snapshot() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.lines...)
}

// waitFor waits until cond holds on the lines so far; it fails the test
// when nothing new arrives for 30 s.
func (w *lineWatcher) waitFor(t *testing.T, what string, cond func([]string) bool) {
	t.Helper()
	for {
		if cond(w.snapshot()) {
			return
		}
		select {
		case <-w.kick:
		case <-time.After(30 * time.Second):
			t.Fatalf("no progress for 30s waiting for %s; lines:\n%s", what, strings.Join(w.snapshot(), "\n"))
		}
	}
}

// collector gathers the payloads a library subscriber receives.
type collector struct {
	mu   sync.Mutex
	got  []string
	kick chan struct{}
}

func (c *collector) handle(m *client.Message) {
	c.mu.Lock()
	c.got = append(c.got, string(m.Payload))
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *collector) waitCount(t *testing.T, n int) []string {
	t.Helper()
	for {
		c.mu.Lock()
		got := append([]string(nil), c.got...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.kick:
		case <-time.After(30 * time.Second):
			t.Fatalf("no message for 30s; have %d of %d", len(got), n)
		}
	}
}

var storedRe = regexp.MustCompile(`(\d+) stored this run`)

// TestPubLinesKilledResumes kills a tether pub -l with a durable store
// (SIGKILL) while messages it has read are stored but not delivered, the
// broker being unreachable; a second tether pub -l on the same store
// delivers them first, then its own input: every line arrives exactly
// once, in order.
func TestPubLinesKilledResumes(t *testing.T) {
	b := testenv.Mosquitto(t)
	ctx := testCtx(t, 2*time.Minute)
	col := &collector{kick: make(chan struct{}, 1)}
	sub, err := client.New(client.Config{Servers: []string{b.URL()}, ClientID: "kill-pub-observer", OnMessage: col.handle})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	s := client.Subscription{Filter: "lines"}
	s.QoS = 2
	if _, err := sub.Subscribe(ctx, s); err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.Start(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	db := "bolt:" + filepath.Join(t.TempDir(), "pub.db")

	first := child(t, "pub", "-l", "-q", "2", "--store", db, "-i", "kill-pub", "-L", proxy.URL(), "-t", "lines", "--progress", "--timeout", "60")
	stdin, err := first.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := first.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	progress := watchLines(stderr)
	if _, err := io.WriteString(stdin, fmtLines(0, 100)); err != nil {
		t.Fatal(err)
	}
	col.waitCount(t, 100)

	// The broker becomes unreachable; the next lines can only be stored.
	proxy.SetRefuse(true)
	proxy.CutAll()
	if _, err := io.WriteString(stdin, fmtLines(100, 200)); err != nil {
		t.Fatal(err)
	}
	progress.waitFor(t, "200 lines stored", func(lines []string) bool {
		for _, l := range lines {
			if m := storedRe.FindStringSubmatch(l); m != nil {
				if n, _ := strconv.Atoi(m[1]); n >= 200 {
					return true
				}
			}
		}
		return false
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	<-progress.done

	// A new process on the same store (a session belongs to one server
	// URL: the proxy's), the broker reachable again.
	proxy.SetRefuse(false)
	second := child(t, "pub", "-l", "-q", "2", "--store", db, "-i", "kill-pub", "-h", proxy.Addr(), "-t", "lines")
	second.Stdin = strings.NewReader(fmtLines(200, 300))
	if out, err := second.CombinedOutput(); err != nil {
		t.Fatalf("second pub: %v\n%s", err, out)
	}
	col.waitCount(t, 300)
	time.Sleep(300 * time.Millisecond) // a duplicate would come now
	col.mu.Lock()
	got := append([]string(nil), col.got...)
	col.mu.Unlock()
	if want := strings.Fields(fmtLines(0, 300)); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("received %d messages, want 0..299 once each in order: %v", len(got), got)
	}
}

// TestSubKilledMissesNothing kills a tether sub with a durable store
// (SIGKILL) in the middle of a stream of QoS 1 and 2 messages; a new
// tether sub on the same store prints the rest: together they print
// every message (messages printed just before the kill may be printed
// again: their acknowledgement, or QoS 2 record, may not be durable yet).
func TestSubKilledMissesNothing(t *testing.T) {
	for _, qos := range []string{"1", "2"} {
		t.Run("QoS"+qos, func(t *testing.T) { subKilled(t, qos) })
	}
}

func subKilled(t *testing.T, qos string) {
	b := testenv.Mosquitto(t)
	ctx := testCtx(t, 2*time.Minute)
	db := "sqlite:" + filepath.Join(t.TempDir(), "sub.sqlite")
	const n = 400
	args := []string{"sub", "-h", b.Addr(), "-t", "stream", "-q", qos, "--store", db, "-i", "kill-sub"}

	first := child(t, args...)
	out1, err := first.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	lines1 := watchLines(out1)
	// Subscribed once the first message comes back.
	pub, err := client.New(client.Config{Servers: []string{b.URL()}, ClientID: "kill-sub-publisher"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	q, _ := strconv.Atoi(qos)
	publish := func(i int) {
		if err := pub.Publish(ctx, &client.Message{Topic: "stream", QoS: byte(q), Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Error(err)
		}
	}
	// Publish until the child shows it is subscribed; those probes are
	// numbered below 0 and not counted.
	probe := -1
	for len(lines1.snapshot()) == 0 {
		publish(probe)
		probe--
		time.Sleep(100 * time.Millisecond)
		if probe < -300 {
			t.Fatal("the child printed nothing after 30s")
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			publish(i)
			time.Sleep(time.Millisecond)
		}
	}()
	lines1.waitFor(t, "100 messages", func(l []string) bool { return len(l) >= 100 })
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	<-lines1.done

	second := child(t, args...)
	out2, err := second.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	defer second.Process.Kill()
	lines2 := watchLines(out2)
	wg.Wait()
	seen := func(l []string) map[int]int {
		m := make(map[int]int)
		for _, s := range l {
			if v, err := strconv.Atoi(s); err == nil && v >= 0 {
				m[v]++
			}
		}
		return m
	}
	lines2.waitFor(t, "every message", func(l []string) bool {
		all := seen(append(lines1.snapshot(), l...))
		return len(all) == n
	})
	_ = second.Process.Signal(syscall.SIGTERM)
	_ = second.Wait()
	<-lines2.done
	all := seen(append(lines1.snapshot(), lines2.snapshot()...))
	dups := 0
	for i := range n {
		if all[i] == 0 {
			t.Errorf("message %d never printed", i)
		}
		dups += all[i] - 1
	}
	// Duplicates are possible at both QoS: a message printed just before
	// the kill may not have its acknowledgement (QoS 1) or its inbound
	// record (QoS 2) durable yet, and the broker sends it again.
	t.Logf("QoS %s: %d printed before the kill, %d after; %d printed twice", qos, len(lines1.snapshot()), len(lines2.snapshot()), dups)
}

// child starts the test binary as the tether command.
func child(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(context.Background(), exe, args...)
	cmd.Env = append(os.Environ(), cliChildEnv+"=1")
	return cmd
}

func fmtLines(from, to int) string {
	var sb strings.Builder
	for i := from; i < to; i++ {
		sb.WriteString(strconv.Itoa(i) + "\n")
	}
	return sb.String()
}
