package testenv

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// NATSServerBin is where Debian's nats-server package installs the server.
const NATSServerBin = "/usr/sbin/nats-server"

// NATSConfig says which nats-server binary a [NATSServer] runs and how.
type NATSConfig struct {
	// Bin is the nats-server binary. "" runs [CurrentNATSServerBin].
	Bin string
	// SyncAlways writes the JetStream setting sync_interval: always, so
	// the server flushes its store to disk before each acknowledgement.
	// Servers before 2.10 do not know the setting and refuse to start.
	SyncAlways bool
	// Config is added to the server's configuration file, e.g. accounts.
	Config string
}

// NATSServer is a nats-server process of a test's own, with JetStream, on a
// free loopback port and a store directory that survive restarts, so a test
// can stop (kill) the broker and bring it back.
type NATSServer struct {
	t    testing.TB
	cfg  NATSConfig
	port int
	mon  int
	dir  string
	cmd  *exec.Cmd
}

// StartNATS starts a private nats-server of the module version in go.mod
// with sync_interval: always; cleanup stops it.
func StartNATS(t testing.TB) *NATSServer {
	t.Helper()
	return StartNATSWith(t, NATSConfig{SyncAlways: true})
}

// StartSystemNATS starts a private server from the system's binary
// ([NATSServerBin], Debian's 2.9), for the runs that keep compatibility
// with it; without the binary the test is skipped.
func StartSystemNATS(t testing.TB) *NATSServer {
	t.Helper()
	if _, err := os.Stat(NATSServerBin); err != nil {
		t.Skipf("%s not available: %v", NATSServerBin, err)
	}
	return StartNATSWith(t, NATSConfig{Bin: NATSServerBin})
}

// StartNATSWith starts a private nats-server as cfg says; cleanup stops it.
func StartNATSWith(t testing.TB, cfg NATSConfig) *NATSServer {
	t.Helper()
	if cfg.Bin == "" {
		cfg.Bin = CurrentNATSServerBin(t)
	}
	s := &NATSServer{t: t, cfg: cfg, port: FreePort(t), mon: FreePort(t), dir: t.TempDir()}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// Addr is the server's host:port.
func (s *NATSServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's nats:// URL.
func (s *NATSServer) URL() string { return "nats://" + s.Addr() }

// MonitorURL is the base URL of the server's HTTP monitoring (/varz,
// /jsz).
func (s *NATSServer) MonitorURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.mon))
}

// Dir is the server's directory: its JetStream store and its log
// (server.log).
func (s *NATSServer) Dir() string { return s.dir }

// Start starts the server (again) and waits until it listens.
func (s *NATSServer) Start() {
	s.t.Helper()
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-m", strconv.Itoa(s.mon), "-l", filepath.Join(s.dir, "server.log")}
	store := filepath.Join(s.dir, "jetstream")
	body := "jetstream {\n  store_dir: " + strconv.Quote(store) + "\n"
	if s.cfg.SyncAlways {
		body += "  sync_interval: always\n"
	}
	body += "}\n" + s.cfg.Config + "\n"
	conf := filepath.Join(s.dir, "server.conf")
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		s.t.Fatalf("write nats-server config: %v", err)
	}
	args = append(args, "-c", conf)
	s.cmd = exec.Command(s.cfg.Bin, args...)
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
