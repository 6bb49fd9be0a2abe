package conformance

import (
	"context"
	"errors"
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
	// Durable means the data written through a handle survives its Close: a
	// handle made afterwards by MakeStore loads it. File and server backends
	// are durable; the memory store is not.
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

// HarnessFuncs adapts plain functions to Harness, which is all most
// backends need.
type HarnessFuncs struct {
	// Make opens a handle on the storage; it is MakeStore.
	Make func(ctx context.Context) (store.SessionStore, error)
	// Caps is returned by Capabilities.
	Caps Capabilities
	// Cleanup, if set, is called by Close.
	Cleanup func()
}

var _ Harness = (*HarnessFuncs)(nil)

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
