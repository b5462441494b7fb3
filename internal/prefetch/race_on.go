//go:build race

package prefetch

// Racy is false in race-enabled builds: see race_off.go.
const Racy = false
