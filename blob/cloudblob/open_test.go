package cloudblob_test

import (
	"bytes"
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
	"github.com/ekm-dev/ekm/blob/blobtest"
	"github.com/ekm-dev/ekm/blob/cloudblob"
	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
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
		"gs://bucket?foo=bar", "azblob://c?nope=1", "s3://b?prefix=noslash", "s3://b?use_path_style=maybe",
		"s3://b?part_size_mib=4", "gs://b?concurrency=0", "azblob://c?concurrency=x"} {
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

// TestURLTuning: part_size_mib and concurrency are ekm's own parameters,
// taken out of the URL before each SDK sees it.
func TestURLTuning(t *testing.T) {
	for _, kind := range []string{cloudblobtest.S3, cloudblobtest.Azure, cloudblobtest.GCS} {
		t.Run(kind, func(t *testing.T) {
			s := servers.Require(t, kind)
			u, o := s.URL(s.NewBucket(t), s.Addr)
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			st, err := cloudblob.Open(context.Background(), u+sep+"part_size_mib=6&concurrency=3&prefix=ekm/", "", o)
			if err != nil {
				t.Fatal(err)
			}
			defer st.(*cloudblob.Bucket).Close()
			data := blobtest.Data(3, 13<<20)
			blobtest.Put(t, st, "org-1/proj_1/file-1", data)
			if got, err := blobtest.Get(t, st, "org-1/proj_1/file-1"); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back: %d bytes, %v", len(got), err)
			}
		})
	}
}

// Describe, which names the store in the refusal of another deployment's
// store, shows no credential: no user information, secret-bearing query
// values redacted; the default directory by its path.
func TestDescribe(t *testing.T) {
	data := t.TempDir()
	for in, want := range map[string]string{
		"":                                     "file://" + filepath.ToSlash(filepath.Join(data, "blobs")),
		"file://":                              "file://" + filepath.ToSlash(filepath.Join(data, "blobs")),
		"file:///srv/ekm/blobs":                "file:///srv/ekm/blobs",
		"s3://b?region=eu-west-1&prefix=prod/": "s3://b?region=eu-west-1&prefix=prod/",
		"azblob://c?storage_account=a&sig=s3cr3t":     "azblob://c?storage_account=a&sig=REDACTED",
		"gs://user:pass@bucket?X-Goog-Signature=abcd": "gs://bucket?X-Goog-Signature=REDACTED",
	} {
		if got := cloudblob.Describe(in, data); got != want {
			t.Errorf("Describe(%q) = %q, want %q", in, got, want)
		}
	}
}
