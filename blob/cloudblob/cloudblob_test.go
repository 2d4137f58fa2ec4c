package cloudblob_test

import (
	"os"
	"testing"

	"github.com/ekm-dev/ekm/blob/blobtest"
	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
)

var servers cloudblobtest.Servers

func TestMain(m *testing.M) {
	servers = cloudblobtest.Start()
	code := m.Run()
	servers.Stop()
	os.Exit(code)
}

func TestConformanceS3(t *testing.T) {
	blobtest.Run(t, servers.Require(t, cloudblobtest.S3).Suite())
}

func TestConformanceAzure(t *testing.T) {
	blobtest.Run(t, servers.Require(t, cloudblobtest.Azure).Suite())
}

func TestConformanceGCS(t *testing.T) {
	blobtest.Run(t, servers.Require(t, cloudblobtest.GCS).Suite())
}
