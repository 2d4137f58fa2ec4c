package emukit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// WriteFileAtomic writes via a temp file, fsync and rename, so a crash
// never leaves a truncated file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// StateFile persists an emulator's state as one JSON document, written
// atomically with mode 0600. Path "" disables persistence (Save is a
// no-op, Load finds nothing).
type StateFile struct {
	Path string
	mu   sync.Mutex // serialises writes
}

// Save marshals v and writes it. Callers hold whatever lock guards v.
func (s *StateFile) Save(v any) error {
	if s.Path == "" {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteFileAtomic(s.Path, b, 0o600)
}

// Load reads the file into v; found is false (and v untouched) when the
// file does not exist.
func (s *StateFile) Load(v any) (found bool, err error) {
	if s.Path == "" {
		return false, nil
	}
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("parse %s: %w", filepath.Base(s.Path), err)
	}
	return true, nil
}
