package httpapi

import (
	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// Conversions between the domain model and the wire types: the only place
// where the two meet.

func apiBaseboard(b model.Baseboard) api.Baseboard {
	return api.Baseboard{Part: b.Part, Serial: b.Serial}
}

func apiM2s(ds []model.M2Device) []api.M2Device {
	if ds == nil {
		return nil
	}
	out := make([]api.M2Device, len(ds))
	for i, d := range ds {
		out[i] = api.M2Device(d)
	}
	return out
}

// APISled is s on the wire.
func APISled(s model.Sled) api.Sled {
	return api.Sled{
		ID: s.ID, Baseboard: apiBaseboard(s.Baseboard), SledAgentAddress: s.SledAgentAddress,
		RepoDepotPort: s.RepoDepotPort, Policy: s.Policy, State: s.State,
		TimeCreated: s.TimeCreated, TimeModified: s.TimeModified, TimeLastSeen: s.TimeLastSeen,
		M2s: apiM2s(s.M2s), ArtifactGeneration: s.ArtifactGeneration, ArtifactsComplete: s.ArtifactsComplete,
		Health: apiSledHealth(app.SledHealth(s)),
	}
}

func apiSledHealth(h model.SledHealth) api.SledHealth {
	out := api.SledHealth{State: h.State, M2Expected: h.M2Expected, M2Present: h.M2Present,
		M2Missing: apiM2s(h.M2Missing), StorageLock: h.StorageLock, Problems: h.Problems}
	if out.M2Missing == nil {
		out.M2Missing = []api.M2Device{}
	}
	if out.Problems == nil {
		out.Problems = []string{}
	}
	return out
}

func modelRegistration(r api.SledRegistration) model.SledRegistration {
	out := model.SledRegistration{
		Baseboard:        model.Baseboard{Part: r.Baseboard.Part, Serial: r.Baseboard.Serial},
		SledAgentAddress: r.SledAgentAddress, RepoDepotPort: r.RepoDepotPort,
		ArtifactGeneration: r.ArtifactGeneration, ArtifactsComplete: r.ArtifactsComplete,
	}
	if r.M2s != nil {
		out.M2s = make([]model.M2Device, len(r.M2s))
		for i, d := range r.M2s {
			out.M2s[i] = model.M2Device(d)
		}
	}
	return out
}

// APITrustRoot is t on the wire.
func APITrustRoot(t model.TrustRoot) api.TrustRoot {
	return api.TrustRoot{ID: t.ID, TimeCreated: t.TimeCreated, SHA256: t.SHA256, Version: t.Version,
		Expires: t.Expires, Root: t.JSON}
}

// APIRepo is r on the wire. A pruned repo's state is "pruned", whatever
// replication health was last recorded for it.
func APIRepo(r model.TufRepo) api.TufRepo {
	if r.TimePruned != nil {
		r.State, r.StateReason = api.RepoStatePruned, ""
	}
	return api.TufRepo{
		ID: r.ID, SystemVersion: r.SystemVersion, FileName: r.FileName, SHA256: r.SHA256,
		TimeCreated: r.TimeCreated, ValidUntil: r.ValidUntil, TimePruned: r.TimePruned, PrunedBy: r.PrunedBy,
		Kept: r.Kept, State: r.State, StateReason: r.StateReason, TrustRootID: r.TrustRootID,
		RootVersion: r.RootVersion, TimestampVersion: r.TimestampVersion, SnapshotVersion: r.SnapshotVersion,
		TargetsVersion: r.TargetsVersion, ArtifactCount: r.ArtifactCount, TotalBytes: r.TotalBytes,
	}
}

func apiArtifact(a model.TufArtifact) api.TufArtifact {
	return api.TufArtifact{ID: a.ID, Name: a.Name, Version: a.Version, Kind: a.Kind, SHA256: a.SHA256,
		Length: a.Length, Tags: a.Tags}
}

// APIRepoDetail is d on the wire.
func APIRepoDetail(d model.TufRepoDetail) api.TufRepoDetail {
	out := api.TufRepoDetail{Repo: APIRepo(d.Repo), Artifacts: make([]api.TufRepoArtifact, len(d.Artifacts))}
	for i, a := range d.Artifacts {
		out.Artifacts[i] = api.TufRepoArtifact{TufArtifact: apiArtifact(a.TufArtifact), TargetName: a.TargetName,
			NexusCopies: a.NexusCopies}
		if a.Replication != nil {
			rep := api.ArtifactReplication(*a.Replication)
			out.Artifacts[i].Replication = &rep
		}
		if a.PartOf != nil {
			p := api.ArtifactPartOf(*a.PartOf)
			out.Artifacts[i].PartOf = &p
		}
	}
	return out
}

func apiArtifactListItem(a model.ArtifactListItem) api.ArtifactListItem {
	return api.ArtifactListItem{TufArtifact: apiArtifact(a.TufArtifact), SystemVersions: a.SystemVersions,
		WantedOnSleds: a.WantedOnSleds}
}

// APIUpload is u on the wire.
func APIUpload(u model.UploadProgress) api.TufUpload {
	return api.TufUpload{ID: u.ID, FileName: u.FileName, Actor: u.Actor, RequestID: u.RequestID, TimeStarted: u.Started,
		Phase: u.Phase, TimePhaseStarted: u.PhaseStarted, BytesReceived: u.BytesReceived, ContentLength: u.ContentLength,
		SystemVersion: u.SystemVersion}
}
