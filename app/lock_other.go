//go:build !unix

package app

// lockFile is a no-op where flock does not exist: the single-server guard
// of SQLite is Unix-only.
func lockFile(string) (release func(), holder string, err error) { return func() {}, "", nil }
