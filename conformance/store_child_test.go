package conformance

import (
	"strings"
	"testing"
)

// TestSyncsPerApply reads strace output as -f writes it: pids first,
// calls cut in two by another thread, writes to standard output and to
// what is not a file left out, with and without the paths of -y.
func TestSyncsPerApply(t *testing.T) {
	const m = "/tmp/x/tether-apply"
	trace := strings.Join([]string{
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-begin-0", F_OK) = -1 ENOENT (No such file or directory)`,
		`101 pwrite64(7, "\0\0"..., 4096, 8192 <unfinished ...>`,
		`100 write(1, "log line\n", 9) = 9`,
		`101 <... pwrite64 resumed>) = 4096`,
		`101 fdatasync(7 <unfinished ...>`,
		`101 <... fdatasync resumed>) = 0`,
		`102 write(4<anon_inode:[eventfd]>, "\1\0\0\0\0\0\0\0", 8) = 8`,
		`102 write(5<pipe:[4242]>, "\0", 1) = 1`,
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-end-0", F_OK) = -1 ENOENT (No such file or directory)`,
		// Apply 1 syncs, then writes again and returns.
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-begin-1", F_OK) = -1 ENOENT (No such file or directory)`,
		`100 pwrite64(7, "\0"..., 4096, 0) = 4096`,
		`100 fsync(7) = 0`,
		`100 pwrite64(7, "\0"..., 4096, 4096) = 4096`,
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-end-1", F_OK) = -1 ENOENT (No such file or directory)`,
		// Apply 2 never syncs; a sync after its end does not count.
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-begin-2", F_OK) = -1 ENOENT (No such file or directory)`,
		`100 write(8</tmp/x/db-wal>, "\0"..., 100) = 100`,
		`100 faccessat(AT_FDCWD, "/tmp/x/tether-apply-end-2", F_OK) = -1 ENOENT (No such file or directory)`,
		`100 fsync(8) = 0`,
	}, "\n")
	got, err := syncsPerApply(trace, m, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []applyRound{{syncs: 1, writes: 1, syncedLast: true}, {syncs: 1, writes: 2}, {writes: 1}}
	unsynced := []int{0, 1, 1}
	for i := range want {
		g := got[i]
		if g.syncs != want[i].syncs || g.writes != want[i].writes || g.syncedLast != want[i].syncedLast || len(g.unsynced) != unsynced[i] {
			t.Errorf("Apply %d: got %+v, want %+v with %d unsynced writes", i, g, want[i], unsynced[i])
		}
	}
	if w := got[2].unsynced; len(w) != 1 || !strings.Contains(w[0], "db-wal") {
		t.Errorf("Apply 3: unsynced writes %q, want the write to db-wal", w)
	}
	if _, err := syncsPerApply(trace, m, 4); err == nil {
		t.Error("a trace without the markers of Apply 4 was accepted")
	}
}
