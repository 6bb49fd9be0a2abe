package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tethermq/tether/internal/testenv"
	"github.com/tethermq/tether/store"
)

// startSentinel starts one Redis Sentinel watching the primary at addr
// under the name "primary", and returns its address. testenv has no
// Sentinel helper, so the test runs the binary itself; the process is
// killed when the test ends.
func startSentinel(t *testing.T, addr string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server to run a Sentinel with")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	dir := t.TempDir()
	host, mport, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor primary %s %s 1
sentinel down-after-milliseconds primary 500
sentinel failover-timeout primary 5000
`, port, dir, host, mport)
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "sentinel.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, path, "--sentinel")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logf.Close()
	})
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// poll calls f until it returns nil, failing the test after d.
func poll(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %v", what, err, d)
		}
		<-tick.C
	}
}

// TestSentinelFailover writes through a Sentinel failover client with
// WaitReplicas 1, kills the primary, and checks that after Sentinel
// promotes the replica every acknowledged batch is there, the lease held
// across the failover still fences, and the same Store keeps working.
func TestSentinelFailover(t *testing.T) {
	ctx := context.Background()
	primary := testenv.Redis(t)
	admin := goredis.NewClient(&goredis.Options{Addr: primary.Addr()})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Redis(t, testenv.WithRedisArgs("--replicaof", "127.0.0.1", portOf(primary.Addr())))
	poll(t, 20*time.Second, "replica online", func() error {
		info, err := admin.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "state=online") {
			return errors.New("no online replica")
		}
		return nil
	})
	sentinelAddr := startSentinel(t, primary.Addr())
	sentinel := goredis.NewSentinelClient(&goredis.Options{Addr: sentinelAddr})
	defer sentinel.Close()
	poll(t, 20*time.Second, "sentinel sees the replica", func() error {
		replicas, err := sentinel.Replicas(ctx, "primary").Result()
		if err != nil {
			return err
		}
		if len(replicas) == 0 {
			return errors.New("no replica known")
		}
		return nil
	})

	rdb := goredis.NewFailoverClient(&goredis.FailoverOptions{
		MasterName: "primary", SentinelAddrs: []string{sentinelAddr}, ContextTimeoutEnabled: true,
	})
	defer rdb.Close()
	s, err := New(rdb, &Options{WaitReplicas: 1, WaitTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := testKey("failover")
	lease, err := s.Acquire(ctx, k, store.LeaseOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var want []store.Record
	for i := uint64(1); i <= 50; i++ {
		r := record(i, fmt.Sprint("batch ", i))
		if err := s.Apply(ctx, k, store.Put(r)); err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
		want = append(want, r)
	}

	primary.Kill()
	start := time.Now()
	// The replica is now alone: writes reach it but cannot be replicated,
	// so the store reports them as possibly applied. Reads tell when the
	// failover is done.
	poll(t, 30*time.Second, "Load after failover", func() error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := s.Load(cctx, k)
		return err
	})
	t.Logf("failover took %v", time.Since(start).Round(time.Millisecond))
	expectRecords(t, s, k, want...)
	if isLost(lease.Lost()) {
		t.Fatal("the lease was lost across a failover shorter than its TTL")
	}
	// The lease replicated with the data: the holder still writes (WAIT
	// fails, there is no replica left), others are still refused.
	err = s.Apply(ctx, k, store.Put(record(51, "after")))
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrSessionTaken) {
		t.Fatalf("Apply by the holder after failover returned %v, want a replica shortfall", err)
	}
	other, err := New(rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Apply(ctx, k, store.Put(record(52, "intruder"))); !errors.Is(err, store.ErrSessionTaken) {
		t.Fatalf("Apply by a non-holder after failover returned %v, want store.ErrSessionTaken", err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	expectRecords(t, other, k, append(want, record(51, "after"))...)
}

func isLost(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
