//go:build !linux

package bench

import (
	"testing"
	"time"
)

// selfCPU is Linux only here, like ReadProc.
func selfCPU(t *testing.T) (time.Duration, bool) { return 0, false }
