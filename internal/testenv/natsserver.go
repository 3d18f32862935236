package testenv

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// NATSServerBin is where Debian's nats-server package installs the server.
const NATSServerBin = "/usr/sbin/nats-server"

// NATSServer is a nats-server process of a test's own, with JetStream, on a
// free loopback port and a store directory that survive restarts, so a test
// can stop the broker and bring it back.
type NATSServer struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
}

// StartNATS starts a private nats-server; cleanup stops it. Without the
// binary the test is skipped.
func StartNATS(t testing.TB) *NATSServer {
	t.Helper()
	if _, err := os.Stat(NATSServerBin); err != nil {
		t.Skipf("%s not available: %v", NATSServerBin, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &NATSServer{t: t, port: port, dir: t.TempDir()}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port.
func (s *NATSServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's nats:// URL.
func (s *NATSServer) URL() string { return "nats://" + s.Addr() }

// Start starts the server (again) and waits until it listens.
func (s *NATSServer) Start() {
	s.t.Helper()
	s.cmd = exec.Command(NATSServerBin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.dir,
		"-l", s.dir+"/server.log")
	// Should the test process die without its cleanups (a panic in a
	// goroutine other than the test's), the server dies with it.
	s.cmd.SysProcAttr = dieWithParent()
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start nats-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("nats-server did not listen on %s within 10s: %v", s.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the process this test started (SIGKILL: no clean shutdown),
// and only that one.
func (s *NATSServer) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}
