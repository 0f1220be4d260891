package bootstrap_test

import (
	"crypto/rand"
	"slices"

	"github.com/rackplane/rackplane/trustquorum"
)

type randReader struct{}

func (randReader) Read(b []byte) (int, error) { return rand.Read(b) }

func sortIDs(ids []trustquorum.BaseboardID) { slices.SortFunc(ids, trustquorum.BaseboardID.Compare) }
