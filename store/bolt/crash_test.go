package bolt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
)

// The crash test runs this test binary again as a child process that writes
// a stream of batches until it is killed; helperEnv selects that mode.
const (
	helperEnv  = "TETHER_BOLT_TEST_HELPER"
	pathEnv    = "TETHER_BOLT_TEST_PATH"
	startEnv   = "TETHER_BOLT_TEST_START"
	crashSeed  = "TETHER_CRASH_SEED"
	crashModer = "crash-writer"
	holdMode   = "hold"
)

var crashKey = store.Key{Server: "tcp://broker.test:1883", ClientID: "crash"}

// crashBatch returns batch n (from 1) of the stream: four new records with
// recognisable contents, the deletion of two records of the previous batch
// and the replacement of a third, so a batch half applied shows.
func crashBatch(n int) []store.Op {
	base := uint64(n) * 4
	ops := make([]store.Op, 0, 7)
	for j := uint64(0); j < 4; j++ {
		ops = append(ops, store.Put(crashRecord(base+j, n)))
	}
	if n > 1 {
		prev := base - 4
		ops = append(ops, store.Delete(prev), store.Delete(prev+1), store.Put(crashRecord(prev+2, n)))
	}
	return ops
}

func crashRecord(seq uint64, gen int) store.Record {
	n := 40 + int(seq*37+uint64(gen)*11)%500
	p := make([]byte, n)
	copy(p, fmt.Sprintf("seq=%d gen=%d;", seq, gen))
	for i := len(fmt.Sprintf("seq=%d gen=%d;", seq, gen)); i < n; i++ {
		p[i] = byte(seq) ^ byte(gen) ^ byte(i)
	}
	return store.Record{Seq: seq, Dir: store.Direction(1 + seq%2), ID: uint16(seq%65535 + 1), Packet: p}
}

// crashStates returns the expected records after each of batches 0..m.
func crashStates(m int) [][]store.Record {
	state := map[uint64]store.Record{}
	out := make([][]store.Record, 0, m+1)
	snapshot := func() []store.Record {
		recs := make([]store.Record, 0, len(state))
		for _, r := range state {
			recs = append(recs, r)
		}
		slices.SortFunc(recs, func(a, b store.Record) int {
			if a.Seq < b.Seq {
				return -1
			}
			return 1
		})
		return recs
	}
	out = append(out, snapshot())
	for n := 1; n <= m; n++ {
		for _, op := range crashBatch(n) {
			if op.Kind == store.OpPut {
				state[op.Record.Seq] = op.Record
			} else {
				delete(state, op.Record.Seq)
			}
		}
		out = append(out, snapshot())
	}
	return out
}

func runHelper(mode string) int {
	if mode == holdMode {
		return holdFile()
	}
	if mode != crashModer {
		fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
		return 2
	}
	start, err := strconv.Atoi(os.Getenv(startEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	s, err := bolt.Open(os.Getenv(pathEnv), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	ctx := context.Background()
	for n := start; n < start+100_000; n++ {
		if err := s.Apply(ctx, crashKey, crashBatch(n)...); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		// Unbuffered: the parent reads every ack the moment Apply returns.
		if _, err := fmt.Fprintf(os.Stdout, "acked %d\n", n); err != nil {
			return 1
		}
	}
	_ = s.Close()
	return 0
}

// TestCrash kills a writing child process with SIGKILL at random points and
// checks after each that every acknowledged batch is there, and the batch in
// flight wholly or not at all. Set TETHER_CRASH_SEED to replay a run.
func TestCrash(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(crashSeed); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s: %v", crashSeed, err)
		}
	}
	t.Logf("seed %d (set %s=%d to replay)", seed, crashSeed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x7e7e))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	done := 0 // batches present in the file
	for round := 0; round < 4; round++ {
		killAfter := 3 + rng.IntN(60)
		delay := time.Duration(rng.IntN(3000)) * time.Microsecond
		acked := crashChild(t, exe, path, done+1, killAfter, delay)
		if acked < done+killAfter {
			t.Fatalf("round %d: child acknowledged up to batch %d, fewer than the %d awaited", round, acked, done+killAfter)
		}
		states := crashStates(acked + 1)
		s, err := bolt.Open(path, nil)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		got, err := s.Load(context.Background(), crashKey)
		_ = s.Close()
		if err != nil {
			t.Fatalf("round %d: Load after kill: %v", round, err)
		}
		switch {
		case equalRecords(got, states[acked]):
			done = acked
		case equalRecords(got, states[acked+1]):
			done = acked + 1
		default:
			t.Fatalf("round %d: after a kill with batch %d acknowledged, the file holds %d records: neither the state after batch %d nor after %d",
				round, acked, len(got), acked, acked+1)
		}
		t.Logf("round %d: killed after ack %d (+%v); file holds batches 1..%d", round, acked, delay, done)
	}
}

// crashChild runs the writer from batch start, kills it with SIGKILL once
// it has acknowledged killAfter batches and delay has passed, and returns
// the last batch it acknowledged.
func crashChild(t *testing.T, exe, path string, start, killAfter int, delay time.Duration) int {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+crashModer, pathEnv+"="+path, startEnv+"="+strconv.Itoa(start))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, the child does not outlive the test.
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	acked, killed := start-1, false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "acked "))
		if err != nil || n != acked+1 {
			t.Fatalf("child printed %q after ack %d", sc.Text(), acked)
		}
		acked = n
		if !killed && acked >= start-1+killAfter {
			time.Sleep(delay) // lands the kill at a random point of a later batch
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended before it was killed: %v\n%s", err, stderr.String())
	}
	return acked
}

// holdFile opens the store, says so, and keeps it open until its standard
// input closes.
func holdFile() int {
	s, err := bolt.Open(os.Getenv(pathEnv), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Println("open")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = s.Close()
	return 0
}

// TestLockedByOtherProcess opens the file in a child process, then checks
// that Open here waits its Timeout and fails with ErrLocked, and succeeds
// once the child has let go.
func TestLockedByOtherProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "held.db")
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+holdMode, pathEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "open" {
		t.Fatalf("child did not open the file: %q", sc.Text())
	}
	start := time.Now()
	s, err := bolt.Open(path, &bolt.Options{Timeout: 300 * time.Millisecond})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a file another process holds succeeded")
	}
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Open of a file another process holds returned %v, want store.ErrLocked", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("Open gave up after %v with a 300ms timeout", d)
	}
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	s, err = bolt.Open(path, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Open after the other process let go: %v", err)
	}
	_ = s.Close()
}
