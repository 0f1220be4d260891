package migrations

// ForceCockroachDriver makes Up use golang-migrate's cockroachdb driver
// whatever the server is, so that its code path runs on PostgreSQL.
func ForceCockroachDriver(o *Options) { o.driver = dialectCockroach }

// BeforeFreshCommit makes Up call f just before the fresh-schema
// transaction commits.
func BeforeFreshCommit(o *Options, f func()) { o.beforeFreshCommit = f }

// CreateLeaseTable is the lease table's DDL, for tests that hold the lock
// themselves.
const CreateLeaseTable = createLeaseTable

// AfterLock makes Up call f once it holds the migration lock.
func AfterLock(o *Options, f func()) { o.afterLock = f }
