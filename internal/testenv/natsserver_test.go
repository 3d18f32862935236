package testenv

import (
	"bufio"
	"encoding/json"
	"github.com/nats-io/nats-server/v2/server"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestNATSServerDiesWithTheTestProcess runs this test binary again as a
// child that starts a private server, prints its address and then crashes
// in a goroutine (so no cleanup runs); the server must not outlive it.
func TestNATSServerDiesWithTheTestProcess(t *testing.T) {
	if os.Getenv("TXM_TESTENV_CRASH_CHILD") == "1" {
		s := StartNATS(t)
		os.Stdout.WriteString("addr " + s.Addr() + "\n")
		go func() { panic("crash without cleanups") }()
		time.Sleep(10 * time.Second)
		return
	}
	CurrentNATSServerBin(t) // built here, not in the child
	cmd := exec.Command(os.Args[0], "-test.run", "^TestNATSServerDiesWithTheTestProcess$", "-test.v")
	// The child leaves its directories behind; they go with this test's.
	cmd.Env = append(os.Environ(), "TXM_TESTENV_CRASH_CHILD=1", "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var addr string
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "addr "); ok {
			addr = a
			break
		}
	}
	for lines.Scan() { // drain until the child exits
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the child did not crash")
	}
	if addr == "" {
		t.Fatal("the child printed no server address")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return // the server is gone
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("the child's nats-server at %s still listens after the child died", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStartNATSRunsTheModuleServer checks that StartNATS runs the server of
// the module version, and StartSystemNATS the system's.
func TestStartNATSRunsTheModuleServer(t *testing.T) {
	s := StartNATS(t)
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	info, err := bufio.NewReader(c).ReadString('\n') // the INFO line
	if err != nil {
		t.Fatal(err)
	}
	if want := `"version":"` + server.VERSION + `"`; !strings.Contains(info, want) {
		t.Errorf("INFO = %s, want %s", info, want)
	}
	if !strings.Contains(info, `"jetstream":true`) {
		t.Errorf("INFO = %s, want JetStream on", info)
	}
	resp, err := http.Get(s.MonitorURL() + "/varz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var varz struct {
		JetStream struct {
			Config struct {
				SyncAlways bool `json:"sync_always"`
			} `json:"config"`
		} `json:"jetstream"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&varz); err != nil {
		t.Fatal(err)
	}
	if !varz.JetStream.Config.SyncAlways {
		t.Error("/varz: jetstream.config.sync_always is false, want true")
	}
}
