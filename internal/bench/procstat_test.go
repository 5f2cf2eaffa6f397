package bench

import (
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReadProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc: procstat is Linux only")
	}
	if _, ok := selfCPU(t); !ok {
		t.Skip("no getrusage to compare with")
	}
	// ReadProc's CPU is the kernel's count for the process, which getrusage gives
	// in microseconds and /proc in clock ticks, utime and stime each rounded
	// down: each reading lies between getrusage's just before it, less two ticks,
	// and getrusage's just after it.
	type reading struct {
		st     ProcStat
		lo, hi time.Duration
	}
	read := func() reading {
		var r reading
		var err error
		r.lo, _ = selfCPU(t)
		if r.st, err = ReadProc(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		r.hi, _ = selfCPU(t)
		return r
	}
	before := read()
	// Burn CPU, in user and system mode (getrusage is a system call), until
	// getrusage has counted 100 ms more of it: on a busy machine that takes
	// longer, but it is CPU time, not wall time.
	x := 0
	for {
		for i := range 1000 {
			x += i
		}
		if cpu, _ := selfCPU(t); cpu-before.hi >= 100*time.Millisecond {
			break
		}
	}
	_ = x
	after := read()
	tick := ClockTick()
	for _, r := range []reading{before, after} {
		if r.st.CPU <= r.lo-2*tick || r.st.CPU > r.hi+time.Millisecond {
			t.Errorf("ReadProc: CPU %v; getrusage: %v before, %v after (clock tick %v)", r.st.CPU, r.lo, r.hi, tick)
		}
	}
	if grew := after.st.CPU - before.st.CPU; grew < 100*time.Millisecond-2*tick {
		t.Errorf("CPU grew by %v while getrusage counted 100ms or more", grew)
	}
	if st := after.st; st.RSS <= 0 || st.PeakRSS < st.RSS || st.Threads < 1 {
		t.Errorf("RSS %d, peak %d, threads %d", st.RSS, st.PeakRSS, st.Threads)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("no error for a process that does not exist")
	}
}

func TestClockTick(t *testing.T) {
	if _, err := os.Stat("/proc/self/auxv"); err != nil {
		t.Skip("no /proc")
	}
	if auxv(atClkTck) == 0 {
		t.Error("no AT_CLKTCK in /proc/self/auxv")
	}
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		t.Skipf("no getconf to compare with: %v", err)
	}
	hz, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if got := ClockTick(); hz == 0 || got != time.Second/time.Duration(hz) {
		t.Errorf("clock tick %v, getconf CLK_TCK says %d Hz", got, hz)
	}
}

func TestResetPeakRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/clear_refs"); err != nil {
		t.Skip("no /proc/self/clear_refs")
	}
	pid := os.Getpid()
	// Raise the peak by 64 MiB, then hand the memory back to the system: the
	// peak stays where it was.
	const spike = 64 << 20
	buf := make([]byte, spike)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	runtime.KeepAlive(buf)
	buf = nil
	debug.FreeOSMemory()
	high, err := ReadProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	if high.PeakRSS-high.RSS < spike/2 {
		t.Skipf("peak %d MiB, RSS %d MiB: the freed memory was not handed back, so a reset cannot be told from none", high.PeakRSS>>20, high.RSS>>20)
	}
	if err := ResetPeakRSS(pid); err != nil {
		t.Skipf("this kernel does not let us reset the peak: %v", err)
	}
	st, err := ReadProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	// The reset forgets the spike: the peak is now the size at the reset, about
	// the RSS read just before it (it may only have shrunk since).
	if st.PeakRSS > high.RSS+spike/4 || st.PeakRSS < st.RSS {
		t.Errorf("after the reset: peak %d MiB, RSS %d MiB; before it: peak %d MiB, RSS %d MiB",
			st.PeakRSS>>20, st.RSS>>20, high.PeakRSS>>20, high.RSS>>20)
	}
}
