// Package reexec re-executes a test binary in a child role, for the checks of
// the store contract suite (conformance) and the session suite
// (conformance/sessiontest) that kill or trace a process. The child runs the
// test that started it again, finds its instructions in an environment
// variable, plays its role instead of the suite and exits.
package reexec

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// Environment variables that carry a child's instructions, as JSON.
const (
	// StoreEnv is set for a child of a store check (conformance.Run).
	StoreEnv = "TETHER_CONFORMANCE_CHILD"
	// SessionEnv is set for a child of a session case (sessiontest.Run).
	SessionEnv = "TETHER_SESSION_CHILD"
)

// IsChild reports whether this process is a child of either suite.
func IsChild() bool { return os.Getenv(StoreEnv) != "" || os.Getenv(SessionEnv) != "" }

// ChildConfig returns what a child process needs to open the storage of
// harness h (its ChildConfig, see conformance.ChildHarness), or "".
func ChildConfig(h any) string {
	if c, ok := h.(interface{ ChildConfig() string }); ok {
		return c.ChildConfig()
	}
	return ""
}

// pattern returns the -test.run pattern that selects the test named root
// (a top-level test, or a subtest path) and nothing else.
func pattern(root string) string {
	parts := strings.Split(root, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// Command returns the command that re-executes this test binary to run
// the test named root again, with spec as JSON in the environment variable
// env; wrap, if not empty, is a command line (strace ...) the binary runs
// under. The child has no time limit of its own: the parent kills a child
// that stops making progress.
func Command(root, env string, spec any, wrap ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	args := append(wrap, exe, "-test.run="+pattern(root), "-test.count=1", "-test.timeout=0")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env+"="+string(raw))
	return cmd, nil
}
