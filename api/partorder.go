package api

import (
	"sort"

	"github.com/google/uuid"
)

// PartsAfterComposites orders a repo's artifacts as given, except that the
// parts of a composite artifact follow it, in path order, so that what a
// host image or the control plane was expanded into reads right below it
// (repo show, the repo page). of says, for an artifact, its own id and,
// when it is a part, its composite's id and its path in it. A part whose
// composite is not in arts stays where it is.
func PartsAfterComposites[T any](arts []T, of func(T) (id, composite uuid.UUID, path string, isPart bool)) []T {
	type part struct {
		a    T
		path string
	}
	parts := map[uuid.UUID][]part{}
	present := map[uuid.UUID]bool{}
	for _, a := range arts {
		id, comp, path, isPart := of(a)
		present[id] = true
		if isPart {
			parts[comp] = append(parts[comp], part{a, path})
		}
	}
	out := make([]T, 0, len(arts))
	for _, a := range arts {
		id, comp, _, isPart := of(a)
		if isPart && present[comp] {
			continue
		}
		out = append(out, a)
		ps := parts[id]
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].path < ps[j].path })
		for _, p := range ps {
			out = append(out, p.a)
		}
	}
	return out
}
