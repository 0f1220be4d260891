package sledagent

import (
	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/sledagent/bootstrap"
	"github.com/rackplane/rackplane/trustquorum"
)

// tqStatusFrom converts the bootstrap agent's status to its wire form.
func tqStatusFrom(st bootstrap.Status) api.TQStatus {
	w := api.TQStatus{
		Baseboard:            api.BaseboardFrom(st.ID),
		LatestConfiguration:  api.TQConfigurationFrom(st.LatestConfig),
		LatestCommittedEpoch: uint64(st.LatestCommittedEpoch),
		CommittedEpochs:      make([]uint64, 0, len(st.CommittedEpochs)),
		HasLrtq:              st.HasLrtq,
		Coordination:         api.TQCoordinatorStatusFrom(st.Coordination),
		RebuildingShare:      uint64(st.RebuildingShare),
		ConnectedPeers:       make([]api.TQPeer, 0, len(st.ConnectedPeers)),
		Alarms:               make([]api.TQAlarm, 0, len(st.Alarms)),
		ProxiedInFlight:      make([]api.TQProxied, 0, len(st.ProxiedInFlight)),
		ServingForOthers:     st.Serving,
		LedgerGeneration:     st.Ledger.Generation,
		Ledger:               make([]api.TQLedgerDevice, 0, len(st.Ledger.Devices)),
		Stopped:              st.Stopped,
		StoppedReason:        st.StoppedReason,
		PersistFailures:      st.PersistFailures,
		LastPersistError:     st.LastPersistErr,
		StorageLock:          st.StorageLock.State,
		StorageLockReason:    st.StorageLock.Reason,
	}
	if st.RackID != nil {
		id := uuid.UUID(*st.RackID)
		w.RackID = &id
	}
	for _, e := range st.CommittedEpochs {
		w.CommittedEpochs = append(w.CommittedEpochs, uint64(e))
	}
	if x := st.Expunged; x != nil {
		w.Expunged = &api.TQExpunged{Epoch: uint64(x.Epoch), From: api.BaseboardFrom(x.From)}
	}
	for _, p := range st.ConnectedPeers {
		w.ConnectedPeers = append(w.ConnectedPeers, api.TQPeer{Part: p.ID.Part, Serial: p.ID.Serial, ConnectionID: p.ConnID,
			Remote: p.Remote, Dialed: p.Dialed, Since: p.Since})
	}
	for _, a := range st.Alarms {
		al := api.TQAlarm{Kind: string(a.Kind), Epoch: uint64(a.Epoch), Detail: a.Detail, Time: a.Time}
		if a.Peer != (trustquorum.BaseboardID{}) {
			p := api.BaseboardFrom(a.Peer)
			al.Peer = &p
		}
		w.Alarms = append(w.Alarms, al)
	}
	for _, p := range st.ProxiedInFlight {
		w.ProxiedInFlight = append(w.ProxiedInFlight, api.TQProxied{Op: p.Op, Destination: api.BaseboardFrom(p.Destination),
			ConnectionID: p.ConnID, Started: p.Started})
	}
	for _, d := range st.Ledger.Devices {
		w.Ledger = append(w.Ledger, api.TQLedgerDevice{Path: d.Path, Present: d.Present, Generation: d.Generation, Error: d.Error})
	}
	return w
}
