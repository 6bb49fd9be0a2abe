package bolt

import (
	"context"
	"fmt"
	"os"

	"go.etcd.io/bbolt"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
)

// DamageFile damages the bolt file at path behind the store's back, for the
// conformance suite's Damage checks (a test-only helper: it exists in the
// test binary alone). Truncate cuts the file to a third of its length; FlipBytes
// rewrites the largest record of session k with bytes flipped, as a bad
// sector inside it would leave it; DropKey removes one of k's record keys.
func DamageFile(_ context.Context, path string, k store.Key, kind conformance.DamageKind) error {
	if kind == conformance.Truncate {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		return os.Truncate(path, fi.Size()/3+123)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bbolt.Tx) error {
		all, err := sessions(tx)
		if err != nil {
			return err
		}
		name, _ := bucketName(k)
		b := all.Bucket(name)
		if b == nil {
			return fmt.Errorf("damage: session %s has no bucket", k)
		}
		// The largest record, so that the damage sits inside a packet.
		var key, val []byte
		c := b.Cursor()
		for kk, v := c.First(); kk != nil; kk, v = c.Next() {
			if len(kk) == 8 && v != nil && len(v) > len(val) {
				key, val = append([]byte(nil), kk...), append([]byte(nil), v...)
			}
		}
		if key == nil {
			return fmt.Errorf("damage: session %s holds no record", k)
		}
		switch kind {
		case conformance.FlipBytes:
			val[len(val)/2] ^= 0xff
			val[len(val)/2+1] ^= 0x0f
			return b.Put(key, val)
		case conformance.DropKey:
			return b.Delete(key)
		}
		return conformance.ErrCannotDamage
	})
}
