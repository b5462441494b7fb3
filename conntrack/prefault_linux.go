package conntrack

import (
	"syscall"
	"unsafe"
)

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14): fault the range in,
// writable, in one system call.
const madvPopulateWrite = 23

// prefault asks the kernel to map the n bytes at p (page-aligned memory
// from the Go heap) at once, instead of one page fault per 4 KiB page as the
// entries are first written: a fresh process's table then costs one system
// call per block of entries instead of a dozen faults, each a trip through
// the kernel's exception path. Older kernels refuse the advice (EINVAL) and
// the pages fault in as before; memory already mapped is left as it is.
func prefault(p unsafe.Pointer, n uintptr) {
	_ = syscall.Madvise(unsafe.Slice((*byte)(p), n), madvPopulateWrite)
}
