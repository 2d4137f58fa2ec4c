package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"syscall"
	"unicode/utf8"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/httpx"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

// Purposes OpenAI accepts on upload.
var purposes = map[string]bool{"assistants": true, "batch": true, "fine-tune": true, "vision": true, "user_data": true, "evals": true}

const (
	// multipartSlack is what an upload body may carry beyond the file bytes:
	// part headers, the purpose field and boundaries.
	multipartSlack = 64 << 10
	maxParts       = 8
	maxNameBytes   = 1024
	maxPurposeLen  = 64
	maxListLimit   = 10000
)

// fileObject is OpenAI's File object.
type fileObject struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Bytes         int64   `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	ExpiresAt     *int64  `json:"expires_at"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details"`
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// errCorrupt is what a caller sees when stored data fails authentication:
// the server's copy was modified or damaged. The details go to the log.
func errCorrupt(id string) *apierr.Error {
	return apierr.New(http.StatusInternalServerError, "server_error", "file_corrupted", "",
		"The stored content of file %s failed its integrity check and cannot be returned.", id)
}

func errStorageFull() *apierr.Error {
	return apierr.New(http.StatusInsufficientStorage, "server_error", "insufficient_storage", "", "The server has no room to store this file.")
}

// upload is the state of one POST /v1/files.
type upload struct {
	s       *server
	sc      scope
	file    store.File
	bw      blob.Writer
	name    string
	purpose string
	limit   int64
	hb      *headerBound
}

// maxMultipartOverhead bounds the bytes of a multipart body that are not
// part contents (boundaries and part headers). Go's multipart reader would
// otherwise buffer up to 10 MiB of headers per part.
const maxMultipartOverhead = 128 << 10

// headerBound counts what the multipart reader reads outside part bodies
// and fails once that exceeds maxMultipartOverhead. The reader reads ahead,
// so some body bytes count too; the bound leaves room for that.
type headerBound struct {
	r      io.Reader
	inBody bool
	n      int64
}

var errMultipartOverhead = apierr.BadRequest("", "The multipart part headers are too large.")

func (h *headerBound) Read(p []byte) (int, error) {
	if !h.inBody && h.n > maxMultipartOverhead {
		return 0, errMultipartOverhead
	}
	n, err := h.r.Read(p)
	if !h.inBody {
		h.n += int64(n)
	}
	return n, err
}

// body marks the multipart reader as reading a part's contents (on) or
// headers and boundaries (off).
func (u *upload) body(on bool) {
	if u.hb != nil {
		u.hb.inBody = on
	}
}

func (s *server) uploadFile(w http.ResponseWriter, r *http.Request) {
	sc, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit := s.MaxFileBytes + multipartSlack
	// Refuse what is certainly too big before reading any of it.
	if r.ContentLength > limit {
		apierr.Write(w, apierr.TooLarge(s.MaxFileBytes))
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		apierr.Write(w, apierr.BadRequest("", "The request must be multipart/form-data with a boundary."))
		return
	}
	// Fetch the key before reading the body: an unavailable key fails fast.
	ks := s.keys(r.Context(), sc)
	defer ks.zero()
	version, key, err := ks.current(sc)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u := &upload{s: s, sc: sc, limit: s.MaxFileBytes, file: store.File{
		ID: ids.New("file-"), OrgID: sc.OrgID, ProjectID: sc.ProjectID, KeyVersion: int(version), CreatedAt: s.Now().UTC(),
	}}
	committed := false
	defer func() {
		if !committed && u.bw != nil {
			if err := u.bw.Abort(); err != nil {
				s.Logger.Error("discarding upload", "file_id", u.file.ID, "err", err)
			}
		}
	}()

	// A stalled upload is cut off after UploadIdleTimeout without progress,
	// however long it has run.
	ir := httpx.NewIdleReader(w, r, s.UploadIdleTimeout)
	// headerBound stays nearest the multipart reader, so it counts what
	// that reads; the readBuffer under it spares a syscall per 4 KiB.
	rb := newReadBuffer(http.MaxBytesReader(w, io.NopCloser(ir), limit))
	defer rb.wipe() // plaintext
	body := &headerBound{r: rb}
	u.hb = body
	err = u.readParts(r.Context(), multipart.NewReader(body, params["boundary"]), key)
	if err == nil {
		// Past the closing boundary: read the (ignored) epilogue to the
		// body's end, so the connection stays usable.
		_, _ = io.CopyN(io.Discard, body, multipartSlack)
	}
	ir.Close()
	if ir.TimedOut() {
		err = apierr.New(http.StatusRequestTimeout, "invalid_request_error", "request_timeout", "",
			"The upload sent no data for %s and was cut off.", s.UploadIdleTimeout)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if u.bw == nil {
		s.fail(w, r, apierr.Missing("file"))
		return
	}
	if u.purpose == "" {
		s.fail(w, r, apierr.Missing("purpose"))
		return
	}
	if !purposes[u.purpose] {
		s.fail(w, r, apierr.BadRequest("purpose", "Invalid value for 'purpose': %q. Expected one of assistants, batch, fine-tune, vision, user_data, evals.", u.purpose))
		return
	}
	u.file.Purpose = u.purpose
	u.file.NameCiphertext, err = envelope.Seal(key, files.NameContext(&u.file), []byte(u.name))
	if err != nil {
		s.fail(w, r, fmt.Errorf("sealing file name: %w", err))
		return
	}

	// Blob durable under its final key, then the record (files.Store.Commit):
	// a crash in between leaves an orphan blob, never a record without its
	// content.
	committed = true
	if err := s.files.Commit(r.Context(), u.file, u.bw); err != nil {
		switch {
		case errors.Is(err, syscall.ENOSPC):
			err = errStorageFull()
		case errors.Is(err, files.ErrWriteTooLong):
			err = errUploadTooLong()
		}
		s.fail(w, r, fmt.Errorf("storing file: %w", err))
		return
	}
	writeJSON(w, toObject(&u.file, u.name))
}

// readParts consumes the multipart body, streaming the file part through
// the envelope into a blob temporary. The purpose may come before or after
// the file; it is validated by the caller once everything is read.
func (u *upload) readParts(ctx context.Context, mr *multipart.Reader, key secret.Key) error {
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return bodyError(err, u.limit, "The multipart body is malformed.")
		}
		if i >= maxParts {
			return apierr.BadRequest("", "Too many parts in the multipart body.")
		}
		switch name := p.FormName(); name {
		case "purpose":
			if u.purpose != "" {
				return apierr.BadRequest("purpose", "'purpose' was given more than once.")
			}
			b, err := io.ReadAll(io.LimitReader(p, maxPurposeLen+1))
			if err != nil {
				return bodyError(err, u.limit, "The multipart body is malformed.")
			}
			if len(b) == 0 {
				return apierr.Missing("purpose")
			}
			if len(b) > maxPurposeLen {
				return apierr.BadRequest("purpose", "'purpose' is too long.")
			}
			u.purpose = string(b)
		case "file":
			if u.bw != nil {
				return apierr.BadRequest("file", "'file' was given more than once.")
			}
			u.body(true)
			err := u.storeFile(ctx, p, key)
			u.body(false)
			if err != nil {
				return err
			}
		case "expires_after[anchor]", "expires_after[seconds]":
			return apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_parameter", "expires_after", "'expires_after' is not supported by this server.")
		default:
			if len(name) > 64 || !utf8.ValidString(name) {
				name = "(invalid)"
			}
			return apierr.New(http.StatusBadRequest, "invalid_request_error", "unknown_parameter", name, "Unknown parameter: '%s'.", name)
		}
		p.Close()
	}
}

// bodyError classifies a failure to read the request body.
func bodyError(err error, limit int64, malformed string) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apierr.TooLarge(limit)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.Canceled) {
		// Usually the client went away; if not, it sent a cut-off body.
		return apierr.BadRequest("", "The request body ended unexpectedly.")
	}
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae
	}
	return apierr.BadRequest("", "%s", malformed)
}

func (u *upload) storeFile(ctx context.Context, p *multipart.Part, key secret.Key) error {
	name := p.FileName()
	if name == "" {
		return apierr.BadRequest("file", "'file' must be a file part with a filename.")
	}
	if len(name) > maxNameBytes || !utf8.ValidString(name) {
		return apierr.BadRequest("file", "The file name must be valid UTF-8 of at most %d bytes.", maxNameBytes)
	}
	u.name = name
	bw, err := u.s.files.Create(ctx, &u.file)
	if err != nil {
		return storageError(fmt.Errorf("creating blob: %w", err))
	}
	u.bw = bw
	aw := newAlignedWriter(bw)
	ew, err := envelope.NewWriter(aw, key, files.ContentContext(&u.file))
	if err != nil {
		return storageError(fmt.Errorf("starting encryption: %w", err))
	}
	buf := make([]byte, envelope.SegmentSize)
	defer clear(buf) // plaintext
	var n, checked int64
	for {
		k, rerr := p.Read(buf)
		if k > 0 {
			n += int64(k)
			if n > u.limit {
				return apierr.TooLarge(u.limit)
			}
			if n-checked >= revocationCheckBytes {
				checked = n
				if err := u.s.stillAvailable(u.sc); err != nil {
					return err
				}
			}
			if _, err := ew.Write(buf[:k]); err != nil {
				return storageError(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return bodyError(rerr, u.limit, "The multipart body is malformed.")
		}
	}
	if err := ew.Close(); err != nil {
		return storageError(err)
	}
	if err := aw.Flush(); err != nil {
		return storageError(err)
	}
	u.file.Bytes = n
	return nil
}

func storageError(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return errStorageFull()
	}
	if errors.Is(err, files.ErrWriteTooLong) {
		return errUploadTooLong()
	}
	return fmt.Errorf("writing file content: %w", err)
}

// errUploadTooLong: the upload outlasted files.DefaultMaxWrite (the bound
// that keeps the sweep of orphan blobs from racing a slow upload).
func errUploadTooLong() error {
	return apierr.New(http.StatusRequestTimeout, "invalid_request_error", "request_timeout", "",
		"The upload took longer than %s and was cut off.", files.DefaultMaxWrite)
}

func toObject(f *store.File, name string) fileObject {
	return fileObject{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt.Unix(), Filename: name, Purpose: f.Purpose, Status: "processed"}
}

// lookup finds a file of the caller's project. Ids of other projects or
// orgs, and malformed ids, are all simply not found.
// projectFile resolves the request's project and the file named in the path.
func (s *server) projectFile(r *http.Request) (scope, store.File, error) {
	sc, err := s.project(r)
	if err != nil {
		return scope{}, store.File{}, err
	}
	f, err := s.lookup(r, sc)
	return sc, f, err
}

func (s *server) lookup(r *http.Request, sc scope) (store.File, error) {
	id := r.PathValue("id")
	if !ids.Valid("file-", id) {
		if len(id) > 64 || !utf8.ValidString(id) {
			id = "(invalid)"
		}
		return store.File{}, apierr.NotFound("file", id)
	}
	f, err := s.Store.GetFile(r.Context(), sc.OrgID, sc.ProjectID, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.File{}, apierr.NotFound("file", id)
	}
	return f, err
}

// fileName decrypts a file's name.
func (s *server) fileName(ks *keys, f *store.File) (string, error) {
	b, err := envelope.Open(ks.get, files.NameContext(f), f.NameCiphertext)
	if err != nil {
		if errors.Is(err, envelope.ErrAuth) || errors.Is(err, envelope.ErrFormat) || errors.Is(err, errNoSuchVersion) {
			s.Logger.Error("file name failed authentication", "file_id", f.ID, "err", err)
			return "", errCorrupt(f.ID)
		}
		return "", err
	}
	return string(b), nil
}

func (s *server) getFile(w http.ResponseWriter, r *http.Request) {
	sc, f, err := s.projectFile(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ks := s.keys(r.Context(), sc)
	defer ks.zero()
	name, err := s.fileName(ks, &f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, toObject(&f, name))
}

type fileList struct {
	Object  string       `json:"object"`
	Data    []fileObject `json:"data"`
	FirstID *string      `json:"first_id"`
	LastID  *string      `json:"last_id"`
	HasMore bool         `json:"has_more"`
}

// unknownListParam returns the first (in sorted order, so the answer does
// not depend on map order) query parameter GET /v1/files does not take.
func unknownListParam(q map[string][]string) (string, bool) {
	first, found := "", false
	for k := range q {
		switch k {
		case "after", "limit", "order", "purpose":
		default:
			if !found || k < first {
				first, found = k, true
			}
		}
	}
	return first, found
}

func (s *server) listFiles(w http.ResponseWriter, r *http.Request) {
	sc, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	// Unknown parameters are refused, as the Admin API refuses them, rather
	// than silently ignored (a misspelt filter would list everything).
	if k, ok := unknownListParam(q); ok {
		s.fail(w, r, apierr.New(http.StatusBadRequest, "invalid_request_error", "unknown_parameter", clip(k), "Unrecognized query parameter: %s", clip(k)))
		return
	}
	page := store.Page{Limit: maxListLimit, Desc: true}
	if _, ok := q["limit"]; ok {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > maxListLimit {
			s.fail(w, r, apierr.BadRequest("limit", "'limit' must be an integer between 1 and %d.", maxListLimit))
			return
		}
		page.Limit = n
	}
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		page.Desc = false
	default:
		s.fail(w, r, apierr.BadRequest("order", "'order' must be 'asc' or 'desc'."))
		return
	}
	if v := q.Get("after"); v != "" {
		if !ids.Valid("file-", v) {
			s.fail(w, r, apierr.BadRequest("after", "'after' must be a file id."))
			return
		}
		page.After = v
	}
	purpose := q.Get("purpose")
	if len(purpose) > maxPurposeLen {
		s.fail(w, r, apierr.BadRequest("purpose", "'purpose' is too long."))
		return
	}
	want := page.Limit
	page.Limit++ // one more tells whether there is a next page
	list, err := s.Store.ListFiles(r.Context(), sc.OrgID, sc.ProjectID, purpose, page)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := fileList{Object: "list", Data: make([]fileObject, 0, min(len(list), want))}
	if len(list) > want {
		out.HasMore = true
		list = list[:want]
	}
	ks := s.keys(r.Context(), sc)
	defer ks.zero()
	for i := range list {
		name, err := s.fileName(ks, &list[i])
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Code == "file_corrupted" {
			// One damaged record must not hide the rest of the list.
			o := toObject(&list[i], "")
			details := "The stored file name failed its integrity check."
			o.Status, o.StatusDetails = "error", &details
			out.Data = append(out.Data, o)
			continue
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out.Data = append(out.Data, toObject(&list[i], name))
	}
	if len(list) > 0 {
		out.FirstID, out.LastID = &list[0].ID, &list[len(list)-1].ID
	}
	writeJSON(w, out)
}

func (s *server) deleteFile(w http.ResponseWriter, r *http.Request) {
	_, f, err := s.projectFile(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Deleting needs no key, so a customer can delete data even while its
	// key is revoked.
	if err := s.files.Delete(r.Context(), f); err != nil {
		if errors.Is(err, store.ErrNotFound) { // a concurrent delete won
			err = apierr.NotFound("file", f.ID)
		}
		s.fail(w, r, err)
		return
	}
	writeJSON(w, struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Deleted bool   `json:"deleted"`
	}{f.ID, "file", true})
}

// fileContent streams a file's plaintext. The first segment is decrypted
// and authenticated before any header is sent, so a key failure or a
// damaged small file gets a clean JSON error. Later segments are sent as
// they authenticate; if one fails, the handler aborts the connection, so
// the client sees fewer bytes than Content-Length (or a broken HTTP/2
// stream) and every HTTP client reports an error instead of a short file.
func (s *server) fileContent(w http.ResponseWriter, r *http.Request) {
	sc, f, err := s.projectFile(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ks := s.keys(r.Context(), sc)
	defer ks.zero()
	// Re-encryption may replace the content between our read of the record
	// and the open: files.Store.Open follows it.
	rc, f, err := s.files.Open(r.Context(), f)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, apierr.NotFound("file", f.ID)) // deleted meanwhile
		return
	}
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			s.Logger.Error("file content missing", "file_id", f.ID)
			err = errCorrupt(f.ID)
		}
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	corrupt := func(err error) error {
		if errors.Is(err, envelope.ErrAuth) || errors.Is(err, envelope.ErrFormat) || errors.Is(err, errNoSuchVersion) {
			s.Logger.Error("file content failed authentication", "file_id", f.ID, "err", err)
			return errCorrupt(f.ID)
		}
		return err
	}
	pr, err := envelope.NewReader(rc, ks.get, files.ContentContext(&f))
	if err != nil {
		s.fail(w, r, corrupt(err))
		return
	}
	buf := make([]byte, envelope.SegmentSize)
	defer clear(buf) // plaintext
	n, err := io.ReadFull(pr, buf)
	complete := err == io.EOF || err == io.ErrUnexpectedEOF
	if err != nil && !complete {
		s.fail(w, r, corrupt(err))
		return
	}
	if int64(n) > f.Bytes || complete && int64(n) != f.Bytes {
		s.Logger.Error("file content size differs from its record", "file_id", f.ID)
		s.fail(w, r, errCorrupt(f.ID))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(f.Bytes, 10))
	h.Set("X-Content-Type-Options", "nosniff")
	if _, err := w.Write(buf[:n]); err != nil || complete {
		return
	}
	sent, checked := int64(n), int64(0)
	for {
		n, rerr := pr.Read(buf)
		if sent+int64(n) > f.Bytes {
			s.abort(r, &f, errors.New("content longer than its record"))
		}
		if sent-checked >= revocationCheckBytes {
			checked = sent
			if err := s.stillAvailable(sc); err != nil {
				s.Logger.Warn("aborting file download: customer key became unavailable", "file_id", f.ID)
				panic(http.ErrAbortHandler)
			}
		}
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return // client gone
			}
			sent += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			s.abort(r, &f, rerr)
		}
	}
	if sent != f.Bytes {
		s.abort(r, &f, errors.New("content shorter than its record"))
	}
}

// abort ends a response whose headers are already sent, such that the
// client cannot mistake what it got for the whole file.
func (s *server) abort(r *http.Request, f *store.File, err error) {
	if r.Context().Err() == nil {
		s.Logger.Error("aborting file download: content failed authentication", "file_id", f.ID, "err", err)
	}
	panic(http.ErrAbortHandler)
}
