package sqlite_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/packets"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sqlite"
)

const (
	sharedMode = "shared-publisher"
	brokerEnv  = "TETHER_SQLITE_TEST_BROKER"
	topicEnv   = "TETHER_SQLITE_TEST_TOPIC"
	nameEnv    = "TETHER_SQLITE_TEST_NAME"
	// sharedIdle fails the test when no process reported anything for
	// this long: a deadline from progress, so a slow machine is slow.
	sharedIdle = 60 * time.Second
)

func init() { helpers[sharedMode] = sharedPublisher }

// sharedPublisher is one of several processes of an application that share
// one SQLite file and one ClientID: it waits for the session's lease,
// publishes countEnv QoS 2 messages "<name>-<n>" and closes. It prints
// "connected", "done <payload>" per completed publish, "fail <payload>
// <error>", and "closed".
func sharedPublisher() int {
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	count, err := strconv.Atoi(os.Getenv(countEnv))
	if err != nil {
		say("error %v", err)
		return 2
	}
	st, err := sqlite.Open(os.Getenv(pathEnv), nil)
	if err != nil {
		say("error open: %v", err)
		return 1
	}
	defer st.Close()
	c, err := client.New(client.Config{
		Servers:        []string{os.Getenv(brokerEnv)},
		ClientID:       os.Getenv(clientEnv),
		Store:          st,
		SessionExpiry:  5 * time.Minute,
		WaitForLease:   true,
		LeaseTTL:       2 * time.Second,
		ConnectTimeout: 30 * time.Second,
	})
	if err != nil {
		say("error new: %v", err)
		return 1
	}
	ctx := context.Background()
	if err := c.Connect(ctx); err != nil {
		say("error connect: %v", err)
		return 1
	}
	say("connected")
	name, topic := os.Getenv(nameEnv), os.Getenv(topicEnv)
	type pending struct {
		payload string
		tok     *client.Token
	}
	window := make(chan pending, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p := range window {
			if err := p.tok.Wait(ctx); err != nil {
				say("fail %s %v", p.payload, err)
			} else {
				say("done %s", p.payload)
			}
		}
	}()
	for n := 1; n <= count; n++ {
		p := name + "-" + strconv.Itoa(n)
		window <- pending{p, c.PublishAsync(&client.Message{Topic: topic, Payload: []byte(p), QoS: 2})}
	}
	close(window)
	wg.Wait()
	if err := c.Close(); err != nil {
		say("error close: %v", err)
		return 1
	}
	say("closed")
	return 0
}

// TestClientSharedFile runs three processes of one application that share
// one SQLite file and one ClientID, all started at once, each publishing
// QoS 2 messages through Mosquitto. The session's lease lets one process at
// a time drive the session; the others wait for it. The subscriber must get
// every message exactly once (MQTT-4.3.3-2: no duplicates, however many
// processes the sender runs in), and nothing a process saw acknowledged may
// be missing.
func TestClientSharedFile(t *testing.T) {
	const (
		procs = 3
		count = 300
	)
	broker := testenv.Mosquitto(t)
	path := filepath.Join(t.TempDir(), "shared.db")
	topic := fmt.Sprintf("sqlite/shared/%d", time.Now().UnixNano())
	var (
		mu       sync.Mutex
		received = map[string]int{}
		changed  = make(chan struct{}, 1)
	)
	note := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	sub, err := client.New(client.Config{
		Servers:       []string{broker.URL()},
		ClientID:      fmt.Sprintf("sub-%d", time.Now().UnixNano()),
		SessionExpiry: time.Minute,
		OnMessage: func(m *client.Message) {
			mu.Lock()
			received[string(m.Payload)]++
			mu.Unlock()
			note()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(ctx, client.Subscription{Filter: topic, SubscribeOptions: packets.SubscribeOptions{QoS: 2}}); err != nil {
		t.Fatal(err)
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var (
		done     = map[string]bool{}
		problems []string
		exited   int
		wg       sync.WaitGroup
	)
	for p := 0; p < procs; p++ {
		name := fmt.Sprintf("p%d", p)
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+sharedMode, pathEnv+"="+path, clientEnv+"=shared",
			countEnv+"="+strconv.Itoa(count), brokerEnv+"="+broker.URL(), topicEnv+"="+topic, nameEnv+"="+name)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				mu.Lock()
				switch f := strings.Fields(line); {
				case len(f) == 2 && f[0] == "done":
					done[f[1]] = true
				case len(f) > 0 && (f[0] == "connected" || f[0] == "closed"):
				default:
					problems = append(problems, name+": "+line)
				}
				mu.Unlock()
				note()
			}
			err := cmd.Wait()
			mu.Lock()
			exited++
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s exited: %v: %s", name, err, stderr.String()))
			}
			mu.Unlock()
			note()
		}()
	}
	// Wait, as long as something happens, until every process has exited
	// and the subscriber has every message a process saw completed.
	waitProgress := func(what string, cond func() bool) {
		t.Helper()
		for {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return
			}
			select {
			case <-changed:
			case <-time.After(sharedIdle):
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("nothing happened for %v while waiting for %s: %d of %d completed, %d received, problems %v",
					sharedIdle, what, len(done), procs*count, len(received), problems)
			}
		}
	}
	waitProgress("every process to finish", func() bool { return exited == procs })
	wg.Wait()
	waitProgress("every completed message at the subscriber", func() bool {
		for p := range done {
			if received[p] == 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	var dups, lost []string
	for p, n := range received {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s×%d", p, n))
		}
	}
	for p := range done {
		if received[p] == 0 {
			lost = append(lost, p)
		}
	}
	sort.Strings(dups)
	sort.Strings(lost)
	if len(dups) > 0 {
		t.Errorf("%d messages delivered more than once: %v", len(dups), dups[:min(len(dups), 20)])
	}
	if len(lost) > 0 {
		t.Errorf("%d messages acknowledged by PUBCOMP but never delivered: %v", len(lost), lost[:min(len(lost), 20)])
	}
	if len(done) != procs*count {
		t.Errorf("%d of %d publishes completed", len(done), procs*count)
	}
	t.Logf("%d processes published %d QoS 2 messages each under one ClientID; %d distinct messages received",
		procs, count, len(received))
}

// TestClientSessionTaken: a second client with the same ClientID on the
// same file, not waiting for the lease, fails to connect with
// ErrSessionTaken while the first holds the session, and writes nothing.
func TestClientSessionTaken(t *testing.T) {
	broker := testenv.Mosquitto(t)
	path := filepath.Join(t.TempDir(), "shared.db")
	open := func() *sqlite.Store {
		st, err := sqlite.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	newClient := func(st store.SessionStore) *client.Client {
		c, err := client.New(client.Config{Servers: []string{broker.URL()}, ClientID: "shared", Store: st, SessionExpiry: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := newClient(open())
	if err := first.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	second := newClient(open())
	err := second.Connect(ctx)
	if !errors.Is(err, client.ErrSessionTaken) && !errors.Is(err, store.ErrSessionTaken) {
		t.Fatalf("Connect of a second client on a held session returned %v, want ErrSessionTaken", err)
	}
	if err := first.Publish(ctx, &client.Message{Topic: "sqlite/taken", Payload: []byte("x"), QoS: 2}); err != nil {
		t.Errorf("the first client's publish after the refused second: %v", err)
	}
}
