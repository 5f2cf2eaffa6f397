package bench

import (
	"syscall"
	"testing"
	"time"
)

// selfCPU is the CPU time this process has used, as getrusage counts it (in
// microseconds, where /proc counts clock ticks).
func selfCPU(t *testing.T) (time.Duration, bool) {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
