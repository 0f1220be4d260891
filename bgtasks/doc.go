// Package bgtasks is the background-task driver that runs Nexus's
// level-triggered reconcilers, and the home of the tasks themselves.
package bgtasks
