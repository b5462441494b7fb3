//go:build !linux

package conntrack

import "unsafe"

// prefault does nothing outside Linux: pages fault in as they are written.
func prefault(unsafe.Pointer, uintptr) {}
