// Package fsutil writes files that matter durably: to a temp name in the
// same directory, fsynced, renamed over the target, and the directory
// fsynced, so that a crash leaves either the old file or the new one.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
)

// TempPrefix starts the names of temp files made here, so that start-up
// cleanup can recognise and remove the leftovers of a crash.
const TempPrefix = ".tmp-"

// WriteFileAtomic replaces path with data durably.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	err := WriteAtomic(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// WriteAtomic writes path from write through a temp file in the same
// directory, fsynced and renamed into place; on any error nothing is left
// behind. It does not fsync the directory, so that a caller storing many
// files can do that once (SyncDir) for all of them.
func WriteAtomic(path string, perm os.FileMode, write func(w io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// SyncDir fsyncs a directory, making renames and unlinks in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// RemoveTemps deletes leftover temp files (see TempPrefix) in dir.
func RemoveTemps(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// LoadOrCreateUUID returns the UUID stored in path, creating the file with a
// fresh UUID on first use so an identity survives restarts.
func LoadOrCreateUUID(path string) (uuid.UUID, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		id, perr := uuid.Parse(strings.TrimSpace(string(b)))
		if perr != nil {
			return uuid.Nil, fmt.Errorf("%s does not hold a UUID: %w", path, perr)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return uuid.Nil, err
	}
	id := uuid.New()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return uuid.Nil, err
	}
	if err := WriteFileAtomic(path, []byte(id.String()+"\n"), 0o644); err != nil {
		return uuid.Nil, err
	}
	return id, nil
}
