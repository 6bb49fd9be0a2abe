package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisConfig is the configuration of a started Redis server. Its zero value
// is the default: append-only file on, fsync on every write, no RDB
// snapshots, data in the test's temporary directory.
type RedisConfig struct {
	// Args are extra redis-server arguments, appended to the defaults
	// ("--appendfsync", "everysec" overrides the default fsync policy).
	// They are ignored by an external service.
	Args []string
	// auth is set by WithRedisPassword and WithRedisUser, which an
	// external server cannot honour.
	auth bool
}

// RedisOption changes the configuration of a started Redis server.
type RedisOption func(*RedisConfig)

// WithRedisArgs appends redis-server arguments, such as "--maxmemory",
// "10mb".
func WithRedisArgs(args ...string) RedisOption {
	return func(c *RedisConfig) { c.Args = append(c.Args, args...) }
}

// WithRedisPassword starts the server with requirepass: the default user
// needs password pw. The server is ready once it answers, NOAUTH included.
func WithRedisPassword(pw string) RedisOption {
	return func(c *RedisConfig) { c.Args, c.auth = append(c.Args, "--requirepass", pw), true }
}

// WithRedisUser adds an ACL user, rule as in an ACL SETUSER line ("alice on
// >secret ~app:* +@all").
func WithRedisUser(rule string) RedisOption {
	return func(c *RedisConfig) {
		c.Args = append(append(c.Args, "--user"), strings.Fields(rule)...)
		c.auth = true
	}
}

// RedisServer is a Redis server the test started (or an external one).
type RedisServer struct {
	s service
}

// Redis returns a Redis server for the test: the one named by
// TETHER_TEST_REDIS, else a local redis-server started on a free loopback
// port with appendonly yes, appendfsync always and its data in t.TempDir(),
// else a redis:7 container. It skips the test (fails under
// TETHER_TEST_REQUIRE=1) when none is available. The server is killed when
// the test ends.
func Redis(t testing.TB, opts ...RedisOption) *RedisServer {
	t.Helper()
	var cfg RedisConfig
	for _, o := range opts {
		o(&cfg)
	}
	r := &RedisServer{s: service{t: t, name: "redis"}}
	if addr := os.Getenv(EnvRedis); addr != "" {
		if cfg.auth {
			unavailable(t, "testenv: the external Redis %s (%s) cannot be given a password or ACL users", addr, EnvRedis)
			return r
		}
		if len(cfg.Args) > 0 {
			t.Logf("testenv: external Redis %s: options ignored", addr)
		}
		r.s.addr, r.s.origin = addr, "external ("+EnvRedis+")"
		return r
	}
	if bin, ok := findBinary("redis-server"); ok {
		dir := t.TempDir()
		p := &process{
			t: t, name: "redis-server", bin: bin, dir: dir,
			logs: []string{filepath.Join(dir, "redis.log")},
		}
		err := startFresh(p, 1, func(ports []int) error {
			r.s.addr = loopback(ports[0])
			p.args = append([]string{
				"--port", strconv.Itoa(ports[0]),
				"--bind", "127.0.0.1",
				"--dir", dir,
				"--appendonly", "yes",
				"--appendfsync", "always",
				"--save", "",
				"--daemonize", "no",
				"--protected-mode", "no",
			}, cfg.Args...)
			p.ready = redisReady(r.s.addr)
			return nil
		})
		if err != nil {
			t.Fatalf("testenv: start redis-server: %v", err)
		}
		r.s.proc = p
		return r
	}
	if ok, why := dockerAvailable(); ok {
		r.s.addr = redisContainer(t, cfg)
		r.s.origin = "a container"
		return r
	} else {
		unavailable(t, "testenv: no Redis: set %s, install redis-server, or run a Docker engine (%s)", EnvRedis, why)
	}
	return r
}

// Addr returns the server's address, "127.0.0.1:PORT" when started locally.
func (r *RedisServer) Addr() string { return r.s.addr }

// URL returns the server's address as "redis://host:port".
func (r *RedisServer) URL() string { return "redis://" + r.s.addr }

// Stop shuts the server down with SIGTERM (Redis flushes its append-only
// file) and waits for it to exit. Its port stays its own for Start.
func (r *RedisServer) Stop() {
	r.s.t.Helper()
	r.s.stop()
}

// Kill kills the server with SIGKILL and waits for it to exit.
func (r *RedisServer) Kill() {
	r.s.t.Helper()
	r.s.kill()
}

// Start starts the stopped server again on the same port and data
// directory, and waits until it answers PING. It fails the test if the
// server does not come up.
func (r *RedisServer) Start() {
	r.s.t.Helper()
	r.s.start()
}

// Restart is Stop followed by Start.
func (r *RedisServer) Restart() {
	r.s.t.Helper()
	r.Stop()
	r.Start()
}

// Cluster is a Redis Cluster the test started (or an external one): three
// masters without replicas, covering every slot.
type Cluster struct {
	addrs []string
}

// Addrs returns the address of every node.
func (c *Cluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// RedisCluster returns a Redis Cluster for the test: the nodes named by
// TETHER_TEST_REDIS_CLUSTER, else three local redis-server nodes (3
// masters, 0 replicas) joined with redis-cli --cluster create, else a
// container running three nodes. It returns once every node reports
// cluster_state:ok. The nodes are killed when the test ends.
func RedisCluster(t testing.TB) *Cluster {
	t.Helper()
	if env := os.Getenv(EnvRedisCluster); env != "" {
		var addrs []string
		for a := range strings.SplitSeq(env, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		return &Cluster{addrs: addrs}
	}
	server, okServer := findBinary("redis-server")
	cli, okCLI := findBinary("redis-cli")
	if okServer && okCLI {
		return localCluster(t, server, cli)
	}
	if ok, why := dockerAvailable(); ok {
		return &Cluster{addrs: clusterContainer(t)}
	} else {
		unavailable(t, "testenv: no Redis Cluster: set %s, install redis-server and redis-cli, or run a Docker engine (%s)", EnvRedisCluster, why)
	}
	return nil
}

// clusterNodes is the number of masters a started cluster has.
const clusterNodes = 3

// localCluster starts the nodes from the local binaries and creates the
// cluster.
func localCluster(t testing.TB, server, cli string) *Cluster {
	t.Helper()
	root := t.TempDir()
	c := &Cluster{}
	for i := range clusterNodes {
		dir := filepath.Join(root, fmt.Sprintf("node%d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("testenv: redis cluster: %v", err)
		}
		p := &process{
			t: t, name: fmt.Sprintf("redis-server (cluster node %d)", i), bin: server, dir: dir,
			logs: []string{filepath.Join(dir, "redis.log")},
		}
		var addr string
		// Two ports per node: the client port and the cluster bus port,
		// which defaults to port+10000 and would then often be out of range
		// or taken.
		err := startFresh(p, 2, func(ports []int) error {
			addr = loopback(ports[0])
			p.args = []string{
				"--port", strconv.Itoa(ports[0]),
				"--cluster-port", strconv.Itoa(ports[1]),
				"--bind", "127.0.0.1",
				"--dir", dir,
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "5000",
				"--appendonly", "no",
				"--save", "",
				"--daemonize", "no",
				"--protected-mode", "no",
			}
			p.ready = redisReady(addr)
			return nil
		})
		if err != nil {
			t.Fatalf("testenv: start redis cluster node: %v", err)
		}
		c.addrs = append(c.addrs, addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	logPath := filepath.Join(root, "cluster-create.log")
	_ = os.WriteFile(logPath, out, 0o644)
	if err != nil {
		t.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := waitClusterOK(c.addrs); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c
}

// waitClusterOK waits until every node reports cluster_state:ok.
func waitClusterOK(addrs []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, addr := range addrs {
		err := waitReady(ctx, nil, func(ctx context.Context) error {
			info, err := redisDo(ctx, addr, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("testenv: redis cluster node %s: not cluster_state:ok", addr)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("testenv: redis cluster: %w", err)
		}
	}
	return nil
}

// redisReady succeeds once the server at addr answers PING with PONG (and
// not with LOADING while it replays its append-only file).
func redisReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		reply, err := redisDo(ctx, addr, "PING")
		if err != nil && strings.Contains(err.Error(), ": NOAUTH ") {
			return nil // up, and wanting a password (WithRedisPassword)
		}
		if err != nil {
			return err
		}
		if reply != "PONG" {
			return fmt.Errorf("testenv: redis %s: PING answered %q", addr, reply)
		}
		return nil
	}
}

// redisDo sends one command on a new connection and returns a simple,
// integer or bulk string reply. It is just enough RESP for readiness checks.
func redisDo(ctx context.Context, addr string, args ...string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(req.String())); err != nil {
		return "", err
	}
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("testenv: empty redis reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("testenv: redis %s: %s", addr, line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("testenv: redis %s: bad bulk reply %q", addr, line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("testenv: redis %s: unexpected reply %q", addr, line)
	}
}
