package main

import (
	"testing"

	"github.com/rackplane/rackplane/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }
