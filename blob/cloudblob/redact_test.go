package cloudblob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/blobtest"
	"github.com/ekm-dev/ekm/blob/cloudblob"
	"github.com/ekm-dev/ekm/files"
)

// secret is the credential the redaction tests put in request URLs.
const secret = "SECRETzz9"

// secretQuery holds every secret-bearing parameter the redaction knows.
var secretQuery = "sv=2022-11-02&se=2030-01-01T00%3A00%3A00Z&sig=" + secret + "%2Bab%3D" +
	"&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA" + secret + "%2F20260101%2Fus-east-1%2Fs3%2Faws4_request" +
	"&X-Amz-Security-Token=" + secret + "&X-Amz-Signature=" + secret +
	"&X-Goog-Credential=" + secret + "&X-Goog-Signature=" + secret + "&access_token=ya29." + secret

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// errText is what an error prints, as ekm formats errors for answers and
// logs (%v, slog's err attribute). Its chain keeps the SDK's own errors
// unchanged (see cloudblob's redact): only their text through the
// returned error is checked.
func errText(err error) string {
	return fmt.Sprintf("%v\n%+v\n%s", err, err, err.Error())
}

// exercise runs every Bucket operation against a store that fails, and
// returns their errors (each must be non-nil: the store is unreachable).
func exercise(t *testing.T, st blob.Store) map[string]error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := map[string]error{}
	key := blobtest.Key()
	if w, err := st.Create(ctx, key); err != nil {
		errs["create"] = err
	} else {
		_, werr := w.Write(blobtest.Data(1, 6<<20))
		cerr := w.Commit()
		errs["commit"] = errors.Join(werr, cerr)
	}
	_, _, errs["open"] = st.Open(ctx, key)
	errs["delete"] = st.Delete(ctx, key)
	errs["list"] = st.List(ctx, func(blob.Info) error { return nil })
	if ts, ok := st.(blob.TempSweeper); ok {
		if _, err := ts.RemoveStaleTemps(ctx, time.Now(), files.IsBlobKey); err != nil {
			errs["remove stale temps"] = err
		}
	}
	for op, err := range errs {
		if err == nil {
			t.Errorf("%s succeeded against a store that is not there", op)
		}
	}
	return errs
}

func checkNoSecret(t *testing.T, errs map[string]error, logs *bytes.Buffer) {
	t.Helper()
	for op, err := range errs {
		if err == nil {
			continue
		}
		if s := errText(err); strings.Contains(s, secret) {
			t.Errorf("%s: the error shows the secret: %s", op, s)
		} else {
			t.Logf("%s: %v", op, err)
		}
		if !errors.Is(err, blob.ErrUnavailable) && !errors.Is(err, blob.ErrNotFound) {
			t.Logf("%s: not classified unavailable: %v", op, err)
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log shows the secret: %s", logs)
	}
}

// TestErrorsRedactAzureSAS: an Azure container reached with a SAS token
// (AZURE_STORAGE_SAS_TOKEN: every request carries sig=…) at an address
// that refuses connections; no error or log line shows the signature.
func TestErrorsRedactAzureSAS(t *testing.T) {
	t.Setenv("AZURE_STORAGE_KEY", "")
	t.Setenv("AZURE_STORAGE_SAS_TOKEN", secretQuery)
	var logs bytes.Buffer
	o := cloudblob.Options{MaxAttempts: 1, MaxBackoff: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	st, err := cloudblob.Open(context.Background(), "azblob://c?localemu=true&protocol=http&domain="+closedAddr(t), "", o)
	if err != nil {
		t.Fatal(err)
	}
	defer st.(*cloudblob.Bucket).Close()
	checkNoSecret(t, exercise(t, st), &logs)
}

// TestErrorsRedactRedirect: each backend's store answers every request
// with a redirect to a URL full of credentials at an address that refuses
// connections (so the transport error names that URL); no error or log
// line shows them.
func TestErrorsRedactRedirect(t *testing.T) {
	target := "http://" + closedAddr(t) + "/somewhere?" + secretQuery
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the whole body before answering: Azure's SDK uploads from
		// memory-mapped buffers that it unmaps when the upload ends, while
		// Go's transport may still be sending a body the server answered
		// early (a crash of the test binary, not a leak).
		_, _ = io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, target, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	addr := strings.TrimPrefix(redirector.URL, "http://")
	for kind, u := range map[string]string{
		"s3":     "s3://b?region=us-east-1&use_path_style=true&endpoint=" + url.QueryEscape(redirector.URL),
		"azblob": "azblob://c?localemu=true&protocol=http&domain=" + addr,
		"gs":     "gs://b",
	} {
		t.Run(kind, func(t *testing.T) {
			var logs bytes.Buffer
			o := cloudblob.Options{MaxAttempts: 1, MaxBackoff: 10 * time.Millisecond, GCSEmulatorHost: addr,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			st, err := cloudblob.Open(context.Background(), u, "", o)
			if err != nil {
				t.Fatal(err)
			}
			defer st.(*cloudblob.Bucket).Close()
			checkNoSecret(t, exercise(t, st), &logs)
		})
	}
}
