module github.com/rackplane/rackplane

go 1.26.0

require (
	github.com/hashicorp/vault v1.21.4
	golang.org/x/crypto v0.58.0
)

require golang.org/x/sys v0.49.0 // indirect
