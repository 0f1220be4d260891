package main

import (
	"testing"

	"github.com/rackplane/rackplane/internal/testdb"
)

// The rack-setup test hands the rack to a real Nexus on a real
// PostgreSQL.
func TestMain(m *testing.M) { testdb.Main(m) }
