// Package nexustasks is the set of background tasks every Nexus runs and
// how they are wired to its application layer: which tasks exist, their
// default periods, their dependencies, and which application events
// activate them. cmd/nexus (and the test harness, which must run the same
// rack) pass Registrar to nexus.New; the nexus package itself imports no
// task.
package nexustasks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/heartbeat"
	"github.com/rackplane/rackplane/bgtasks/sledliveness"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/bgtasks/tufpruner"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/nexus/app"
)

// Config tunes the tasks. Zero fields take each task's defaults.
type Config struct {
	// SledLivenessThreshold is how long a sled may go unseen before it is
	// marked unreachable.
	SledLivenessThreshold time.Duration
	// TufReposKept is how many of the newest repos the pruner keeps.
	TufReposKept int
	// Replication tunes tuf_artifact_replication.
	Replication ReplicationConfig
	// TrustQuorum tunes trust_quorum_manager.
	TrustQuorum TrustQuorumConfig
}

// TrustQuorumConfig tunes the trust-quorum manager (see
// bgtasks/trustquorum.Config; zero fields take its defaults).
type TrustQuorumConfig struct {
	// NoProgress is how long a prepare may stand still before the epoch
	// is aborted and the change retried at the next epoch.
	NoProgress time.Duration
	// MaxAttempts bounds the attempts at one change.
	MaxAttempts int
	// FollowUp is how soon the task looks again while an epoch is in
	// progress.
	FollowUp time.Duration
}

// ReplicationConfig tunes the replication task (see tufreplication.Limits).
type ReplicationConfig struct {
	// MinSledReplication: sleds that must hold an artifact before this
	// Nexus drops its local copy; also how many sleds Nexus seeds itself.
	MinSledReplication int
	MaxCopiesPerSource int
	// FollowUp is how soon the task looks again while copies run.
	FollowUp time.Duration
	// Dial opens the task's connections to sleds (nil: the task's
	// default). Benchmarks set one that counts the bytes Nexus sends.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DefaultTufReposKept is how many of the newest repos are kept when the
// config says nothing.
const DefaultTufReposKept = 3

// Registrar returns the function nexus.New calls to register this set of
// tasks on a Nexus's driver. Periods given here are defaults that the
// Nexus's per-task period overrides (--task-period NAME=DURATION);
// DependsOn names tasks whose changed results activate the task.
func Registrar(cfg Config) func(a *app.App) error {
	return func(a *app.App) error {
		if cfg.TufReposKept <= 0 {
			cfg.TufReposKept = DefaultTufReposKept
		}
		d, log := a.Tasks(), a.Log()
		replication := tufreplication.New(tufreplication.Config{
			App: a, DS: a.Datastore(), Depot: a.Depot(), NexusID: a.NexusID(), Log: log,
			Limits: tufreplication.Limits{
				MinSledReplication: cfg.Replication.MinSledReplication,
				MaxCopiesPerSource: cfg.Replication.MaxCopiesPerSource,
			},
			FollowUp: cfg.Replication.FollowUp,
			TLS:      a.SledTLS(),
			Dial:     cfg.Replication.Dial,
		})
		tq, err := trustquorum.New(trustquorum.Config{
			App: a, TLS: a.SledTLS(), Log: log, Registerer: a.Metrics(),
			NoProgress: cfg.TrustQuorum.NoProgress, MaxAttempts: cfg.TrustQuorum.MaxAttempts,
			FollowUp: cfg.TrustQuorum.FollowUp,
		})
		if err != nil {
			return err
		}
		err = errors.Join(
			d.Register(bgtasks.Registration{
				Name: sledliveness.Name, Description: sledliveness.Description, Period: sledliveness.DefaultPeriod,
				Task: &sledliveness.Task{DS: a.Datastore(), Threshold: cfg.SledLivenessThreshold},
			}),
			d.Register(bgtasks.Registration{
				Name: tufpruner.Name, Description: tufpruner.Description, Period: tufpruner.DefaultPeriod,
				Task: tufpruner.New(a, cfg.TufReposKept, log),
			}),
			d.Register(bgtasks.Registration{
				Name: tufreplication.Name, Description: tufreplication.Description, Period: tufreplication.DefaultPeriod,
				Task:      replication,
				DependsOn: []string{tufpruner.Name},
			}),
			d.Register(bgtasks.Registration{
				Name: trustquorum.Name, Description: trustquorum.Description, Period: trustquorum.DefaultPeriod,
				Task: tq,
			}),
			d.Register(bgtasks.Registration{
				Name: heartbeat.Name, Description: heartbeat.Description, Period: heartbeat.DefaultPeriod,
				Task: &heartbeat.Task{Store: a.TaskDB(), NexusID: a.NexusID(), Snapshot: a.TaskSummaries},
			}),
		)
		if err != nil {
			return err
		}
		if err := a.Metrics().Register(replication.Collector()); err != nil {
			return fmt.Errorf("replication metrics: %w", err)
		}
		a.SetReplicationView(tufreplication.Name, replication)
		a.SetHeartbeatTask(heartbeat.Name)
		// An event activates the tasks whose inputs it changes, now rather
		// than at their next period; a failed activation only delays the
		// work to that period.
		activate := func(task string) func(requester string) {
			return func(requester string) {
				if err := d.Activate(requester, task); err != nil {
					log.Warn().Err(err).Str("task", task).Str("requester", requester).Msg("could not activate task")
				}
			}
		}
		// Uploads, prunes and sled registrations change replication's
		// inputs.
		a.Subscribe(app.ReposChanged, activate(tufreplication.Name))
		a.Subscribe(app.SledsChanged, activate(tufreplication.Name))
		// Every trust-quorum change (an operator's request, a handoff, a
		// step a run recorded) is the manager's to act on, and so is a
		// sled that appeared or came back (a member it may wait for).
		a.Subscribe(app.TrustQuorumChanged, activate(trustquorum.Name))
		a.Subscribe(app.SledsChanged, activate(trustquorum.Name))
		return nil
	}
}
