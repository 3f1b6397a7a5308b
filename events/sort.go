package events

import (
	"io"
	"slices"
)

var ioEOF = io.EOF

func sortStrings(s []string) { slices.Sort(s) }

// SortedUnits returns the keys of m in byte order.
func SortedUnits[V any](m map[string]V) []string { return sortedKeys(m) }
