package enforcer

// prefetch asks the CPU to bring the cache line at addr in, without
// waiting for it: a hint, which never faults.
//
//go:noescape
func prefetch(addr uintptr)
