// Package openapi holds the OpenAPI 3.1 documents that describe every
// rackplane API, one per listener shape, and embeds them so servers can
// serve them and tests can hold the routers and clients to them.
//
// The documents are the source: the server interfaces and clients under
// api/gen are generated from them (go generate ./api/...), and so is the
// reference in docs/api.md. Wire types are not generated: every component
// schema names its hand-written Go type in package api with x-go-type, and
// the package's tests prove the two agree.
package openapi

import (
	_ "embed"
)

//go:generate go tool oapi-codegen -config external.codegen.yaml nexus-external.json
//go:generate go tool oapi-codegen -config nexusint.codegen.yaml nexus-internal.json
//go:generate go tool oapi-codegen -config sled.codegen.yaml sled-agent.json
//go:generate go tool oapi-codegen -config depot.codegen.yaml repo-depot.json
//go:generate go run ./cmd/apidoc -o ../../docs/api.md

// NexusExternal describes Nexus's operator API (its external listener,
// which also serves this document at GET /openapi.json).
//
//go:embed nexus-external.json
var NexusExternal []byte

// NexusInternal describes the API Nexus serves sled agents on its internal
// listener (which also serves RepoDepot).
//
//go:embed nexus-internal.json
var NexusInternal []byte

// SledAgent describes a sled agent's API listener.
//
//go:embed sled-agent.json
var SledAgent []byte

// RepoDepot describes the artifact depot every sled serves on its depot
// listener and Nexus serves on its internal listener.
//
//go:embed repo-depot.json
var RepoDepot []byte

// Document is one of the documents with the names it goes by.
type Document struct {
	// File is the document's file name in this directory.
	File string
	// Package is the api/gen package generated from it.
	Package string
	// JSON is the document.
	JSON []byte
}

// Documents lists every document, in a stable order.
func Documents() []Document {
	return []Document{
		{File: "nexus-external.json", Package: "external", JSON: NexusExternal},
		{File: "nexus-internal.json", Package: "nexusint", JSON: NexusInternal},
		{File: "sled-agent.json", Package: "sled", JSON: SledAgent},
		{File: "repo-depot.json", Package: "depot", JSON: RepoDepot},
	}
}
