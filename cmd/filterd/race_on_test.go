//go:build race

package main

// raceEnabled: the tests run with -race, so TestMain builds the filterd
// binary of the kernel tests with -race too.
const raceEnabled = true
