// Package tufreplication is the tuf_artifact_replication background task:
// it makes every in-service sled hold every artifact of every live TUF repo
// on each of its M.2 devices.
//
// Each activation collects (the wanted set and its generation from the
// database, what every sled holds and is copying), plans (Compute, a pure
// function), and executes the plan's requests, every one carrying the
// generation so that a sled refuses anything from a Nexus whose view is
// stale.
package tufreplication
