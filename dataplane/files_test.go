package dataplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/pagination"

	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/store"
)

func sdk(env *dataplanetest.Env, apiKey string) openai.Client {
	return openai.NewClient(option.WithBaseURL(env.URL+"/v1/"), option.WithAPIKey(apiKey), option.WithMaxRetries(0))
}

// content returns n bytes made of a marker that must never appear on disk.
func content(marker string, n int) []byte {
	b := bytes.Repeat([]byte(marker+"|"), n/(len(marker)+1)+1)
	return b[:n]
}

func apiErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("want API error %d %s, got %v", status, code, err)
	}
	if e.StatusCode != status || e.Code != code {
		t.Fatalf("got %d %q (%s), want %d %q", e.StatusCode, e.Code, e.Message, status, code)
	}
}

// scanDataDir fails if any file under the data dir (SQLite db, WAL, blobs,
// temporaries) contains one of needles.
func scanDataDir(t *testing.T, env *dataplanetest.Env, needles ...string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(env.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s contains %q in the clear", p, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("scanned only %d files; expected the database and blobs", files)
	}
}

func upload(t *testing.T, c openai.Client, name string, data []byte, purpose openai.FilePurpose) *openai.FileObject {
	t.Helper()
	f, err := c.Files.New(context.Background(), openai.FileNewParams{
		File:    openai.File(bytes.NewReader(data), name, "application/octet-stream"),
		Purpose: purpose,
	})
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	return f
}

func download(t *testing.T, c openai.Client, id string) []byte {
	t.Helper()
	res, err := c.Files.Content(context.Background(), id)
	if err != nil {
		t.Fatalf("content %s: %v", id, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading content %s: %v", id, err)
	}
	return b
}

// TestOpenAISDK is the "done when" of the Files API: the official SDK
// uploads, lists, retrieves, downloads and deletes, and neither content nor
// file names are anywhere on disk in the clear.
func TestOpenAISDK(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", true)
	c := sdk(env, p.APIKey)
	ctx := context.Background()

	type up struct {
		name    string
		data    []byte
		purpose openai.FilePurpose
	}
	ups := []up{
		{"payroll-TOPSECRET-alpha.jsonl", content("CONFIDENTIAL-ALPHA-7f3a", 3*envelope.SegmentSize+123), openai.FilePurposeBatch},
		{"board-minutes-TOPSECRET-beta.txt", content("CONFIDENTIAL-BETA-19c2", 1000), openai.FilePurposeAssistants},
		{"empty-TOPSECRET-gamma.bin", nil, openai.FilePurposeUserData},
		{"exact-TOPSECRET-delta.bin", content("CONFIDENTIAL-DELTA-88e1", envelope.SegmentSize), openai.FilePurposeFineTune},
	}
	var objs []*openai.FileObject
	for _, u := range ups {
		f := upload(t, c, u.name, u.data, u.purpose)
		if !strings.HasPrefix(f.ID, "file-") || f.Object != "file" || f.Bytes != int64(len(u.data)) ||
			f.Filename != u.name || string(f.Purpose) != string(u.purpose) || f.Status != "processed" || f.CreatedAt == 0 {
			t.Fatalf("upload answer: %s", f.RawJSON())
		}
		objs = append(objs, f)
	}

	// List pages through the cursor, newest first by default.
	var listed []string
	iter := c.Files.ListAutoPaging(ctx, openai.FileListParams{Limit: openai.Int(3)})
	for iter.Next() {
		listed = append(listed, iter.Current().ID+"="+iter.Current().Filename)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	want := ""
	for i := len(objs) - 1; i >= 0; i-- {
		want += objs[i].ID + "=" + ups[i].name + ","
	}
	if strings.Join(listed, ",")+"," != want {
		t.Fatalf("listed %v, want %s", listed, want)
	}
	page, err := c.Files.List(ctx, openai.FileListParams{Order: openai.FileListParamsOrderAsc, Limit: openai.Int(2)})
	if err != nil || len(page.Data) != 2 || !page.HasMore || page.Data[0].ID != objs[0].ID {
		t.Fatalf("asc page: %v %+v", err, page)
	}
	page, err = c.Files.List(ctx, openai.FileListParams{Purpose: openai.String("batch")})
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != objs[0].ID || page.HasMore {
		t.Fatalf("purpose filter: %v %+v", err, page)
	}

	for i, o := range objs {
		got, err := c.Files.Get(ctx, o.ID)
		if err != nil || got.ID != o.ID || got.Filename != ups[i].name || got.Bytes != o.Bytes {
			t.Fatalf("get: %v %+v", err, got)
		}
		if b := download(t, c, o.ID); !bytes.Equal(b, ups[i].data) {
			t.Fatalf("download of %s differs: %d bytes, want %d", o.ID, len(b), len(ups[i].data))
		}
	}

	// Neither content nor names are on disk in the clear.
	scanDataDir(t, env, "CONFIDENTIAL-ALPHA-7f3a", "CONFIDENTIAL-BETA-19c2", "CONFIDENTIAL-DELTA-88e1", "TOPSECRET")

	del, err := c.Files.Delete(ctx, objs[1].ID)
	if err != nil || !del.Deleted || del.ID != objs[1].ID || del.Object != "file" {
		t.Fatalf("delete: %v %+v", err, del)
	}
	_, err = c.Files.Get(ctx, objs[1].ID)
	apiErr(t, err, 404, "not_found")
	_, err = c.Files.Delete(ctx, objs[1].ID)
	apiErr(t, err, 404, "not_found")
	if _, _, err := env.Dir.Open(ctx, p.OrgID+"/"+p.ID+"/"+objs[1].ID); err == nil {
		t.Fatal("blob of deleted file still there")
	}
}

// multipartBody builds an upload body with parts in the given order.
func multipartBody(t *testing.T, parts ...[2]string) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		if p[0] == "file" {
			w, _ := mw.CreateFormFile("file", "name-SECRETNAME.txt")
			w.Write([]byte(p[1]))
		} else {
			mw.WriteField(p[0], p[1])
		}
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func post(t *testing.T, env *dataplanetest.Env, key string, body io.Reader, ctype string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", env.URL+"/v1/files", body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", ctype)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// assertClean checks that no file record, no blob and no temporary exist.
func assertClean(t *testing.T, env *dataplanetest.Env, p dataplanetest.Project) {
	t.Helper()
	fs, err := env.Store.ListFiles(context.Background(), p.OrgID, p.ID, "", store.Page{})
	if err != nil || len(fs) != 0 {
		t.Errorf("file records: %v %d", err, len(fs))
	}
	n := 0
	env.Dir.List(context.Background(), func(i blobInfo) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d blobs left", n)
	}
	tmps, _ := os.ReadDir(env.Dir.TempDir())
	if len(tmps) != 0 {
		t.Errorf("%d temporaries left", len(tmps))
	}
}

func TestUploadPartOrderAndValidation(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)

	// Purpose after the file: already streamed, validated at the end.
	body, ct := multipartBody(t, [2]string{"file", "hello"}, [2]string{"purpose", "batch"})
	if st, m := post(t, env, p.APIKey, body, ct); st != 200 || m["purpose"] != "batch" || m["filename"] != "name-SECRETNAME.txt" {
		t.Fatalf("purpose after file: %d %v", st, m)
	}
	env2 := dataplanetest.New(t, dataplanetest.Options{})
	p2 := env2.NewProject(t, "", false)
	cases := []struct {
		name   string
		parts  [][2]string
		status int
		code   string
	}{
		{"invalid purpose after file", [][2]string{{"file", "x"}, {"purpose", "nonsense"}}, 400, "invalid_value"},
		{"invalid purpose before file", [][2]string{{"purpose", "nonsense"}, {"file", "x"}}, 400, "invalid_value"},
		{"missing purpose", [][2]string{{"file", "x"}}, 400, "missing_required_parameter"},
		{"missing file", [][2]string{{"purpose", "batch"}}, 400, "missing_required_parameter"},
		{"two files", [][2]string{{"file", "x"}, {"file", "y"}, {"purpose", "batch"}}, 400, "invalid_value"},
		{"unknown field", [][2]string{{"file", "x"}, {"purpose", "batch"}, {"colour", "red"}}, 400, "unknown_parameter"},
		{"expires_after", [][2]string{{"purpose", "batch"}, {"expires_after[seconds]", "3600"}, {"file", "x"}}, 400, "unsupported_parameter"},
		{"file as field", [][2]string{{"purpose", "batch"}, {"filex", "x"}}, 400, "unknown_parameter"},
	}
	for _, c := range cases {
		body, ct := multipartBody(t, c.parts...)
		st, m := post(t, env2, p2.APIKey, body, ct)
		if st != c.status || errCode(m) != c.code {
			t.Errorf("%s: %d %v, want %d %s", c.name, st, m, c.status, c.code)
		}
	}
	assertClean(t, env2, p2)
}

func TestMalformedUpload(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	for name, c := range map[string]struct{ body, ct string }{
		"not multipart":     {"{}", "application/json"},
		"no boundary":       {"x", "multipart/form-data"},
		"garbage":           {"this is not multipart", "multipart/form-data; boundary=zzz"},
		"cut off":           {"--zzz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc", "multipart/form-data; boundary=zzz"},
		"no content-type":   {"x", ""},
		"file without name": {"--zzz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--zzz--\r\n", "multipart/form-data; boundary=zzz"},
		"name not utf-8":    {"--zzz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\xff\xfe\"\r\n\r\nabc\r\n--zzz--\r\n", "multipart/form-data; boundary=zzz"},
		"bad part header":   {"--zzz\r\nno colon here\r\n\r\nabc\r\n--zzz--\r\n", "multipart/form-data; boundary=zzz"},
		"purpose empty":     {"--zzz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n\r\n--zzz--\r\n", "multipart/form-data; boundary=zzz"},
	} {
		st, m := post(t, env, p.APIKey, strings.NewReader(c.body), c.ct)
		if st != 400 || errCode(m) == "" {
			t.Errorf("%s: %d %v", name, st, m)
		}
	}
	assertClean(t, env, p)
}

// countingReader fails the test if more than allowed bytes are read.
type countingReader struct {
	n, size int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.size {
		return 0, io.EOF
	}
	k := min(int64(len(p)), c.size-c.n)
	clear(p[:k])
	c.n += k
	return int(k), nil
}

func TestOversizedUpload(t *testing.T) {
	const limit = 256 << 10
	env := dataplanetest.New(t, dataplanetest.Options{Deps: func(d *depsT) { d.MaxFileBytes = limit }})
	p := env.NewProject(t, "", false)

	// Declared too large: refused without reading the body.
	body := &countingReader{size: 10 << 20}
	req, _ := http.NewRequest("POST", "/v1/files", body)
	req.ContentLength = body.size
	req.Header.Set("Authorization", "Bearer "+p.APIKey)
	req.Header.Set("Content-Type", "multipart/form-data; boundary=zzz")
	rec := newRecorder()
	env.Handler.ServeHTTP(rec, req)
	if rec.Code != 413 || body.n != 0 {
		t.Fatalf("declared oversize: %d after reading %d bytes", rec.Code, body.n)
	}

	// Streamed (no Content-Length) and over the limit: cut off at the limit.
	c := sdk(env, p.APIKey)
	_, err := c.Files.New(context.Background(), openai.FileNewParams{
		File: openai.File(bytes.NewReader(make([]byte, limit+1)), "big.bin", "application/octet-stream"), Purpose: openai.FilePurposeBatch,
	})
	apiErr(t, err, 413, "request_too_large")
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		w, _ := mw.CreateFormFile("file", "big.bin")
		_, err := io.Copy(w, &countingReader{size: 4 * limit})
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	st, m := post(t, env, p.APIKey, pr, mw.FormDataContentType())
	if st != 413 {
		t.Fatalf("streamed oversize: %d %v", st, m)
	}
	pr.Close()
	// Exactly at the limit is fine.
	upload(t, c, "ok.bin", make([]byte, limit), openai.FilePurposeBatch)
	fs, _ := env.Store.ListFiles(context.Background(), p.OrgID, p.ID, "", store.Page{})
	tmps, _ := os.ReadDir(env.Dir.TempDir())
	if len(fs) != 1 || len(tmps) != 0 {
		t.Fatalf("records %d temporaries %d", len(fs), len(tmps))
	}
}

func TestAuthAndIsolation(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	a := env.NewProject(t, "", false)
	sameOrg := env.NewProject(t, a.OrgID, false)
	otherOrg := env.NewProject(t, "", false)
	ctx := context.Background()
	f := upload(t, sdk(env, a.APIKey), "a.txt", []byte("project a data"), openai.FilePurposeBatch)

	for _, key := range []string{"sk-proj-wrong", "sk-admin-whatever", "", a.APIKey + "x"} {
		_, err := sdkGet(env, key, ctx, f.ID)
		apiErr(t, err, 401, "invalid_api_key")
	}
	for name, p := range map[string]dataplanetest.Project{"same org": sameOrg, "other org": otherOrg} {
		c := sdk(env, p.APIKey)
		_, err := c.Files.Get(ctx, f.ID)
		apiErr(t, err, 404, "not_found")
		_, err = c.Files.Content(ctx, f.ID)
		apiErr(t, err, 404, "not_found")
		_, err = c.Files.Delete(ctx, f.ID)
		apiErr(t, err, 404, "not_found")
		page, err := c.Files.List(ctx, openai.FileListParams{})
		if err != nil || len(page.Data) != 0 {
			t.Fatalf("%s lists %d files, %v", name, len(page.Data), err)
		}
	}
	_, err := sdkGet(env, a.APIKey, ctx, "file-../../etc/passwd")
	apiErr(t, err, 404, "not_found")
	if b := download(t, sdk(env, a.APIKey), f.ID); string(b) != "project a data" {
		t.Fatal("owner lost access")
	}

	env.Archive(t, a)
	_, err = sdkGet(env, a.APIKey, ctx, f.ID)
	apiErr(t, err, 403, "project_archived")
}

func TestListParams(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	for _, q := range []string{"limit=0", "limit=10001", "limit=x", "limit=", "limit=%zz", "li%zzmit=1", "order=up", "after=nope", "purpose=" + strings.Repeat("x", 65)} {
		req, _ := http.NewRequest("GET", env.URL+"/v1/files?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+p.APIKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 400 {
			t.Errorf("%s: %d", q, res.StatusCode)
		}
	}
	// Unknown parameters are refused, naming the parameter (the first in
	// sorted order), as the Admin API does, rather than silently ignored.
	for q, param := range map[string]string{"purpse=batch": "purpse", "limit=5&zeta=1&beta=2": "beta", "before=file-x": "before",
		"=1": "", "order=asc&Limit=5": "Limit", "purpose[]=batch": "purpose[]"} {
		req, _ := http.NewRequest("GET", env.URL+"/v1/files?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+p.APIKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error struct {
				Type  string  `json:"type"`
				Code  string  `json:"code"`
				Param *string `json:"param"`
			} `json:"error"`
		}
		err = json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		got := ""
		if body.Error.Param != nil {
			got = *body.Error.Param
		}
		if err != nil || res.StatusCode != 400 || body.Error.Code != "unknown_parameter" || body.Error.Type != "invalid_request_error" || got != param {
			t.Errorf("%s: %d %+v (param %q), want 400 unknown_parameter naming %q (%v)", q, res.StatusCode, body.Error, got, param, err)
		}
	}
	page, err := sdkList(env, p.APIKey, context.Background(), openai.FileListParams{})
	if err != nil || page.HasMore || len(page.Data) != 0 || !strings.Contains(page.RawJSON(), `"object":"list"`) {
		t.Fatalf("empty list: %v %s", err, page.RawJSON())
	}
	// Every parameter the SDK sends is still accepted.
	page, err = sdkList(env, p.APIKey, context.Background(), openai.FileListParams{Limit: openai.Int(5), Order: openai.FileListParamsOrderAsc,
		Purpose: openai.String("batch"), After: openai.String("file-" + strings.Repeat("0", 26))})
	if err != nil || len(page.Data) != 0 {
		t.Fatalf("list with every parameter: %v", err)
	}
}

func blobPath(env *dataplanetest.Env, p dataplanetest.Project, id string) string {
	return filepath.Join(env.DataDir, "blobs", "objects", p.OrgID, p.ID, id)
}

// rawGet downloads with plain net/http and reports the status, the body
// bytes received, the declared length and the read error.
func rawGet(t *testing.T, env *dataplanetest.Env, key, id string) (int, []byte, int64, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", env.URL+"/v1/files/"+id+"/content", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, res.ContentLength, err
}

func TestTamperAndTruncation(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	c := sdk(env, p.APIKey)
	ctx := context.Background()
	big := content("PLAIN-BIG", 4*envelope.SegmentSize+10)
	small := content("PLAIN-SMALL", 500)
	encSeg := int64(envelope.SegmentSize + envelope.TagSize)

	type damage struct {
		name  string
		data  []byte
		apply func(path string)
		// early: detected before headers (clean JSON error); else mid-stream.
		early bool
	}
	flip := func(off int64) func(string) {
		return func(path string) {
			b, _ := os.ReadFile(path)
			b[off] ^= 0x01
			os.WriteFile(path, b, 0o600)
		}
	}
	trunc := func(size int64) func(string) { return func(path string) { os.Truncate(path, size) } }
	h := int64(envelope.HeaderSize)
	cases := []damage{
		{"small flipped", small, flip(h + 10), true},
		{"small header flipped", small, flip(20), true},
		{"small truncated", small, trunc(h + 100), true},
		{"small emptied", small, trunc(0), true},
		{"big flipped in first segment", big, flip(h + 5), true},
		{"big flipped in third segment", big, flip(h + 2*encSeg + 7), false},
		{"big cut at segment boundary", big, trunc(h + 3*encSeg), false},
		{"big cut mid segment", big, trunc(h + 2*encSeg + 100), false},
		{"big final segment dropped", big, trunc(h + 4*encSeg), false},
	}
	for _, d := range cases {
		t.Run(d.name, func(t *testing.T) {
			f := upload(t, c, "f.bin", d.data, openai.FilePurposeBatch)
			d.apply(blobPath(env, p, f.ID))
			// Raw HTTP.
			st, body, clen, err := rawGet(t, env, p.APIKey, f.ID)
			if d.early {
				if st != 500 || err != nil || !strings.Contains(string(body), "file_corrupted") {
					t.Fatalf("raw: %d %v %q", st, err, body)
				}
			} else {
				if st != 200 || err == nil || clen != int64(len(d.data)) || int64(len(body)) >= clen {
					t.Fatalf("raw: status %d err %v got %d of %d bytes", st, err, len(body), clen)
				}
				if !bytes.Equal(body, d.data[:len(body)]) {
					t.Fatal("raw: returned bytes are not a prefix of the plaintext")
				}
			}
			// The SDK.
			res, err := c.Files.Content(ctx, f.ID)
			if d.early {
				apiErr(t, err, 500, "file_corrupted")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(res.Body)
			res.Body.Close()
			if err == nil {
				t.Fatal("SDK read a damaged file without error")
			}
		})
	}
	// Names are authenticated too.
	f := upload(t, c, "n.bin", small, openai.FilePurposeBatch)
	rec, _ := env.Store.GetFile(ctx, p.OrgID, p.ID, f.ID)
	swapped := upload(t, c, "other.bin", small, openai.FilePurposeBatch)
	rec2, _ := env.Store.GetFile(ctx, p.OrgID, p.ID, swapped.ID)
	// Moving a name ciphertext onto another file fails (bound to the file id).
	rec2.NameCiphertext = rec.NameCiphertext
	env.Store.DeleteFile(ctx, p.OrgID, p.ID, rec2.ID)
	env.Store.CreateFile(ctx, rec2)
	_, err := c.Files.Get(ctx, swapped.ID)
	apiErr(t, err, 500, "file_corrupted")
	// The list still works and flags that one file.
	page, err := c.Files.List(ctx, openai.FileListParams{})
	if err != nil {
		t.Fatal(err)
	}
	flagged := 0
	for _, o := range page.Data {
		if o.Status == "error" {
			flagged++
			if o.ID != swapped.ID || o.Filename != "" || o.StatusDetails == "" {
				t.Fatalf("flagged: %s", o.RawJSON())
			}
		}
	}
	if flagged != 1 {
		t.Fatalf("%d files flagged", flagged)
	}
}

func TestKeyUnavailable(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", true)
	c := sdk(env, p.APIKey)
	ctx := context.Background()
	secretData := content("PLAINTEXT-REVOKED", 2*envelope.SegmentSize)
	f := upload(t, c, "revoked-name.txt", secretData, openai.FilePurposeBatch)

	env.Revoke(t, p, "revoked")
	_, err := c.Files.Content(ctx, f.ID)
	apiErr(t, err, 403, "customer_key_unavailable")
	st, body, _, _ := rawGet(t, env, p.APIKey, f.ID)
	if st != 403 || bytes.Contains(body, []byte("PLAINTEXT")) {
		t.Fatalf("raw: %d %q", st, body)
	}
	_, err = c.Files.Get(ctx, f.ID)
	apiErr(t, err, 403, "customer_key_unavailable")
	_, err = c.Files.List(ctx, openai.FileListParams{})
	apiErr(t, err, 403, "customer_key_unavailable")
	_, err = c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader("new"), "x", "application/octet-stream"), Purpose: openai.FilePurposeBatch})
	apiErr(t, err, 403, "customer_key_unavailable")
	// Deleting needs no key.
	if _, err := c.Files.Delete(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	assertClean(t, env, p)

	// Outage: 503 with Retry-After.
	q := env.NewProject(t, "", true)
	upload(t, sdk(env, q.APIKey), "q.txt", []byte("q"), openai.FilePurposeBatch)
	env.Revoke(t, q, "outage")
	_, err = sdkList(env, q.APIKey, ctx, openai.FileListParams{})
	apiErr(t, err, 503, "customer_key_temporarily_unavailable")
	var e *openai.Error
	errors.As(err, &e)
	if e.Response.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
}

func TestUnknownRoute(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	req, _ := http.NewRequest("GET", env.URL+"/v1/crypto/nothing", nil)
	req.Header.Set("Authorization", "Bearer "+p.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 || res.Header.Get("Content-Type") != "application/json" {
		t.Fatal(fmt.Sprint(res.StatusCode, res.Header))
	}
	for _, c := range [][2]string{{"PUT", "/v1/files"}, {"POST", "/v1/files/file-x"}, {"GET", "/v1/crypto/encrypt"}} {
		req, _ := http.NewRequest(c[0], env.URL+c[1], nil)
		req.Header.Set("Authorization", "Bearer "+p.APIKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 405 {
			t.Errorf("%s %s: %d", c[0], c[1], res.StatusCode)
		}
	}
}

func sdkNew(env *dataplanetest.Env, key string, ctx context.Context, p openai.FileNewParams) (*openai.FileObject, error) {
	c := sdk(env, key)
	return c.Files.New(ctx, p)
}

func sdkGet(env *dataplanetest.Env, key string, ctx context.Context, id string) (*openai.FileObject, error) {
	c := sdk(env, key)
	return c.Files.Get(ctx, id)
}

func sdkList(env *dataplanetest.Env, key string, ctx context.Context, p openai.FileListParams) (*pagination.CursorPage[openai.FileObject], error) {
	c := sdk(env, key)
	return c.Files.List(ctx, p)
}
