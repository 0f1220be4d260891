// Package schema holds dbinit.sql, the complete current database schema,
// which is what a fresh database is created from.
package schema

import _ "embed"

// DBInit is the text of dbinit.sql.
//
//go:embed dbinit.sql
var DBInit string
