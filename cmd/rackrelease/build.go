package main

import (
	"context"
	"fmt"
	"os"

	"github.com/rackplane/rackplane/release"
)

func runAssemble(_ context.Context, e env, args []string) error {
	fs := flags(e, "assemble")
	keys := fs.String("keys", "", "key directory holding the timestamp, snapshot and targets keys")
	var roots files
	fs.Var(&roots, "root", "a root version the release carries (repeat for each, oldest first: 1.root.json, 2.root.json, ...)")
	out := fs.String("out", "", "file to write the release to")
	expires := fs.String("expires", "90d", "when the timestamp, snapshot and targets metadata expire")
	tsV := fs.Int64("timestamp-version", 1, "version of timestamp.json")
	snapV := fs.Int64("snapshot-version", 1, "version of the snapshot metadata")
	targV := fs.Int64("targets-version", 1, "version of the targets metadata")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	l, err := loadLineage(*keys, roots, *expires, e)
	if err != nil {
		return err
	}
	m, err := release.LoadManifest(pos[0])
	if err != nil {
		return err
	}
	r, err := m.Repo()
	if err != nil {
		return err
	}
	r.TimestampVersion, r.SnapshotVersion, r.TargetsVersion = *tsV, *snapV, *targV
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("%s exists already; choose another --out", *out)
	}
	built, err := l.BuildFile(*out, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "release %s: %d artifacts, %d bytes, sha256 %s\n", built.SystemVersion, len(built.Artifacts),
		built.Size, built.SHA256)
	fmt.Fprintf(e.stdout, "signed with root version %d; metadata valid until %s\n", built.RootVersion,
		built.ValidUntil.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(e.stdout, "written to %s (upload it: rackctl repo upload %s)\n", *out, *out)
	return nil
}

func runSign(_ context.Context, e env, args []string) error {
	fs := flags(e, "sign")
	keys := fs.String("keys", "", "key directory holding the timestamp, snapshot and targets keys")
	var roots files
	fs.Var(&roots, "root", "a root version the release carries (repeat for each, oldest first)")
	out := fs.String("out", "", "file to write the re-signed release to")
	expires := fs.String("expires", "90d", "when the new metadata expires")
	tsV := fs.Int64("timestamp-version", 0, "version of the new timestamp.json (default: the release's plus one)")
	snapV := fs.Int64("snapshot-version", 0, "version of the new snapshot metadata (default: the release's plus one)")
	targV := fs.Int64("targets-version", 0, "version of the new targets metadata (default: the release's plus one)")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	l, err := loadLineage(*keys, roots, *expires, e)
	if err != nil {
		return err
	}
	src, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	dst, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	built, err := l.Resign(dst, src, fi.Size(), release.ResignOptions{TimestampVersion: *tsV, SnapshotVersion: *snapV,
		TargetsVersion: *targV})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*out)
		return err
	}
	fmt.Fprintf(e.stdout, "re-signed: timestamp %d, snapshot %d, targets %d, root version %d; valid until %s\n",
		built.TimestampVersion, built.SnapshotVersion, built.TargetsVersion, built.RootVersion,
		built.ValidUntil.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(e.stdout, "written to %s (%d bytes, sha256 %s)\n", *out, built.Size, built.SHA256)
	return nil
}
