package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ErrIncomplete: a download ended before all of the file's bytes arrived.
// The server aborts a download whose stored content fails its integrity
// check mid-stream; the bytes already received must be discarded.
var ErrIncomplete = errors.New("client: download incomplete (connection lost or content failed its integrity check)")

// File is a stored file's metadata (OpenAI's File object).
type File struct {
	ID        string
	Bytes     int64
	CreatedAt time.Time
	Filename  string
	Purpose   string
	Status    string
}

type wireFile struct {
	ID        string `json:"id"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

func (w *wireFile) file() *File {
	return &File{ID: w.ID, Bytes: w.Bytes, CreatedAt: time.Unix(w.CreatedAt, 0).UTC(), Filename: w.Filename, Purpose: w.Purpose, Status: w.Status}
}

func fileID(id string) (string, error) {
	if id == "" {
		return "", errors.New("client: empty file id")
	}
	return url.PathEscape(id), nil
}

// UploadFile streams r to the server as a file named name with purpose
// (e.g. "batch", "assistants", "user_data"). Memory use is constant
// whatever the size.
func (c *Client) UploadFile(ctx context.Context, name string, r io.Reader, purpose string) (*File, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := mw.WriteField("purpose", purpose)
		if err == nil {
			var w io.Writer
			if w, err = mw.CreateFormFile("file", name); err == nil {
				_, err = io.Copy(w, r)
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err) // nil closes normally
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/files", nil), pr)
	if err != nil {
		pr.CloseWithError(err)
		return nil, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	res, err := c.do(req)
	// The transport closes the request body (pr) when done, which ends the
	// writer goroutine even if the server answered early.
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var out wireFile
	if err := decode(res, &out); err != nil {
		return nil, err
	}
	return out.file(), nil
}

// GetFile returns a file's metadata.
func (c *Client) GetFile(ctx context.Context, id string) (*File, error) {
	p, err := fileID(id)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/files/"+p, nil), nil)
	if err != nil {
		return nil, err
	}
	res, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var out wireFile
	if err := decode(res, &out); err != nil {
		return nil, err
	}
	return out.file(), nil
}

// ListOptions selects a page of files. Zero values take the server's
// defaults (newest first, up to 10000).
type ListOptions struct {
	After   string // a file id: list files after it in the chosen order
	Limit   int
	Purpose string
	Asc     bool // oldest first
}

// FileList is one page; pass the last file's id as After for the next.
type FileList struct {
	Files   []File
	HasMore bool
}

// ListFiles lists the project's files.
func (c *Client) ListFiles(ctx context.Context, o ListOptions) (*FileList, error) {
	q := url.Values{}
	if o.After != "" {
		q.Set("after", o.After)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Purpose != "" {
		q.Set("purpose", o.Purpose)
	}
	if o.Asc {
		q.Set("order", "asc")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/files", q), nil)
	if err != nil {
		return nil, err
	}
	res, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var out struct {
		Data    []wireFile `json:"data"`
		HasMore bool       `json:"has_more"`
	}
	if err := decode(res, &out); err != nil {
		return nil, err
	}
	l := &FileList{HasMore: out.HasMore, Files: make([]File, len(out.Data))}
	for i := range out.Data {
		l.Files[i] = *out.Data[i].file()
	}
	return l, nil
}

// DeleteFile deletes a file and its content.
func (c *Client) DeleteFile(ctx context.Context, id string) error {
	p, err := fileID(id)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.url("/v1/files/"+p, nil), nil)
	if err != nil {
		return err
	}
	res, err := c.do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	return nil
}

// OpenFile streams a file's content. Its size is the file's byte count.
// Read returns ErrIncomplete if the stream ends early; only a Read that
// returns io.EOF proves the content complete and authentic.
func (c *Client) OpenFile(ctx context.Context, id string) (io.ReadCloser, int64, error) {
	p, err := fileID(id)
	if err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/files/"+p+"/content", nil), nil)
	if err != nil {
		return nil, 0, err
	}
	res, err := c.do(req)
	if err != nil {
		return nil, 0, err
	}
	if res.ContentLength < 0 {
		res.Body.Close()
		return nil, 0, errors.New("client: server sent file content without a length")
	}
	return &body{rc: res.Body, left: res.ContentLength}, res.ContentLength, nil
}

// body turns an early end of the response into ErrIncomplete.
type body struct {
	rc   io.ReadCloser
	left int64
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left != 0 || err != nil && err != io.EOF {
		return n, fmt.Errorf("%w: %v", ErrIncomplete, err)
	}
	return n, err
}

func (b *body) Close() error { return b.rc.Close() }

// DownloadFile writes a file's content to w and returns the byte count. On
// error (e.g. ErrIncomplete) w has received a partial file, which must be
// discarded.
func (c *Client) DownloadFile(ctx context.Context, id string, w io.Writer) (int64, error) {
	rc, _, err := c.OpenFile(ctx, id)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(w, rc)
}
