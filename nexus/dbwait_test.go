package nexus_test

import (
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/app"
)

// refusedURL is a database URL whose port refuses connections.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "postgres://nexus@" + addr + "/rackplane?sslmode=disable&connect_timeout=2"
}

// startWithoutDatabase runs nexus.New against a database that never
// answers, on a fake clock, and returns the waits it slept and New's error.
func startWithoutDatabase(t *testing.T, seed uint64, wait time.Duration) ([]time.Duration, error) {
	t.Helper()
	fake := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	id := uuid.New()
	_, err := nexus.New(context.Background(), nexus.Config{
		ID: id, TLS: sledtest.Bundle(t, rackpki.Nexus(id.String())), DataDir: t.TempDir(), DatabaseURL: refusedURL(t), DatabaseWait: wait,
		Clock: fake, Rand: rand.NewPCG(seed, seed),
		Tasks: func(*app.App) error { t.Error("tasks registered without a database"); return nil },
	}, zerolog.Nop())
	return fake.Sleeps(), err
}

// Start-up waits for the database with jittered, doubling, capped delays
// on the injected clock, and gives up at the deadline, not after it.
func TestStartUpWaitsForTheDatabaseWithBackoff(t *testing.T) {
	const wait = 30 * time.Second
	sleeps, err := startWithoutDatabase(t, 1, wait)
	if err == nil || !strings.Contains(err.Error(), "database did not answer within 30s") {
		t.Fatalf("New = %v", err)
	}
	var total time.Duration
	ceiling := 200 * time.Millisecond
	jittered := false
	for i, d := range sleeps {
		total += d
		last := i == len(sleeps)-1
		if !last && (d < ceiling/2 || d > ceiling) {
			t.Errorf("wait %d is %s, want within [%s, %s]", i, d, ceiling/2, ceiling)
		}
		if last && d > ceiling {
			t.Errorf("the last wait is %s, above its ceiling %s", d, ceiling)
		}
		if !last && d != ceiling {
			jittered = true
		}
		ceiling = min(2*ceiling, 5*time.Second)
	}
	// Even at their ceilings (0.2+0.4+0.8+1.6+3.2 s, then 5 s each) the
	// waits need ten to cover 30 s.
	if len(sleeps) < 10 || total != wait {
		t.Fatalf("slept %s in %d waits (%v), want exactly %s", total, len(sleeps), sleeps, wait)
	}
	if !jittered {
		t.Fatalf("every wait sat on its ceiling: %v", sleeps)
	}
	// Instances with different seeds do not retry in step.
	other, _ := startWithoutDatabase(t, 2, wait)
	if slices.Equal(sleeps, other) {
		t.Fatalf("two seeds drew the same waits: %v", sleeps)
	}
}

// cancelOnSleep is a fake clock that cancels start-up during its third
// wait, as a signal arriving while the database is down would.
type cancelOnSleep struct {
	*clock.Fake
	cancel context.CancelFunc
	n      int
}

func (c *cancelOnSleep) Sleep(ctx context.Context, d time.Duration) error {
	if c.n++; c.n == 3 {
		c.cancel()
	}
	return c.Fake.Sleep(ctx, d)
}

// Start-up stops waiting for the database as soon as it is cancelled.
func TestStartUpWaitIsCancellable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := &cancelOnSleep{Fake: clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)), cancel: cancel}
	id := uuid.New()
	_, err := nexus.New(ctx, nexus.Config{
		ID: id, TLS: sledtest.Bundle(t, rackpki.Nexus(id.String())), DataDir: t.TempDir(), DatabaseURL: refusedURL(t),
		DatabaseWait: time.Hour, Clock: clk,
		Tasks: func(*app.App) error { return nil },
	}, zerolog.Nop())
	if err != context.Canceled || clk.n != 3 || len(clk.Sleeps()) != 2 {
		t.Fatalf("New = %v after %d waits (%v slept), want context.Canceled during the third",
			err, clk.n, clk.Sleeps())
	}
}
