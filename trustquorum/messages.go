package trustquorum

import (
	"fmt"

	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// PeerMsg is a message between nodes on the bootstrap network. Every message
// carries the rack id; a node drops messages for another rack.
type PeerMsg struct {
	RackID RackID
	Body   MsgBody
}

// MsgBody is one of the *Msg types in this file.
type MsgBody interface {
	// Kind is the message's name on the wire.
	Kind() string
}

// Trust-quorum messages.
type (
	// PrepareMsg carries a new configuration and the receiver's share of it.
	PrepareMsg struct {
		Config *Configuration
		Share  tqcrypto.Share
	}
	// PrepareAckMsg tells the coordinator the prepare was persisted.
	PrepareAckMsg struct{ Epoch Epoch }
	// GetShareMsg asks for the receiver's share of a configuration.
	GetShareMsg struct{ Epoch Epoch }
	// ShareMsg answers GetShareMsg.
	ShareMsg struct {
		Epoch Epoch
		Share tqcrypto.Share
	}
	// GetLrtqShareMsg asks for the receiver's LRTQ share.
	GetLrtqShareMsg struct{}
	// LrtqShareMsg answers GetLrtqShareMsg.
	LrtqShareMsg struct{ Share tqcrypto.Share }
	// CommitAdvanceMsg tells a member that a newer configuration that
	// includes it has been committed. Sent to a non-member it only says
	// that the receiver's older coordination is superseded.
	CommitAdvanceMsg struct{ Config *Configuration }
	// ExpungedMsg tells a node it is not a member of a committed epoch.
	// Config is that epoch's configuration, which names the sender and
	// not the receiver; a node ignores Expunged without it (see
	// HandleMessage).
	ExpungedMsg struct {
		Epoch  Epoch
		Config *Configuration
	}
)

// LRTQ rack-setup and learner messages.
type (
	// LrtqInitMsg delivers an initial member's share package at rack setup.
	LrtqInitMsg struct{ Pkg *LrtqSharePkg }
	// LrtqInitAckMsg acknowledges that the package was persisted.
	LrtqInitAckMsg struct{}
	// LrtqLearnMsg is a learner asking an initial member for a package.
	LrtqLearnMsg struct{}
	// LrtqLearnPkgMsg carries a learner's package (one spare share).
	LrtqLearnPkgMsg struct{ Pkg *LrtqSharePkg }
)

func (PrepareMsg) Kind() string       { return "prepare" }
func (PrepareAckMsg) Kind() string    { return "prepare_ack" }
func (GetShareMsg) Kind() string      { return "get_share" }
func (ShareMsg) Kind() string         { return "share" }
func (GetLrtqShareMsg) Kind() string  { return "get_lrtq_share" }
func (LrtqShareMsg) Kind() string     { return "lrtq_share" }
func (CommitAdvanceMsg) Kind() string { return "commit_advance" }
func (ExpungedMsg) Kind() string      { return "expunged" }
func (LrtqInitMsg) Kind() string      { return "lrtq_init" }
func (LrtqInitAckMsg) Kind() string   { return "lrtq_init_ack" }
func (LrtqLearnMsg) Kind() string     { return "lrtq_learn" }
func (LrtqLearnPkgMsg) Kind() string  { return "lrtq_learn_pkg" }

// String summarises a message without any share bytes (for logs and tests).
func (m PeerMsg) String() string {
	switch b := m.Body.(type) {
	case PrepareMsg:
		return fmt.Sprintf("prepare epoch=%d", b.Config.Epoch)
	case PrepareAckMsg:
		return fmt.Sprintf("prepare_ack epoch=%d", b.Epoch)
	case GetShareMsg:
		return fmt.Sprintf("get_share epoch=%d", b.Epoch)
	case ShareMsg:
		return fmt.Sprintf("share epoch=%d", b.Epoch)
	case CommitAdvanceMsg:
		return fmt.Sprintf("commit_advance epoch=%d", b.Config.Epoch)
	case ExpungedMsg:
		return fmt.Sprintf("expunged epoch=%d", b.Epoch)
	case nil:
		return "<nil>"
	default:
		return b.Kind()
	}
}

// Envelope is a message addressed to a peer. From is this node; the receiver
// trusts the sender identity of its authenticated connection, not this field.
type Envelope struct {
	To   BaseboardID
	From BaseboardID
	Msg  PeerMsg
}
