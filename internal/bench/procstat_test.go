package bench

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReadProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc: procstat is Linux only")
	}
	before, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until /proc has counted 100 ms of it; on a busy machine that
	// takes longer than 100 ms of wall time, never less.
	began := time.Now()
	var after ProcStat
	x := 0
	for {
		for i := range 100000 {
			x += i
		}
		if after, err = ReadProc(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		if after.CPU-before.CPU >= 100*time.Millisecond {
			break
		}
		if time.Since(began) > 10*time.Second {
			t.Fatalf("CPU grew by %v in 10 s of burning", after.CPU-before.CPU)
		}
	}
	_ = x
	wall := time.Since(began)
	if cpu := after.CPU - before.CPU; cpu > wall*time.Duration(runtime.NumCPU())+2*ClockTick() {
		t.Errorf("CPU grew by %v in %v of wall time on %d cores", cpu, wall, runtime.NumCPU())
	}
	if after.RSS <= 0 || after.PeakRSS < after.RSS/2 || after.Threads < 1 {
		t.Errorf("RSS %d, peak %d, threads %d", after.RSS, after.PeakRSS, after.Threads)
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
	if err := ResetPeakRSS(os.Getpid()); err != nil {
		t.Skipf("this kernel does not let us reset the peak: %v", err)
	}
	st, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Right after a reset the peak is about the current size.
	if st.PeakRSS > st.RSS+8<<20 {
		t.Errorf("peak %d MiB after the reset, RSS %d MiB", st.PeakRSS>>20, st.RSS>>20)
	}
}
