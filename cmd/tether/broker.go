package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

func startMosquitto(bin, dir string) (*demoBroker, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	// max_queued_messages 0: never drop QoS 1/2 messages queued for an
	// offline session, which would otherwise look like a loss.
	cfg := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\npersistence false\n", port)
	if os.Geteuid() == 0 {
		cfg += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", conf)
	logf, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return &demoBroker{url: "mqtt://" + addr, name: "mosquitto", stop: stop}, nil
		}
		select {
		case <-exited:
			return nil, errors.New("mosquitto exited at start; see " + filepath.Join(dir, "mosquitto.log"))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("mosquitto not accepting on %s after 10s", addr)
		}
	}
}
