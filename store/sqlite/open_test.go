package sqlite_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sqlite"
)

// helpers are the child-process modes besides the crash writer, by the
// value of helperEnv.
var helpers = map[string]func() int{
	openRaceMode: openRaceChild,
}

const (
	openRaceMode = "open-race"
	// slotEnv is the time between two rounds of the open race, in ms.
	slotEnv = "TETHER_SQLITE_TEST_SLOT"
)

// openRaceChild opens a fresh file per round, all children at the same
// instant (start + round × slot), writes its own session into it and
// closes it. It prints "ok N" or "fail N <error>" per round.
func openRaceChild() int {
	dir := os.Getenv(pathEnv)
	start, err1 := strconv.ParseInt(os.Getenv(startEnv), 10, 64)
	rounds, err2 := strconv.Atoi(os.Getenv(countEnv))
	slot, err3 := strconv.Atoi(os.Getenv(slotEnv))
	if err1 != nil || err2 != nil || err3 != nil {
		fmt.Fprintln(os.Stderr, "helper: bad settings", err1, err2, err3)
		return 2
	}
	k := helperKey()
	ctx := context.Background()
	for i := 0; i < rounds; i++ {
		at := time.Unix(0, start).Add(time.Duration(i*slot) * time.Millisecond)
		time.Sleep(time.Until(at))
		began := time.Now()
		s, err := sqlite.Open(filepath.Join(dir, fmt.Sprintf("race-%d.db", i)), nil)
		if err == nil {
			err = s.Apply(ctx, k, store.Put(store.Record{Seq: 1, Dir: store.Outbound, ID: 1, Packet: []byte(k.ClientID)}))
			if cerr := s.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Printf("fail %d after %v: %v\n", i, time.Since(began).Round(time.Millisecond), err)
		} else {
			fmt.Printf("ok %d\n", i)
		}
	}
	return 0
}

// TestOpenConcurrentProcesses has four processes open the same fresh file
// at the same instant, round after round: creating the schema and switching
// the file to WAL mode under contention must wait for the other processes
// (within the busy timeout), never fail with SQLITE_BUSY.
func TestOpenConcurrentProcesses(t *testing.T) {
	const (
		procs  = 4
		rounds = 60
		slot   = 100 // ms
	)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := time.Now().Add(2 * time.Second).UnixNano() // after every child has started
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		oks      int
	)
	for p := 0; p < procs; p++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+openRaceMode, pathEnv+"="+dir,
			startEnv+"="+strconv.FormatInt(start, 10), countEnv+"="+strconv.Itoa(rounds),
			slotEnv+"="+strconv.Itoa(slot), clientEnv+"="+fmt.Sprintf("proc-%d", p))
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				mu.Lock()
				if line := sc.Text(); strings.HasPrefix(line, "ok ") {
					oks++
				} else {
					failures = append(failures, fmt.Sprintf("process %d: %s", p, line))
				}
				mu.Unlock()
			}
			if err := cmd.Wait(); err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("process %d exited: %v: %s", p, err, stderr.String()))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if oks != procs*rounds {
		t.Fatalf("%d of %d opens succeeded", oks, procs*rounds)
	}
	// Every file holds the schema once and every process's session.
	ctx := context.Background()
	for i := 0; i < rounds; i++ {
		s, err := sqlite.Open(filepath.Join(dir, fmt.Sprintf("race-%d.db", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := s.Sessions(ctx)
		_ = s.Close()
		if err != nil || len(keys) != procs {
			t.Fatalf("race-%d.db: sessions %v, %v; want %d", i, keys, err, procs)
		}
	}
}

// TestOpenWaitsForLock: Open of a new file that another connection holds
// locked waits for it within the busy timeout, and fails with
// store.ErrLocked only past it.
func TestOpenWaitsForLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked.db")
	conn, err := rawDB(t, path).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	// Past a short busy timeout: ErrLocked.
	if s, err := sqlite.Open(path, &sqlite.Options{BusyTimeout: 200 * time.Millisecond}); !errors.Is(err, store.ErrLocked) {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("Open of a locked file past its busy timeout returned %v, want store.ErrLocked", err)
	}
	// Within a long one: it waits, and succeeds once the lock goes.
	type result struct {
		s   *sqlite.Store
		err error
	}
	got := make(chan result, 1)
	go func() {
		s, err := sqlite.Open(path, &sqlite.Options{BusyTimeout: time.Minute})
		got <- result{s, err}
	}()
	select {
	case r := <-got:
		if r.s != nil {
			_ = r.s.Close()
		}
		t.Fatalf("Open returned (%v) while the file was locked", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("Open after the lock went: %v", r.err)
	}
	_ = r.s.Close()
}
