package bootstrap

import (
	"github.com/rackplane/rackplane/trustquorum"
)

// conn is what the peer table needs of a connection.
type conn interface{ ID() uint64 }

// peerTable is the node goroutine's view of which connection is current
// for each peer. Connection events arrive from many goroutines and may
// interleave (a replacement's connect before the old connection's late
// disconnect, even before an older connect); ids order connections, so
// the table keeps the newest and reports only the events that change what
// the Node must be told.
type peerTable[C conn] struct {
	conns map[trustquorum.BaseboardID]C
	// newest is the highest id seen per peer, so that the connect of an
	// older connection arriving after a newer one's disconnect is stale
	// too.
	newest map[trustquorum.BaseboardID]uint64
}

func newPeerTable[C conn]() *peerTable[C] {
	return &peerTable[C]{conns: map[trustquorum.BaseboardID]C{}, newest: map[trustquorum.BaseboardID]uint64{}}
}

// connected records c for peer. It returns use=false for a connection
// older than one already seen (stale: ignore it), and replaced=true when c
// takes over from a connection the Node believes is up.
func (t *peerTable[C]) connected(peer trustquorum.BaseboardID, c C) (use, replaced bool) {
	if c.ID() < t.newest[peer] {
		return false, false
	}
	t.newest[peer] = c.ID()
	_, replaced = t.conns[peer]
	t.conns[peer] = c
	return true, replaced
}

// disconnected reports whether c was the current connection of peer (only
// then is the Node told); a replaced connection's disconnect is stale.
func (t *peerTable[C]) disconnected(peer trustquorum.BaseboardID, c C) bool {
	cur, ok := t.conns[peer]
	if !ok || cur.ID() != c.ID() {
		return false
	}
	delete(t.conns, peer)
	return true
}

// current returns the connection to peer.
func (t *peerTable[C]) current(peer trustquorum.BaseboardID) (C, bool) {
	c, ok := t.conns[peer]
	return c, ok
}

// isCurrent reports whether c is peer's current connection (messages on
// any other are stale).
func (t *peerTable[C]) isCurrent(peer trustquorum.BaseboardID, c C) bool {
	cur, ok := t.conns[peer]
	return ok && cur.ID() == c.ID()
}

// peers lists the connected peers.
func (t *peerTable[C]) peers() []trustquorum.BaseboardID {
	out := make([]trustquorum.BaseboardID, 0, len(t.conns))
	for p := range t.conns {
		out = append(out, p)
	}
	return out
}
