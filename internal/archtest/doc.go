// Package archtest holds repository-wide tests of the code's shape: every
// package says what it is for, and the trust-quorum protocol stays free of
// I/O (no network, disk, clock or database).
package archtest
