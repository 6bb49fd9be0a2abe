package sim

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

var (
	simSeed     = flag.Uint64("sim.seed", 0, "run only this seed (replay)")
	simSeeds    = flag.Int("sim.seeds", 300, "seeds to run when sim.duration is 0")
	simSteps    = flag.Int("sim.steps", 3000, "chaos steps per seed, before the drain")
	simDuration = flag.Duration("sim.duration", 0, "run seeds for this long (make sim)")
	simTrace    = flag.Int("sim.trace", 400, "trace events to print for a failing seed")
)

// TestSimulation runs the session engine against the broker, network and
// store models under cuts, crashes, broker restarts, store failures and
// late acknowledgements, seed after seed, checking the invariants after
// every step and at rest. A failing seed is shrunk to the fewest chaos
// steps that still fail and printed with its trace; replay it with
// -sim.seed.
func TestSimulation(t *testing.T) {
	start := time.Now()
	var seeds, steps, overlapped, failedApplied int
	run := func(seed uint64) bool {
		st, err := Run(Options{Seed: seed, Steps: *simSteps})
		seeds++
		steps += st.Steps
		overlapped += st.Overlapped
		failedApplied += st.FailedApplied
		if err == nil {
			return true
		}
		report(t, seed, *simSteps, err)
		return false
	}
	switch {
	case *simSeed != 0:
		run(*simSeed)
	case *simDuration > 0:
		for seed := uint64(time.Now().UnixNano()); time.Since(start) < *simDuration; seed++ {
			if !run(seed) {
				break
			}
		}
	default:
		n := *simSeeds
		if testing.Short() || raceEnabled {
			n /= 3
		}
		for seed := uint64(1); seed <= uint64(n); seed++ {
			if !run(seed) {
				break
			}
		}
	}
	el := time.Since(start)
	t.Logf("%d seeds, %d steps in %v: %.0f steps/s, %.1f seeds/s; %d batches begun behind others, %d failed yet applied",
		seeds, steps, el.Round(time.Millisecond), float64(steps)/el.Seconds(), float64(seeds)/el.Seconds(), overlapped, failedApplied)
}

// report shrinks a failing seed to the fewest chaos steps that still fail,
// and prints that run's trace.
func report(t *testing.T, seed uint64, steps int, err error) {
	t.Helper()
	lo, hi := 0, steps // fails at hi
	for lo+1 < hi {
		mid := (lo + hi) / 2
		if _, e := Run(Options{Seed: seed, Steps: mid}); e != nil {
			hi, err = mid, e
		} else {
			lo = mid
		}
	}
	_, e := Run(Options{Seed: seed, Steps: hi, Trace: true})
	var f *Failure
	if errors.As(e, &f) {
		tr := f.Trace
		if len(tr) > *simTrace {
			tr = tr[len(tr)-*simTrace:]
		}
		t.Errorf("%v\nshrunk to %d chaos steps; replay: go test ./client/internal/sim -run TestSimulation -sim.seed=%d -sim.steps=%d\ntrace (last %d events):\n%s",
			f, hi, seed, hi, len(tr), strings.Join(tr, "\n"))
		return
	}
	t.Errorf("seed %d: %v (the traced replay gave %v)", seed, err, e)
}
