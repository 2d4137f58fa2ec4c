// Package filelock is an advisory, process-wide exclusive lock on a file
// (flock), released by the kernel when the process ends however it ends.
// ekm uses it where two processes on one machine must not both act: two
// servers on one SQLite database, two rollovers of one issuer key file.
package filelock

import "errors"

// ErrLocked: another process holds the lock.
var ErrLocked = errors.New("locked")
