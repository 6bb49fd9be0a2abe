package conformance

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tethermq/tether/store"
)

// Harness gives the suite handles on one piece of fresh storage: a file in
// a temporary directory, a database on a test server, a map in memory.
type Harness interface {
	// MakeStore opens a handle on the harness's storage. Every call returns
	// a handle on the same storage: what one handle wrote, a handle made
	// later sees (after the first is closed, for a Durable harness; at
	// once, for one with SharedHandles).
	MakeStore(ctx context.Context) (store.SessionStore, error)
	// Capabilities declares what the backend can do, so the suite skips the
	// checks that do not apply.
	Capabilities() Capabilities
	// Close releases the storage. The suite closes every handle it made
	// before it calls Close.
	Close()
}

// Capabilities declares the optional behaviour a backend offers. The zero
// value describes a store that keeps data only as long as its handle is open,
// accepts packets of store.MaxPacketLen bytes, and allows one open handle at
// a time: the memory store.
type Capabilities struct {
	// Durable means the data written through a handle survives its Close
	// and the end of the process: a handle made afterwards by MakeStore, or
	// by another process through ChildHarness, loads it. File and server
	// backends are durable; the memory store is not. A Durable harness gets
	// the Reopen/, Damage/ and process-kill checks, and must implement
	// ChildHarness for the last.
	Durable bool
	// SharedHandles means several handles made by MakeStore may be open at
	// once on the same storage, each closed on its own, and see each
	// other's writes (several processes on one file, several clients of one
	// server). The ownership checks need it, since they need two holders.
	SharedHandles bool
	// MaxPacketLen is the largest Packet the backend documents that it
	// accepts; a packet one byte larger must be refused with
	// store.ErrTooLarge. Zero means store.MaxPacketLen.
	MaxPacketLen int
	// ServerDurability means that what makes an Apply durable is a server
	// the handle talks to (Redis and its appendfsync and replication
	// policy), not the process's own writes to a file. Store/SyncOnApply,
	// which counts the fsync calls of the process around each Apply, is
	// then skipped: the server's policy is the backend's documentation to
	// state, and no client-side trace can show it.
	ServerDurability bool
}

// maxPacket returns the packet limit the suite checks against.
func (c Capabilities) maxPacket() int {
	if c.MaxPacketLen <= 0 {
		return store.MaxPacketLen
	}
	return c.MaxPacketLen
}

// HarnessMaker prepares fresh storage for one check and returns a harness on
// it. It is called once per check, so checks never see each other's data.
// Its testing.TB is the check's own: t.TempDir and t.Cleanup are scoped to
// the check, and benchmarks receive their *testing.B.
type HarnessMaker func(ctx context.Context, t testing.TB) (Harness, error)

// Partitioner is implemented by harnesses of shared backends (store.Owner)
// that can cut one handle off from the storage, as a network partition or a
// hung process would. The suite uses it to let a lease lapse while its holder
// still runs; without it, the takeover check is skipped.
type Partitioner interface {
	// Partition stops every exchange of handle s with the storage until
	// heal is called. Operations of s in between fail or wait; none
	// succeeds.
	Partition(s store.SessionStore) (heal func())
}

// ChildHarness is implemented by harnesses whose storage a child process
// can open: a file path, a Redis address and key prefix. The checks that
// kill or trace a process (Store/KillAfterApply, Store/SyncOnApply, the
// session suite's Crash) pass ChildConfig to a re-executed test binary,
// which hands it to Options.OpenChild (sessiontest.Options.OpenChild). A
// Durable harness must offer it: the suite fails those checks, naming
// what is missing, when ChildConfig is empty or OpenChild is nil.
type ChildHarness interface {
	Harness
	// ChildConfig returns everything another process needs to open a
	// handle on the harness's storage, as one string; "" means it cannot.
	ChildConfig() string
}

// DamageKind is a way to damage stored data, for Damager.
type DamageKind int

const (
	// Truncate cuts the storage that holds a session short, as a torn
	// write, a full disk or a copy stopped half way leaves it: a file is
	// truncated inside its data (sessions that share the file may go with
	// it), a value on a server is shortened.
	Truncate DamageKind = iota + 1
	// FlipBytes changes bytes inside one stored record of the session and
	// nothing else, as a bad sector or a stray write would.
	FlipBytes
	// DropKey removes one piece of the session's stored data and leaves
	// the rest: a record's value without its index entry, an index
	// without its values, one row or key, as a partial restore, an
	// eviction or a hand edit leaves it.
	DropKey
)

func (d DamageKind) String() string {
	switch d {
	case Truncate:
		return "Truncate"
	case FlipBytes:
		return "FlipBytes"
	case DropKey:
		return "DropKey"
	}
	return fmt.Sprintf("DamageKind(%d)", int(d))
}

// ErrCannotDamage is returned by Damager.Damage for a kind of damage that
// the backend's storage cannot suffer; the check of that kind is skipped.
var ErrCannotDamage = errors.New("conformance: this damage does not apply to the storage")

// Damager is implemented by harnesses that can damage their own storage
// behind the store's back, so that the Damage/... checks can require a
// clean answer to it: a *store.CorruptError or another error, never a
// panic, never a wrong record returned as good, never the loss of the
// sessions the damage did not touch. The suite closes every handle before
// it calls Damage and opens new ones after. Without it the Damage checks
// are skipped.
type Damager interface {
	// Damage damages the stored data of session k (which holds records)
	// as kind says. It returns ErrCannotDamage for a kind that does not
	// apply to the storage.
	Damage(ctx context.Context, k store.Key, kind DamageKind) error
}

// HarnessFuncs adapts plain functions to Harness, which is all most
// backends need.
type HarnessFuncs struct {
	// Make opens a handle on the storage; it is MakeStore.
	Make func(ctx context.Context) (store.SessionStore, error)
	// Caps is returned by Capabilities.
	Caps Capabilities
	// Cleanup, if set, is called by Close.
	Cleanup func()
	// Child is returned by ChildConfig: what a child process needs to
	// open the same storage through Options.OpenChild (a file's path, a
	// server's address and key prefix). A Durable harness sets it.
	Child string
	// Damage, if set, is Damager.Damage: it enables the Damage checks.
	Damage func(ctx context.Context, k store.Key, kind DamageKind) error
}

var (
	_ Harness      = (*HarnessFuncs)(nil)
	_ ChildHarness = (*HarnessFuncs)(nil)
)

// ChildConfig returns h.Child.
func (h *HarnessFuncs) ChildConfig() string { return h.Child }

// damager returns h's damage function as a Damager, or nil.
func (h *HarnessFuncs) damager() Damager {
	if h.Damage == nil {
		return nil
	}
	return damageFunc(h.Damage)
}

type damageFunc func(ctx context.Context, k store.Key, kind DamageKind) error

func (f damageFunc) Damage(ctx context.Context, k store.Key, kind DamageKind) error {
	return f(ctx, k, kind)
}

// damagerOrSkip returns the harness's Damager, or skips the check: without one,
// or without durable storage to damage behind the store's back.
func (e *env) damagerOrSkip() Damager {
	d := damagerOf(e.h)
	if d == nil {
		e.t.Skip("the harness does not implement conformance.Damager (HarnessFuncs.Damage)")
	}
	if !e.caps.Durable {
		e.t.Skip("the harness is not Durable: there is no storage to damage behind the store's back")
	}
	return d
}

// damagerOf returns the Damager of h, or nil.
func damagerOf(h Harness) Damager {
	if f, ok := h.(interface{ damager() Damager }); ok {
		if d := f.damager(); d != nil {
			return d
		}
	}
	if d, ok := h.(Damager); ok {
		return d
	}
	return nil
}

// MakeStore calls h.Make.
func (h *HarnessFuncs) MakeStore(ctx context.Context) (store.SessionStore, error) {
	if h.Make == nil {
		return nil, errors.New("conformance: HarnessFuncs.Make is nil")
	}
	return h.Make(ctx)
}

// Capabilities returns h.Caps.
func (h *HarnessFuncs) Capabilities() Capabilities { return h.Caps }

// Close calls h.Cleanup, if set.
func (h *HarnessFuncs) Close() {
	if h.Cleanup != nil {
		h.Cleanup()
	}
}
