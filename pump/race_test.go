//go:build race

package pump

// raceEnabled: the race detector slows every memory access by an order of
// magnitude, so the long copies shrink under it.
const raceEnabled = true
