package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func redisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRedis(t *testing.T) {
	r := Redis(t)
	if !strings.HasPrefix(r.URL(), "redis://") || !strings.HasSuffix(r.URL(), r.Addr()) {
		t.Errorf("URL() = %q, Addr() = %q", r.URL(), r.Addr())
	}
	ctx := context.Background()
	c := redisClient(t, r.Addr())
	if got, err := c.Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	if v, err := c.ConfigGet(ctx, "appendfsync").Result(); err != nil || v["appendfsync"] != "always" {
		t.Errorf("appendfsync = %v, %v; want always", v, err)
	}

	if err := c.Set(ctx, "k", "before restart", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Restart()
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "before restart" {
		t.Fatalf("GET after Restart = %q, %v", got, err)
	}

	// appendfsync always: a write acknowledged before SIGKILL survives it.
	if err := c.Set(ctx, "k2", "before kill", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded on a killed server")
	}
	r.Start()
	if got, err := c.Get(ctx, "k2").Result(); err != nil || got != "before kill" {
		t.Fatalf("GET after Kill and Start = %q, %v", got, err)
	}
}

func TestRedisStopped(t *testing.T) {
	r := Redis(t)
	r.Stop()
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err == nil {
		_ = c.Close()
		t.Fatal("a stopped server accepted a connection")
	}
	// Cleanup must cope with a stopped server.
}

func TestRedisCluster(t *testing.T) {
	cl := RedisCluster(t)
	if n := len(cl.Addrs()); n != 3 {
		t.Fatalf("Addrs() has %d nodes, want 3", n)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer c.Close()
	ctx := context.Background()
	// Keys spread over slots served by every master.
	masters := map[string]bool{}
	for i := range 30 {
		key := fmt.Sprintf("key-%d", i)
		if err := c.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		got, err := c.Get(ctx, key).Int()
		if err != nil || got != i {
			t.Fatalf("GET %s = %d, %v", key, got, err)
		}
		node, err := c.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		masters[node.Options().Addr] = true
	}
	if len(masters) != 3 {
		t.Errorf("keys landed on %d masters, want 3", len(masters))
	}
}

func TestMosquitto(t *testing.T) {
	b := Mosquitto(t, WithPersistence(), WithMaxInflight(7))
	if b.URL() != "mqtt://"+b.Addr() {
		t.Errorf("URL() = %q", b.URL())
	}
	addr := b.Addr()
	if err := dialReady(addr)(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	if b.Addr() != addr {
		t.Fatalf("Addr() changed across Restart: %s, then %s", addr, b.Addr())
	}
	if err := dialReady(addr)(context.Background()); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
	b.Kill()
	if err := dialReady(addr)(context.Background()); err == nil {
		t.Fatal("a killed broker accepted a connection")
	}
	b.Start()
	if err := dialReady(addr)(context.Background()); err != nil {
		t.Fatalf("after Kill and Start: %v", err)
	}
}

func TestMosquittoConf(t *testing.T) {
	conf := mosquittoConf(MosquittoConfig{Persistence: true, MaxInflight: 5, MaxPacketSize: 1000, Extra: "retain_available false\n"},
		mosquittoConfPaths{listener: "listener 1 127.0.0.1", dataDir: "/d/", logDest: "log_dest stdout", asRoot: true})
	for _, want := range []string{
		"listener 1 127.0.0.1\n", "allow_anonymous true\n", "user root\n", "set_tcp_nodelay true\n",
		"persistence true\n", "persistence_location /d/\n", "max_inflight_messages 5\n",
		"max_queued_messages 0\n", "max_packet_size 1000\n", "retain_available false\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("configuration lacks %q:\n%s", want, conf)
		}
	}
}

func TestExternal(t *testing.T) {
	t.Setenv(EnvMQTT, "127.0.0.1:1")
	t.Setenv(EnvRedis, "127.0.0.1:2")
	t.Setenv(EnvRedisCluster, "127.0.0.1:3, 127.0.0.1:4")
	t.Setenv(EnvRequire, "")
	if got := Mosquitto(t).Addr(); got != "127.0.0.1:1" {
		t.Errorf("Mosquitto().Addr() = %q", got)
	}
	if got := Redis(t).Addr(); got != "127.0.0.1:2" {
		t.Errorf("Redis().Addr() = %q", got)
	}
	if got := RedisCluster(t).Addrs(); len(got) != 2 || got[1] != "127.0.0.1:4" {
		t.Errorf("RedisCluster().Addrs() = %q", got)
	}
	t.Run("StopSkips", func(t *testing.T) {
		b := Mosquitto(t)
		b.Stop()
		t.Error("Stop on an external broker did not skip")
	})
}

func TestDockerCheckIsCheap(t *testing.T) {
	start := time.Now()
	ok, why := dockerAvailable()
	if !ok && why == "" {
		t.Error("no reason given for a missing Docker engine")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("docker check took %v", d)
	}
}

func TestRedisDoErrors(t *testing.T) {
	r := Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := redisDo(ctx, r.Addr(), "NOSUCHCOMMAND"); err == nil {
		t.Error("an unknown command succeeded")
	}
	r.Stop()
	if _, err := redisDo(ctx, r.Addr(), "PING"); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PING on a stopped server: %v", err)
	}
}

// recordingTB records a Skip or Fatal and ends the calling goroutine, as
// the testing package does, so that the skip and failure paths can be
// checked without skipping or failing the test itself.
type recordingTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with r on its own goroutine and waits for it.
func (r *recordingTB) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
}

func TestMissingService(t *testing.T) {
	if ok, _ := dockerAvailable(); ok {
		t.Skip("a Docker engine answers: the helpers would use containers")
	}
	t.Setenv("PATH", t.TempDir())
	saved := binDirs
	binDirs = nil
	t.Cleanup(func() { binDirs = saved })
	for _, env := range []string{EnvMQTT, EnvRedis, EnvRedisCluster} {
		t.Setenv(env, "")
	}
	helpers := map[string]func(testing.TB){
		"mosquitto":    func(tb testing.TB) { Mosquitto(tb) },
		"redis-server": func(tb testing.TB) { Redis(tb) },
		"redis-cli":    func(tb testing.TB) { RedisCluster(tb) },
	}
	for name, f := range helpers {
		t.Setenv(EnvRequire, "")
		r := &recordingTB{TB: t}
		r.run(f)
		if !r.skipped || !strings.Contains(r.msg, name) || !strings.Contains(r.msg, "Docker") {
			t.Errorf("%s missing: skipped=%v, message %q", name, r.skipped, r.msg)
		}
		t.Setenv(EnvRequire, "1")
		r = &recordingTB{TB: t}
		r.run(f)
		if !r.failed || !strings.Contains(r.msg, EnvRequire) {
			t.Errorf("%s missing under %s=1: failed=%v, message %q", name, EnvRequire, r.failed, r.msg)
		}
	}
}

func TestRetryOnTakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		if calls == 1 {
			return []int{taken}, nil
		}
		return freePorts(n)
	}
	t.Cleanup(func() { pickPorts = freePorts })
	r := Redis(t)
	if calls != 2 || r.Addr() == ln.Addr().String() {
		t.Errorf("after a taken port: %d port choices, address %s", calls, r.Addr())
	}
	if err := redisReady(r.Addr())(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestContainersHelper runs the container path's helper program (a module
// of its own): with a Docker engine it starts Redis and the address it
// prints answers PING; without one it fails with the engine's absence named.
func TestContainersHelper(t *testing.T) {
	ok, _ := dockerAvailable()
	logPath := filepath.Join(t.TempDir(), "helper.log")
	h, err := startHelper(containersHelper, logPath, containerTimeout+time.Minute,
		"-image", redisImage, "-port", "6379/tcp", "-wait-log", "Ready to accept connections")
	if !ok {
		if err == nil {
			h.stop(containerTimeout)
			t.Fatal("the helper started a container with no Docker engine answering")
		}
		if !strings.Contains(err.Error(), "Docker") {
			t.Fatalf("the helper's error does not name Docker: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer h.stop(containerTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := waitReady(ctx, nil, redisReady(h.Addr)); err != nil {
		t.Fatalf("redis in the container at %s: %v", h.Addr, err)
	}
}
