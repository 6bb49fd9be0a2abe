package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
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
	"github.com/tethermq/tether/store/sqlite"
)

// The crash test runs this test binary again as a child process that writes
// a stream of batches until it is killed; helperEnv selects that mode.
const (
	helperEnv  = "TETHER_SQLITE_TEST_HELPER"
	pathEnv    = "TETHER_SQLITE_TEST_PATH"
	startEnv   = "TETHER_SQLITE_TEST_START"
	clientEnv  = "TETHER_SQLITE_TEST_CLIENT"
	countEnv   = "TETHER_SQLITE_TEST_COUNT"
	crashSeed  = "TETHER_CRASH_SEED"
	crashModer = "crash-writer"
)

var crashKey = store.Key{Server: "tcp://broker.test:1883", ClientID: "crash"}

// helperKey is the session the helper writes: crashKey unless clientEnv
// names another ClientID.
func helperKey() store.Key {
	k := crashKey
	if c := os.Getenv(clientEnv); c != "" {
		k.ClientID = c
	}
	return k
}

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
	if h, ok := helpers[mode]; ok {
		return h()
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
	s, err := sqlite.Open(os.Getenv(pathEnv), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	count := 100_000
	if v := os.Getenv(countEnv); v != "" {
		if count, err = strconv.Atoi(v); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 2
		}
	}
	ctx := context.Background()
	k := helperKey()
	for n := start; n < start+count; n++ {
		if err := s.Apply(ctx, k, crashBatch(n)...); err != nil {
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
		s, err := sqlite.Open(path, nil)
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

// TestTwoProcesses runs two writer processes on one file at once, each on
// its own session, and checks that every batch each acknowledged is there.
func TestTwoProcesses(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "shared.db")
	const batches = 150
	clients := []string{"first", "second"}
	type result struct {
		acked  int
		err    error
		stderr string
	}
	results := make(chan result, len(clients))
	for _, c := range clients {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+crashModer, pathEnv+"="+path, startEnv+"=1",
			clientEnv+"="+c, countEnv+"="+strconv.Itoa(batches))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			acked := 0
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "acked ")); err == nil && n == acked+1 {
					acked = n
				}
			}
			err := cmd.Wait()
			results <- result{acked, err, stderr.String()}
		}()
	}
	for range clients {
		r := <-results
		if r.err != nil || r.acked != batches {
			t.Fatalf("writer acknowledged %d of %d batches: %v\n%s", r.acked, batches, r.err, r.stderr)
		}
	}
	s, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := crashStates(batches)[batches]
	for _, c := range clients {
		k := crashKey
		k.ClientID = c
		got, err := s.Load(context.Background(), k)
		if err != nil {
			t.Fatalf("Load(%s): %v", k, err)
		}
		if !equalRecords(got, want) {
			t.Errorf("session %s holds %d records, not the %d of its %d acknowledged batches", k, len(got), len(want), batches)
		}
	}
	keys, err := s.Sessions(context.Background())
	if err != nil || len(keys) != len(clients) {
		t.Errorf("Sessions: %v, %v; want the two writers' sessions", keys, err)
	}
}
