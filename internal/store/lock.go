package store

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// fileLock makes one process the only writer of a SQLite file: holds, session
// leases and the idempotency in-flight set live in that process's memory, so a
// second process writing the same file would spend the same balance twice. The lock
// is an exclusive advisory lock on PATH.lock, which the kernel releases when the
// process dies, however it dies; the file holds the holder's pid for the message
// the next process prints.
type fileLock struct {
	f *os.File
}

// ErrLocked is returned by Open when another process holds the database's lock.
var ErrLocked = errors.New("the database is in use by another agentd process")

// lockFile takes the lock of the database at path, or fails at once naming the
// file and, where it can, the process holding it.
func lockFile(path string) (*fileLock, error) {
	name := path + ".lock"
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
