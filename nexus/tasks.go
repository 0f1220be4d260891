package nexus

import (
	"errors"

	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/heartbeat"
	"github.com/rackplane/rackplane/bgtasks/sledliveness"
	"github.com/rackplane/rackplane/bgtasks/tufpruner"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
)

// registerTasks is the one place background tasks are registered: add one
// s.tasks.Register call per task. Periods given here are defaults that
// Config.TaskPeriods (--task-period NAME=DURATION) overrides; DependsOn
// names tasks whose changed results (Activation.MarkChanged) activate the
// task.
func (s *Server) registerTasks() error {
	return errors.Join(
		s.tasks.Register(bgtasks.Registration{
			Name: sledliveness.Name, Description: sledliveness.Description, Period: sledliveness.DefaultPeriod,
			Task: &sledliveness.Task{DS: s.ds, Threshold: s.cfg.SledLivenessThreshold},
		}),
		s.tasks.Register(bgtasks.Registration{
			Name: tufpruner.Name, Description: tufpruner.Description, Period: tufpruner.DefaultPeriod,
			Task: tufpruner.New(s.ds, s.cfg.TufReposKept, s.log),
		}),
		s.tasks.Register(bgtasks.Registration{
			Name: tufreplication.Name, Description: tufreplication.Description, Period: tufreplication.DefaultPeriod,
			Task:      s.newReplicationTask(),
			DependsOn: []string{tufpruner.Name},
		}),
		s.tasks.Register(bgtasks.Registration{
			Name: heartbeat.Name, Description: heartbeat.Description, Period: heartbeat.DefaultPeriod,
			Task: &heartbeat.Task{Store: s.taskdb, NexusID: s.cfg.ID, Snapshot: s.taskSummaries},
		}),
	)
}
