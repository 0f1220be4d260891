package datastore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus/model"
)

// ambiguous is CockroachDB's answer to a COMMIT whose outcome it does not
// know.
var ambiguous = &pgconn.PgError{Code: "40003", Message: "result is ambiguous (injected by the test)"}

// commitThenLose makes the next commit of ds really commit and then report
// 40003, as CockroachDB does when the acknowledgement is lost; later
// commits (the outcome check's among them) are left alone. It returns how
// many commits it saw.
func commitThenLose(ds *Datastore) *atomic.Int32 {
	var n atomic.Int32
	ds.commit = func(ctx context.Context, tx pgx.Tx) error {
		if n.Add(1) > 1 {
			return tx.Commit(ctx)
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		return ambiguous
	}
	return &n
}

// rollBackThenLose makes the next commit of ds roll back and report 40003:
// the outcome CockroachDB could not tell the client was "not committed".
func rollBackThenLose(ds *Datastore) *atomic.Int32 {
	var n atomic.Int32
	ds.commit = func(ctx context.Context, tx pgx.Tx) error {
		if n.Add(1) > 1 {
			return tx.Commit(ctx)
		}
		if err := tx.Rollback(ctx); err != nil {
			return err
		}
		return ambiguous
	}
	return &n
}

func newToken(name string) (model.OperatorToken, []byte) {
	h := sha256.Sum256([]byte("secret of " + name))
	return model.OperatorToken{ID: uuid.New(), Name: name, Role: model.RoleAdmin, CreatedBy: "test"}, h[:]
}

// An ambiguous commit that did commit: InTx asks the call's AppliedIf
// check, finds the token, and returns the committed attempt's result. Run
// blindly again, the insert would fail on the token's unique hash.
func TestAmbiguousCommitThatAppliedIsNotRunAgain(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	faked := commitThenLose(ds)
	var retries atomic.Int32
	ds.onRetry = func(int, error) { retries.Add(1) }
	tok, hash := newToken("ambiguous-applied")
	got, err := ds.OperatorTokenCreate(ctx, tok, hash)
	if err != nil {
		t.Fatalf("OperatorTokenCreate after an ambiguous commit that applied: %v", err)
	}
	if got.ID != tok.ID || got.Name != tok.Name {
		t.Fatalf("result %+v is not the committed token %s", got, tok.ID)
	}
	// The faked commit, then the outcome check's.
	if faked.Load() != 2 || retries.Load() != 0 {
		t.Fatalf("%d commits, %d retries: want the check and no second run", faked.Load(), retries.Load())
	}
	var n int
	if err := ds.pool.QueryRow(ctx, `SELECT count(*) FROM operator_token WHERE name = $1`, tok.Name).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d tokens stored (%v), want 1", n, err)
	}
}

// An ambiguous commit that did not commit: the check finds nothing, and
// the body runs again and commits, once.
func TestAmbiguousCommitThatDidNotApplyRunsAgain(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	faked := rollBackThenLose(ds)
	var retries atomic.Int32
	ds.onRetry = func(int, error) { retries.Add(1) }
	tok, hash := newToken("ambiguous-lost")
	if _, err := ds.OperatorTokenCreate(ctx, tok, hash); err != nil {
		t.Fatalf("OperatorTokenCreate after an ambiguous commit that did not apply: %v", err)
	}
	// The lost commit, the outcome check's, the second attempt's.
	if faked.Load() != 3 || retries.Load() != 1 {
		t.Fatalf("%d commits, %d retries; want the body run again once", faked.Load(), retries.Load())
	}
	var n int
	if err := ds.pool.QueryRow(ctx, `SELECT count(*) FROM operator_token WHERE id = $1`, tok.ID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d tokens stored (%v), want 1", n, err)
	}
}

// A transaction carrying an audit entry needs no check of its own: the
// entry commits with the change, under an id unique to the attempt, and
// is what InTx looks for. The entry counts as written, so the caller does
// not write a second one.
func TestAmbiguousCommitIsResolvedByItsAuditEntry(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(*Datastore) *atomic.Int32
		runs int32
	}{
		{"applied", commitThenLose, 1},
		{"not applied", rollBackThenLose, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ds := newStore(t)
			faked := tc.lose(ds)
			actx := WithAudit(ctx, model.AuditEntry{Actor: "op", ActorKind: "operator", Action: "thing.make",
				Target: tc.name, RequestID: "req-1"})
			var runs atomic.Int32
			id := uuid.New()
			err := ds.InTx(actx, "audited", func(ctx context.Context, tx pgx.Tx) error {
				runs.Add(1)
				_, err := tx.Exec(ctx, `INSERT INTO sled (id, time_created, time_modified, time_last_seen,
					part_number, serial_number, sled_agent_address) VALUES ($1, now(), now(), now(), 'p', $2, 'h:1')`,
					id, tc.name)
				return err
			})
			if err != nil {
				t.Fatalf("InTx: %v", err)
			}
			if !AuditWritten(actx) {
				t.Fatal("the audit entry that committed is not marked written")
			}
			// Every run commits, and the outcome check in between.
			if runs.Load() != tc.runs || faked.Load() != tc.runs+1 {
				t.Fatalf("%d runs and %d commits, want %d runs", runs.Load(), faked.Load(), tc.runs)
			}
			var sleds, audits int
			if err := ds.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM sled WHERE id = $1),
				(SELECT count(*) FROM audit_log WHERE target = $2)`, id, tc.name).Scan(&sleds, &audits); err != nil {
				t.Fatal(err)
			}
			if sleds != 1 || audits != 1 {
				t.Fatalf("%d sleds and %d audit entries, want one of each", sleds, audits)
			}
		})
	}
}

// A body that declares nothing (not read-only, not idempotent, no check,
// no audit entry) is not guessed about: InTx reports ErrAmbiguous and does
// not run it again.
func TestAmbiguousCommitWithoutAWayToTellIsReported(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	commitThenLose(ds)
	var runs atomic.Int32
	err := ds.InTx(ctx, "undeclared", func(ctx context.Context, tx pgx.Tx) error {
		runs.Add(1)
		_, err := tx.Exec(ctx, `UPDATE tuf_generation SET generation = generation + 1`)
		return err
	})
	if !errors.Is(err, ErrAmbiguous) || SQLState(err) != "40003" {
		t.Fatalf("got %v, want ErrAmbiguous wrapping the 40003", err)
	}
	if runs.Load() != 1 {
		t.Fatalf("the body ran %d times", runs.Load())
	}
	var g int64
	if err := ds.pool.QueryRow(ctx, `SELECT generation FROM tuf_generation`).Scan(&g); err != nil || g != 2 {
		t.Fatalf("generation %d (%v): the increment ran other than once", g, err)
	}
}

// Idempotent and read-only bodies run again after an unknown outcome: a
// second run of an upsert leaves what the first left.
func TestAmbiguousCommitOfIdempotentBodyRunsAgain(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	commitThenLose(ds)
	id := uuid.New()
	if err := ds.NexusInstanceUpsert(ctx, id, "https://first:1"); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	err := ds.InTx(ctx, "set_url", func(ctx context.Context, tx pgx.Tx) error {
		runs.Add(1)
		_, err := tx.Exec(ctx, `UPDATE nexus_instance SET internal_url = 'https://second:2' WHERE id = $1`, id)
		return err
	}, Idempotent)
	if err != nil || runs.Load() != 2 {
		t.Fatalf("InTx: %v after %d runs; want success after 2", err, runs.Load())
	}
	var url string
	if err := ds.pool.QueryRow(ctx, `SELECT internal_url FROM nexus_instance WHERE id = $1`, id).Scan(&url); err != nil ||
		url != "https://second:2" {
		t.Fatalf("url %q, %v", url, err)
	}
}

// failOnce makes the server itself raise 40003, once: at COMMIT (a
// deferred constraint trigger, so the transaction is rolled back and the
// client told its outcome is unknown) or on a single statement. A sequence
// counts the firings, since it is not rolled back with the transaction.
func failOnce(t *testing.T, ctx context.Context, ds *Datastore, table string, deferred bool) {
	t.Helper()
	create := "CREATE TRIGGER ambiguous_once AFTER INSERT OR UPDATE ON " + table + " FOR EACH ROW"
	if deferred {
		create = "CREATE CONSTRAINT TRIGGER ambiguous_once AFTER INSERT OR UPDATE ON " + table +
			" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
	}
	if _, err := ds.pool.Exec(ctx, `CREATE SEQUENCE ambiguous_firings;
		CREATE FUNCTION ambiguous_once() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('ambiguous_firings') = 1 THEN
				RAISE EXCEPTION 'result is ambiguous (raised by the test)' USING ERRCODE = '40003';
			END IF;
			RETURN NEW;
		END $$;
		`+create+` EXECUTE FUNCTION ambiguous_once()`); err != nil {
		t.Fatal(err)
	}
}

// A 40003 from the server at COMMIT goes through the same path: the
// transaction had not committed (PostgreSQL rolled it back), the check
// says so, and the body runs again.
func TestServerAmbiguousCommitIsResolved(t *testing.T) {
	testdb.PostgresOnly(t, "raises 40003 at COMMIT from a PL/pgSQL deferred constraint trigger")
	ctx := context.Background()
	ds := newStore(t)
	failOnce(t, ctx, ds, "operator_token", true)
	var retries atomic.Int32
	ds.onRetry = func(_ int, err error) { retries.Add(1) }
	tok, hash := newToken("server-ambiguous")
	if _, err := ds.OperatorTokenCreate(ctx, tok, hash); err != nil {
		t.Fatalf("OperatorTokenCreate: %v", err)
	}
	if retries.Load() != 1 {
		t.Fatalf("%d retries, want 1 after the server's 40003", retries.Load())
	}
	var n, firings int
	if err := ds.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM operator_token WHERE id = $1),
		(SELECT last_value FROM ambiguous_firings)`, tok.ID).Scan(&n, &firings); err != nil {
		t.Fatal(err)
	}
	if n != 1 || firings != 2 {
		t.Fatalf("%d tokens after %d trigger firings; want 1 after 2", n, firings)
	}
}

// Exec1 retries a single idempotent statement the server answered with
// 40003.
func TestExec1RetriesAnAmbiguousStatement(t *testing.T) {
	testdb.PostgresOnly(t, "raises 40003 from a PL/pgSQL trigger")
	ctx := context.Background()
	ds := newStore(t)
	failOnce(t, ctx, ds, "nexus_instance", false)
	id := uuid.New()
	start := time.Now()
	if err := ds.NexusInstanceUpsert(ctx, id, "https://n:1"); err != nil {
		t.Fatalf("NexusInstanceUpsert: %v", err)
	}
	var url string
	var firings int
	if err := ds.pool.QueryRow(ctx, `SELECT (SELECT internal_url FROM nexus_instance WHERE id = $1),
		(SELECT last_value FROM ambiguous_firings)`, id).Scan(&url, &firings); err != nil {
		t.Fatal(err)
	}
	if url != "https://n:1" || firings != 2 || time.Since(start) > 10*time.Second {
		t.Fatalf("url %q after %d firings in %s", url, firings, time.Since(start))
	}
}

// An upload whose commit outcome was lost reports what it did: inserted
// (not "already uploaded", which a second run would say) with its
// generation bump; and a re-upload that restored a pruned repo says so, with its bump.
func TestAmbiguousUploadReportsWhatItDid(t *testing.T) {
	ctx := context.Background()
	ds := newStore(t)
	commitThenLose(ds)
	res, err := ds.TufRepoInsert(ctx, repoInsert(1))
	if err != nil || res.Status != model.UploadInserted || !res.GenerationBumped || res.Generation != 2 {
		t.Fatalf("upload after a lost commit: %+v, %v", res, err)
	}
	if _, err := ds.TufRepoPrune(ctx, "1.0.0", "operator", nil); err != nil {
		t.Fatal(err)
	}
	commitThenLose(ds)
	res, err = ds.TufRepoInsert(ctx, repoInsert(1))
	if err != nil || res.Status != model.UploadRestored || !res.GenerationBumped || res.Generation != 4 {
		t.Fatalf("re-upload of a pruned repo after a lost commit: %+v, %v", res, err)
	}
	if g, err := ds.TufGeneration(ctx); err != nil || g != 4 {
		t.Fatalf("generation %d, %v; want 4 (insert, prune, un-prune)", g, err)
	}
}

// Which failed commits may have committed.
func TestCommitOutcomeUnknown(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"ambiguous result", ambiguous, true},
		{"connection lost mid-commit", fmt.Errorf("commit: %w", io.ErrUnexpectedEOF), true},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, false},
		{"constraint at commit", &pgconn.PgError{Code: "23505"}, false},
		{"commit answered with rollback", pgx.ErrTxCommitRollback, false},
	} {
		if got := commitOutcomeUnknown(tc.err); got != tc.want {
			t.Errorf("%s (%v): unknown = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
