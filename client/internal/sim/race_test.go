//go:build race

package sim

// The simulation runs on one goroutine: the race detector only slows it.
const raceEnabled = true
