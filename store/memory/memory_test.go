package memory_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/tethermq/tether/conformance"
	"github.com/tethermq/tether/store"
	"github.com/tethermq/tether/store/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newHarness returns one memory store for every MakeStore: it is the
// storage, and it ends with Close, so the harness is not Durable.
func newHarness(ctx context.Context, t testing.TB) (conformance.Harness, error) {
	s := memory.New()
	return &conformance.HarnessFuncs{
		Make: func(context.Context) (store.SessionStore, error) { return s, nil },
	}, nil
}

func TestConformance(t *testing.T) { conformance.Run(t, newHarness) }

func BenchmarkConformance(b *testing.B) { conformance.Bench(b, newHarness) }
