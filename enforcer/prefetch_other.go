//go:build !amd64

package enforcer

// prefetch does nothing where tally has no assembly for it.
func prefetch(addr uintptr) {}
