//go:build unix

package filelock

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Lock takes an exclusive flock on path (created 0600), writing this
// process's id into it. The kernel releases the lock when the process ends,
// however it ends. If another process holds it, the error is ErrLocked and
// holder is what that process wrote (its pid).
func Lock(path string) (release func(), holder string, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, "", err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, strings.TrimSpace(string(b[:n])), ErrLocked
		}
		return nil, "", err
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	// Closing the file releases the lock; the file stays (removing it
	// would race with the next process taking it).
	return func() { f.Close() }, "", nil
}
