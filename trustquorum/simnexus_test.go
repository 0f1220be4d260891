package trustquorum_test

import (
	"slices"

	tq "github.com/rackplane/rackplane/trustquorum"
)

// nexusModel is a small model of Nexus's trust-quorum orchestration (design
// §6): it records prepare acks from the coordinator's status, decides the
// commit at K+Z acks, sends Commit or PrepareAndCommit, aborts when the
// coordinator is gone, and supersedes partially committed epochs.
type nexusModel struct {
	rack      tq.RackID
	nextEpoch tq.Epoch
	configs   []*nexusConfig
	// lrtqMembers is set for a rack that started on LRTQ.
	lrtqMembers []tq.BaseboardID
	aborts      int
	superseded  int
}

type nexusState string

const (
	nxPreparing          nexusState = "preparing"
	nxCommitting         nexusState = "committing"
	nxCommitted          nexusState = "committed"
	nxCommittedPartially nexusState = "committed_partially"
	nxAborted            nexusState = "aborted"
)

type nexusConfig struct {
	epoch         tq.Epoch
	lastCommitted tq.Epoch
	members       []tq.BaseboardID
	threshold     uint8
	z             int
	coordinator   tq.BaseboardID
	upgrade       bool
	state         nexusState
	config        *tq.Configuration
	prepared      map[tq.BaseboardID]bool
	committed     map[tq.BaseboardID]bool
}

// commitTolerance is Z from the spec.
func commitTolerance(n int) int {
	switch {
	case n <= 4:
		return 0
	case n <= 8:
		return 1
	case n <= 15:
		return 2
	case n <= 23:
		return 3
	}
	return 4
}

// active is the newest configuration that is not aborted, if it is still
// preparing or committing.
func (nx *nexusModel) active() *nexusConfig {
	for i := len(nx.configs) - 1; i >= 0; i-- {
		switch c := nx.configs[i]; c.state {
		case nxAborted:
			continue
		case nxPreparing, nxCommitting:
			return c
		default:
			return nil
		}
	}
	return nil
}

// abort aborts a preparing configuration. If it had superseded a partially
// committed one, Nexus goes back to committing that one: its stragglers
// must still get their commits.
func (nx *nexusModel) abort(c *nexusConfig) {
	nx.aborts++
	c.state = nxAborted
	if lc := nx.latestCommitted(); lc != nil && lc.state == nxCommittedPartially {
		lc.state = nxCommitting
	}
}

func (nx *nexusModel) latestCommitted() *nexusConfig {
	for i := len(nx.configs) - 1; i >= 0; i-- {
		switch nx.configs[i].state {
		case nxCommitting, nxCommitted, nxCommittedPartially:
			// committing counts: the decision to commit is final.
			return nx.configs[i]
		}
	}
	return nil
}

// committedEpochs lists every epoch Nexus decided to commit.
func (nx *nexusModel) committedEpochs() []*nexusConfig {
	var out []*nexusConfig
	for _, c := range nx.configs {
		switch c.state {
		case nxCommitting, nxCommitted, nxCommittedPartially:
			out = append(out, c)
		}
	}
	return out
}

func (nx *nexusModel) byEpoch(e tq.Epoch) *nexusConfig {
	for _, c := range nx.configs {
		if c.epoch == e {
			return c
		}
	}
	return nil
}

// canStart reports whether a new configuration may start, and if so which
// active one it would supersede (a committing epoch with K+Z commit acks).
func (nx *nexusModel) canStart() (bool, *nexusConfig) {
	a := nx.active()
	if a == nil {
		return true, nil
	}
	if a.state == nxCommitting && len(a.committed) >= int(a.threshold)+a.z {
		return true, a
	}
	return false, nil
}

// begin starts a configuration with threshold k (0: N/2+1). Nexus commits
// at K+Z prepare acks; with a threshold other than N/2+1, K+Z may exceed N,
// so Z is capped at N-K (a commit cannot wait for more members than exist).
func (nx *nexusModel) begin(members []tq.BaseboardID, coordinator tq.BaseboardID, upgrade bool, k int) *nexusConfig {
	if ok, sup := nx.canStart(); !ok {
		panic("sim: begin while a configuration is active")
	} else if sup != nil {
		sup.state = nxCommittedPartially
		nx.superseded++
	}
	members = slices.Clone(members)
	slices.SortFunc(members, tq.BaseboardID.Compare)
	if k == 0 {
		k = len(members)/2 + 1
	}
	var last tq.Epoch
	if lc := nx.latestCommitted(); lc != nil {
		last = lc.epoch
	}
	c := &nexusConfig{
		epoch:         nx.nextEpoch,
		lastCommitted: last,
		members:       members,
		threshold:     uint8(k),
		z:             min(commitTolerance(len(members)), len(members)-k),
		coordinator:   coordinator,
		upgrade:       upgrade,
		state:         nxPreparing,
		prepared:      map[tq.BaseboardID]bool{},
		committed:     map[tq.BaseboardID]bool{},
	}
	nx.nextEpoch++
	nx.configs = append(nx.configs, c)
	return c
}
