//go:build race

package ruleset

// raceEnabled shortens the largest flood tests under the race detector,
// which makes each map and lock operation about twenty times slower.
const raceEnabled = true
