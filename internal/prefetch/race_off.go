//go:build !race

package prefetch

// Racy reports whether a prefetching step may read, without the lock its
// writers hold, a word it only uses to compute the next address to
// prefetch (a bucket's first-entry pointer). Such a read can see a stale
// value, which makes the hint useless but never wrong; the race detector
// would still report it, so race-enabled builds skip those reads.
const Racy = true
