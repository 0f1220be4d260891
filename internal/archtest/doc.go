// Package archtest holds repository-wide tests of the code's shape: every
// package says what it is for, the trust-quorum protocol stays free of
// I/O (no network, disk, clock or database), and domain packages return
// faults or sentinels without choosing HTTP statuses, which only the HTTP
// edges do.
package archtest
