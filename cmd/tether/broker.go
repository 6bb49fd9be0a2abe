package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tethermq/tether/internal/embedbroker"
)

// demoBroker is a broker the demo started for itself.
type demoBroker struct {
	url, name string
	stop      func()
}

// startBroker starts a private broker on a free loopback port: Mosquitto
// when its binary is installed (make demo installs it), else the embedded
// broker, so the demo needs no setup either way.
func startBroker(dir string) (*demoBroker, error) {
	if bin, ok := findMosquitto(); ok {
		b, err := startMosquitto(bin, dir)
		if err == nil {
			return b, nil
		}
		fmt.Fprintln(os.Stderr, "tether demo: mosquitto did not start, using the embedded broker:", err)
	}
	b, err := embedbroker.Start(embedbroker.Options{})
	if err != nil {
		return nil, err
	}
	return &demoBroker{url: b.URL(), name: "embedded", stop: func() { b.Close() }}, nil
}

func findMosquitto() (string, bool) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, true
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto", true
	}
	return "", false
}

// errPortTaken reports that Mosquitto could not bind the chosen port.
var errPortTaken = errors.New("port taken")

// startMosquitto starts Mosquitto on a free port. The port is found by
// binding port 0 and is released for Mosquitto to bind: another process
// can take it in between, which Mosquitto's failed bind shows (it exits,
// or its log lacks the listen line for the port); the demo then tries
// another port, and never talks to a server that is not its own.
func startMosquitto(bin, dir string) (*demoBroker, error) {
	var err error
	for range 5 {
		var b *demoBroker
		b, err = startMosquittoOnce(bin, dir)
		if !errors.Is(err, errPortTaken) {
			return b, err
		}
	}
	return nil, err
}

func startMosquittoOnce(bin, dir string) (*demoBroker, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	logPath := filepath.Join(dir, "mosquitto.log")
	// max_queued_messages 0: never drop QoS 1/2 messages queued for an
	// offline session, which would otherwise look like a loss.
	cfg := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\npersistence false\nlog_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n", port, logPath)
	if os.Geteuid() == 0 {
		cfg += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", conf)
	out, err := os.Create(filepath.Join(dir, "mosquitto.out"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	// The kernel kills Mosquitto when the demo dies, even by SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	// A demo killed before Pdeathsig could act (or on a system without
	// it) leaves this file for the next demo's cleanup to find.
	_ = os.WriteFile(filepath.Join(dir, "mosquitto.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	exited := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	listening := fmt.Sprintf("listen socket on port %d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if log, _ := os.ReadFile(logPath); strings.Contains(string(log), listening) {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				select {
				case <-exited:
					return nil, errPortTaken
				default:
				}
				return &demoBroker{url: "mqtt://" + addr, name: "mosquitto", stop: stop}, nil
			}
		}
		select {
		case <-exited:
			if log, _ := os.ReadFile(logPath); strings.Contains(string(log), "in use") {
				return nil, errPortTaken
			}
			return nil, errors.New("mosquitto exited at start; see " + logPath)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("mosquitto not accepting on %s after 10s", addr)
		}
	}
}

// demoDirPrefix names the demo's temporary directories.
const demoDirPrefix = "tether-demo-"

// makeDemoDir creates the demo's temporary directory, with the demo's pid
// in it, after removing the directories of earlier demos that were killed
// before they could clean up (and stopping a Mosquitto one left).
func makeDemoDir() (string, error) {
	cleanStaleDemoDirs(os.TempDir())
	dir, err := os.MkdirTemp("", demoDirPrefix)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "demo.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// cleanStaleDemoDirs removes the demo directories under tmp whose demo
// process is gone, after killing a Mosquitto still running from one (only
// when its command line names that directory's configuration).
func cleanStaleDemoDirs(tmp string) (removed int) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return 0
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), demoDirPrefix) {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		owner, ok := readPid(filepath.Join(dir, "demo.pid"))
		if !ok || alive(owner) {
			continue // not ours to judge, or still running
		}
		if pid, ok := readPid(filepath.Join(dir, "mosquitto.pid")); ok && alive(pid) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if strings.Contains(string(cmdline), filepath.Join(dir, "mosquitto.conf")) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if os.RemoveAll(dir) == nil {
			removed++
		}
	}
	return removed
}

func readPid(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// alive reports whether a process with pid exists (a zombie counts as
// gone).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill
	}
	// The state follows the command name in parentheses.
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
