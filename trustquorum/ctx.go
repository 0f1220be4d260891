package trustquorum

import (
	"fmt"
	"slices"
)

// Instant is a point on the driver's monotonic clock, in nanoseconds. The
// node never reads a clock; the driver passes the time to Tick.
type Instant int64

// Duration is a span of Instant, in nanoseconds.
type Duration int64

// Common durations.
const (
	Millisecond Duration = 1_000_000
	Second      Duration = 1000 * Millisecond
)

// AlarmKind names a condition that must never happen. Alarms are surfaced in
// status and metrics rather than returned, because most arise while handling
// a peer message for which no caller is waiting.
type AlarmKind string

// The alarms of the spec.
const (
	AlarmMismatchedConfigurations   AlarmKind = "mismatched_configurations"
	AlarmShareRebuildFailed         AlarmKind = "share_rebuild_failed"
	AlarmCommittedConfigurationLost AlarmKind = "committed_configuration_lost"
	AlarmRackSecretDecryptionFailed AlarmKind = "rack_secret_decryption_failed"
	AlarmReconstructionFailed       AlarmKind = "reconstruction_failed"
)

// Alarm is one raised alarm. Detail never contains secret material.
type Alarm struct {
	Kind   AlarmKind   `json:"kind"`
	Epoch  Epoch       `json:"epoch"`
	Peer   BaseboardID `json:"peer"`
	Detail string      `json:"detail"`
}

func (a Alarm) String() string {
	return fmt.Sprintf("%s epoch=%d peer=%s %s", a.Kind, a.Epoch, a.Peer, a.Detail)
}

// NodeCtx is the node's window onto the world: the persistent state with its
// "changed" flag, the outbox, the set of connected peers and the alarms. The
// driver owns it and passes the same NodeCtx to every call on its Node.
type NodeCtx struct {
	id        BaseboardID
	state     PersistentState
	changed   bool
	outbox    []Envelope
	connected map[BaseboardID]bool
	peers     []BaseboardID // the keys of connected, sorted
	alarms    []Alarm
}

// NewNodeCtx returns a context for node id holding state (the ledger read at
// start-up, or NewPersistentState for a new sled). No peer is connected.
func NewNodeCtx(id BaseboardID, state PersistentState) *NodeCtx {
	state.ensureMaps()
	return &NodeCtx{id: id, state: state, connected: map[BaseboardID]bool{}}
}

// ID is the node's own identity.
func (c *NodeCtx) ID() BaseboardID { return c.id }

// PersistentState returns the state to persist. Callers must not modify it.
func (c *NodeCtx) PersistentState() *PersistentState { return &c.state }

// PersistentStateChanged reports whether the state changed since the flag
// was last cleared; the driver must then persist it before sending any
// envelope or replying to the API call.
func (c *NodeCtx) PersistentStateChanged() bool { return c.changed }

// ClearPersistentStateChanged is called by the driver once the state is
// durably stored.
func (c *NodeCtx) ClearPersistentStateChanged() { c.changed = false }

// Outbox returns the envelopes waiting to be sent without removing them.
func (c *NodeCtx) Outbox() []Envelope { return c.outbox }

// DrainEnvelopes removes and returns the envelopes to send, in order.
func (c *NodeCtx) DrainEnvelopes() []Envelope {
	out := c.outbox
	c.outbox = nil
	return out
}

// ConnectedPeers returns the connected peers in sorted order.
func (c *NodeCtx) ConnectedPeers() []BaseboardID {
	return slices.Clone(c.peers)
}

// connectedPeers is ConnectedPeers without the copy, for the node's own
// loops (which never change the connections while iterating). Kept sorted
// as peers come and go, since Tick walks it every second.
func (c *NodeCtx) connectedPeers() []BaseboardID { return c.peers }

func (c *NodeCtx) connect(peer BaseboardID) {
	if c.connected[peer] {
		return
	}
	c.connected[peer] = true
	i, _ := slices.BinarySearchFunc(c.peers, peer, BaseboardID.Compare)
	c.peers = slices.Insert(c.peers, i, peer)
}

func (c *NodeCtx) disconnect(peer BaseboardID) {
	if !c.connected[peer] {
		return
	}
	delete(c.connected, peer)
	if i, ok := slices.BinarySearchFunc(c.peers, peer, BaseboardID.Compare); ok {
		c.peers = slices.Delete(c.peers, i, i+1)
	}
}

// IsConnected reports whether peer is connected.
func (c *NodeCtx) IsConnected(peer BaseboardID) bool { return c.connected[peer] }

// Alarms returns the alarms raised so far.
func (c *NodeCtx) Alarms() []Alarm { return slices.Clone(c.alarms) }

func (c *NodeCtx) raise(a Alarm) {
	for _, old := range c.alarms {
		if old.Kind == a.Kind && old.Epoch == a.Epoch && old.Peer == a.Peer {
			return
		}
	}
	c.alarms = append(c.alarms, a)
}

// send queues a message for a connected peer. Messages for a peer that is not
// connected are not queued: whatever is still outstanding is re-sent when it
// connects. m must share no memory with the persistent state (clone shares,
// packages and configurations taken from it): the driver may zero or reuse
// what it sent.
func (c *NodeCtx) send(to BaseboardID, m PeerMsg) {
	if to == c.id || !c.connected[to] {
		return
	}
	c.outbox = append(c.outbox, Envelope{To: to, From: c.id, Msg: m})
}
