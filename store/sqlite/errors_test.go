package sqlite_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sqlite"
)

// TestFileModes checks that Open creates the database, its -wal and its
// -shm owner-only, whatever the umask.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "modes.db")
	s, err := sqlite.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := store.Key{Server: "tcp://broker.test:1883", ClientID: "modes"}
	if err := s.Apply(t.Context(), k, store.Put(store.Record{Seq: 1, Packet: []byte("x")})); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s has mode %v, want -rw-------", filepath.Base(p), m)
		}
	}
}

// checkOpenError checks an error of Open: errors.Is finds want, the text
// holds every part of parts, and the path appears once.
func checkOpenError(t *testing.T, err error, path string, want error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("Open succeeded")
	}
	if !errors.Is(err, want) {
		t.Errorf("Open returned %q, want an error matching %v", err, want)
	}
	msg := err.Error()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("Open error %q does not say %q", msg, p)
		}
	}
	if n := strings.Count(msg, path); n != 1 {
		t.Errorf("Open error %q names the path %d times, want once", msg, n)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("MissingDirectory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "missing")
		path := filepath.Join(dir, "s.db")
		_, err := sqlite.Open(path, nil)
		checkOpenError(t, err, path, fs.ErrNotExist, "sqlite: open ", "directory "+dir+" does not exist")
	})
	t.Run("FileInPath", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(file, "s.db")
		_, err := sqlite.Open(path, nil)
		checkOpenError(t, err, path, syscall.ENOTDIR, "is not a directory")
	})
	t.Run("Directory", func(t *testing.T) {
		path := t.TempDir()
		_, err := sqlite.Open(path, nil)
		checkOpenError(t, err, path, syscall.EISDIR, "the path is a directory")
	})
	t.Run("NotADatabase", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "junk.db")
		if err := os.WriteFile(path, []byte(strings.Repeat("not a database ", 1000)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := sqlite.Open(path, nil)
		checkOpenError(t, err, path, store.ErrCorrupt, "not an SQLite database")
	})
	// Permissions, checked in a child process that runs as an unprivileged
	// user when the test runs as root (root may write anything).
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, dir, path string)
		parts []string
	}{
		{"ReadOnlyDirectory", func(t *testing.T, dir, path string) {
			chmod(t, dir, 0o555)
		}, []string{"no permission to create a file in directory"}},
		{"ReadOnlyFile", func(t *testing.T, dir, path string) {
			if err := os.WriteFile(path, nil, 0o400); err != nil {
				t.Fatal(err)
			}
			chmod(t, dir, 0o777)
		}, []string{"no permission to read and write the file"}},
		{"WALNotCreatable", func(t *testing.T, dir, path string) {
			// The database is writable, but its directory is not: SQLite
			// cannot create the -wal and says only "unable to open".
			if err := os.WriteFile(path, nil, 0o666); err != nil {
				t.Fatal(err)
			}
			chmod(t, path, 0o666)
			chmod(t, dir, 0o555)
		}, []string{"cannot create the -wal and -shm files beside it", "no permission to create a file in directory"}},
		{"SHMNotWritable", func(t *testing.T, dir, path string) {
			// The -shm of a database last used by another user.
			if err := os.WriteFile(path, nil, 0o666); err != nil {
				t.Fatal(err)
			}
			chmod(t, path, 0o666)
			if err := os.WriteFile(path+"-shm", nil, 0o600); err != nil {
				t.Fatal(err)
			}
			chmod(t, dir, 0o777)
		}, []string{"cannot open s.db-shm", "no permission to read and write the file"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			chmod(t, filepath.Dir(dir), 0o755)
			path := filepath.Join(dir, "s.db")
			c.setup(t, dir, path)
			t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
			out := openUnprivileged(t, path)
			if !strings.HasPrefix(out, "permission ") {
				t.Fatalf("Open as an unprivileged user: %q, want an error matching fs.ErrPermission", out)
			}
			msg := strings.TrimPrefix(out, "permission ")
			for _, p := range c.parts {
				if !strings.Contains(msg, p) {
					t.Errorf("Open error %q does not say %q", msg, p)
				}
			}
			if n := strings.Count(msg, path); n != 1 {
				t.Errorf("Open error %q names the path %d times, want once", msg, n)
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

const openDeniedMode = "open-denied"

func init() { helpers[openDeniedMode] = openDeniedChild }

// openDeniedChild opens the file at pathEnv and prints "ok", or
// "permission <error>" when the error matches fs.ErrPermission, or
// "other <error>".
func openDeniedChild() int {
	s, err := sqlite.Open(os.Getenv(pathEnv), nil)
	switch {
	case err == nil:
		_ = s.Close()
		fmt.Print("ok")
	case errors.Is(err, fs.ErrPermission):
		fmt.Print("permission ", err)
	default:
		fmt.Print("other ", err)
	}
	return 0
}

// openUnprivileged runs openDeniedChild as the test's own user or, for
// root, as nobody (a copy of the test binary that nobody can run).
func openUnprivileged(t *testing.T, path string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	if os.Geteuid() == 0 {
		bin := t.TempDir()
		chmod(t, filepath.Dir(bin), 0o755)
		chmod(t, bin, 0o755)
		data, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		copied := filepath.Join(bin, "sqlite.test")
		if err := os.WriteFile(copied, data, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(copied, "-test.run=^$")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Dir = bin
	}
	cmd.Env = append(os.Environ(), helperEnv+"="+openDeniedMode, pathEnv+"="+path, "HOME=/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	return string(out)
}
