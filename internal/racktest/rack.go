package racktest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/artifacts"
	"github.com/rackplane/rackplane/sledagent/bootstrap/rss"
	"github.com/rackplane/rackplane/trustquorum"
)

// RackConfig describes a test rack.
type RackConfig struct {
	// Sleds is how many sled agents to start.
	Sleds int
	// Nexus and Sled configure the Nexus and every sled agent (see
	// StartNexus and StartSled for what unset fields become).
	Nexus nexus.Config
	Sled  sledagent.Config
	// Seed makes the signing lineage (a different seed, different keys).
	Seed byte
	// TrustQuorum starts every sled as a whole sled process (its
	// bootstrap agent on the bootstrap network and its sled agent, as
	// cmd/sled-agent runs it; see Rack.Processes) and sets the rack up
	// before the test runs: as the rack-setup service, over the bootstrap
	// network, epoch 1 (or LRTQ, with Lrtq) committed on every sled but
	// the spares, handed to Nexus.
	TrustQuorum, Lrtq bool
	// Spares are more sled processes that run only their bootstrap agent
	// (after the others, by index); they are not in rack setup.
	Spares int
	// Logs, when set, receives every component's JSON log lines at debug
	// level (instead of the test log), for tests that read them.
	Logs *LogSink
}

// LogSink collects the log lines of a rack's components.
type LogSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p; zerolog writes one whole line per call.
func (s *LogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// Lines returns the lines written so far.
func (s *LogSink) Lines() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Split(bytes.TrimSpace(bytes.Clone(s.buf.Bytes())), []byte("\n"))
}

// logger is component's logger: into the sink when there is one.
func (r *Rack) logger(component string) zerolog.Logger {
	if r.cfg.Logs == nil {
		return Logger(r.T, component)
	}
	log, err := logging.New(r.cfg.Logs, component, logging.Options{Level: "debug"})
	if err != nil {
		r.T.Fatal(err)
	}
	return log
}

// Rack is a real rack in a test: a fresh database, a Nexus, sled agents
// with temp-dir M.2s, and a signing lineage whose root Nexus trusts.
type Rack struct {
	T     testing.TB
	DB    *testdb.DB
	Nexus *Nexus
	// Sleds are the sled agents of a rack without the trust quorum;
	// Processes the sled processes of one with it (RackConfig.TrustQuorum).
	Sleds     []*Sled
	Processes []*sledtest.Process
	// RackID and Setup are what rack setup made (TrustQuorum racks).
	RackID  trustquorum.RackID
	Setup   *rss.SetupResult
	Lineage *tufgen.Lineage
	cfg     RackConfig
}

// StartRack starts the rack and waits until every sled has registered
// (and, for a trust-quorum rack, until rack setup handed it to Nexus).
func StartRack(t testing.TB, cfg RackConfig) *Rack {
	t.Helper()
	r := &Rack{T: t, DB: testdb.New(t), cfg: cfg}
	r.Nexus = StartNexusLogged(t, r.DB.URL, cfg.Nexus, r.logger("nexus"))
	if cfg.TrustQuorum {
		r.startTrustQuorum()
	} else {
		for range cfg.Sleds {
			r.AddSled(cfg.Sled)
		}
		WaitRegistered(t, r.Nexus.Client, r.Sleds...)
	}
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{cfg.Seed}), tufgen.LineageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.Lineage = l
	if _, _, err := r.Nexus.Client.TrustRootAdd(context.Background(), l.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	return r
}

// AddSled starts one more sled agent registering with the rack's Nexus.
func (r *Rack) AddSled(cfg sledagent.Config) *Sled {
	r.T.Helper()
	s := sledtest.StartSledLogged(r.T, r.Nexus.InternalURL(), cfg, r.logger("sled-agent"))
	r.Sleds = append(r.Sleds, s)
	return s
}

// Upload builds repo with the rack's lineage and uploads it through nx as
// fileName.
func (r *Rack) Upload(nx *Nexus, repo tufgen.Repo, fileName string) *tufgen.Built {
	r.T.Helper()
	archive, built, err := r.Lineage.BuildBytes(repo)
	if err != nil {
		r.T.Fatal(err)
	}
	res, err := nx.Client.RepoUpload(context.Background(), fileName, bytes.NewReader(archive), int64(len(archive)), nil)
	if err != nil {
		r.T.Fatalf("upload %s: %v", repo.SystemVersion, err)
	}
	if res.Repo.SystemVersion != repo.SystemVersion {
		r.T.Fatalf("uploaded %+v", res)
	}
	return built
}

// ReplicationStatus returns the status of nx's replication task's last run
// (the zero Status before its first).
func ReplicationStatus(t testing.TB, nx *Nexus) tufreplication.Status {
	t.Helper()
	task, err := nx.Client.BackgroundTaskGet(context.Background(), tufreplication.Name)
	if err != nil {
		t.Fatal(err)
	}
	var st tufreplication.Status
	if len(task.Status) > 0 {
		if err := json.Unmarshal(task.Status, &st); err != nil {
			t.Fatalf("status %s: %v", task.Status, err)
		}
	}
	return st
}

// ArtifactPath is where a sled keeps an artifact on one M.2.
func ArtifactPath(m2, sha string) string { return filepath.Join(m2, artifacts.UpdateDir, sha) }

// Verified reports whether path holds bytes hashing to sha.
func Verified(path, sha string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == sha
}

// CopiesOn counts the M.2s of s holding a verified copy of sha.
func CopiesOn(s *Sled, sha string) int {
	n := 0
	for _, m2 := range s.Config.M2Dirs {
		if Verified(ArtifactPath(m2, sha), sha) {
			n++
		}
	}
	return n
}
