package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/nexus/tufrepo"
	"github.com/rackplane/rackplane/release"
)

func runInspect(_ context.Context, e env, args []string) error {
	fs := flags(e, "inspect")
	rootFile := fs.String("root", "", "verify against this trust root, as a rack that registered it would "+
		"(default: the release's own 1.root.json, which proves only that it is self-consistent)")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	info, err := release.Describe(f, fi.Size())
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(w, "%s: %d bytes, consistent snapshots %v\n\n", pos[0], fi.Size(), info.Consistent)
	fmt.Fprintln(w, "METADATA\tVERSION\tEXPIRES\tSIGNED BY\tTHRESHOLD")
	roles := append(slices.Clone(info.Roots), info.Timestamp, info.Snapshot, info.Targets)
	for _, r := range roles {
		signers := make([]string, len(r.Signers))
		known := 0
		for i, s := range r.Signers {
			signers[i] = short(s)
			if slices.Contains(r.Keys, s) {
				known++
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d of %d keys (%d signature(s) by them)\n", r.File, r.Version,
			r.Expires.Format(time.RFC3339), strings.Join(signers, ","), r.Threshold, len(r.Keys), known)
	}
	w.Flush()

	trust := info.Roots[0]
	var rootJSON []byte
	if *rootFile != "" {
		if rootJSON, err = os.ReadFile(*rootFile); err != nil {
			return err
		}
	} else {
		rc, err := release.OpenTarget(f, fi.Size(), "repo/metadata/"+trust.File)
		if err != nil {
			return err
		}
		rootJSON, err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	a, err := tufrepo.Open(f, fi.Size(), tufrepo.Options{})
	if err == nil {
		var v *tufrepo.Verified
		v, err = a.Verify([]tufrepo.TrustRoot{{ID: uuid.Nil, JSON: rootJSON}}, nil)
		if err == nil {
			return printVerified(e, f, fi.Size(), a, v, *rootFile)
		}
	}
	var fe *fault.Error
	if errors.As(err, &fe) {
		fmt.Fprintf(e.stdout, "\nNOT ACCEPTED: %s (%s)\n", fe.Message, fe.Code)
	}
	return fmt.Errorf("a rack would refuse this release: %w", err)
}

func printVerified(e env, f *os.File, size int64, a *tufrepo.Archive, v *tufrepo.Verified, rootFile string) error {
	against := "its own root version 1 (pass --root to check against the root the rack trusts)"
	if rootFile != "" {
		against = rootFile
	}
	fmt.Fprintf(e.stdout, "\nrelease %s, manifest v%d, verified against %s\n", v.SystemVersion, v.ManifestFormat, against)
	fmt.Fprintf(e.stdout, "valid until %s (the earliest expiry of its metadata)\n\n", v.ValidUntil.Format(time.RFC3339))
	w := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tNAME\tVERSION\tLENGTH\tSHA256\tTARGET")
	buf := make([]byte, 1<<20)
	for _, art := range v.Artifacts {
		if err := a.CopyTarget(v, art.TargetName, io.Discard, buf); err != nil {
			w.Flush()
			return fmt.Errorf("artifact %s: %w", art.Name, err)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", art.Kind, art.Name, art.Version, art.Length, short(art.SHA256), art.TargetName)
		if _, ok := release.CompositeRuleFor(art.Kind); !ok {
			continue
		}
		rc, err := release.OpenTarget(f, size, v.TargetPath(art.TargetName))
		if err != nil {
			w.Flush()
			return err
		}
		parts, err := release.CheckComposite(release.Artifact{Name: art.Name, Version: art.Version, Kind: art.Kind,
			Source: opened{rc}})
		if err != nil {
			w.Flush()
			return fmt.Errorf("composite %s (%s) would be refused: %w", art.Name, art.Kind, err)
		}
		for _, p := range parts {
			fmt.Fprintf(w, "  └ %s\t%s\t%s\t%d\t%s\t%s\n", p.Kind, p.Name, p.Version, p.Length, short(p.SHA256), p.Path)
		}
	}
	w.Flush()
	fmt.Fprintln(e.stdout, "\nACCEPTED: every artifact matches its signed length and SHA-256")
	return nil
}

// opened is a Source over a reader that is already open (read once).
type opened struct{ rc io.ReadCloser }

func (o opened) Open() (io.ReadCloser, error) { return o.rc, nil }

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
