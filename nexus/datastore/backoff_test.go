package datastore

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Transactions retry concurrently and share the datastore's jitter
// source: each wait stays within its attempt's ceiling, and (under -race)
// the draws do not race.
func TestBackoffFromConcurrentRetries(t *testing.T) {
	policy := RetryPolicy{MaxAttempts: 12, Base: 2 * time.Millisecond, Max: 40 * time.Millisecond}
	d := New(nil, zerolog.Nop(), Options{Retry: policy, Rand: rand.New(rand.NewPCG(1, 2))})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s := d.retrySchedule()
			for attempt := 1; attempt <= 200; attempt++ {
				ceiling := min(policy.Base<<min(attempt-1, 30), policy.Max)
				if w := s.NextBackOff(); w < 0 || w > ceiling {
					t.Errorf("attempt %d waits %s, outside [0, %s]", attempt, w, ceiling)
					return
				}
			}
		})
	}
	wg.Wait()
}
