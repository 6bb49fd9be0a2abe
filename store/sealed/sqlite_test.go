package sealed_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/sealed"
	"github.com/tethermq/tether/store/sqlite"
)

// openSealedSQLite opens the sealed store a child configuration names:
// "mode:path". The SQLite store is a Lister, an Owner and a Transactor,
// so the sealed store must be all three.
func openSealedSQLite(config string) (store.SessionStore, error) {
	mode, path, _ := strings.Cut(config, ":")
	nameKey, err := modeOf(mode)
	if err != nil {
		return nil, err
	}
	const innerMax = store.MaxPacketLen + sealed.Overhead
	inner, err := sqlite.Open(path, &sqlite.Options{MaxPacketLen: innerMax})
	if err != nil {
		return nil, err
	}
	// The SQLite store does not tell its limit (bolt's MaxPacketLen
	// method does), so the sealed store is told.
	o := opts(nameKey)
	o.InnerMaxPacketLen = innerMax
	s, err := sealed.New(inner, o)
	if err != nil {
		_ = inner.Close()
	}
	return s, err
}

// TestConformanceSQLite runs the store suite on a sealed SQLite file, whose
// handles share the file and its leases. (The takeover check is skipped:
// cutting one handle off from the file needs the SQLite package's own
// test hook.)
func TestConformanceSQLite(t *testing.T) {
	for _, m := range durableModes {
		t.Run(m.name, func(t *testing.T) {
			conformance.Run(t, func(ctx context.Context, t testing.TB) (conformance.Harness, error) {
				config := m.name + ":" + filepath.Join(t.TempDir(), "sessions.db")
				return &conformance.HarnessFuncs{
					Make:  func(context.Context) (store.SessionStore, error) { return openSealedSQLite(config) },
					Caps:  conformance.Capabilities{Durable: true, SharedHandles: true},
					Child: config,
					Damage: func(ctx context.Context, k store.Key, kind conformance.DamageKind) error {
						return damageThrough(ctx, func() (store.SessionStore, error) { return openSealedSQLite(config) }, k, kind)
					},
				}, nil
			}, conformance.Options{
				OpenChild: func(_ context.Context, config string) (store.SessionStore, error) { return openSealedSQLite(config) },
			})
		})
	}
}
