package datastore

import (
	"context"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// Round trips are counted per context so that a background task can say how
// many it made in one run (a figure that must not grow with the number of
// artifacts or sleds): every query, exec, batch, begin and commit is one.

type roundTripKey struct{}

// CountRoundTrips returns a context whose database round trips are counted
// in the returned counter.
func CountRoundTrips(ctx context.Context) (context.Context, *atomic.Int64) {
	n := new(atomic.Int64)
	return context.WithValue(ctx, roundTripKey{}, n), n
}

func countRoundTrip(ctx context.Context) {
	if n, ok := ctx.Value(roundTripKey{}).(*atomic.Int64); ok {
		n.Add(1)
	}
}

// roundTripTracer counts round trips on contexts that ask for it. pgx sends
// BEGIN and COMMIT as queries, so they are counted too.
type roundTripTracer struct{}

func (roundTripTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	countRoundTrip(ctx)
	return ctx
}

func (roundTripTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (roundTripTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	countRoundTrip(ctx)
	return ctx
}

func (roundTripTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (roundTripTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
