// Package testenv starts the real services tether's tests talk to: a
// Mosquitto broker, a Redis server and a Redis Cluster, each on free loopback
// ports in the test's temporary directory, so that a test can stop, kill and
// restart them.
//
// Each helper resolves its service in this order:
//
//  1. an address from the environment (TETHER_TEST_MQTT, TETHER_TEST_REDIS,
//     TETHER_TEST_REDIS_CLUSTER), used as is;
//  2. the local binary (mosquitto, redis-server and redis-cli on PATH, in
//     /usr/sbin or in /usr/bin), started by the helper;
//  3. a container through testcontainers-go (run by the helper program in
//     internal/testenv/containers, a module of its own), when a Docker
//     engine answers;
//  4. otherwise the test is skipped with a message naming what is missing,
//     or fails when TETHER_TEST_REQUIRE=1.
//
// Only a locally started service can be stopped, killed and restarted: on an
// external or container service those methods skip the test (or fail it
// under TETHER_TEST_REQUIRE=1).
//
// Every process is killed and waited for when the test ends (t.Cleanup), and
// on Linux also when the test binary itself dies. A child's standard output
// and error go to a log file in the test's temporary directory; when a
// service fails to start the test fails with the tail of its logs.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment variables the helpers read.
const (
	// EnvMQTT names an external MQTT broker (host:port) to use instead of
	// starting Mosquitto.
	EnvMQTT = "TETHER_TEST_MQTT"
	// EnvRedis names an external Redis server (host:port).
	EnvRedis = "TETHER_TEST_REDIS"
	// EnvRedisCluster names the nodes of an external Redis Cluster
	// (comma-separated host:port list).
	EnvRedisCluster = "TETHER_TEST_REDIS_CLUSTER"
	// EnvRequire, when "1", turns every skip for a missing service into a
	// test failure. CI sets it.
	EnvRequire = "TETHER_TEST_REQUIRE"
)

// readyTimeout bounds how long a started service may take to accept
// connections.
const readyTimeout = 10 * time.Second

// stopTimeout bounds how long Stop waits for a clean exit after SIGTERM
// before it kills the process.
const stopTimeout = 30 * time.Second

// bindAttempts is how many sets of free ports a first start tries before
// giving up: another process may take a port between our probe and the
// server's bind.
const bindAttempts = 4

// unavailable skips the test, or fails it when EnvRequire is set.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf(format+" ("+EnvRequire+"=1)", args...)
	}
	t.Skipf(format, args...)
}

// binDirs are searched after PATH; a non-root PATH often lacks /usr/sbin.
var binDirs = []string{"/usr/sbin", "/usr/bin"}

// findBinary returns the path of the named program, looked up on PATH and
// then in binDirs.
func findBinary(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range binDirs {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("testenv: find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// pickPorts chooses the ports of a new service; tests replace it.
var pickPorts = freePorts

// loopback returns "127.0.0.1:port".
func loopback(port int) string {
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
}

// process is one locally started server process, restartable with the same
// arguments (and so on the same ports).
type process struct {
	t       testing.TB
	name    string   // what it is, for messages: "mosquitto", "redis-server"
	bin     string   // program path
	args    []string // arguments, fixed once the ports are chosen
	dir     string   // working directory
	logs    []string // files whose tail a failure shows; logs[0] gets stdout and stderr
	ready   func(ctx context.Context) error
	mu      sync.Mutex    // guards cmd and done
	cmd     *exec.Cmd     // the running (or last) process; nil before the first start
	done    chan struct{} // closed once cmd has exited and been waited for
	cleanup sync.Once
}

// start starts the process and waits until ready succeeds. It returns an
// error (and leaves no process behind) when the process exits early or is
// not ready in time.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("testenv: %s is already running", p.name)
		}
	}
	out, err := os.OpenFile(p.logs[0], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testenv: open %s log: %w", p.name, err)
	}
	fmt.Fprintf(out, "--- testenv: starting %s %s at %s\n", p.bin, strings.Join(p.args, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	_ = out.Close() // the child holds its own copy
	if err != nil {
		return fmt.Errorf("testenv: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cleanup.Do(func() {
		p.t.Cleanup(func() {
			p.kill()
			if p.t.Failed() {
				// The logs go with the temporary directory: show them now.
				p.t.Logf("testenv: %s logs (the test failed):\n%s", p.name, p.logTail())
			}
		})
	})

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := waitReady(ctx, done, p.ready); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%w\n%s", err, p.logTail())
	}
	return nil
}

// errExited reports that the process ended before it was ready.
var errExited = errors.New("testenv: process exited before it was ready")

// waitReady polls ready until it succeeds, the process exits, or ctx ends.
func waitReady(ctx context.Context, exited <-chan struct{}, ready func(context.Context) error) error {
	// An exit also ends an attempt in progress (a probe of a port that
	// another program holds may otherwise hang until its timeout).
	attempts, stop := context.WithCancel(ctx)
	defer stop()
	if exited != nil {
		go func() {
			select {
			case <-exited:
				stop()
			case <-attempts.Done():
			}
		}()
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		attempt, cancel := context.WithTimeout(attempts, time.Second)
		last = ready(attempt)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("testenv: not ready after %v: %w", readyTimeout, last)
		case <-tick.C:
		}
	}
}

// signal sends sig to the running process and waits for it to exit; after
// SIGTERM it escalates to SIGKILL once stopTimeout has passed.
func (p *process) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	if sig == syscall.SIGKILL {
		<-done
		return
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		p.t.Logf("testenv: %s did not exit %v after %v; killing it", p.name, sig, stopTimeout)
		_ = cmd.Process.Kill()
		<-done
	}
}

// kill kills the process (if running) and waits for it.
func (p *process) kill() { p.signal(syscall.SIGKILL) }

// running reports whether the process is running.
func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// logTail returns the last lines of every log file of the process.
func (p *process) logTail() string {
	var b strings.Builder
	for _, path := range p.logs {
		fmt.Fprintf(&b, "--- tail of %s:\n%s", path, tail(path, 30))
	}
	return b.String()
}

// tail returns the last n lines of a file, or a note saying why it cannot.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)\n", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// startFresh starts a service on new free ports, retrying with other ports
// when the server exits before it is ready (typically: a port was taken
// between the probe and the bind). setup receives the chosen ports and
// prepares p (arguments, configuration files).
func startFresh(p *process, nports int, setup func(ports []int) error) error {
	var err error
	for range bindAttempts {
		var ports []int
		if ports, err = pickPorts(nports); err != nil {
			return err
		}
		if err = setup(ports); err != nil {
			return err
		}
		if err = p.start(); err == nil || !errors.Is(err, errExited) {
			return err
		}
	}
	return err
}

// dialReady succeeds once addr accepts a TCP connection.
func dialReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// service is what Broker and RedisServer share: an address and, when the
// helper started it, the process behind it.
type service struct {
	t      testing.TB
	name   string   // "mosquitto", "redis"
	addr   string   // host:port
	proc   *process // nil for an external or container service
	origin string   // where an external service came from, for messages
}

// local returns the process, or skips (fails under EnvRequire) when the
// service was not started locally.
func (s *service) local(op string) *process {
	s.t.Helper()
	if s.proc == nil {
		unavailable(s.t, "testenv: %s.%s: the test needs a locally started %s; this one is %s", s.name, op, s.name, s.origin)
	}
	return s.proc
}

func (s *service) stop() {
	s.t.Helper()
	s.local("Stop").signal(syscall.SIGTERM)
}

func (s *service) kill() {
	s.t.Helper()
	s.local("Kill").kill()
}

func (s *service) start() {
	s.t.Helper()
	p := s.local("Start")
	if p.running() {
		s.t.Fatalf("testenv: %s.Start: already running", s.name)
	}
	if err := p.start(); err != nil {
		s.t.Fatalf("testenv: %s.Start on %s: %v", s.name, s.addr, err)
	}
}
