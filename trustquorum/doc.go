// Package trustquorum is the sans-io trust-quorum protocol: the state
// machine that lets a rack's sleds share a rack secret (split with Shamir
// secret sharing), change membership through epoch-numbered
// reconfigurations coordinated by one sled and committed by Nexus, and
// upgrade racks from the older LRTQ scheme.
//
// The package does no I/O. It starts no goroutines, reads no clock (time
// arrives as Tick's argument), touches no network or disk, and draws
// randomness only from the io.Reader in Config. This keeps it deterministic,
// so that the cluster simulation in its tests can run many nodes through
// random faults and replay any failure exactly. The cryptography lives in
// the tqcrypto subpackage.
//
// # Driving a Node
//
// A driver (the sled agent's runtime) owns one Node and one NodeCtx and calls
// the Node from a single goroutine. Every call — an API call from Nexus, a
// peer message (HandleMessage), OnConnect, OnDisconnect or Tick — may change
// the persistent state and queue envelopes. After each call the driver must,
// in this order:
//
//  1. if ctx.PersistentStateChanged(), durably store ctx.PersistentState()
//     (EncodeState; on every M.2) and then ctx.ClearPersistentStateChanged();
//     if storing fails the driver must stop: it must never send or reply on
//     the strength of state it did not store;
//  2. send every envelope from ctx.DrainEnvelopes() to its peer;
//  3. only then reply to the API caller.
//
// This "persist before send" rule is what makes acknowledgements
// trustworthy: a PrepareAck, a commit reported to Nexus or an LRTQ share
// handed to a learner always refers to state that survives a crash.
//
// Envelopes share no memory with the persistent state: every share,
// package and configuration in a message is a copy. A driver may (and
// should) zero an encoded frame, or the shares in a message, once it is
// sent, without touching the ledger state it will persist next.
//
// The driver reports connections with OnConnect/OnDisconnect, using the
// peer identity from the connection's TLS certificate (never a message
// field) also as HandleMessage's from argument. The node sends only to
// connected peers; whatever is still outstanding toward a peer is re-sent
// when it connects and again on Tick with exponential back-off, so a
// message lost on a live connection does not stall the protocol. A newer
// connection that replaces a peer's older one is reported with OnConnect
// alone (the node re-sends everything, as the older connection's queue is
// lost); the older connection's late disconnect must not be reported, or
// the node would think a live peer gone.
//
// # Protocol summary
//
// CoordinateReconfiguration makes the node coordinator of a new epoch: it
// gathers K verified shares of the last committed epoch (GetShareMsg),
// rebuilds that secret, decrypts the chain of older secrets, makes a new
// secret and shares, persists its own share and the configuration, and
// sends PrepareMsg to every member. Members persist and acknowledge
// (PrepareAckMsg); Nexus polls CoordinatorStatus, decides the commit, and
// calls Commit on prepared members and PrepareAndCommit on the others,
// which rebuild their share from K members. Members that fell behind learn
// newer commits from CommitAdvanceMsg, and a coordinator of an epoch that
// Nexus gave up stops when a CommitAdvanceMsg tells it of a newer one.
// Removed members learn that they are expunged from ExpungedMsg, which
// carries the configuration that left them out; it is accepted only as
// news from a member of that configuration, never by a sled that holds no
// configuration at all. A node rebuilding its share never goes back to an
// older epoch, and a restarted node resumes the newest pending rebuild.
// Committing an epoch prunes the persistent state down to what the protocol
// still uses: the configuration and share of that epoch and of any newer
// one, without the older epochs (committed or aborted) or, once the rack
// has moved to the trust quorum, its LRTQ shares. What remains of the
// rack's history is the list of committed epoch numbers and the encrypted
// chain of older secrets in the latest configuration (40 bytes an epoch),
// so a persist costs about the same at the hundredth epoch as at the second.
//
// CoordinateUpgradeFromLrtq does the same for an LRTQ rack, collecting
// LRTQ shares (from every peer: LRTQ records no membership, and the new
// membership may hold fewer than K of them) instead. InitLrtq sets LRTQ up
// from one sled, which persists every initial member's package before it
// sends any and resends what is unacknowledged after a restart.
// LoadRackSecret collects K shares of the latest committed epoch and
// returns any committed epoch's secret, decrypting older ones from the
// chain.
//
// Errors returned to API callers are sentinels (ErrStaleEpoch, ...) or
// *EpochError values wrapping them; match them with errors.Is and
// errors.As. Conditions that must never happen raise alarms (NodeCtx.Alarms,
// NodeStatus.Alarms) instead, because most arise while handling a peer
// message for which no caller is waiting.
package trustquorum
