package httpapi

import (
	"encoding/hex"
	"net/http"
	"slices"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/model"
)

// APITrustQuorumConfig is c on the wire.
func APITrustQuorumConfig(c model.TQConfiguration) api.TrustQuorumConfig {
	out := api.TrustQuorumConfig{
		Epoch: c.Epoch, LastCommittedEpoch: c.LastCommittedEpoch, State: string(c.State), Threshold: c.Threshold,
		CommitCrashTolerance: c.CommitCrashTolerance, Coordinator: apiBaseboard(c.Coordinator), Lrtq: c.Lrtq,
		LrtqUpgrade: c.LrtqUpgrade, Members: make([]api.TrustQuorumMember, len(c.Members)), Acked: c.Acked(),
		Required: c.Required(), TimeCreated: c.TimeCreated, TimeLastProgress: c.TimeLastProgress,
		TimeCommitting: c.TimeCommitting, TimeCommitted: c.TimeCommitted, TimeAborted: c.TimeAborted,
		AbortReason: c.AbortReason, ChangeID: c.ChangeID, Attempt: c.Attempt,
	}
	for i, m := range c.Members {
		out.Members[i] = api.TrustQuorumMember{Part: m.Baseboard.Part, Serial: m.Baseboard.Serial, State: string(m.State),
			TimePrepared: m.TimePrepared, TimeCommitted: m.TimeCommitted}
	}
	return out
}

func apiTrustQuorumConfigPtr(c *model.TQConfiguration) *api.TrustQuorumConfig {
	if c == nil {
		return nil
	}
	w := APITrustQuorumConfig(*c)
	return &w
}

func apiBaseboards(bs []model.Baseboard) []api.Baseboard {
	out := make([]api.Baseboard, len(bs))
	for i, b := range bs {
		out[i] = apiBaseboard(b)
	}
	return out
}

// APITrustQuorumNode is n on the wire.
func APITrustQuorumNode(n model.TQNodeStatus) api.TrustQuorumNode {
	out := api.TrustQuorumNode{Part: n.Baseboard.Part, Serial: n.Baseboard.Serial, TimeObserved: n.TimeObserved,
		ObservedBy: n.ObservedBy, Via: n.Via, Error: n.Error, TimeStatus: n.TimeSeen}
	if v := n.Seen; v != nil {
		st := &api.TrustQuorumNodeStatus{LatestCommittedEpoch: v.LatestCommittedEpoch,
			LatestConfigurationEpoch: v.LatestConfigEpoch, HasLrtq: v.HasLrtq, CoordinatingEpoch: v.CoordinatingEpoch,
			CoordinationState: v.CoordinationState, ConnectedPeers: apiBaseboards(v.ConnectedPeers), Alarms: []api.TQAlarm{},
			LedgerGeneration: v.LedgerGeneration, Stopped: v.Stopped, StoppedReason: v.StoppedReason,
			StorageLock: v.StorageLock, StorageLockReason: v.StorageLockReason}
		if x := v.Expunged; x != nil {
			st.Expunged = &api.TQExpunged{Epoch: x.Epoch, From: apiBaseboard(x.From)}
		}
		for _, a := range v.Alarms {
			al := api.TQAlarm{Kind: a.Kind, Epoch: a.Epoch, Detail: a.Detail, Time: a.Time}
			if a.Peer != nil {
				p := apiBaseboard(*a.Peer)
				al.Peer = &p
			}
			st.Alarms = append(st.Alarms, al)
		}
		out.Status = st
	}
	return out
}

func modelBaseboards(bs []api.Baseboard) []model.Baseboard {
	out := make([]model.Baseboard, len(bs))
	for i, b := range bs {
		out[i] = model.Baseboard{Part: b.Part, Serial: b.Serial}
	}
	return out
}

func (s *API) trustQuorumStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := s.app.TrustQuorum(r.Context())
	if err != nil {
		return err
	}
	out := api.TrustQuorumStatus{Latest: apiTrustQuorumConfigPtr(st.Latest),
		LatestCommitted: apiTrustQuorumConfigPtr(st.LatestCommitted), Nodes: []api.TrustQuorumNode{}}
	if st.Rack != nil {
		id := st.Rack.ID
		out.RackID = &id
	}
	for _, n := range st.Nodes {
		out.Nodes = append(out.Nodes, APITrustQuorumNode(n))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *API) trustQuorumEpochGet(w http.ResponseWriter, r *http.Request, epoch int64) error {
	if epoch < 1 {
		return fault.Invalidf(api.CodeInvalidParameter, "path parameter epoch: epochs start at 1, not %d", epoch)
	}
	c, err := s.app.TrustQuorumEpoch(r.Context(), uint64(epoch))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, APITrustQuorumConfig(c))
	return nil
}

func (s *API) trustQuorumMembership(w http.ResponseWriter, r *http.Request) error {
	var req api.TrustQuorumMembership
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	c, err := s.app.ChangeTrustQuorumMembership(r.Context(), modelBaseboards(req.Add), modelBaseboards(req.Remove))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusAccepted, APITrustQuorumConfig(c))
	return nil
}

func (s *API) trustQuorumLrtqUpgrade(w http.ResponseWriter, r *http.Request) error {
	c, err := s.app.UpgradeTrustQuorumFromLrtq(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusAccepted, APITrustQuorumConfig(c))
	return nil
}

func (s *API) trustQuorumAbort(w http.ResponseWriter, r *http.Request) error {
	var req api.TrustQuorumAbort
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	c, err := s.app.AbortTrustQuorum(r.Context(), req.Epoch)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, APITrustQuorumConfig(c))
	return nil
}

func (s *API) sledUninitializedList(w http.ResponseWriter, r *http.Request) error {
	sleds, err := s.app.UninitializedSleds(r.Context())
	if err != nil {
		return err
	}
	out := api.Page[api.UninitializedSled]{Items: []api.UninitializedSled{}}
	for _, u := range sleds {
		out.Items = append(out.Items, api.UninitializedSled{Part: u.Baseboard.Part, Serial: u.Baseboard.Serial,
			SeenBy: apiBaseboard(u.SeenBy), TimeSeen: u.TimeSeen})
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// rackSetupHandoff is the rack-setup service's handoff on the internal
// listener.
func (s *API) rackSetupHandoff(w http.ResponseWriter, r *http.Request) error {
	var req api.RackSetupHandoff
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	cfg, err := handoffConfig(req)
	if err != nil {
		return err
	}
	c, created, err := s.app.HandOffRackSetup(r.Context(), cfg)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	httpx.WriteJSON(w, status, APITrustQuorumConfig(c))
	return nil
}

// handoffConfig is the handoff as the epoch 1 Nexus records: the members
// and coordinator must agree with the configuration when there is one.
func handoffConfig(h api.RackSetupHandoff) (model.TQConfiguration, error) {
	c := model.TQConfiguration{RackID: h.RackID, Epoch: 1, Lrtq: h.Lrtq,
		Coordinator: model.Baseboard{Part: h.Coordinator.Part, Serial: h.Coordinator.Serial}}
	members := modelBaseboards(h.Members)
	if h.Lrtq {
		for _, b := range members {
			c.Members = append(c.Members, model.TQMember{Baseboard: b})
		}
		c.Threshold = model.TQThreshold(len(members))
		slices.SortFunc(c.Members, func(a, b model.TQMember) int { return model.CompareBaseboards(a.Baseboard, b.Baseboard) })
		return c, nil
	}
	tc := h.Configuration
	if tc.RackID != h.RackID || tc.Epoch != 1 || tc.Coordinator != h.Coordinator {
		return c, fault.Invalidf(api.CodeInvalidField,
			"configuration: its rack id, epoch and coordinator must be the handoff's rack id, 1 and coordinator")
	}
	if len(tc.Members) != len(h.Members) {
		return c, fault.Invalidf(api.CodeInvalidField, "members must be the configuration's members")
	}
	c.Threshold = int(tc.Threshold)
	for i, m := range tc.Members {
		d, err := hex.DecodeString(m.ShareDigest)
		if err != nil || len(d) != 32 {
			return c, fault.Invalidf(api.CodeInvalidField, "configuration.members[%d].share_digest must be 64 hex digits", i)
		}
		b := model.Baseboard{Part: m.Part, Serial: m.Serial}
		if b != members[i] {
			return c, fault.Invalidf(api.CodeInvalidField, "members[%d] is %s, the configuration's is %s", i, members[i], b)
		}
		c.Members = append(c.Members, model.TQMember{Baseboard: b, ShareDigest: d, X: int(m.X)})
	}
	if e := tc.EncryptedRackSecrets; e != nil {
		c.EncryptedSalt, c.EncryptedCiphertext = e.Salt, e.Ciphertext
	}
	return c, nil
}
