package chaostest

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a child process of the suite that it kills and restarts. Each
// start appends the process's stderr and stdout to one log file.
type proc struct {
	t     testing.TB
	name  string
	kind  string // "relay" or "consumer"
	bin   string
	args  []string
	log   string
	ready string // the line the process logs once it is up

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	killing  bool
	starts   int
	from     int64    // where the log of the current start begins
	failures []string // exits the suite did not cause
}

func newProc(t testing.TB, kind, name, bin string, args []string, ready, logDir string) *proc {
	return &proc{t: t, kind: kind, name: name, bin: bin, args: args, ready: ready, log: filepath.Join(logDir, name+".log")}
}

// start runs the process (again).
func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.starts++
	fmt.Fprintf(f, "--- start %d\n", p.starts)
	if p.from, err = f.Seek(0, io.SeekCurrent); err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The children die with the test process, whatever ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.killing = cmd, done, false
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		p.mu.Lock()
		if !p.killing {
			p.failures = append(p.failures, fmt.Sprintf("%s exited on its own (start %d): %v", p.name, p.starts, err))
		}
		p.mu.Unlock()
		close(done)
	}()
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL, 0)
}

// stop waits up to timeout for the process to be up, sends SIGTERM and
// waits up to timeout for it to exit; it returns the exit error (nil for
// status 0) or a timeout. A process started a moment before has not yet
// installed its signal handler, and SIGTERM would end it as a crash does.
func (p *proc) stop(timeout time.Duration) error {
	if err := p.waitReady(timeout); err != nil {
		return err
	}
	return p.signal(syscall.SIGTERM, timeout)
}

// waitReady waits up to timeout for the current start's log to hold the
// process's ready line.
func (p *proc) waitReady(timeout time.Duration) error {
	p.mu.Lock()
	running, from, starts := p.cmd != nil, p.from, p.starts
	p.mu.Unlock()
	if !running {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(p.log)
		if err != nil {
			return err
		}
		if int64(len(b)) >= from && strings.Contains(string(b[from:]), p.ready) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not log %q within %v of start %d", p.name, p.ready, timeout, starts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) signal(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil {
		p.mu.Unlock()
		return nil
	}
	p.killing = true
	p.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	var timer <-chan time.Time
	if timeout > 0 {
		timer = time.After(timeout)
	}
	select {
	case <-done:
	case <-timer:
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not exit within %v of %v", p.name, timeout, sig)
	}
	p.mu.Lock()
	p.cmd = nil
	p.mu.Unlock()
	if st := cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("%s: %s", p.name, st)
	}
	return nil
}

// unexpected returns the exits the suite did not cause.
func (p *proc) unexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.failures...)
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
