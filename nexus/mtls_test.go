package nexus_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// quietRack is a rack whose replication task is switched off, so that
// what a test pushes to a sled is not changed behind its back.
func quietRack(t *testing.T, sleds int) *racktest.Rack {
	t.Helper()
	r := racktest.StartRack(t, racktest.RackConfig{Sleds: sleds})
	if _, err := r.Nexus.Client.BackgroundTaskSetEnabled(context.Background(), tufreplication.Name, false); err != nil {
		t.Fatal(err)
	}
	// A run that started before the switch may still be going: wait for
	// the one that saw it. (The task acts on sleds whose generation is
	// ahead of the database's, as the tests here set them.)
	racktest.WaitFor(t, 20*time.Second, "replication to stop", func() error {
		task, err := r.Nexus.Client.BackgroundTaskGet(context.Background(), tufreplication.Name)
		if err != nil {
			return err
		}
		if task.Current.State != api.TaskStateIdle || task.LastActivation == nil ||
			task.LastActivation.Outcome != api.TaskOutcomeDisabled {
			return fmt.Errorf("state %s, last %+v", task.Current.State, task.LastActivation)
		}
		return nil
	})
	return r
}

// A sled registers only as itself: not with another sled's baseboard, and
// not by taking over another sled's id; Nexus records neither.
func TestSledsRegisterOnlyAsThemselves(t *testing.T) {
	t.Parallel()
	r := quietRack(t, 2)
	ctx := context.Background()
	a, b := r.Sleds[0], r.Sleds[1]
	before, err := r.Nexus.Client.SledGet(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	// Sled b's certificate, claiming sled a's baseboard and id.
	asB, err := client.NewNexusInternal(r.Nexus.InternalURL(), sledtest.HTTPClient(t, rackpki.Sled(b.Baseboard().Part, b.Baseboard().Serial)))
	if err != nil {
		t.Fatal(err)
	}
	evil := api.SledRegistration{Baseboard: a.Baseboard(), SledAgentAddress: "203.0.113.9:12345", RepoDepotPort: 12348}
	if _, err := asB.SledRegister(ctx, a.ID(), evil); client.StatusCode(err) != http.StatusForbidden ||
		client.ErrorCode(err) != api.CodeIdentityMismatch {
		t.Fatalf("b registering as a: %v", err)
	}
	// Its own baseboard, but a's id: a's traffic would go to b's address.
	// b's baseboard is registered under b's id already.
	evil.Baseboard = b.Baseboard()
	if _, err := asB.SledRegister(ctx, a.ID(), evil); client.StatusCode(err) != http.StatusConflict ||
		client.ErrorCode(err) != api.CodeBaseboardInUse {
		t.Fatalf("b taking over a's id: %v", err)
	}
	// A sled of the rack never registered before cannot take a's id
	// either: an id stays with the baseboard it was registered with.
	fresh, err := client.NewNexusInternal(r.Nexus.InternalURL(), sledtest.HTTPClient(t, rackpki.Sled("p", "fresh")))
	if err != nil {
		t.Fatal(err)
	}
	evil.Baseboard = api.Baseboard{Part: "p", Serial: "fresh"}
	if _, err := fresh.SledRegister(ctx, a.ID(), evil); client.StatusCode(err) != http.StatusForbidden ||
		client.ErrorCode(err) != api.CodeIdentityMismatch {
		t.Fatalf("a new sled taking over a's id: %v", err)
	}
	// A Nexus is not a sled, and neither is the rack-setup service (it
	// passes the internal listener's handshake to hand the rack over, and
	// may do nothing else there).
	c, err := client.NewNexusInternal(r.Nexus.InternalURL(), sledtest.HTTPClient(t, rackpki.Nexus(uuid.NewString())))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SledRegister(ctx, uuid.New(), evil); client.ErrorCode(err) != api.CodeIdentityMismatch {
		t.Fatalf("a Nexus registering a sled: %v", err)
	}
	c, err = client.NewNexusInternal(r.Nexus.InternalURL(), sledtest.HTTPClient(t, rackpki.RSS()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SledRegister(ctx, uuid.New(), evil); client.StatusCode(err) != http.StatusForbidden ||
		client.ErrorCode(err) != api.CodeForbiddenIdentity {
		t.Fatalf("the rack-setup service registering a sled: %v", err)
	}
	// Nor may it read Nexus's depot there.
	resp, err := sledtest.HTTPClient(t, rackpki.RSS()).Get(r.Nexus.InternalURL() + api.DepotArtifactPath(strings.Repeat("0", 64)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the rack-setup service reading Nexus's depot: %d", resp.StatusCode)
	}
	after, err := r.Nexus.Client.SledGet(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if after.Baseboard != before.Baseboard || after.SledAgentAddress != before.SledAgentAddress {
		t.Fatalf("sled a changed: %+v, was %+v", after, before)
	}
	if sleds, err := r.Nexus.Client.SledList(ctx); err != nil || len(sleds) != 2 {
		t.Fatalf("%d sleds listed (%v)", len(sleds), err)
	}
}

// Only a Nexus changes what a sled holds: a sled's or the rack-setup
// service's certificate gets 403 for every change, and the sled's
// generation, config and M.2s stay as they were.
func TestOnlyNexusChangesASled(t *testing.T) {
	t.Parallel()
	r := quietRack(t, 2)
	ctx := context.Background()
	target, other := r.Sleds[0], r.Sleds[1]
	held, err := target.AsNexus(t).ArtifactConfigGet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("arbitrary bytes")
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	for _, id := range []rackpki.Identity{rackpki.Sled(other.Baseboard().Part, other.Baseboard().Serial), rackpki.RSS()} {
		c, err := client.NewSledAgent(target.URL(), sledtest.HTTPClient(t, id))
		if err != nil {
			t.Fatal(err)
		}
		forbidden := func(what string, err error) {
			t.Helper()
			if client.StatusCode(err) != http.StatusForbidden || client.ErrorCode(err) != api.CodeForbiddenIdentity {
				t.Errorf("%s by %s: %v", what, id, err)
			}
		}
		_, err = c.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: held.Generation + 1_000_000, Artifacts: []string{sha}})
		forbidden("a config push", err)
		_, err = c.ArtifactPut(ctx, sha, held.Generation, bytes.NewReader(data), int64(len(data)))
		forbidden("an artifact put", err)
		_, err = c.ArtifactCopyFromDepot(ctx, sha, held.Generation, other.DepotURL())
		forbidden("a copy request", err)
		_, err = c.ArtifactScrubStart(ctx)
		forbidden("a scrub", err)
		// Reading is fine for any rack identity.
		if _, err := c.ArtifactList(ctx); err != nil {
			t.Errorf("a read by %s: %v", id, err)
		}
	}
	now, err := target.AsNexus(t).ArtifactConfigGet(ctx)
	if err != nil || now.Generation != held.Generation || len(now.Artifacts) != len(held.Artifacts) {
		t.Fatalf("the sled's config changed: %+v (was %+v) %v", now, held, err)
	}
	for _, m2 := range target.Config.M2Dirs {
		if _, err := os.Stat(filepath.Join(m2, artifacts.UpdateDir, sha)); !os.IsNotExist(err) {
			t.Fatalf("the artifact is on %s", m2)
		}
	}
}

// Every mutual-TLS listener refuses a client whose certificate another CA
// signed, even one naming a Nexus, before any request is read.
func TestForeignCertificatesAreRefusedEverywhere(t *testing.T) {
	t.Parallel()
	r := quietRack(t, 1)
	other, err := rackpki.NewCA("elsewhere", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fake, err := other.Issue(rackpki.Nexus(r.Nexus.ID().String()), rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// This client trusts anyone, so the refusal seen is the server's.
		TLSClientConfig: fake.ClientTLS(rackpki.AnyIdentity, nil)}}
	hc.Transport.(*http.Transport).TLSClientConfig.VerifyConnection = nil
	for name, u := range map[string]string{
		"nexus internal": r.Nexus.InternalURL() + "/healthz",
		"sled API":       r.Sleds[0].URL() + "/healthz",
		"sled depot":     r.Sleds[0].DepotURL() + "/healthz",
	} {
		resp, err := hc.Get(u)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s answered a foreign certificate with %d", name, resp.StatusCode)
		}
	}
}

// A copy's source must be a depot of the rack: the sled verifies the
// source's certificate, so pointing it at any other server — one with a
// certificate from another CA, one with the rack-setup service's
// certificate, or plain HTTP — fetches nothing.
func TestCopySourceMustBeARackDepot(t *testing.T) {
	t.Parallel()
	r := quietRack(t, 1)
	ctx := context.Background()
	sled := r.Sleds[0]
	data := []byte("what an attacker would like the sled to store")
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	serve := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(data) })
	other, err := rackpki.NewCA("elsewhere", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Issue(rackpki.Sled("p", "s"), rackpki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rss := sledtest.Bundle(t, rackpki.RSS())
	servers := map[string]*httptest.Server{}
	for name, b := range map[string]*rackpki.Bundle{"another CA's sled": stranger, "the rack-setup service": rss} {
		srv := httptest.NewUnstartedServer(serve)
		srv.TLS = b.ServerTLS(rackpki.AnyIdentity, nil)
		srv.StartTLS()
		t.Cleanup(srv.Close)
		servers[name] = srv
	}
	plain := httptest.NewServer(serve)
	t.Cleanup(plain.Close)

	nx := sled.AsNexus(t)
	gen := uint64(7)
	if _, err := nx.ArtifactConfigPut(ctx, api.ArtifactConfig{Generation: gen, Artifacts: []string{sha}}); err != nil {
		t.Fatal(err)
	}
	for name, u := range map[string]string{
		"another CA's sled": servers["another CA's sled"].URL, "the rack-setup service": servers["the rack-setup service"].URL,
		"plain HTTP": plain.URL,
	} {
		c, err := nx.ArtifactCopyFromDepot(ctx, sha, gen, u+api.DepotArtifactPath(sha))
		if err != nil {
			if client.ErrorCode(err) != api.CodeInvalidField {
				t.Fatalf("%s: %v", name, err)
			}
			continue // refused outright: fine
		}
		racktest.WaitFor(t, 30*time.Second, "the copy from "+name+" to end", func() error {
			got, err := nx.ArtifactCopyGet(ctx, sha)
			if err != nil {
				return err
			}
			if !got.Finished() {
				return context.DeadlineExceeded
			}
			c = got
			return nil
		})
		if c.State != api.CopyFailed {
			t.Fatalf("a copy from %s ended %s", name, c.State)
		}
	}
	for _, m2 := range sled.Config.M2Dirs {
		if _, err := os.Stat(filepath.Join(m2, artifacts.UpdateDir, sha)); !os.IsNotExist(err) {
			t.Fatalf("the artifact reached %s", m2)
		}
	}
}
