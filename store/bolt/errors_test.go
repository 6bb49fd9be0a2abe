package bolt_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/bolt"
)

// TestOpenErrors checks the text of Open's errors: the path once, the
// cause said plainly, and errors.Is still finding it.
func TestOpenErrors(t *testing.T) {
	junk := func(t *testing.T, path string) {
		b := make([]byte, 64<<10)
		for i := range b {
			b[i] = byte(i * 7)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name  string
		path  func(t *testing.T) string
		want  error
		parts []string
	}{
		{"MissingDirectory", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "missing", "s.db")
		}, fs.ErrNotExist, []string{"/missing does not exist"}},
		{"FileInPath", func(t *testing.T) string {
			file := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(file, "s.db")
		}, syscall.ENOTDIR, []string{"is not a directory"}},
		{"Directory", func(t *testing.T) string { return t.TempDir() }, syscall.EISDIR, []string{"the path is a directory"}},
		{"NotABoltFile", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "junk.db")
			junk(t, path)
			return path
		}, store.ErrCorrupt, []string{"not a bolt database"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := c.path(t)
			s, err := bolt.Open(path, &bolt.Options{Timeout: time.Second})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, c.want) {
				t.Errorf("Open returned %q, want an error matching %v", err, c.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "bolt: open "+path+": ") {
				t.Errorf("Open error %q does not start with the operation and the path", msg)
			}
			if n := strings.Count(msg, path); n != 1 {
				t.Errorf("Open error %q names the path %d times, want once", msg, n)
			}
			for _, p := range c.parts {
				if !strings.Contains(msg, p) {
					t.Errorf("Open error %q does not say %q", msg, p)
				}
			}
			if strings.Contains(msg, "corrupt record") && c.want == store.ErrCorrupt && !strings.Contains(msg, "not a bolt database") {
				t.Errorf("Open error %q calls a whole file a corrupt record", msg)
			}
		})
	}
}
