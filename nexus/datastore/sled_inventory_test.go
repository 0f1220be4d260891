package datastore

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/nexus/model"
)

// A registration's inventory is stored and listed; an agent that does not
// report one (an older agent) leaves the stored inventory alone; free space
// alone is not an inventory change, a generation or a presence change is.
func TestSledUpsertStoresInventory(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	id := uuid.New()
	gen := func(g uint64) *uint64 { return &g }
	m2s := []model.M2Device{
		{Path: "/m2/a", Present: true, FreeBytes: 100, TotalBytes: 1000},
		{Path: "/m2/b", Present: false, Error: "gone"},
	}

	r := reg("s9", "10.0.0.9:12345", 12348)
	r.M2s, r.ArtifactGeneration = m2s, gen(3)
	res, err := ds.SledUpsert(ctx, id, r)
	if err != nil || !res.InventoryChanged || res.Sled.ArtifactGeneration == nil || *res.Sled.ArtifactGeneration != 3 ||
		len(res.Sled.M2s) != 2 || res.Sled.M2s[1] != m2s[1] {
		t.Fatalf("first upsert: %+v %v", res, err)
	}

	r.M2s = []model.M2Device{m2s[0], m2s[1]}
	r.M2s[0].FreeBytes = 50
	res, err = ds.SledUpsert(ctx, id, r)
	if err != nil || res.InventoryChanged || res.Sled.M2s[0].FreeBytes != 50 {
		t.Fatalf("free space only: %+v %v", res, err)
	}

	r.ArtifactGeneration = gen(4)
	if res, err = ds.SledUpsert(ctx, id, r); err != nil || !res.InventoryChanged || *res.Sled.ArtifactGeneration != 4 {
		t.Fatalf("generation change: %+v %v", res, err)
	}
	r.M2s[1].Present = true
	if res, err = ds.SledUpsert(ctx, id, r); err != nil || !res.InventoryChanged || !res.Sled.M2s[1].Present {
		t.Fatalf("presence change: %+v %v", res, err)
	}

	// Copies finishing (or being lost) change the complete count: a
	// change; the same count again is not.
	complete := func(n int) *int { return &n }
	r.ArtifactsComplete = complete(2)
	if res, err = ds.SledUpsert(ctx, id, r); err != nil || !res.InventoryChanged || *res.Sled.ArtifactsComplete != 2 {
		t.Fatalf("first complete count: %+v %v", res, err)
	}
	if res, err = ds.SledUpsert(ctx, id, r); err != nil || res.InventoryChanged {
		t.Fatalf("same complete count: %+v %v", res, err)
	}
	r.ArtifactsComplete = complete(1)
	if res, err = ds.SledUpsert(ctx, id, r); err != nil || !res.InventoryChanged || *res.Sled.ArtifactsComplete != 1 {
		t.Fatalf("a copy lost: %+v %v", res, err)
	}

	// An older agent reports no inventory: the stored one stays.
	old := reg("s9", "10.0.0.9:12345", 12348)
	res, err = ds.SledUpsert(ctx, id, old)
	if err != nil || res.InventoryChanged || res.Sled.ArtifactGeneration == nil || *res.Sled.ArtifactGeneration != 4 || len(res.Sled.M2s) != 2 ||
		res.Sled.ArtifactsComplete == nil || *res.Sled.ArtifactsComplete != 1 {
		t.Fatalf("older agent: %+v %v", res, err)
	}
	got, err := ds.SledGet(ctx, id)
	if err != nil || *got.ArtifactGeneration != 4 || !got.M2s[1].Present {
		t.Fatalf("get: %+v %v", got, err)
	}

	// A sled that never reported an inventory lists without one.
	res, err = ds.SledUpsert(ctx, uuid.New(), reg("s10", "10.0.0.10:12345", 12348))
	if err != nil || res.InventoryChanged || res.Sled.ArtifactGeneration != nil || res.Sled.M2s != nil {
		t.Fatalf("no inventory: %+v %v", res, err)
	}
}
