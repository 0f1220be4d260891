package iolimit

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/rackplane/rackplane/internal/fsutil"
)

// chunk is the write size, the same 1 MiB the sled's artifact store uses.
const chunk = 1 << 20

// StoreCopies is the floor cost of storing every artifact in every
// directory the way a sled stores an artifact on one M.2: each copy is
// hashed with SHA-256 while it is written to a temp file (dir/tmp), then
// fsynced, renamed into dir and the directory fsynced. The bytes come from
// memory: no network, no reading, no HTTP, no bookkeeping. workers copies
// run at once (each hashing and writing its own copy); the caller picks how
// many the machine can use. It returns the wall time and leaves the copies
// in place (the caller removes dirs), so what was written stays on the
// file system as a replication's copies would.
func StoreCopies(artifacts [][]byte, dirs []string, workers int) (time.Duration, error) {
	type job struct {
		dir string
		art int
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(d, "tmp"), 0o755); err != nil {
			return 0, fmt.Errorf("iolimit: %w", err)
		}
	}
	// Copies of one artifact go to different directories in turn, as a
	// replication spreads one artifact over the sleds.
	jobs := make(chan job)
	errs := make([]error, max(workers, 1))
	var wg sync.WaitGroup
	start := time.Now()
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if errs[w] == nil {
					errs[w] = storeOne(artifacts[j.art], j.dir, strconv.Itoa(j.art))
				}
			}
		}()
	}
	for a := range artifacts {
		for _, d := range dirs {
			jobs <- job{dir: d, art: a}
		}
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, fmt.Errorf("iolimit: %w", err)
		}
	}
	return took, nil
}

func storeOne(data []byte, dir, name string) error {
	f, err := os.CreateTemp(filepath.Join(dir, "tmp"), name+"-*")
	if err != nil {
		return err
	}
	h := sha256.New()
	for off := 0; off < len(data); off += chunk {
		p := data[off:min(off+chunk, len(data))]
		h.Write(p)
		if _, err := f.Write(p); err != nil {
			f.Close()
			os.Remove(f.Name())
			return err
		}
	}
	_ = h.Sum(nil)
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		os.Remove(f.Name())
		return err
	}
	return fsutil.SyncDir(dir)
}
