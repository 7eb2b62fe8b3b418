//go:build race

package testenv

// raceEnabled is true when this package is built with -race, so that
// BuildBinary builds the relay with the race detector too.
const raceEnabled = true
