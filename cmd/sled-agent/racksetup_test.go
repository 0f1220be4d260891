package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
)

// `sled-agent rack-setup`, as a deployment runs it once: three sleds with
// data disks stay locked until it commits epoch 1 over the bootstrap
// network and hands the rack to Nexus; then they unlock and register.
// Run again it changes nothing; a sled's certificate is refused.
func TestRackSetupCommand(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	procs := sledtest.NewProcesses(t, 3, sledtest.ProcessOptions{NexusURL: nx.InternalURL(), DataDisks: true})
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "rss")
	if _, err := sledtest.CA(t).IssueFiles(tlsDir, "rss", rackpki.RSS(), rackpki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(dir, "rack-id")
	args := []string{"rack-setup", "--tls-dir", tlsDir, "--bootstrap-peers", strings.Join(sledtest.BootstrapAddrs(procs), ","),
		"--nexus-url", nx.InternalURL(), "--rack-id-file", idFile, "--log-level", "warn"}
	setup := func() (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, &out, &errOut)
		return code, out.String(), errOut.String()
	}

	// Locked: no sled agent has started, so none has registered.
	time.Sleep(300 * time.Millisecond)
	if sleds, err := nx.Client.SledList(context.Background()); err != nil || len(sleds) != 0 {
		t.Fatalf("before rack setup: %d sleds registered (%v)", len(sleds), err)
	}

	code, out, errOut := setup()
	if code != 0 || !strings.Contains(out, "trust-quorum epoch 1 committed on 3 sleds") ||
		!strings.Contains(out, "handed to Nexus") {
		t.Fatalf("rack-setup: exit %d\n%s%s", code, out, errOut)
	}
	id, err := os.ReadFile(idFile)
	if err != nil || !strings.Contains(out, "rack "+strings.TrimSpace(string(id))) {
		t.Fatalf("rack id file %q (%v) not the rack set up:\n%s", id, err, out)
	}
	st, err := nx.Client.TrustQuorumStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c := st.LatestCommitted; c == nil || c.Epoch != 1 || c.State != "committed" || len(c.Members) != 3 ||
		st.RackID == nil || st.RackID.String() != strings.TrimSpace(string(id)) {
		t.Fatalf("Nexus after rack-setup: rack %v, %+v", st.RackID, st.LatestCommitted)
	}
	racktest.WaitProcessesRegistered(t, nx, procs...)

	code, out, errOut = setup()
	if code != 0 || !strings.Contains(out, "Nexus had it recorded already; nothing changed") {
		t.Fatalf("rack-setup again: exit %d\n%s%s", code, out, errOut)
	}

	sledDir := filepath.Join(dir, "sled")
	if _, err := sledtest.CA(t).IssueFiles(sledDir, "rss", rackpki.Sled("rackplane-sim", "X-1"), rackpki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	args[2] = sledDir
	if code, out, errOut = setup(); code != 1 || !strings.Contains(errOut, "needs the rack-setup certificate") {
		t.Fatalf("rack-setup with a sled's certificate: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = setup(); code != 1 {
		t.Fatalf("exit %d %s", code, errOut)
	}
	var o, e bytes.Buffer
	if code := run(context.Background(), []string{"rack-setup", "--tls-dir", tlsDir}, &o, &e); code != 2 ||
		!strings.Contains(e.String(), "needs --tls-dir, --bootstrap-peers, --nexus-url and --rack-id-file") {
		t.Fatalf("rack-setup without its flags: exit %d %q", code, e.String())
	}
}
