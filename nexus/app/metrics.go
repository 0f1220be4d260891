package app

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/nexus/model"
)

// stateCollector reports what the rack holds, read when /metrics is
// scraped: repos by state, sleds by state and by health, and this Nexus's
// depot. A failed read drops those metrics from that scrape and says why
// (the handler carries on with the others).
type stateCollector struct{ a *App }

var (
	reposDesc = prometheus.NewDesc("rackplane_tuf_repos",
		"TUF repos by state: active, degraded, failed, pruned.", []string{"state"}, nil)
	sledsDesc = prometheus.NewDesc("rackplane_sleds",
		"Registered sleds by state: active, unreachable, decommissioned.", []string{"state"}, nil)
	sledHealthDesc = prometheus.NewDesc("rackplane_sleds_by_health",
		"Registered sleds by health: ok, degraded (an M.2 missing), unknown (no inventory yet).", []string{"health"}, nil)
	sledLockDesc = prometheus.NewDesc("rackplane_sleds_by_storage_lock",
		"Registered sleds by the storage lock their trust-quorum node last reported: locked, unlocked, expunged, "+
			"unknown (never reported).", []string{"storage_lock"}, nil)
	depotBytesDesc = prometheus.NewDesc("rackplane_depot_bytes",
		"Bytes of artifacts in this Nexus's local depot.", nil, nil)
	depotArtifactsDesc = prometheus.NewDesc("rackplane_depot_artifacts",
		"Artifacts in this Nexus's local depot.", nil, nil)
)

// The label values every gauge has, at zero when nothing is in them.
var (
	repoStates   = []string{model.RepoStateActive, model.RepoStateDegraded, model.RepoStateFailed, model.RepoStatePruned}
	sledStates   = []string{model.SledStateActive, model.SledStateUnreachable, model.SledStateDecommissioned}
	sledHealths  = []string{model.SledHealthOK, model.SledHealthDegraded, model.SledHealthUnknown}
	sledLocks    = []string{model.StorageLockLocked, model.StorageLockUnlocked, model.StorageLockExpunged, model.StorageLockUnknown}
	scrapeBudget = 5 * time.Second
	// sledsCounted bounds the sleds read per scrape (a rack has 32).
	sledsCounted = 10_000
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{reposDesc, sledsDesc, sledHealthDesc, sledLockDesc, depotBytesDesc, depotArtifactsDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeBudget)
	defer cancel()
	if counts, err := c.a.ds.TufRepoStateCounts(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(reposDesc, err)
	} else {
		for _, st := range repoStates {
			ch <- prometheus.MustNewConstMetric(reposDesc, prometheus.GaugeValue, float64(counts[st]), st)
		}
	}
	if sleds, err := c.a.ListSleds(ctx, uuid.Nil, sledsCounted); err != nil {
		ch <- prometheus.NewInvalidMetric(sledsDesc, err)
		ch <- prometheus.NewInvalidMetric(sledHealthDesc, err)
		ch <- prometheus.NewInvalidMetric(sledLockDesc, err)
	} else {
		byState, byHealth, byLock := map[string]int{}, map[string]int{}, map[string]int{}
		for _, s := range sleds {
			byState[s.State]++
			h := SledHealth(s)
			byHealth[h.State]++
			byLock[h.StorageLock]++
		}
		for _, l := range sledLocks {
			ch <- prometheus.MustNewConstMetric(sledLockDesc, prometheus.GaugeValue, float64(byLock[l]), l)
		}
		for _, st := range sledStates {
			ch <- prometheus.MustNewConstMetric(sledsDesc, prometheus.GaugeValue, float64(byState[st]), st)
		}
		for _, h := range sledHealths {
			ch <- prometheus.MustNewConstMetric(sledHealthDesc, prometheus.GaugeValue, float64(byHealth[h]), h)
		}
	}
	if c.a.depot == nil {
		return
	}
	if n, bytes, err := c.a.depot.Usage(); err != nil {
		ch <- prometheus.NewInvalidMetric(depotBytesDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(depotBytesDesc, prometheus.GaugeValue, float64(bytes))
		ch <- prometheus.MustNewConstMetric(depotArtifactsDesc, prometheus.GaugeValue, float64(n))
	}
}
