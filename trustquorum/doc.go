// Package trustquorum is the sans-io trust-quorum protocol and its crypto:
// a deterministic state machine with no goroutines, clock, network or disk,
// driven by the sled agent.
package trustquorum
