package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
)

// DamageFile damages the SQLite file at path behind the store's back, for
// the conformance suite's Damage checks (a test-only helper: it exists in
// the test binary alone). Truncate cuts the file to a third of its length;
// FlipBytes rewrites the largest record of session k with bytes flipped,
// as a bad sector inside it would leave it; DropKey deletes one of k's
// rows.
func DamageFile(ctx context.Context, path string, k store.Key, kind conformance.DamageKind) error {
	if kind == conformance.Truncate {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		return os.Truncate(path, fi.Size()/3+123)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer db.Close()
	const where = `server = CAST(?1 AS BLOB) AND client_id = CAST(?2 AS BLOB)`
	var seq int64
	var val []byte
	err = db.QueryRowContext(ctx, `SELECT seq, value FROM tether_records WHERE `+where+` ORDER BY length(value) DESC LIMIT 1`,
		k.Server, k.ClientID).Scan(&seq, &val)
	if err != nil {
		return fmt.Errorf("damage: session %s: %w", k, err)
	}
	switch kind {
	case conformance.FlipBytes:
		val[len(val)/2] ^= 0xff
		val[len(val)/2+1] ^= 0x0f
		_, err = db.ExecContext(ctx, `UPDATE tether_records SET value = ?3 WHERE `+where+` AND seq = ?4`, k.Server, k.ClientID, val, seq)
	case conformance.DropKey:
		_, err = db.ExecContext(ctx, `DELETE FROM tether_records WHERE `+where+` AND seq = ?3`, k.Server, k.ClientID, seq)
	default:
		return conformance.ErrCannotDamage
	}
	return err
}
