package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/trustquorum/tqcrypto"
)

// ciSeed is the first seed whose short schedule injects every kind of
// fault, so that the CI run exercises each of them.
func ciSeed(o chaosOptions) uint64 {
	for seed := uint64(1); ; seed++ {
		o.seed = seed
		kinds := map[string]bool{}
		for _, f := range schedule(o) {
			kinds[f.Kind] = true
		}
		if len(kinds) == len(allFaultKinds) {
			return seed
		}
	}
}

// The schedule is a function of the seed alone: the same seed prints and
// injects the same faults.
func TestChaosScheduleReplays(t *testing.T) {
	o := chaosOptions{seed: 42, duration: 30 * time.Minute, sleds: 8, nexuses: 2, gap: 15 * time.Second, tq: true}
	a, b := schedule(o), schedule(o)
	if !slices.Equal(a, b) {
		t.Fatal("one seed gave two schedules")
	}
	o.seed = 43
	if slices.Equal(a, schedule(o)) {
		t.Fatal("two seeds gave one schedule")
	}
	for i, f := range a {
		if f.At < 0 || f.At >= o.duration || (i > 0 && f.At < a[i-1].At) {
			t.Fatalf("fault %d at %s: outside the run or out of order", i, f.At)
		}
		if !slices.Contains(allFaultKinds, f.Kind) {
			t.Fatalf("fault %d has unknown kind %q", i, f.Kind)
		}
	}
	if n := len(a); n < 80 || n > 200 {
		t.Fatalf("%d faults in 30 minutes at a 15 s mean gap", n)
	}
}

// The short chaos run CI does: a rack of real processes (PostgreSQL, two
// Nexus, five sleds) under a schedule of every kind of fault for 40 s,
// then every invariant checked on the disks, the database and the API.
func TestChaosShort(t *testing.T) {
	o := chaosOptions{duration: 40 * time.Second, sleds: 5, nexuses: 2, gap: 3 * time.Second, tq: true,
		converge: 3 * time.Minute}
	o.seed = ciSeed(o)
	var out bytes.Buffer
	res, err := chaos(context.Background(), o, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !res.ok() {
		t.Fatalf("invariants failed (seed %d)", o.seed)
	}
	for _, k := range allFaultKinds {
		if res.injected[k] == 0 {
			t.Errorf("no %s fault injected", k)
		}
	}
	// Every kill was followed by a restart by the supervisor: the
	// processes killed were started again (and the rack converged, above).
	killed := map[string]bool{}
	for _, f := range schedule(o) {
		switch f.Kind {
		case faultKillSled, faultHoldSled:
			killed[fmt.Sprintf("sled-%d", f.Target)] = true
		case faultKillTwoSld:
			killed[fmt.Sprintf("sled-%d", f.Target)] = true
			killed[fmt.Sprintf("sled-%d", f.Second)] = true
		case faultKillNexus, faultHoldNexus:
			killed[fmt.Sprintf("nexus-%d", f.Target)] = true
		}
	}
	for name := range killed {
		if res.starts[name] < 2 {
			t.Errorf("%s was killed but started %d times", name, res.starts[name])
		}
	}
	// The log scan had the trust quorum's secrets to look for.
	m := regexp.MustCompile(`(\d+) trust-quorum key shares, (\d+) rack secrets`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatal("no log-scan line in the output")
	}
	if n, _ := strconv.Atoi(m[1]); n < 3 {
		t.Errorf("the log scan read %s key shares", m[1])
	}
	if n, _ := strconv.Atoi(m[2]); n < 1 {
		t.Errorf("the log scan rebuilt %s rack secrets", m[2])
	}
	if !strings.Contains(out.String(), fmt.Sprintf("seed %d", o.seed)) || !strings.Contains(out.String(), "schedule (") {
		t.Error("the output does not print the seed and the schedule")
	}
}

// The log scan finds what it looks for: a share read from a sled's
// ledger, the rack secret rebuilt from the shares, the operator token and
// a private key, each planted in a log of its own; clean logs pass.
func TestChaosLogScanFindsSecrets(t *testing.T) {
	dir := t.TempDir()
	r := &chaosRack{logDir: filepath.Join(dir, "logs"), token: "rp_chaos-test-token", dbURL: "postgres://nowhere.invalid/x"}
	if err := os.MkdirAll(r.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret, err := tqcrypto.NewSecret(rand.NewChaCha8([32]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	shares, err := tqcrypto.Split(secret, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, sh := range shares {
		s := &chaosSled{serial: fmt.Sprintf("S%d", i), m2: []string{filepath.Join(dir, fmt.Sprintf("sled-%d", i), "m2-a")}}
		r.sleds = append(r.sleds, s)
		var l tqLedger
		l.Value.State.Configs = append(l.Value.State.Configs, struct {
			Epoch     uint64 `json:"epoch"`
			Threshold int    `json:"threshold"`
		}{Epoch: 2, Threshold: 2})
		l.Value.State.Shares = append(l.Value.State.Shares, struct {
			Epoch uint64 `json:"epoch"`
			Share []byte `json:"share"`
		}{Epoch: 2, Share: bytes.Clone(sh.Expose())})
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(s.m2[0], "bootstrap"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.m2[0], "bootstrap", "trust-quorum.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, line string) {
		if err := os.WriteFile(filepath.Join(r.logDir, name), []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("clean.log", `{"level":"info","message":"nothing to see"}`)
	ctx := context.Background()
	if c := r.checkLogs(ctx); len(c.failures) != 0 || !strings.Contains(c.name, "3 trust-quorum key shares, 1 rack secrets") {
		t.Fatalf("clean logs: %q %v", c.name, c.failures)
	}
	write("share.log", `{"share":"`+base64.StdEncoding.EncodeToString(shares[1].Expose())+`"}`)
	write("secret.log", `{"secret":"`+hex.EncodeToString(secret.Expose())+`"}`)
	write("token.log", `{"auth":"Bearer rp_chaos-test-token"}`)
	write("key.log", "-----BEGIN EC PRIVATE KEY-----")
	c := r.checkLogs(ctx)
	got := strings.Join(c.failures, "\n")
	for _, want := range []string{"share.log holds key share", "secret.log holds the rack secret of epoch 2 (hex)",
		"token.log holds the admin token", "key.log holds a private key"} {
		if !strings.Contains(got, want) {
			t.Errorf("the scan missed %q; it found:\n%s", want, got)
		}
	}
	if strings.Contains(got, "clean.log") {
		t.Errorf("a clean log was flagged:\n%s", got)
	}
}
