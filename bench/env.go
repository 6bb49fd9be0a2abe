// Package bench measures tether against a private Mosquitto (and Redis, for
// the Redis store) that it starts itself: the comparative benchmark of
// cmd/compare and the session-resume benchmarks of this package's tests.
// It is a module of its own so that the library gains no dependency.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Server is a broker or Redis server this package started.
type Server struct {
	Addr string // 127.0.0.1:PORT
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// findBinary finds name on PATH or in /usr/sbin (where Debian puts mosquitto).
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("bench: %s not found on PATH or in /usr/sbin", name)
}

// freePort returns a loopback port free at the time of the call.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs bin with args (built by mk from a free port) until its port
// accepts connections; a port taken between probe and bind is retried.
func start(name string, dir string, mk func(port int) ([]string, error)) (*Server, error) {
	bin, err := findBinary(name)
	if err != nil {
		return nil, err
	}
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args, err := mk(port)
		if err != nil {
			return nil, err
		}
		logPath := filepath.Join(dir, name+".out")
		out, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
		cmd.SysProcAttr = sysProcAttr()
		if err := cmd.Start(); err != nil {
			out.Close()
			return nil, fmt.Errorf("bench: start %s: %w", name, err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, done: make(chan struct{}), log: logPath}
		go func() { _ = cmd.Wait(); out.Close(); close(s.done) }()
		if last = s.waitReady(10 * time.Second); last == nil {
			return s, nil
		}
		s.Close()
	}
	return nil, fmt.Errorf("bench: %s did not start: %w", name, last)
}

// waitReady waits until the server accepts a connection, or has exited.
func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			b, _ := os.ReadFile(s.log)
			return fmt.Errorf("exited: %s", b)
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("not accepting connections after " + limit.String())
}

// Close kills the server and waits for it to exit.
func (s *Server) Close() {
	if s == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// StartMosquitto starts a mosquitto on a free loopback port with its files
// in dir: max_inflight_messages window (the Receive Maximum it announces,
// and its window towards subscribers), an unlimited queue, TCP_NODELAY, no
// persistence.
func StartMosquitto(dir string, window int) (*Server, error) {
	return start("mosquitto", dir, func(port int) ([]string, error) {
		conf := filepath.Join(dir, "mosquitto.conf")
		text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"+
			"persistence false\nmax_inflight_messages %d\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n",
			port, window)
		if os.Geteuid() == 0 {
			text += "user root\n"
		}
		return []string{"-c", conf}, os.WriteFile(conf, []byte(text), 0o644)
	})
}

// StartRedis starts a redis-server on a free loopback port with its data
// in dir, durable as the Redis store expects: append-only file, fsync on
// every write.
func StartRedis(dir string) (*Server, error) {
	return start("redis-server", dir, func(port int) ([]string, error) {
		return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "yes", "--appendfsync", "always", "--save", "",
			"--daemonize", "no", "--protected-mode", "no"}, nil
	})
}

// ctxWait is a helper: it returns ctx's error if ctx ends before ch closes.
func ctxWait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// execOutput runs bin with args and returns its combined output.
func execOutput(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}
