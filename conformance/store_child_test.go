package conformance

import (
	"strings"
	"testing"
)

// TestSyncsPerApply reads strace output as -f writes it: pids first,
// calls cut in two by another thread, writes to standard output left out.
func TestSyncsPerApply(t *testing.T) {
	const m = "/tmp/x/tether-apply"
	trace := strings.Join([]string{
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-begin-0", F_OK) = -1 ENOENT (No such file or directory)`,
		`101 pwrite64(7, "\0\0"..., 4096, 8192 <unfinished ...>`,
		`100 write(1, "log line\n", 9) = 9`,
		`101 <... pwrite64 resumed>) = 4096`,
		`101 fdatasync(7 <unfinished ...>`,
		`101 <... fdatasync resumed>) = 0`,
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-end-0", F_OK) = -1 ENOENT (No such file or directory)`,
		// Apply 1 syncs, then writes again and returns.
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-begin-1", F_OK) = -1 ENOENT (No such file or directory)`,
		`100 pwrite64(7, "\0"..., 4096, 0) = 4096`,
		`100 fsync(7) = 0`,
		`100 pwrite64(7, "\0"..., 4096, 4096) = 4096`,
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-end-1", F_OK) = -1 ENOENT (No such file or directory)`,
		// Apply 2 never syncs; a sync after its end does not count.
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-begin-2", F_OK) = -1 ENOENT (No such file or directory)`,
		`100 write(8, "\0"..., 100) = 100`,
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-end-2", F_OK) = -1 ENOENT (No such file or directory)`,
		`100 fsync(8) = 0`,
	}, "\n")
	got, err := syncsPerApply(trace, m, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []applyRound{{syncs: 1, writes: 1, syncedLast: true}, {syncs: 1, writes: 2}, {writes: 1}}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Apply %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := syncsPerApply(trace, m, 4); err == nil {
		t.Error("a trace without the markers of Apply 4 was accepted")
	}
}
