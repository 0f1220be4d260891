package bootstrap

import (
	"testing"

	"github.com/rackplane/rackplane/trustquorum"
)

type fakeConn uint64

func (f fakeConn) ID() uint64 { return uint64(f) }

// Connection events arrive in every order the network's goroutines can
// produce; the Node must see exactly one connect per connection it uses
// and no disconnect of a connection it no longer uses.
func TestPeerTableDropsStaleEvents(t *testing.T) {
	p := trustquorum.BaseboardID{Part: "p", Serial: "a"}
	q := trustquorum.BaseboardID{Part: "p", Serial: "b"}
	tab := newPeerTable[fakeConn]()

	if use, repl := tab.connected(p, 1); !use || repl {
		t.Fatalf("first connect: use=%v replaced=%v", use, repl)
	}
	// The replacement arrives before the old connection's disconnect.
	if use, repl := tab.connected(p, 3); !use || !repl {
		t.Fatalf("replacement: use=%v replaced=%v", use, repl)
	}
	if tab.disconnected(p, 1) {
		t.Fatal("the replaced connection's late disconnect reached the node")
	}
	if !tab.isCurrent(p, 3) || tab.isCurrent(p, 1) {
		t.Fatal("messages of the replaced connection would be used")
	}
	// An older connection's connect arriving after the newer one's is
	// stale, as is its disconnect.
	if use, _ := tab.connected(p, 2); use {
		t.Fatal("an older connection's late connect was used")
	}
	if tab.disconnected(p, 2) {
		t.Fatal("an older connection's disconnect reached the node")
	}
	if c, ok := tab.current(p); !ok || c != 3 {
		t.Fatalf("current %v %v", c, ok)
	}
	// The current connection's disconnect does reach it, once.
	if !tab.disconnected(p, 3) || tab.disconnected(p, 3) {
		t.Fatal("current disconnect must be reported exactly once")
	}
	// Even after that, a late connect of an older connection is stale.
	if use, _ := tab.connected(p, 2); use {
		t.Fatal("an old connect after the newest disconnect was used")
	}
	if use, repl := tab.connected(p, 4); !use || repl {
		t.Fatalf("fresh connection after a disconnect: use=%v replaced=%v", use, repl)
	}
	// Peers are independent.
	if use, _ := tab.connected(q, 1); !use || len(tab.peers()) != 2 {
		t.Fatalf("second peer: use=%v peers=%v", use, tab.peers())
	}
}
