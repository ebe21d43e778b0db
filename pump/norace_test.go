//go:build !race

package pump

// raceEnabled: see race_test.go.
const raceEnabled = false
