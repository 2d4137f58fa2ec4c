package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/envelope/envelopetest"
	"github.com/ekm-dev/ekm/store"
)

// TestEnvelopeWriteVersionFlag: serve and reencrypt take
// --envelope-write-version and EKM_ENVELOPE_WRITE_VERSION, and refuse
// anything but 1, 2 or 3 before creating anything.
func TestEnvelopeWriteVersionFlag(t *testing.T) {
	envelopetest.KeepWriteVersion(t)
	for _, cmd := range [][]string{{"serve"}, {"reencrypt"}} {
		out, _, err := ekmRun(t, append(cmd, "--help")...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "--envelope-write-version") || !strings.Contains(out, "EKM_ENVELOPE_WRITE_VERSION") || !strings.Contains(out, "(default 3)") {
			t.Errorf("ekm %s --help lacks --envelope-write-version, its variable or its default", cmd[0])
		}
	}
	org := "org-0123456789abcdefghjkmnpqrs"
	for _, bad := range []string{"0", "4", "-1", "two"} {
		dir := filepath.Join(t.TempDir(), "data")
		for _, args := range [][]string{
			{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--envelope-write-version", bad},
			{"reencrypt", "--org", org, "--all-projects", "--data-dir", dir, "--envelope-write-version", bad},
		} {
			_, _, err := ekmRun(t, args...)
			if err == nil || !strings.Contains(err.Error(), "--envelope-write-version") || !strings.Contains(err.Error(), "want 1, 2 or 3") {
				t.Errorf("ekm %s: %v, want a refusal of %q", strings.Join(args, " "), err, bad)
			}
		}
		t.Setenv("EKM_ENVELOPE_WRITE_VERSION", bad)
		_, _, err := ekmRun(t, "serve", "--addr", "127.0.0.1:0", "--data-dir", dir)
		if err == nil || !strings.Contains(err.Error(), "EKM_ENVELOPE_WRITE_VERSION") {
			t.Errorf("EKM_ENVELOPE_WRITE_VERSION=%s: %v, want a refusal naming the variable", bad, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("--envelope-write-version %s: the data dir was created before the refusal (%v)", bad, err)
		}
	}
}

// wvPost sends an Admin API POST and decodes its 200 answer into out.
func wvPost(t *testing.T, base, key, path string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || json.Unmarshal(rb, out) != nil {
		t.Fatalf("POST %s: %d %s", path, res.StatusCode, rb)
	}
}

// wvServe opens an App on dir with the default write version and serves
// its handler until the returned stop.
func wvServe(t *testing.T, dir string) (*app.App, string, func()) {
	t.Helper()
	a, err := app.Open(context.Background(), app.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler)
	return a, srv.URL, func() { srv.Close(); a.Close() }
}

// TestReencryptHonoursEnvelopeWriteVersion: `ekm reencrypt
// --envelope-write-version 1` writes the files it moves in version 1 (so
// that replicas of a release that cannot read version 2 still can during a
// rolling upgrade), and leaves a version 3 file already on the current key
// version as it is: re-encryption never downgrades.
func TestReencryptHonoursEnvelopeWriteVersion(t *testing.T) {
	envelopetest.KeepWriteVersion(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	a, base, stop := wvServe(t, dir)
	org, admin, err := adminapi.CreateOrg(ctx, a.Store, "o", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var p struct{ ID string }
	wvPost(t, base, admin, "/v1/organization/projects", map[string]string{"name": "p"}, &p)
	var sa struct {
		APIKey struct{ Value string } `json:"api_key"`
	}
	wvPost(t, base, admin, "/v1/organization/projects/"+p.ID+"/service_accounts", map[string]string{"name": "w"}, &sa)
	upload := func(base, name string, content []byte) string {
		t.Helper()
		c, err := client.New(base, sa.APIKey.Value)
		if err != nil {
			t.Fatal(err)
		}
		f, err := c.UploadFile(ctx, name, bytes.NewReader(content), "user_data")
		if err != nil {
			t.Fatal(err)
		}
		return f.ID
	}
	oldContent, newContent := bytes.Repeat([]byte("o"), 70000), []byte("new")
	oldID := upload(base, "old.txt", oldContent) // key version 1, format 3
	stop()

	if _, _, err := ekmRun(t, "project", "rotate-key", "--org", org.ID, "--project", p.ID, "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	a, base, stop = wvServe(t, dir)
	newID := upload(base, "new.txt", newContent) // key version 2, format 3
	newBefore, err := a.Store.GetFile(ctx, org.ID, p.ID, newID)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	if _, stderr, err := ekmRun(t, "reencrypt", "--org", org.ID, "--project", p.ID, "--data-dir", dir, "--envelope-write-version", "1"); err != nil {
		t.Fatalf("reencrypt: %v\n%s", err, stderr)
	}
	a, base, stop = wvServe(t, dir)
	defer stop()
	formats := func(f store.File) (name, content int) {
		t.Helper()
		rc, _, err := a.Blobs.Open(ctx, f.BlobKey)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		name, err1 := envelope.FormatVersion(f.NameCiphertext)
		content, err2 := envelope.FormatVersion(b)
		if err1 != nil || err2 != nil {
			t.Fatalf("file %s: %v %v", f.ID, err1, err2)
		}
		return name, content
	}
	oldAfter, err := a.Store.GetFile(ctx, org.ID, p.ID, oldID)
	if err != nil {
		t.Fatal(err)
	}
	if n, c := formats(oldAfter); oldAfter.KeyVersion != 2 || n != 1 || c != 1 {
		t.Errorf("re-encrypted file: key version %d, name format %d, content format %d; want 2, 1, 1", oldAfter.KeyVersion, n, c)
	}
	newAfter, err := a.Store.GetFile(ctx, org.ID, p.ID, newID)
	if err != nil {
		t.Fatal(err)
	}
	if n, c := formats(newAfter); newAfter.BlobKey != newBefore.BlobKey || n != envelope.Version3 || c != envelope.Version3 {
		t.Errorf("file already on the current version was rewritten (blob %s → %s) or downgraded (name %d, content %d)",
			newBefore.BlobKey, newAfter.BlobKey, n, c)
	}
	// Both read back on a server writing version 3.
	c, err := client.New(base, sa.APIKey.Value)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string][]byte{oldID: oldContent, newID: newContent} {
		var got bytes.Buffer
		if _, err := c.DownloadFile(ctx, id, &got); err != nil || !bytes.Equal(got.Bytes(), want) {
			t.Errorf("file %s: %d bytes back, %v", id, got.Len(), err)
		}
	}
}
