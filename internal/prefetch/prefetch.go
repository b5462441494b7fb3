// Package prefetch asks the CPU to start loading memory that a later step
// will read, so that the cache misses of a batch of packets overlap instead
// of following one another (a miss to memory costs a few hundred
// nanoseconds on a virtual machine, as long as handling a whole packet).
//
// A prefetch is a hint: it never faults, changes no memory and may be
// ignored, so it is correct whatever address it is given.
package prefetch

import "unsafe"

// Line asks for the cache line holding p.
func Line(p unsafe.Pointer) { line(p) }
