package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rackplane/rackplane/release"
)

func runKeygen(_ context.Context, e env, args []string) error {
	fs := flags(e, "keygen")
	dir := fs.String("dir", "", "directory to write the key files to (created; existing key files are never overwritten)")
	thresholds, counts := roleCounts{}, roleCounts{}
	fs.Var(thresholds, "threshold", "signatures a role needs, role=N (repeatable; default 1 each)")
	fs.Var(counts, "keys", "keys to make for a role, role=N (repeatable; default: its threshold)")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("%w: --dir is required", errUsage)
	}
	for role, n := range counts {
		if th := thresholds[role]; th > n {
			return fmt.Errorf("%w: %s: threshold %d with only %d keys could never be met", errUsage, role, th, n)
		}
	}
	k, err := release.GenerateKeyring(e.rng, release.KeyringOptions{Thresholds: thresholds, Keys: counts})
	if err != nil {
		return err
	}
	if err := k.Save(*dir); err != nil {
		return err
	}
	for _, role := range release.Roles {
		rk := k[role]
		fmt.Fprintf(e.stdout, "%-9s %d of %d key(s)  %s\n", role, rk.Threshold, len(rk.Keys),
			filepath.Join(*dir, release.KeyFileName(role)))
	}
	fmt.Fprintln(e.stdout, "Keep these files secret: anyone holding a threshold of a role's keys can sign for it.")
	return nil
}

func runRoot(_ context.Context, e env, args []string) error {
	fs := flags(e, "root")
	keys := fs.String("keys", "", "key directory (from keygen)")
	out := fs.String("out", "root.json", "file to write root version 1 to")
	expires := fs.String("expires", "365d", "when the root expires: RFC 3339 time, date, or span from now")
	consistent := fs.Bool("consistent", true, "consistent snapshots (versioned metadata, hash-named target files), as tufaceous writes")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *keys == "" {
		return fmt.Errorf("%w: --keys is required", errUsage)
	}
	exp, err := parseExpires(*expires, e.now())
	if err != nil {
		return err
	}
	k, err := release.LoadKeyring(*keys)
	if err != nil {
		return err
	}
	root, err := release.NewRoot(k, exp, *consistent)
	if err != nil {
		return err
	}
	if err := writeNew(*out, root); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "root version 1, expires %s, written to %s\n", exp.Format("2006-01-02 15:04 MST"), *out)
	fmt.Fprintf(e.stdout, "Register it with the rack: rackctl trust-root add %s\n", *out)
	return nil
}

func runRotateRoot(_ context.Context, e env, args []string) error {
	fs := flags(e, "rotate-root")
	current := fs.String("root", "", "the newest root version so far (N.root.json or root.json)")
	oldKeys := fs.String("old-keys", "", "key directory holding the current root keys (a threshold of them)")
	newKeys := fs.String("keys", "", "key directory of the next root: every role's keys (copy the key files of roles that keep theirs)")
	out := fs.String("out", "", "file to write the next root version to")
	expires := fs.String("expires", "365d", "when the new root expires")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *current == "" || *oldKeys == "" || *newKeys == "" || *out == "" {
		return fmt.Errorf("%w: --root, --old-keys, --keys and --out are required", errUsage)
	}
	exp, err := parseExpires(*expires, e.now())
	if err != nil {
		return err
	}
	prev, err := os.ReadFile(*current)
	if err != nil {
		return err
	}
	old, err := release.LoadKeyring(*oldKeys)
	if err != nil {
		return err
	}
	if err := old.Need(release.RoleRoot); err != nil {
		return err
	}
	if err := release.CheckKeysMatchRoot(old, prev, release.RoleRoot); err != nil {
		return fmt.Errorf("--old-keys: %w", err)
	}
	next, err := release.LoadKeyring(*newKeys)
	if err != nil {
		return err
	}
	root, err := release.RotateRoot(prev, old[release.RoleRoot].Keys, next, exp)
	if err != nil {
		return err
	}
	if err := release.CheckRotation(prev, root); err != nil {
		return err
	}
	m, err := release.ParseRoot(root)
	if err != nil {
		return err
	}
	if err := writeNew(*out, root); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "root version %d, signed by the old and the new root keys, expires %s, written to %s\n",
		m.Signed.Version, exp.Format("2006-01-02 15:04 MST"), *out)
	fmt.Fprintln(e.stdout, "Sign releases with the new keys and every root version (--root once per version, oldest first);")
	fmt.Fprintln(e.stdout, "a rack that trusts an older version follows the chain.")
	return nil
}

// writeNew writes a file that must not exist yet: root versions and
// releases are not things to overwrite by a repeated command.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists already; choose another --out", path)
		}
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// loadLineage reads the keys and the root chain a release is signed with,
// and checks that the keys are the ones the newest root names.
func loadLineage(keysDir string, roots []string, expires string, e env) (*release.Lineage, error) {
	if keysDir == "" || len(roots) == 0 {
		return nil, fmt.Errorf("%w: --keys and --root are required", errUsage)
	}
	k, err := release.LoadKeyring(keysDir)
	if err != nil {
		return nil, err
	}
	if err := k.Need(release.RoleTimestamp, release.RoleSnapshot, release.RoleTargets); err != nil {
		return nil, err
	}
	exp, err := parseExpires(expires, e.now())
	if err != nil {
		return nil, err
	}
	l := &release.Lineage{Keys: k, Expires: exp}
	for i, p := range roots {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		m, err := release.ParseRoot(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if m.Signed.Version != int64(i+1) {
			return nil, fmt.Errorf("%w: %s is root version %d, but it is --root number %d; give every root version, "+
				"oldest first", errUsage, p, m.Signed.Version, i+1)
		}
		if i > 0 {
			if err := release.CheckRotation(l.Roots[i-1], b); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
		}
		l.Roots = append(l.Roots, b)
	}
	if err := release.CheckKeysMatchRoot(k, l.Roots[len(l.Roots)-1], release.RoleTimestamp, release.RoleSnapshot,
		release.RoleTargets); err != nil {
		return nil, err
	}
	return l, nil
}
