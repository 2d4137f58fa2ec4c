//go:build unix

package filelock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestLockExcludesAnotherProcess: while one process holds the lock, another
// gets ErrLocked and the holder's pid; once released, it gets the lock.
func TestLockExcludesAnotherProcess(t *testing.T) {
	if os.Getenv("FILELOCK_CHILD") != "" {
		_, holder, err := Lock(os.Getenv("FILELOCK_CHILD"))
		if errors.Is(err, ErrLocked) {
			os.Stdout.WriteString("locked by " + holder)
			os.Exit(3)
		}
		if err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	path := filepath.Join(t.TempDir(), "x.lock")
	release, _, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	child := func() (int, string) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockExcludesAnotherProcess$")
		cmd.Env = append(os.Environ(), "FILELOCK_CHILD="+path)
		out, _ := cmd.Output()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	if code, out := child(); code != 3 || out != "locked by "+strconv.Itoa(os.Getpid()) {
		t.Fatalf("while held: exit %d %q", code, out)
	}
	release()
	if code, out := child(); code != 0 {
		t.Fatalf("after release: exit %d %q", code, out)
	}
}
