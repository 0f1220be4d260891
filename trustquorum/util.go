package trustquorum

import (
	"cmp"
	"maps"
	"slices"
)

// sortedKeys gives map keys in a fixed order. The node never ranges over a
// map directly: Go randomises map order, and the simulator's replay depends
// on the node doing the same thing every time.
func sortedKeys[K interface {
	comparable
	ordered[K]
}, V any](m map[K]V) []K {
	return slices.SortedFunc(maps.Keys(m), func(a, b K) int { return a.cmpTo(b) })
}

type ordered[K any] interface{ cmpTo(K) int }

func (e Epoch) cmpTo(o Epoch) int             { return cmp.Compare(e, o) }
func (b BaseboardID) cmpTo(o BaseboardID) int { return b.Compare(o) }
