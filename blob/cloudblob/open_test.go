package cloudblob_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"google.golang.org/api/googleapi"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/cloudblob"
)

func TestOpenFileURLs(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	abs := filepath.Join(t.TempDir(), "elsewhere")
	for _, c := range []struct{ url, dir string }{
		{"", filepath.Join(data, "blobs")},
		{"file://", filepath.Join(data, "blobs")},
		{"file://" + abs, abs},
	} {
		st, err := cloudblob.Open(ctx, c.url, data, cloudblob.Options{})
		if err != nil {
			t.Fatalf("%q: %v", c.url, err)
		}
		d, ok := st.(*blob.Dir)
		if !ok {
			t.Fatalf("%q: %T, want *blob.Dir", c.url, st)
		}
		if !strings.HasPrefix(d.TempDir(), c.dir+string(os.PathSeparator)) {
			t.Fatalf("%q: temp dir %s, want under %s", c.url, d.TempDir(), c.dir)
		}
	}
	for _, bad := range []string{"file:relative", "file://host/x", "file:///", "file:///x?a=b", "ftp://x", "s3://", "s3://key:secret@bucket",
		"gs://bucket?foo=bar", "azblob://c?nope=1", "s3://b?prefix=noslash", "s3://b?use_path_style=maybe"} {
		if _, err := cloudblob.Open(ctx, bad, data, cloudblob.Options{}); err == nil {
			t.Errorf("Open(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error shows the credentials: %v", bad, err)
		}
	}
}

func TestRetryable(t *testing.T) {
	yes := []error{
		&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED},
		fmt.Errorf("x: %w", syscall.ECONNRESET),
		context.DeadlineExceeded,
		&azcore.ResponseError{StatusCode: 503},
		&azcore.ResponseError{StatusCode: 429},
		&googleapi.Error{Code: 500},
		statusErr(503),
	}
	no := []error{nil, context.Canceled, errors.New("boom"), &azcore.ResponseError{StatusCode: 403}, &googleapi.Error{Code: 400}, statusErr(404)}
	for _, e := range yes {
		if !cloudblob.Retryable(e) {
			t.Errorf("Retryable(%v) = false", e)
		}
	}
	for _, e := range no {
		if cloudblob.Retryable(e) {
			t.Errorf("Retryable(%v) = true", e)
		}
	}
}

// statusErr has the HTTPStatusCode method of the AWS SDK's response errors.
type statusErr int

func (s statusErr) Error() string       { return fmt.Sprintf("status %d", int(s)) }
func (s statusErr) HTTPStatusCode() int { return int(s) }
