package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// fileLock makes one process the only writer of a SQLite file: holds, session
// leases and the idempotency in-flight set live in that process's memory, so a
// second process writing the same file would spend the same balance twice. The lock
// is an exclusive advisory lock on REALPATH.lock, beside the database with symlinks
// resolved (so that a second path to the same file meets the same lock), which the
// kernel releases when the process dies, however it dies; the file holds the
// holder's pid for the message the next process prints. Hard links to a database
// are not supported, as SQLite itself says: its own -wal and -shm files are named
// after the path.
type fileLock struct {
	f *os.File
}

// ErrLocked is returned by Open when another process holds the database's lock.
var ErrLocked = errors.New("the database is in use by another agentd process")

// lockFile takes the lock of the database at path, or fails at once naming the
// file and, where it can, the process holding it.
func lockFile(path string) (*fileLock, error) {
	name := realPath(path) + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if err := tryLock(f); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(name); rerr == nil {
			if pid := strings.TrimSpace(string(b)); pid != "" {
				holder = " (pid " + pid + ")"
			}
		}
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%w: %s is locked by another agentd%s through %s; stop it first, or give this one its own database (--db); agentd check reads a live database without the lock", ErrLocked, path, holder, name)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	// The pid is for the message above; the lock itself is what counts.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &fileLock{f: f}, nil
}

// realPath is path with every symlink resolved: the file's own name, or, for a
// database not created yet, its resolved directory and its name.
func realPath(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		return filepath.Join(dir, filepath.Base(path))
	}
	return path
}

// release gives the lock up. It leaves the file in place: removing it could let
// a third process lock a new file while a second still waits on the old one.
func (l *fileLock) release() {
	if l == nil || l.f == nil {
		return
	}
	unlock(l.f)
	l.f.Close()
	l.f = nil
}
