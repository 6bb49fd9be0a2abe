package conformance_test

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/conformance/sessiontest"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

// brokenEnv selects, in a child process, which broken store TestBroken runs
// the suite against.
const brokenEnv = "TETHER_CONFORMANCE_BROKEN"

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// broken wraps a memory store with one deliberate bug.
type broken struct {
	store.SessionStore
	bug string
}

func (b *broken) key(k store.Key) store.Key {
	if b.bug == "concat" {
		// The naive name a careless backend builds.
		return store.Key{Server: k.Server + ":" + k.ClientID}
	}
	return k
}

func (b *broken) ctx(ctx context.Context) context.Context {
	if b.bug == "ignorectx" {
		return context.Background()
	}
	return ctx
}

func (b *broken) Load(ctx context.Context, k store.Key) ([]store.Record, error) {
	if b.bug == "hang" {
		select {} // a deadlock that ignores its context
	}
	recs, err := b.SessionStore.Load(b.ctx(ctx), b.key(k))
	if b.bug == "unsorted" {
		slices.Reverse(recs)
	}
	return recs, err
}

func (b *broken) Apply(ctx context.Context, k store.Key, ops ...store.Op) error {
	if b.bug == "nonatomic" {
		for _, op := range ops {
			if err := b.SessionStore.Apply(ctx, k, op); err != nil {
				return err
			}
		}
		return nil
	}
	return b.SessionStore.Apply(b.ctx(ctx), b.key(k), ops...)
}

func (b *broken) Clear(ctx context.Context, k store.Key) error {
	return b.SessionStore.Clear(b.ctx(ctx), b.key(k))
}

func (b *broken) Close() error {
	if b.bug == "noclose" {
		return nil
	}
	return b.SessionStore.Close()
}

func newHarness(bug string) conformance.HarnessMaker {
	return func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
		var s store.SessionStore = memory.New()
		if bug != "" {
			s = &broken{SessionStore: s, bug: bug}
		}
		return &conformance.HarnessFuncs{
			Make: func(context.Context) (store.SessionStore, error) { return s, nil },
		}, nil
	}
}

// TestMemory runs the suite against a correct store: it must pass.
func TestMemory(t *testing.T) {
	if bug := os.Getenv(brokenEnv); bug != "" {
		t.Skip("running as the child of TestBroken")
	}
	conformance.Run(t, newHarness(""))
}

// TestBrokenChild is what TestBroken runs in a child process.
func TestBrokenChild(t *testing.T) {
	bug := os.Getenv(brokenEnv)
	if bug == "" {
		t.Skip("only run as the child of TestBroken")
	}
	if strings.HasPrefix(bug, "owner-") {
		conformance.Run(t, newSharedHarnessWith(bug))
		return
	}
	if bug == "session-nochild" {
		sessiontest.Run(t, newFileHarness("nochild"), sessiontest.Options{})
		return
	}
	if fileBug, ok := strings.CutPrefix(bug, "file-"); ok {
		conformance.Run(t, newFileHarness(fileBug), fileOptions(fileBug))
		return
	}
	conformance.Run(t, newHarness(bug))
}

// childFails runs the check named check of the child test child, in a
// child process with env set to bug (and extraEnv), and requires it to
// fail with want in its output and, when failLine is set, a FAIL line for
// the check.
func childFails(t *testing.T, exe, child, env, bug, check, want string, failLine bool, extraEnv ...string) {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^"+child+"$/^"+strings.ReplaceAll(check, "/", "$/^")+"$", "-test.v")
	cmd.Env = append(append(os.Environ(), env+"="+bug), extraEnv...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the suite passed bug %q; %s should fail\n%s", bug, check, out)
	}
	if !strings.Contains(string(out), want) {
		t.Fatalf("with bug %q, the output does not say %q:\n%s", bug, want, out)
	}
	if failLine && !strings.Contains(string(out), "--- FAIL: "+child+"/"+check) {
		t.Fatalf("with bug %q, %s did not fail:\n%s", bug, check, out)
	}
}

// brokenCase is a deliberate bug, the check that must catch it, and what
// the check's failure must say.
type brokenCase struct{ bug, check, want string }

// brokenChecks runs each case's check in a child process (the test child,
// with env naming the bug) and fails unless the check fails as it must.
func brokenChecks(t *testing.T, child, env string, cases []brokenCase) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs child processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.bug+"/"+c.check, func(t *testing.T) {
			childFails(t, exe, child, env, c.bug, c.check, c.want, true)
		})
	}
}

// TestBroken checks that the suite catches each deliberate bug: the check
// named for it must fail.
func TestBroken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ bug, check, want string }{
		{"concat", "Store/KeyIsolation", "Load("},
		{"unsorted", "Store/OrderBySeq", "has Seq"},
		{"nonatomic", "Store/UnknownOpKind", "record 0 has Seq 2, want 1"},
		{"nonatomic", "Store/TooLarge", "got 1 records, want 1"},
		{"noclose", "Store/Closed", "want store.ErrClosed"},
		{"ignorectx", "Store/ContextCancelled", "want context canceled"},
		{"hang", "Store/EmptyLoad", "conformance: TestBrokenChild/Store/EmptyLoad still running"},
		{"owner-nofence", "Owner/NonHolderRefused", "Apply by a non-holder returned <nil>"},
		{"owner-nofence", "Owner/TakeoverAfterTTL", "Apply by the old holder after takeover returned <nil>"},
		{"owner-sametoken", "Owner/TokenGrows", "not above the previous"},
		{"owner-nolost", "Owner/TakeoverAfterTTL", "closing the old holder's Lost() did not happen"},
		// The four bugs that passed the suite before it reopened, damaged
		// and traced (see filestore_test.go).
		{"file-keyjoin", "Reopen/KeyIsolation", "Load("},
		{"file-len16", "Reopen/RecordSizes", "(seq 4) has a 0-byte Packet"},
		{"file-trustlen", "Damage/Truncate", "panicked on damaged storage"},
		{"file-nofsync", "Store/SyncOnApply", "no fsync/fdatasync before it returned"},
		{"file-writebehind", "Store/KillAfterApply", "each acknowledged by Apply, and a SIGKILL at once"},
		// A Durable harness that gives a child no way in fails loudly.
		{"file-nochild", "Store/KillAfterApply", "gives a child process no way to open its storage"},
		{"session-nochild", "Crash", "gives a child process no way to open its storage"},
	} {
		t.Run(c.bug+"/"+c.check, func(t *testing.T) {
			if c.bug == "hang" {
				// A short limit, so the watchdog fires soon; it ends the
				// binary, so there is no FAIL line.
				childFails(t, exe, "TestBrokenChild", brokenEnv, c.bug, c.check, c.want, false, conformance.TimeoutEnv+"=500ms")
				return
			}
			childFails(t, exe, "TestBrokenChild", brokenEnv, c.bug, c.check, c.want, true)
		})
	}
}
