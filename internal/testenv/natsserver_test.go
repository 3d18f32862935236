package testenv

import (
	"bufio"
	"net"
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
	if _, err := os.Stat(NATSServerBin); err != nil {
		t.Skipf("%s not available: %v", NATSServerBin, err)
	}
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
