package tcpproxy

import (
	"bufio"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// echo serves a line echo on loopback until stop.
func echo(t *testing.T) (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() { _ = ln.Close(); <-done }
}

func roundTrip(c net.Conn, r *bufio.Reader, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := r.ReadString('\n')
	return err
}

func TestProxy(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	addr, stop := echo(t)
	defer stop()
	p, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := roundTrip(c, r, 2*time.Second); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	p.Stall()
	if err := roundTrip(c, r, 300*time.Millisecond); err == nil {
		t.Fatal("a round trip went through a stalled proxy")
	}
	p.Resume()
	// The stalled ping arrives now; then its echo and a new one.
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatalf("the held bytes were not forwarded after Resume: %v", err)
	}

	if n := p.Cut(); n != 1 {
		t.Errorf("Cut = %d connections, want 1", n)
	}
	if err := roundTrip(c, r, 2*time.Second); err == nil {
		t.Fatal("a round trip went through a cut connection")
	}

	p.Refuse(true)
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		if err := roundTrip(c2, bufio.NewReader(c2), time.Second); err == nil {
			t.Error("a refusing proxy forwarded a new connection")
		}
		_ = c2.Close()
	}
	p.Refuse(false)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if err := roundTrip(c3, bufio.NewReader(c3), 2*time.Second); err != nil {
		t.Errorf("after Refuse(false): %v", err)
	}
}
