package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// child is a server the runner started as its own process, so that /proc's
// numbers for it are its own.
type child struct {
	name string
	cmd  *exec.Cmd
	URL  string // http://ADDR, from its "listening on" line
	log  string // file holding its stderr
	done chan error
}

var listening = regexp.MustCompile(`listening on (http://\S+)`)

// startChild runs argv with env (added to a copy of this process's environment
// without AGENTD_* variables), its stderr written to logFile, and waits up to
// 30 s for "listening on http://ADDR" on its stdout.
func startChild(ctx context.Context, name string, argv, env []string, logFile string) (*child, error) {
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: logFile, done: make(chan error, 1)}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		err := cmd.Wait()
		logf.Close()
		c.done <- err
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case c.URL = <-found:
		return c, nil
	case err := <-c.done:
		c.done <- err
		return nil, fmt.Errorf("%s exited before listening (%v): %s", name, err, tail(logFile, 2000))
	case <-t.C:
		c.kill()
		return nil, fmt.Errorf("%s did not say where it listens within 30 s: %s", name, tail(logFile, 2000))
	case <-ctx.Done():
		c.kill()
		return nil, ctx.Err()
	}
}

// Pid is the child's process id.
func (c *child) Pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM and waits up to timeout for the child to exit, then kills it.
func (c *child) stop(timeout time.Duration) error {
	c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-c.done:
		c.done <- err
		return err
	case <-t.C:
		c.kill()
		return fmt.Errorf("%s did not stop within %v after SIGTERM; killed", c.name, timeout)
	}
}

func (c *child) kill() {
	c.cmd.Process.Kill()
	err := <-c.done
	c.done <- err
}

// exited reports whether the child has exited, and how.
func (c *child) exited() (bool, error) {
	select {
	case err := <-c.done:
		c.done <- err
		if err == nil {
			err = errors.New("exit status 0")
		}
		return true, err
	default:
		return false, nil
	}
}

// tail returns the last n bytes of a file.
func tail(file string, n int64) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}
