package testenv

import "syscall"

// dieWithParent asks Linux to kill the child when the thread that started
// it exits, which is when the test process dies.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
