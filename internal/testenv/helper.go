package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Helper programs are the parts of testenv whose dependencies must stay out
// of tether's module graph (testcontainers and the Docker client; the
// embedded mochi broker). Each lives in a module of its own under this
// repository; testenv builds it with the go command on first use in a test
// binary and runs it as a child process that prints "ready ADDR" on its
// standard output once its service is up, then holds it until its standard
// input closes or it gets SIGTERM.

// helperBuildTimeout bounds building a helper program (its first build
// compiles its dependencies: minutes on a busy machine).
const helperBuildTimeout = 15 * time.Minute

// repoRoot returns the directory of tether's checkout, found from this
// file's path.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", errors.New("testenv: cannot find the source tree (built with -trimpath?)")
	}
	return filepath.Join(filepath.Dir(file), "..", ".."), nil
}

var (
	helperMu    sync.Mutex
	helperBuilt = map[string]helperBuild{}
)

type helperBuild struct {
	path string
	err  error
}

// buildHelper builds the main package in dir (relative to the repository
// root, inside a module of its own) once per test binary and returns the
// executable's path. The executable goes to the user's cache directory;
// the Go build cache makes builds after the first a matter of seconds.
func buildHelper(dir string) (string, error) {
	helperMu.Lock()
	defer helperMu.Unlock()
	if b, ok := helperBuilt[dir]; ok {
		return b.path, b.err
	}
	path, err := doBuildHelper(dir)
	helperBuilt[dir] = helperBuild{path, err}
	return path, err
}

func doBuildHelper(dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	src := filepath.Join(root, filepath.FromSlash(dir))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	outDir := filepath.Join(cache, "tether-testenv")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("testenv: helper directory: %w", err)
	}
	name := strings.ReplaceAll(dir, "/", "-")
	out := filepath.Join(outDir, name)
	// Build under a name of our own, then rename over the shared one, so
	// that test binaries building at once never run a half-written file.
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	// go test puts its own go command first on PATH.
	cmd := exec.Command("go", "build", "-o", tmp, ".")
	cmd.Dir = src
	done := make(chan struct{})
	timer := time.AfterFunc(helperBuildTimeout, func() {
		select {
		case <-done:
		default:
			if cmd.Process != nil {
				_ = cmd.Process.Kill()
			}
		}
	})
	outb, err := cmd.CombinedOutput()
	close(done)
	timer.Stop()
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("testenv: build helper %s: %w\n%s", dir, err, outb)
	}
	if err := os.Rename(tmp, out); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("testenv: install helper %s: %w", dir, err)
	}
	return out, nil
}

// helperProc is a running helper program.
type helperProc struct {
	name  string
	cmd   *exec.Cmd
	stdin *os.File // closing it asks the helper to stop
	done  chan struct{}
	log   string // its standard error
	Addr  string // what it printed after "ready "
}

// startHelper builds the helper in dir, starts it with args and waits up to
// timeout for its ready line. Standard error goes to logPath.
func startHelper(dir, logPath string, timeout time.Duration, args ...string) (*helperProc, error) {
	bin, err := buildHelper(dir)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testenv: helper log: %w", err)
	}
	defer logf.Close()
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = inR.Close()
		_ = inW.Close()
		return nil, err
	}
	defer outR.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = inR
	cmd.Stdout = outW
	cmd.Stderr = logf
	// SIGTERM, not SIGKILL, should the test binary die: the helper then
	// still removes what it started.
	cmd.SysProcAttr = sysProcAttr()
	if cmd.SysProcAttr != nil {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	}
	err = cmd.Start()
	_ = inR.Close()
	_ = outW.Close()
	if err != nil {
		_ = inW.Close()
		return nil, fmt.Errorf("testenv: start %s: %w", dir, err)
	}
	h := &helperProc{name: dir, cmd: cmd, stdin: inW, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		close(h.done)
	}()
	_ = outR.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(outR).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		h.kill()
		if err == nil {
			err = fmt.Errorf("unexpected output %q", line)
		}
		return nil, fmt.Errorf("testenv: %s not ready: %w\n%s", dir, err, tail(logPath, 20))
	}
	h.Addr = addr
	return h, nil
}

// stop asks the helper to stop (its standard input closes, and SIGTERM)
// and waits up to grace for it to exit before killing it.
func (h *helperProc) stop(grace time.Duration) {
	_ = h.stdin.Close()
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(grace):
		h.kill()
	}
}

// kill kills the helper and waits for it.
func (h *helperProc) kill() {
	_ = h.stdin.Close()
	_ = h.cmd.Process.Kill()
	<-h.done
}
