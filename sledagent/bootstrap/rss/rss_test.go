package rss

import (
	"context"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/sledtest"
)

// A sled that is not up yet (it takes connections and hangs up) is
// redialled on a jittered back-off, not every 100 ms for as long as the
// setup waits.
func TestDialBacksOffWhileTheSledIsDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var dials atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			c.Close()
		}
	}()
	const window = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	_, err = Dial(ctx, []string{ln.Addr().String()}, Options{Bundle: sledtest.Bundle(t, rackpki.RSS()),
		Rand: rand.NewPCG(1, 1)})
	if err == nil {
		t.Fatal("dialled a sled that hangs up")
	}
	// At least half of each delay is waited: 50, 100, 200, 400, 800 ms
	// fit in 1.55 s, the next (1 s) not before 2.55 s.
	if n := dials.Load(); n > 6 || n < 3 {
		t.Fatalf("%d dials in %s; the back-off allows at most 6", n, window)
	}
}
