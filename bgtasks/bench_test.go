package bgtasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/bgtasks"
)

// BenchmarkActivationOverhead measures explicit activations of a no-op task
// through the driver, one after another (trigger, run, record, wait), and
// compares them with the machine's floor for the same loop: a bare
// request/reply handoff to a worker goroutine over channels.
//
//	go test -run '^$' -bench ActivationOverhead -benchtime 2s ./bgtasks/
func BenchmarkActivationOverhead(b *testing.B) {
	d := bgtasks.NewDriver(bgtasks.Options{Log: zerolog.Nop()})
	task := bgtasks.TaskFunc(func(context.Context, bgtasks.Activation) (any, error) { return nil, nil })
	if err := d.Register(bgtasks.Registration{Name: "noop", Description: "does nothing", Period: time.Hour, Task: task}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := d.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer d.Stop(5 * time.Second)
	if err := d.WaitCompleted(ctx, "noop", 1); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	began := time.Now()
	for i := range b.N {
		if err := d.Activate("bench", "noop"); err != nil {
			b.Fatal(err)
		}
		if err := d.WaitCompleted(ctx, "noop", uint64(i)+2); err != nil {
			b.Fatal(err)
		}
	}
	driver := time.Since(began)
	b.StopTimer()

	req, resp := make(chan struct{}), make(chan struct{})
	go func() {
		for range req {
			resp <- struct{}{}
		}
	}()
	began = time.Now()
	for range b.N {
		req <- struct{}{}
		<-resp
	}
	floor := time.Since(began)
	close(req)

	perSec := float64(b.N) / driver.Seconds()
	floorPerSec := float64(b.N) / floor.Seconds()
	b.ReportMetric(perSec, "activations/s")
	b.ReportMetric(floorPerSec, "handoffs/s")
	b.ReportMetric(floorPerSec/perSec, "x-slower-than-handoff")
}
