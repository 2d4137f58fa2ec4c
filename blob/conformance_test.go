package blob_test

import (
	"testing"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/blobtest"
)

// TestDirConformance: the local directory passes the suite every backend
// passes (it has no server, so no fault proxy).
func TestDirConformance(t *testing.T) {
	blobtest.Run(t, blobtest.Suite{New: func(t *testing.T) blob.Store {
		d, err := blob.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return d
	}})
}
