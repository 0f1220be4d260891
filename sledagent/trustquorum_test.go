package sledagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/trustquorum"
)

// The trust-quorum routes answer the agent's sentinels with the statuses
// and codes the sled API documents, wrapped or not; the handlers' own
// faults pass unchanged and anything else is internal.
func TestTrustQuorumErrorsOnTheWire(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{bootstrap.ErrBusy, 503, api.CodeBusy},
		{bootstrap.ErrStopped, 503, api.CodeTrustQuorumStopped},
		{bootstrap.ErrNotRunning, 503, api.CodeServiceUnavailable},
		{bootstrap.ErrDestinationNotConnected, 503, api.CodeDestinationNotConnected},
		{bootstrap.ErrProxyConnectionLost, 503, api.CodeProxyConnectionLost},
		{bootstrap.ErrNoSledAgent, 409, api.CodeNoSledAgent},
		{bootstrap.ErrForbidden, 403, api.CodeForbiddenIdentity},
		{bootstrap.ErrInvalidRequest, 400, api.CodeInvalidBody},
		{fmt.Errorf("proxy to 913-0000019/sled-3: %w", context.DeadlineExceeded), 504, api.CodeProxyTimeout},
		{trustquorum.ErrInvalidMembership, 400, api.CodeInvalidMembership},
		{trustquorum.ErrInvalidThreshold, 400, api.CodeInvalidThreshold},
		{trustquorum.ErrMalformed, 400, api.CodeInvalidField},
		{trustquorum.ErrNotAMember, 409, api.CodeNotAMember},
		{trustquorum.ErrExpunged, 409, api.CodeExpunged},
		{trustquorum.ErrUpgradeFromLrtqRequired, 409, api.CodeUpgradeFromLrtqRequired},
		{trustquorum.ErrNoLrtq, 409, api.CodeNoLrtq},
		{trustquorum.ErrAlreadyUpgraded, 409, api.CodeAlreadyUpgraded},
		{trustquorum.ErrRackIDMismatch, 409, api.CodeRackIDMismatch},
		{trustquorum.ErrLastCommittedEpochMismatch, 409, api.CodeLastCommittedEpochMismatch},
		{fmt.Errorf("reconfigure: %w", trustquorum.ErrStaleEpoch), 409, api.CodeStaleEpoch},
		{trustquorum.ErrConflictingReconfiguration, 409, api.CodeConflictingReconfiguration},
		{trustquorum.ErrNotPrepared, 409, api.CodeNotPrepared},
		{trustquorum.ErrMismatchedConfiguration, 409, api.CodeMismatchedConfiguration},
		{trustquorum.ErrNotCommitted, 409, api.CodeNotCommitted},
		{trustquorum.ErrUnknownEpoch, 409, api.CodeUnknownEpoch},
		{trustquorum.ErrNotInitialized, 409, api.CodeNotInitialized},
		{trustquorum.ErrAlreadyInitialized, 409, api.CodeAlreadyInitialized},
		{trustquorum.ErrRebuildInProgress, 409, api.CodeRebuildInProgress},
		{trustquorum.ErrSecretUnavailable, 409, api.CodeSecretUnavailable},
		{fault.Invalidf(api.CodeInvalidField, "destination is for /trust-quorum/proxy/commit"), 400, api.CodeInvalidField},
		{errors.New("the disk caught fire"), 500, api.CodeInternal},
	}
	if len(cases) != len(tqErrors)+2 {
		t.Fatalf("%d cases for %d mapped errors: a sentinel is untested", len(cases), len(tqErrors))
	}
	for _, c := range cases {
		h := tqHandlers.H(func(http.ResponseWriter, *http.Request) error { return c.err })
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/trust-quorum/reconfigure", nil))
		var e api.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("%v: body %s", c.err, rec.Body)
		}
		if rec.Code != c.status || e.ErrorCode != c.code {
			t.Errorf("%v: got %d %s, want %d %s", c.err, rec.Code, e.ErrorCode, c.status, c.code)
		}
		// A sentinel's own words are the message; a fault keeps its own.
		if f, ok := fault.As(c.err); ok && e.Message != f.Message {
			t.Errorf("%v: message %q", c.err, e.Message)
		} else if !ok && c.status != 500 && e.Message != c.err.Error() {
			t.Errorf("%v: message %q, want the error's text", c.err, e.Message)
		}
	}
}
