// Package depot is Nexus's content-addressed local store of artifacts on
// disk: one file per artifact, named by its lowercase SHA-256 hex, in
// <data-dir>/depot.
//
// Files are written to a temp name in the same directory, fsynced and
// renamed, so a name in the depot always holds complete bytes. Temp files
// (an upload's entries as they arrive, artifacts being copied) carry
// fsutil.TempPrefix and are removed at start-up, so a crash never leaves
// anything that is later mistaken for data. The depot does not hash:
// callers hand it bytes they have verified on the way in (see
// tufrepo.Receive), renamed into place (Adopt) or written (Put).
package depot

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/rackplane/rackplane/internal/fsutil"
	"golang.org/x/sys/unix"
)

// Depot is a directory of artifacts.
type Depot struct {
	dir string
	// exclusive serialises the changes that must not interleave in one
	// Nexus: recording an upload (which may rely on a file the depot
	// already holds) and dropping local copies (which removes files).
	exclusive sync.Mutex
}

// Exclusive runs fn while no other Exclusive call on this depot runs.
// Uploads verify, copy and record under it, and the replication task drops
// local copies under it, so a drop can never remove a file that an upload
// in the same process has checked is present and is about to record, and
// a failed upload's cleanup can never remove a file another upload relies
// on. Receiving an upload's bytes happens outside it.
func (d *Depot) Exclusive(fn func() error) error {
	d.exclusive.Lock()
	defer d.exclusive.Unlock()
	return fn()
}

// Open creates the directory if needed and removes temp files a crash
// left behind, returning how many it removed.
func Open(dir string) (*Depot, int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, fmt.Errorf("depot: %w", err)
	}
	n, err := fsutil.RemoveTemps(dir)
	if err != nil {
		return nil, n, fmt.Errorf("depot: remove temp files: %w", err)
	}
	if n > 0 {
		if err := fsutil.SyncDir(dir); err != nil {
			return nil, n, err
		}
	}
	return &Depot{dir: dir}, n, nil
}

// Dir is the depot's directory.
func (d *Depot) Dir() string { return d.dir }

// ValidHash reports whether s is a lowercase SHA-256 hex string, the only
// names the depot holds.
func ValidHash(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Path is where the artifact with hash sha256 lives.
func (d *Depot) Path(sha256 string) string { return filepath.Join(d.dir, sha256) }

// Has reports whether the depot holds the artifact with the given length.
// A file of another length is not a copy of it.
func (d *Depot) Has(sha256 string, length int64) (bool, error) {
	fi, err := os.Stat(d.Path(sha256))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	}
	return fi.Mode().IsRegular() && fi.Size() == length, nil
}

// CreateTemp makes a temp file in the depot's directory (on the same file
// system as the artifacts, so a later rename is cheap). The caller removes
// it.
func (d *Depot) CreateTemp(purpose string) (*os.File, error) {
	return os.CreateTemp(d.dir, fsutil.TempPrefix+purpose+"-*")
}

// Put stores an artifact: write is called with a temp file's writer and
// must write the artifact's verified bytes; when it returns nil the file
// is fsynced and renamed to its hash. On any error nothing is left behind.
// Call Sync once after a batch of Puts to make the renames durable.
func (d *Depot) Put(sha256 string, write func(w io.Writer) error) error {
	if !ValidHash(sha256) {
		return fmt.Errorf("depot: %q is not a sha256 hex string", sha256)
	}
	if err := fsutil.WriteAtomic(d.Path(sha256), 0o600, write); err != nil {
		return fmt.Errorf("depot: store %s: %w", sha256, err)
	}
	return nil
}

// Adopt moves a verified temp file of the depot (made by CreateTemp, its
// bytes written and fsynced) into place as the artifact sha256. Call Sync
// once after a batch to make the renames durable.
func (d *Depot) Adopt(sha256, tmp string) error {
	if !ValidHash(sha256) {
		return fmt.Errorf("depot: %q is not a sha256 hex string", sha256)
	}
	if filepath.Dir(tmp) != filepath.Clean(d.dir) || !strings.HasPrefix(filepath.Base(tmp), fsutil.TempPrefix) {
		return fmt.Errorf("depot: %s is not one of this depot's temp files", tmp)
	}
	if err := os.Rename(tmp, d.Path(sha256)); err != nil {
		return fmt.Errorf("depot: store %s: %w", sha256, err)
	}
	return nil
}

// Sync makes renames and removals in the depot durable.
func (d *Depot) Sync() error { return fsutil.SyncDir(d.dir) }

// Remove deletes an artifact; a missing one is not an error.
func (d *Depot) Remove(sha256 string) error {
	if !ValidHash(sha256) {
		return fmt.Errorf("depot: %q is not a sha256 hex string", sha256)
	}
	if err := os.Remove(d.Path(sha256)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("depot: %w", err)
	}
	return nil
}

// List returns the hashes of the artifacts held, sorted.
func (d *Depot) List() ([]string, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("depot: %w", err)
	}
	var out []string
	for _, e := range entries {
		if ValidHash(e.Name()) && e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// Usage counts the artifacts the depot holds and their bytes (temp files
// of uploads in progress are not artifacts).
func (d *Depot) Usage() (artifacts int, bytes int64, err error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return 0, 0, fmt.Errorf("depot: %w", err)
	}
	for _, e := range entries {
		if !ValidHash(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // dropped since the listing
		}
		if err != nil {
			return 0, 0, fmt.Errorf("depot: %w", err)
		}
		artifacts++
		bytes += fi.Size()
	}
	return artifacts, bytes, nil
}

// RemoveExcept deletes every file in the depot that is neither an artifact
// in keep nor a temp file, and returns the names it removed. Start-up uses
// it to drop artifacts a crash left between copying and recording them.
func (d *Depot) RemoveExcept(keep map[string]bool) ([]string, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("depot: %w", err)
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if keep[name] || strings.HasPrefix(name, fsutil.TempPrefix) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.dir, name)); err != nil {
			return removed, fmt.Errorf("depot: %w", err)
		}
		removed = append(removed, name)
	}
	if len(removed) > 0 {
		if err := d.Sync(); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// Free is how many bytes the depot's filesystem has free for it.
func (d *Depot) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.dir, &st); err != nil {
		return 0, fmt.Errorf("depot: statfs: %w", err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
