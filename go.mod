module github.com/rackplane/rackplane

go 1.26.0

require (
	github.com/cockroachdb/datadriven v1.0.3
	github.com/hashicorp/vault v1.21.4
	golang.org/x/crypto v0.58.0
)

require (
	github.com/pmezard/go-difflib v1.0.1-0.20181226105442-5d4384ee4fb2 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
