// Package natsembed runs the nats-server of the module version in go.mod
// inside the test process, with JetStream and sync_interval: always, for
// tests that stop and restart a current broker with its store. A test that
// must kill the broker uses testenv.StartNATS, a process of its own.
package natsembed

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an embedded nats-server on a loopback port and a store
// directory that outlive its restarts.
type Server struct {
	t    testing.TB
	port int
	dir  string
	srv  *server.Server
}

// Start starts an embedded server; cleanup shuts it down.
func Start(t testing.TB) *Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &Server{t: t, port: port, dir: t.TempDir()}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's nats:// URL.
func (s *Server) URL() string {
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Start starts the server (again) on its port and store, and waits until
// it is ready for connections.
func (s *Server) Start() {
	s.t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: s.port, JetStream: true, StoreDir: s.dir,
		SyncAlways: true, NoSigs: true, NoLog: true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		s.t.Fatalf("embedded nats-server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		s.t.Fatalf("embedded nats-server not ready on %s within 10s", s.URL())
	}
	s.srv = srv
}

// Stop shuts the server down (its store stays for the next Start).
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}
