package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// waitUntil polls cond every 20ms for up to d.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// TestDemoKilledLeavesNothing kills a running demo with SIGKILL: the
// kernel kills its Mosquitto at once (Pdeathsig), and the next demo's
// start removes the directory it left.
func TestDemoKilledLeavesNothing(t *testing.T) {
	if _, ok := findMosquitto(); !ok {
		t.Skip("no mosquitto binary")
	}
	tmp := t.TempDir()
	cmd := child(t, "demo", "-n", "1000000", "-cuts", "0", "-timeout", "2m")
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var dir string
	var brokerPid int
	if !waitUntil(60*time.Second, func() bool {
		m, _ := filepath.Glob(filepath.Join(tmp, demoDirPrefix+"*", "mosquitto.pid"))
		if len(m) == 0 {
			return false
		}
		dir = filepath.Dir(m[0])
		pid, ok := readPid(m[0])
		brokerPid = pid
		return ok
	}) {
		t.Fatal("the demo started no Mosquitto within 60s")
	}
	if !alive(brokerPid) {
		t.Fatalf("mosquitto %d not running", brokerPid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !waitUntil(10*time.Second, func() bool { return !alive(brokerPid) }) {
		_ = syscall.Kill(brokerPid, syscall.SIGKILL)
		t.Fatalf("mosquitto %d outlived the killed demo", brokerPid)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the killed demo's directory is gone already? %v", err)
	}
	if n := cleanStaleDemoDirs(tmp); n != 1 {
		t.Fatalf("cleanup removed %d directories, want 1", n)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("stale directory %s still there: %v", dir, err)
	}
}

// TestStaleDemoCleanupStopsOrphanBroker: a directory whose demo is gone
// but whose Mosquitto still runs (a demo killed on a system without
// Pdeathsig) gets its Mosquitto killed and is removed; a live demo's
// directory is left alone.
func TestStaleDemoCleanupStopsOrphanBroker(t *testing.T) {
	bin, ok := findMosquitto()
	if !ok {
		t.Skip("no mosquitto binary")
	}
	tmp := t.TempDir()
	stale := filepath.Join(tmp, demoDirPrefix+"stale")
	live := filepath.Join(tmp, demoDirPrefix+"live")
	for _, d := range []string{stale, live} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A finished process's pid stands for the killed demo.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	writePid := func(path string, pid int) {
		if err := os.WriteFile(path, []byte(strconv.Itoa(pid)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePid(filepath.Join(stale, "demo.pid"), gone.Process.Pid)
	writePid(filepath.Join(live, "demo.pid"), os.Getpid())
	conf := filepath.Join(stale, "mosquitto.conf")
	cfg := "listener 0 " + filepath.Join(stale, "sock") + "\nallow_anonymous true\n"
	if os.Geteuid() == 0 {
		cfg += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command(bin, "-c", conf)
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { orphan.Wait(); close(exited) }()
	defer func() { orphan.Process.Kill(); <-exited }()
	writePid(filepath.Join(stale, "mosquitto.pid"), orphan.Process.Pid)
	time.Sleep(200 * time.Millisecond)
	select {
	case <-exited:
		t.Fatal("the orphan stand-in exited at start")
	default:
	}
	if n := cleanStaleDemoDirs(tmp); n != 1 {
		t.Fatalf("removed %d directories, want 1", n)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the orphaned mosquitto still runs")
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("a live demo's directory was removed: %v", err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale directory still there: %v", err)
	}
}
