package client

import (
	"context"
	"net/http"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/external"
)

// BackgroundTaskList returns the answering Nexus's tasks and every Nexus's
// heartbeat.
func (n Nexus) BackgroundTaskList(ctx context.Context) (api.BackgroundTaskList, error) {
	var out api.BackgroundTaskList
	err := n.call(ctx, external.NewBackgroundTaskListRequest, &out)
	return out, err
}

// BackgroundTaskGet returns one task with its history.
func (n Nexus) BackgroundTaskGet(ctx context.Context, name string) (api.BackgroundTask, error) {
	var out api.BackgroundTask
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewBackgroundTaskGetRequest(server, name)
	}, &out)
	return out, err
}

// BackgroundTaskActivate asks for an explicit activation of every named
// task; when any name is unknown, nothing is activated.
func (n Nexus) BackgroundTaskActivate(ctx context.Context, names ...string) (api.BackgroundTaskActivated, error) {
	var out api.BackgroundTaskActivated
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewBackgroundTaskActivateRequest(server, api.BackgroundTaskActivate{Names: names})
	}, &out)
	return out, err
}

// BackgroundTaskSetEnabled flips a task's switch on every Nexus.
func (n Nexus) BackgroundTaskSetEnabled(ctx context.Context, name string, enabled bool) (api.BackgroundTask, error) {
	var out api.BackgroundTask
	err := n.call(ctx, func(server string) (*http.Request, error) {
		return external.NewBackgroundTaskSetEnabledRequest(server, name, api.BackgroundTaskEnabled{Enabled: &enabled})
	}, &out)
	return out, err
}
