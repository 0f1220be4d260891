package trustquorum

// CoordinatorState says what a coordinator is doing. The zero value is never
// returned; "not_coordinating" is explicit so that API clients never have to
// interpret a missing value.
type CoordinatorState string

// Coordinator states.
const (
	NotCoordinating      CoordinatorState = "not_coordinating"
	CollectingShares     CoordinatorState = "collecting_shares"
	CollectingLrtqShares CoordinatorState = "collecting_lrtq_shares"
	Preparing            CoordinatorState = "preparing"
)

// CoordinatorStatus is what Nexus polls from the coordinator.
type CoordinatorStatus struct {
	State CoordinatorState `json:"state"`
	Epoch Epoch            `json:"epoch"`
	// Config is set while preparing; Nexus stores it for PrepareAndCommit.
	Config *Configuration `json:"config,omitempty"`
	// Acked lists the members that persisted the prepare, this node
	// included, in sorted order.
	Acked []BaseboardID `json:"acked"`
}

// CoordinatorStatus reports the coordination in progress, if any.
func (n *Node) CoordinatorStatus(ctx *NodeCtx) CoordinatorStatus {
	c := n.coord
	if c == nil {
		return CoordinatorStatus{State: NotCoordinating, Acked: []BaseboardID{}}
	}
	s := CoordinatorStatus{Epoch: c.epoch(), Acked: []BaseboardID{}}
	switch {
	case c.collect != nil && c.upgrade:
		s.State = CollectingLrtqShares
	case c.collect != nil:
		s.State = CollectingShares
	default:
		s.State = Preparing
		s.Config = c.config.Clone()
		s.Acked = sortedKeys(c.acked)
	}
	return s
}

// NodeStatus summarises a node for operators and tests.
type NodeStatus struct {
	ID                   BaseboardID     `json:"id"`
	RackID               *RackID         `json:"rack_id,omitempty"`
	LatestConfigEpoch    Epoch           `json:"latest_config_epoch"`
	LatestCommittedEpoch Epoch           `json:"latest_committed_epoch"`
	CommittedEpochs      []Epoch         `json:"committed_epochs"`
	HasLrtq              bool            `json:"has_lrtq"`
	Expunged             *ExpungedMarker `json:"expunged,omitempty"`
	Coordinating         Epoch           `json:"coordinating"`
	RebuildingShare      Epoch           `json:"rebuilding_share"`
	LoadingSecret        Epoch           `json:"loading_secret"`
	SecretsLoaded        []Epoch         `json:"secrets_loaded"`
	Learning             bool            `json:"learning"`
	ConnectedPeers       []BaseboardID   `json:"connected_peers"`
	Alarms               []Alarm         `json:"alarms"`
}

// Status reports the node's state.
func (n *Node) Status(ctx *NodeCtx) NodeStatus {
	st := &ctx.state
	s := NodeStatus{
		ID:                   n.id,
		LatestConfigEpoch:    st.LatestEpochSeen(),
		LatestCommittedEpoch: st.LatestCommittedEpoch(),
		CommittedEpochs:      st.CommittedEpochs(),
		HasLrtq:              st.Lrtq != nil,
		Expunged:             st.Expunged,
		SecretsLoaded:        sortedKeys(n.secrets),
		Learning:             n.learning != nil,
		ConnectedPeers:       ctx.ConnectedPeers(),
		Alarms:               ctx.Alarms(),
	}
	if r, ok := st.RackID(); ok {
		s.RackID = &r
	}
	if n.coord != nil {
		s.Coordinating = n.coord.epoch()
	}
	if n.rebuild != nil {
		s.RebuildingShare = n.rebuild.epoch
	}
	if n.load != nil {
		s.LoadingSecret = n.load.epoch
	}
	return s
}
