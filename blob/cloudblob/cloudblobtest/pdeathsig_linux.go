package cloudblobtest

import (
	"os/exec"
	"syscall"
)

// dieWithParent kills the server if the test binary dies without Stop (a
// timeout's panic, a kill): no server outlives its tests.
func dieWithParent(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
