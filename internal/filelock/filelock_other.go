//go:build !unix

package filelock

// Lock is a no-op where flock does not exist: the guards built on it are
// Unix-only.
func Lock(string) (release func(), holder string, err error) { return func() {}, "", nil }
