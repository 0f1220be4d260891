package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestReferenceIsCurrent fails when docs/api.md is not what the documents
// make: edit a document, then run go generate ./api/...
func TestReferenceIsCurrent(t *testing.T) {
	want, err := render()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("docs/api.md is stale: run go generate ./api/...")
	}
	// Every operation of every document is in it.
	for _, op := range []string{"`PUT /v1/system/update/repositories`", "`PUT /v1/sled-agents/{sled_id}`",
		"`POST /artifacts/{sha256}/copy-from-depot`", "`HEAD /artifact/sha256/{sha256}`"} {
		if !strings.Contains(string(want), op) {
			t.Errorf("the reference does not describe %s", op)
		}
	}
}
