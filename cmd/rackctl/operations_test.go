package main

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/api/openapi"
)

// operationCommands maps each operation of Nexus's operator API to the
// command that calls it.
var operationCommands = map[string]string{
	"healthz":                     "health",
	"readyz":                      "health",
	"sled_list":                   "sleds list",
	"sled_get":                    "sleds show",
	"background_task_list":        "bgtasks list",
	"background_task_activate":    "bgtasks activate",
	"background_task_get":         "bgtasks show",
	"background_task_set_enabled": "bgtasks enable",
	"trust_root_list":             "trust-root list",
	"trust_root_add":              "trust-root add",
	"trust_root_get":              "trust-root show",
	"trust_root_delete":           "trust-root delete",
	"repo_list":                   "repo list",
	"repo_upload":                 "repo upload",
	"upload_list":                 "repo uploads",
	"repo_get":                    "repo show",
	"repo_prune":                  "repo delete",
	"repo_set_kept":               "repo keep",
	"artifact_list":               "repo artifacts",
	"token_list":                  "token list",
	"token_create":                "token create",
	"token_revoke":                "token revoke",
	"audit_log_list":              "audit list",

	"trust_quorum_status":            "trust-quorum status",
	"sled_uninitialized_list":        "trust-quorum status",
	"trust_quorum_epoch_get":         "trust-quorum show",
	"trust_quorum_membership_change": "trust-quorum add", // and remove
	"trust_quorum_lrtq_upgrade":      "trust-quorum upgrade-from-lrtq",
	"trust_quorum_abort":             "trust-quorum abort",
}

// operationsLeftOut are operations no command calls, and why.
var operationsLeftOut = map[string]string{
	"metrics":          "Prometheus scrapes it; a person reads it with curl or a dashboard",
	"openapi_document": "for tools that generate clients or docs, not for operating the rack",
}

// Every operation of the operator API has a command (or a reason in
// operationsLeftOut), and every command named exists.
func TestEveryOperationHasACommand(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openapi.NexusExternal, &doc); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range commandNames() {
		names[n] = true
	}
	var missing []string
	seen := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if op.OperationID == "" {
				continue
			}
			seen[op.OperationID] = true
			cmd, ok := operationCommands[op.OperationID]
			_, left := operationsLeftOut[op.OperationID]
			switch {
			case ok && !names[cmd]:
				t.Errorf("%s (%s %s) maps to %q, which is not a command", op.OperationID, strings.ToUpper(method), path, cmd)
			case !ok && !left:
				missing = append(missing, op.OperationID+" ("+strings.ToUpper(method)+" "+path+")")
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("operations without a rackctl command: %s; add one (and to operationCommands), or say in operationsLeftOut why not",
			strings.Join(missing, ", "))
	}
	for id := range operationCommands {
		if !seen[id] {
			t.Errorf("operationCommands names %s, which the API no longer has", id)
		}
	}
}
