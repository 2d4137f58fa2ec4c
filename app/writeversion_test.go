package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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
)

// adminPost sends an Admin API POST and decodes its 200 answer into out.
func adminPost(t *testing.T, addr, key, path string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+addr+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", path, res.StatusCode, rb)
	}
	if err := json.Unmarshal(rb, out); err != nil {
		t.Fatalf("POST %s: %v: %s", path, err, rb)
	}
}

// TestEnvelopeWriteVersion runs four servers in turn on one data dir, with
// Config.EnvelopeWriteVersion 1, the default (3), 2, then 1 again. Each
// logs the version at start; a file it stores (content blob and name
// ciphertext) and a crypto API ciphertext it returns are in that version;
// and it reads back everything the servers before it wrote, in whichever
// version.
func TestEnvelopeWriteVersion(t *testing.T) {
	envelopetest.KeepWriteVersion(t)
	ctx := context.Background()
	dir := t.TempDir()
	type written struct {
		fileID, name string
		content      []byte
		plaintext    []byte
		ciphertext   []byte
		context      []byte
	}
	var all []written
	var orgID, projID, projKey string
	for i, setting := range []int{1, 0, 2, 1} {
		want := setting
		if want == 0 {
			want = envelope.Version3
		}
		var logs bytes.Buffer
		w := &syncWriter{w: &logs}
		addr, a, stop := server(t, app.Config{DataDir: dir, EnvelopeWriteVersion: setting, Logger: slog.New(slog.NewJSONHandler(w, nil))})
		if got := envelope.WriteVersion(); got != want {
			t.Fatalf("server %d (EnvelopeWriteVersion %d): envelope.WriteVersion() = %d, want %d", i, setting, got, want)
		}
		w.mu.Lock()
		started := strings.Contains(logs.String(), `"msg":"ekm starting"`) &&
			strings.Contains(logs.String(), fmt.Sprintf(`"envelope_write_version":%d`, want))
		w.mu.Unlock()
		if !started {
			t.Fatalf("server %d: no start line with envelope_write_version %d:\n%s", i, want, logs.String())
		}
		if i == 0 {
			org, admin, err := adminapi.CreateOrg(ctx, a.Store, "o", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			orgID = org.ID
			var p struct{ ID string }
			adminPost(t, addr, admin, "/v1/organization/projects", map[string]string{"name": "p"}, &p)
			projID = p.ID
			var sa struct {
				APIKey struct{ Value string } `json:"api_key"`
			}
			adminPost(t, addr, admin, "/v1/organization/projects/"+projID+"/service_accounts", map[string]string{"name": "w"}, &sa)
			projKey = sa.APIKey.Value
		}
		c, err := client.New("http://"+addr, projKey)
		if err != nil {
			t.Fatal(err)
		}

		// What the servers before wrote reads back under this setting.
		for _, o := range all {
			var got bytes.Buffer
			if _, err := c.DownloadFile(ctx, o.fileID, &got); err != nil || !bytes.Equal(got.Bytes(), o.content) {
				t.Fatalf("server %d: file %s: %d bytes, %v", i, o.fileID, got.Len(), err)
			}
			if f, err := c.GetFile(ctx, o.fileID); err != nil || f.Filename != o.name {
				t.Fatalf("server %d: file %s: name %v, %v", i, o.fileID, f, err)
			}
			if pt, err := c.Decrypt(ctx, o.ciphertext, o.context); err != nil || !bytes.Equal(pt, o.plaintext) {
				t.Fatalf("server %d: decrypt of an earlier ciphertext: %q, %v", i, pt, err)
			}
		}

		// What it writes is in its version: a file of two segments
		// (streaming), its name, and a crypto API ciphertext.
		o := written{name: fmt.Sprintf("f%d.txt", i), content: bytes.Repeat([]byte{byte('a' + i)}, 70000),
			plaintext: []byte(fmt.Sprintf("secret %d", i)), context: []byte("ctx")}
		f, err := c.UploadFile(ctx, o.name, bytes.NewReader(o.content), "user_data")
		if err != nil {
			t.Fatal(err)
		}
		o.fileID = f.ID
		rec, err := a.Store.GetFile(ctx, orgID, projID, f.ID)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := envelope.FormatVersion(rec.NameCiphertext); err != nil || v != want {
			t.Errorf("server %d: file name stored in format version %d (%v), want %d", i, v, err, want)
		}
		rc, _, err := a.Blobs.Open(ctx, rec.BlobKey)
		if err != nil {
			t.Fatal(err)
		}
		blobBytes, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if v, err := envelope.FormatVersion(blobBytes); err != nil || v != want {
			t.Errorf("server %d: file content stored in format version %d (%v), want %d", i, v, err, want)
		}
		ct, err := c.Encrypt(ctx, o.plaintext, o.context)
		if err != nil {
			t.Fatal(err)
		}
		o.ciphertext = ct.Ciphertext
		if v, err := envelope.FormatVersion(ct.Ciphertext); err != nil || v != want {
			t.Errorf("server %d: crypto API ciphertext in format version %d (%v), want %d", i, v, err, want)
		}
		// ... and reads back at once.
		if pt, err := c.Decrypt(ctx, o.ciphertext, o.context); err != nil || !bytes.Equal(pt, o.plaintext) {
			t.Fatalf("server %d: decrypt of its own ciphertext: %q, %v", i, pt, err)
		}
		all = append(all, o)
		stop()
	}
}

// TestEnvelopeWriteVersionRefused: a format version ekm cannot write stops
// Open before it creates or opens anything, and leaves the process-wide
// setting alone.
func TestEnvelopeWriteVersionRefused(t *testing.T) {
	envelopetest.KeepWriteVersion(t)
	before := envelope.WriteVersion()
	for _, v := range []int{-1, 4, 255} {
		dir := filepath.Join(t.TempDir(), "data")
		a, err := app.Open(context.Background(), app.Config{DataDir: dir, EnvelopeWriteVersion: v, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			a.Close()
			t.Fatalf("EnvelopeWriteVersion %d accepted", v)
		}
		if !strings.Contains(err.Error(), "must be 1, 2 or 3") || !strings.Contains(err.Error(), "--envelope-write-version") {
			t.Errorf("EnvelopeWriteVersion %d: %q does not say what is wrong", v, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("EnvelopeWriteVersion %d: the data dir was created before the refusal (%v)", v, err)
		}
		if got := envelope.WriteVersion(); got != before {
			t.Errorf("EnvelopeWriteVersion %d: write version changed to %d", v, got)
		}
	}
}
