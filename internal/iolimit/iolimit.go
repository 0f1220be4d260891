// Package iolimit measures what this machine can do with bytes on disk
// (read, SHA-256, write and fsync), so benchmarks can print their figures
// as a ratio to the machine's own limit measured in the same run.
package iolimit

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"time"
)

// ReadHashWrite reads src, hashes it with SHA-256 and writes it to a new
// file in dstDir, fsynced, in one pass with a 1 MiB buffer; it returns the
// time taken and the copy's path (the caller removes it).
func ReadHashWrite(src, dstDir string) (time.Duration, string, error) {
	start := time.Now()
	in, err := os.Open(src)
	if err != nil {
		return 0, "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(dstDir, "iolimit-*")
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(out, h), in, make([]byte, 1<<20)); err != nil {
		out.Close()
		os.Remove(out.Name())
		return 0, "", err
	}
	_ = h.Sum(nil)
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(out.Name())
		return 0, "", err
	}
	if err := out.Close(); err != nil {
		os.Remove(out.Name())
		return 0, "", err
	}
	return time.Since(start), out.Name(), nil
}

// Once is the one-pass upload's floor: read the archive, SHA-256 it and
// write it durably (fsynced), once. It returns the time and removes its
// copy.
func Once(src, dstDir string) (time.Duration, error) {
	d, copyPath, err := ReadHashWrite(src, dstDir)
	if err != nil {
		return 0, fmt.Errorf("iolimit: %w", err)
	}
	return d, os.Remove(copyPath)
}

// Twice was the two-pass upload's floor: read+hash+write the archive once (the
// body arriving) and then its copy again (verifying and storing the
// artifacts). It returns the total time and removes its files.
func Twice(src, dstDir string) (time.Duration, error) {
	d1, first, err := ReadHashWrite(src, dstDir)
	if err != nil {
		return 0, fmt.Errorf("iolimit: %w", err)
	}
	defer os.Remove(first)
	d2, second, err := ReadHashWrite(first, dstDir)
	if err != nil {
		return 0, fmt.Errorf("iolimit: %w", err)
	}
	os.Remove(second)
	return d1 + d2, nil
}

// MBps is bytes per second in MB (10^6) per second.
func MBps(bytes int64, d time.Duration) float64 {
	return float64(bytes) / 1e6 / d.Seconds()
}
