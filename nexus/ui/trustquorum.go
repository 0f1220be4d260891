package ui

import (
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// The trust-quorum page: every epoch (newest first) with each member's
// state and times and acked/required, every node as the manager last saw
// it with its alarms highlighted, and the sleds that can be added.

// tqEpochsShown bounds the epochs the page shows.
const tqEpochsShown = 50

type tqPage struct {
	Warnings []string
	RackID   string
	// Latest and LatestCommitted summarise the two epochs operators ask
	// about first.
	Latest, LatestCommitted *tqEpochView
	Epochs                  []tqEpochView
	More                    bool
	Nodes                   []tqNodeRow
	Alarms, Unreachable     int
	Uninitialized           []tqUninitRow
	NotSetUp                bool
}

type tqEpochView struct {
	Epoch                 uint64
	State, StateClass     string
	Kind                  string
	Acked, Required       int
	AckClass              string
	Threshold, Z          int
	Coordinator           string
	LastCommitted         uint64
	Attempt               int
	Change                string
	Created, CreatedTitle string
	Committing            string
	Committed             string
	Aborted, AbortReason  string
	Members               []tqMemberRow
	// Open marks the epochs shown unfolded: the one in progress and the
	// latest committed.
	Open bool
}

type tqMemberRow struct {
	Serial, Part      string
	State, StateClass string
	Prepared          string
	Committed         string
}

type tqNodeRow struct {
	Serial, Part string
	Class        string
	Committed    string
	Expunged     string
	// Storage is the data disks' lock (— when not reported),
	// StorageClass its badge and StorageReason why it is locked.
	Storage, StorageClass, StorageReason string
	Alarms                               []tqAlarmRow
	Via                                  string
	Observed                             string
	ObservedBy                           string
	Seen                                 string
	Error                                string
}

type tqAlarmRow struct {
	Kind, Detail, Peer string
	Epoch              uint64
	Time               string
}

type tqUninitRow struct {
	Serial, Part, SeenBy, Seen string
}

func tqStateClass(s model.TQState) string {
	switch s {
	case model.TQCommitted:
		return "ok"
	case model.TQCommittedPartially:
		return "degraded"
	case model.TQAborted:
		return "disabled"
	case model.TQCommitting:
		return "self"
	}
	return "stale"
}

func tqEpoch(c model.TQConfiguration, now time.Time) tqEpochView {
	v := tqEpochView{Epoch: c.Epoch, State: string(c.State), StateClass: tqStateClass(c.State), Acked: c.Acked(),
		Required: c.Required(), Threshold: c.Threshold, Z: c.CommitCrashTolerance, Coordinator: c.Coordinator.Serial,
		LastCommitted: c.LastCommittedEpoch, Attempt: c.Attempt, Change: c.ChangeID.String(),
		Created: humanize.Ago(now, c.TimeCreated), CreatedTitle: c.TimeCreated.UTC().Format(time.RFC3339),
		AbortReason: c.AbortReason, AckClass: "part"}
	switch {
	case c.Lrtq:
		v.Kind = "LRTQ"
	case c.LrtqUpgrade:
		v.Kind = "upgrade from LRTQ"
	}
	if v.Acked >= v.Required {
		v.AckClass = "full"
	}
	ago := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return humanize.Ago(now, *t)
	}
	v.Committing, v.Committed, v.Aborted = ago(c.TimeCommitting), ago(c.TimeCommitted), ago(c.TimeAborted)
	for _, m := range c.Members {
		row := tqMemberRow{Serial: m.Baseboard.Serial, Part: m.Baseboard.Part, State: string(m.State),
			Prepared: ago(m.TimePrepared), Committed: ago(m.TimeCommitted)}
		switch m.State {
		case model.TQMemberCommitted:
			row.StateClass = "ok"
		case model.TQMemberPrepared:
			row.StateClass = "self"
		}
		v.Members = append(v.Members, row)
	}
	return v
}

// buildTrustQuorumPage makes the page from the trust quorum's state, its
// epochs (newest first, possibly one more than shown) and the
// uninitialised sleds.
func buildTrustQuorumPage(st app.TrustQuorumState, epochs []model.TQConfiguration, uninit []model.TQUninitializedSled,
	now time.Time) tqPage {
	var p tqPage
	if st.Rack == nil {
		p.NotSetUp = true
	} else {
		p.RackID = st.Rack.ID.String()
	}
	if len(epochs) > tqEpochsShown {
		epochs, p.More = epochs[:tqEpochsShown], true
	}
	for _, c := range epochs {
		v := tqEpoch(c, now)
		v.Open = c.State.Active() || (st.LatestCommitted != nil && c.Epoch == st.LatestCommitted.Epoch)
		p.Epochs = append(p.Epochs, v)
	}
	if st.Latest != nil {
		v := tqEpoch(*st.Latest, now)
		p.Latest = &v
	}
	if st.LatestCommitted != nil {
		v := tqEpoch(*st.LatestCommitted, now)
		p.LatestCommitted = &v
	}
	for _, n := range st.Nodes {
		row := tqNodeRow{Serial: n.Baseboard.Serial, Part: n.Baseboard.Part, Via: n.Via, Error: n.Error,
			Observed: humanize.Ago(now, n.TimeObserved), ObservedBy: n.ObservedBy.String(), Committed: "—", Storage: "—"}
		if n.TimeSeen != nil {
			row.Seen = humanize.Ago(now, *n.TimeSeen)
		}
		if v := n.Seen; v != nil {
			row.Committed = fmt.Sprint(v.LatestCommittedEpoch)
			if v.StorageLock != "" {
				row.Storage, row.StorageReason = v.StorageLock, v.StorageLockReason
				switch v.StorageLock {
				case model.StorageLockUnlocked:
					row.StorageClass = "ok"
				case model.StorageLockLocked:
					row.StorageClass = "stale"
				default:
					row.StorageClass = "disabled"
				}
			}
			if x := v.Expunged; x != nil {
				row.Expunged = fmt.Sprintf("expunged at epoch %d (told by %s)", x.Epoch, x.From.Serial)
			}
			for _, a := range v.Alarms {
				ar := tqAlarmRow{Kind: a.Kind, Detail: a.Detail, Epoch: a.Epoch, Time: humanize.Ago(now, a.Time)}
				if a.Peer != nil {
					ar.Peer = a.Peer.String()
				}
				row.Alarms = append(row.Alarms, ar)
			}
		}
		switch {
		case len(row.Alarms) > 0:
			row.Class = "failing"
			p.Alarms += len(row.Alarms)
		case n.Error != "":
			row.Class = "degraded"
			p.Unreachable++
		case row.Expunged != "":
			row.Class = "disabled"
		}
		p.Nodes = append(p.Nodes, row)
	}
	for _, u := range uninit {
		p.Uninitialized = append(p.Uninitialized, tqUninitRow{Serial: u.Baseboard.Serial, Part: u.Baseboard.Part,
			SeenBy: u.SeenBy.Serial, Seen: humanize.Ago(now, u.TimeSeen)})
	}
	return p
}

func (s *Pages) mountTrustQuorumPages(r chi.Router) {
	r.Get("/ui/trust-quorum", s.uiTrustQuorum)
}

func (s *Pages) uiTrustQuorum(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st, err := s.app.TrustQuorum(ctx)
	if err != nil {
		s.uiUnavailable(w, r, "the trust quorum", err)
		return
	}
	epochs, err := s.app.TrustQuorumEpochs(ctx, 0, tqEpochsShown+1)
	if err != nil {
		s.uiUnavailable(w, r, "the trust quorum's epochs", err)
		return
	}
	uninit, err := s.app.UninitializedSleds(ctx)
	if err != nil {
		s.uiUnavailable(w, r, "the uninitialised sleds", err)
		return
	}
	s.renderPage(w, r, http.StatusOK, "trustquorum", uiPage{Title: "Trust quorum",
		Body: buildTrustQuorumPage(st, epochs, uninit, time.Now())})
}
