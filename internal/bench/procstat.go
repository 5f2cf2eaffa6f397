package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProcStat is what /proc says about a process at one moment.
type ProcStat struct {
	CPU      time.Duration // user + system CPU time since the process started
	RSS      int64         // resident set size now, bytes (VmRSS)
	PeakRSS  int64         // highest resident set size, bytes (VmHWM), since start or ResetPeakRSS
	Threads  int
	ReadTime time.Time
}

// ReadProc reads /proc/<pid>/stat (utime, stime in clock ticks) and
// /proc/<pid>/status (VmRSS, VmHWM, Threads). Linux only.
func ReadProc(pid int) (ProcStat, error) {
	s := ProcStat{ReadTime: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may hold spaces; the
	// fields after it start with state (field 3). utime and stime are fields 14
	// and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, fields[11], fields[12])
	}
	tick := ClockTick()
	s.CPU = time.Duration(utime+stime) * tick

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			s.RSS = kibibytes(v)
		case "VmHWM":
			s.PeakRSS = kibibytes(v)
		case "Threads":
			s.Threads, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return s, nil
}

// kibibytes parses "   1234 kB" into bytes.
func kibibytes(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	return n << 10
}

// ResetPeakRSS sets a process's VmHWM back to its current RSS (writing 5 to
// /proc/<pid>/clear_refs, allowed for one's own processes), so that the next
// ReadProc's PeakRSS is the peak since now.
func ResetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// ClockTick is the unit of /proc's CPU times: 1/sysconf(_SC_CLK_TCK) seconds.
// Without cgo there is no sysconf; the kernel passes the value to every process
// in its auxiliary vector (AT_CLKTCK), read here from /proc/self/auxv. It falls
// back to 10 ms (USER_HZ = 100, the value on every mainstream Linux).
func ClockTick() time.Duration {
	clockOnce.Do(func() {
		clockTick = 10 * time.Millisecond
		if hz := auxv(atClkTck); hz > 0 {
			clockTick = time.Second / time.Duration(hz)
		}
	})
	return clockTick
}

var (
	clockOnce sync.Once
	clockTick time.Duration
)

const atClkTck = 17 // AT_CLKTCK in <elf.h>

// auxv returns the value of an entry of this process's auxiliary vector, or 0.
// Entries are pairs of native words (type, value), ending with type 0 (AT_NULL).
func auxv(typ uint64) uint64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 0
	}
	const w = strconv.IntSize / 8 // the platform's word size
	word := func(b []byte) uint64 {
		if w == 4 {
			return uint64(binary.NativeEndian.Uint32(b))
		}
		return binary.NativeEndian.Uint64(b)
	}
	for len(b) >= 2*w {
		t, v := word(b), word(b[w:])
		if t == 0 {
			break
		}
		if t == typ {
			return v
		}
		b = b[2*w:]
	}
	return 0
}

// MachineCPU is the CPU time every process on the machine has spent in user and
// system mode (the first line of /proc/stat; interrupt time, which loopback
// networking is charged to, is left out).
func MachineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var ticks int64
	for _, s := range f[1:4] { // user, nice, system
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %q", line)
		}
		ticks += n
	}
	return time.Duration(ticks) * ClockTick(), nil
}
