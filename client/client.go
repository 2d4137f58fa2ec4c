// Package client is a small Go client of ekm's data plane for services: the
// crypto API (encrypt, decrypt, rewrap, data keys) and the Files API, with
// a project API key. Failures the server reports are *APIError; test them
// with errors.Is against the sentinels (ErrKeyUnavailable, ErrNotFound, …)
// or errors.As for details.
package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/secret"
)

// Sentinels matched by *APIError through errors.Is.
var (
	// ErrKeyUnavailable: the project's customer key cannot be used, whether
	// revoked (customer_key_unavailable) or temporarily
	// (customer_key_temporarily_unavailable; see APIError.Retryable).
	ErrKeyUnavailable = errors.New("client: customer key unavailable")
	// ErrNotFound: no such object in this project (404).
	ErrNotFound = errors.New("client: not found")
	// ErrUnauthorized: the API key was refused (401).
	ErrUnauthorized = errors.New("client: unauthorized")
	// ErrDecrypt: a ciphertext did not authenticate (wrong project or
	// context, or modified).
	ErrDecrypt = errors.New("client: decryption failed")
	// ErrTooLarge: the request exceeded a size limit (413).
	ErrTooLarge = errors.New("client: request too large")
)

// APIError is an error answer of the server.
type APIError struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// RetryAfter is the server's Retry-After hint (0 if none).
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("ekm: %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Param != "" {
		s += " (" + e.Param + ")"
	}
	return s + ": " + e.Message
}

// Is matches the package sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrKeyUnavailable:
		return e.Code == "customer_key_unavailable" || e.Code == "customer_key_temporarily_unavailable"
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrDecrypt:
		return e.Code == "decryption_failed"
	case ErrTooLarge:
		return e.Status == http.StatusRequestEntityTooLarge
	}
	return false
}

// Retryable reports whether the same request may succeed later (a key
// outage, overload, or a server error).
func (e *APIError) Retryable() bool {
	return e.Code == "customer_key_temporarily_unavailable" || e.Status == http.StatusTooManyRequests || e.Status >= 500 && e.Code != "file_corrupted"
}

// Client calls one ekm server with one project API key. It is safe for
// concurrent use.
type Client struct {
	base *url.URL
	key  string
	hc   *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default http.DefaultClient). Set
// timeouts there or, per call, on the context.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// defaultHTTPClient never follows redirects: a redirect would carry the
// project key to wherever it points (Go keeps Authorization on same-host
// redirects, including https to http). ekm never redirects.
var defaultHTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// New returns a client of the server at baseURL (e.g. "https://ekm.example")
// using projectKey (sk-proj-…).
func New(baseURL, projectKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("client: base URL must be an absolute http(s) URL")
	}
	if !strings.HasPrefix(projectKey, "sk-proj-") {
		return nil, errors.New("client: a project API key (sk-proj-…) is required")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &Client{base: u, key: projectKey, hc: defaultHTTPClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

func (c *Client) url(path string, q url.Values) string {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	return u.String()
}

func (c *Client) do(req *http.Request) (*http.Response, error) {
	req.Header.Set("Authorization", "Bearer "+c.key)
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 300 {
		defer res.Body.Close()
		return nil, readError(res)
	}
	return res, nil
}

// readError decodes an error answer; bodies that are not the API's error
// shape (a proxy's page, say) still give an *APIError with the status.
func readError(res *http.Response) error {
	var body struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
			Param   *string `json:"param"`
		} `json:"error"`
	}
	e := &APIError{Status: res.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if json.Unmarshal(b, &body) == nil && body.Error.Message != "" {
		e.Message, e.Type = body.Error.Message, body.Error.Type
		if body.Error.Code != nil {
			e.Code = *body.Error.Code
		}
		if body.Error.Param != nil {
			e.Param = *body.Error.Param
		}
	} else {
		e.Message = http.StatusText(res.StatusCode)
	}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// postJSON sends in and decodes the answer into out.
func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(path, nil), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := c.do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	return decode(res, out)
}

func decode(res *http.Response, out any) error {
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("client: decoding answer: %w", err)
	}
	return nil
}

// Crypto API.

// Ciphertext is an encryption result. Ciphertext is self-describing: it
// records the project key version, also reported in KeyVersion.
type Ciphertext struct {
	Ciphertext []byte
	KeyVersion int
}

// Item is one batch input: Data is the plaintext (EncryptBatch) or the
// ciphertext (DecryptBatch, RewrapBatch); Context is optional associated
// data that must be given again to decrypt.
type Item struct {
	Data    []byte
	Context []byte
}

// Result is one batch output: Data is the ciphertext or plaintext, or Err
// (an *APIError) explains why this item failed.
type Result struct {
	Data       []byte
	KeyVersion int
	Err        error
}

type wireItem struct {
	Plaintext  *string `json:"plaintext,omitempty"`
	Ciphertext *string `json:"ciphertext,omitempty"`
	Context    *string `json:"context,omitempty"`
}

type wireResult struct {
	Plaintext  *string `json:"plaintext"`
	Ciphertext string  `json:"ciphertext"`
	KeyVersion int     `json:"key_version"`
	Error      *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
		Param   *string `json:"param"`
	} `json:"error"`
}

func enc(b []byte) *string { s := base64.StdEncoding.EncodeToString(b); return &s }

func item(field string, data, context []byte) wireItem {
	w := wireItem{}
	if field == "plaintext" {
		w.Plaintext = enc(data)
	} else {
		w.Ciphertext = enc(data)
	}
	if context != nil {
		w.Context = enc(context)
	}
	return w
}

// result turns one wire result into data (the plaintext if present, else
// the ciphertext) or an error.
func (r *wireResult) result() Result {
	if r.Error != nil {
		e := &APIError{Status: http.StatusBadRequest, Type: r.Error.Type, Message: r.Error.Message}
		if r.Error.Code != nil {
			e.Code = *r.Error.Code
		}
		if r.Error.Param != nil {
			e.Param = *r.Error.Param
		}
		return Result{Err: e}
	}
	s := r.Ciphertext
	if r.Plaintext != nil {
		s = *r.Plaintext
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return Result{Err: fmt.Errorf("client: server sent invalid base64: %w", err)}
	}
	return Result{Data: b, KeyVersion: r.KeyVersion}
}

func (c *Client) single(ctx context.Context, path, field string, data, context []byte) (Result, error) {
	var out wireResult
	if err := c.postJSON(ctx, path, item(field, data, context), &out); err != nil {
		return Result{}, err
	}
	r := out.result()
	return r, r.Err
}

func (c *Client) batch(ctx context.Context, path, field string, items []Item) ([]Result, error) {
	in := struct {
		BatchInput []wireItem `json:"batch_input"`
	}{make([]wireItem, len(items))}
	for i, it := range items {
		in.BatchInput[i] = item(field, it.Data, it.Context)
	}
	var out struct {
		BatchResults []wireResult `json:"batch_results"`
	}
	if err := c.postJSON(ctx, path, in, &out); err != nil {
		return nil, err
	}
	if len(out.BatchResults) != len(items) {
		return nil, fmt.Errorf("client: server returned %d results for %d items", len(out.BatchResults), len(items))
	}
	res := make([]Result, len(items))
	for i := range out.BatchResults {
		res[i] = out.BatchResults[i].result()
	}
	return res, nil
}

// Encrypt encrypts plaintext under the project's current key, bound to the
// optional context.
func (c *Client) Encrypt(ctx context.Context, plaintext, context []byte) (*Ciphertext, error) {
	r, err := c.single(ctx, "/v1/crypto/encrypt", "plaintext", plaintext, context)
	if err != nil {
		return nil, err
	}
	return &Ciphertext{Ciphertext: r.Data, KeyVersion: r.KeyVersion}, nil
}

// Decrypt returns the plaintext of a ciphertext made by Encrypt (or a
// wrapped data key) with the same context.
func (c *Client) Decrypt(ctx context.Context, ciphertext, context []byte) ([]byte, error) {
	r, err := c.single(ctx, "/v1/crypto/decrypt", "ciphertext", ciphertext, context)
	if err != nil {
		return nil, err
	}
	return r.Data, nil
}

// Rewrap re-encrypts a ciphertext under the project's current key version
// on the server; the plaintext is never sent.
func (c *Client) Rewrap(ctx context.Context, ciphertext, context []byte) (*Ciphertext, error) {
	r, err := c.single(ctx, "/v1/crypto/rewrap", "ciphertext", ciphertext, context)
	if err != nil {
		return nil, err
	}
	return &Ciphertext{Ciphertext: r.Data, KeyVersion: r.KeyVersion}, nil
}

// EncryptBatch encrypts items (Data = plaintext); failures are per item.
func (c *Client) EncryptBatch(ctx context.Context, items []Item) ([]Result, error) {
	return c.batch(ctx, "/v1/crypto/encrypt", "plaintext", items)
}

// DecryptBatch decrypts items (Data = ciphertext); failures are per item.
func (c *Client) DecryptBatch(ctx context.Context, items []Item) ([]Result, error) {
	return c.batch(ctx, "/v1/crypto/decrypt", "ciphertext", items)
}

// RewrapBatch rewraps items (Data = ciphertext); failures are per item.
func (c *Client) RewrapBatch(ctx context.Context, items []Item) ([]Result, error) {
	return c.batch(ctx, "/v1/crypto/rewrap", "ciphertext", items)
}

// DataKey is a fresh 256-bit key for local (client-side) encryption.
type DataKey struct {
	// Plaintext is the key; zero it when done. Empty from WrappedDataKey.
	Plaintext secret.Key
	// Wrapped is the key encrypted under the project key: store it beside
	// the data and Decrypt it (with the same context) to use the key again.
	Wrapped    []byte
	KeyVersion int
}

// DataKey returns a fresh data key in plaintext and wrapped form.
func (c *Client) DataKey(ctx context.Context, context []byte) (*DataKey, error) {
	return c.dataKey(ctx, "/v1/crypto/datakey/plaintext", context)
}

// WrappedDataKey returns a fresh data key in wrapped form only.
func (c *Client) WrappedDataKey(ctx context.Context, context []byte) (*DataKey, error) {
	return c.dataKey(ctx, "/v1/crypto/datakey/wrapped", context)
}

func (c *Client) dataKey(ctx context.Context, path string, context []byte) (*DataKey, error) {
	in := wireItem{}
	if context != nil {
		in.Context = enc(context)
	}
	var out wireResult
	if err := c.postJSON(ctx, path, in, &out); err != nil {
		return nil, err
	}
	wrapped, err := base64.StdEncoding.DecodeString(out.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("client: server sent invalid base64: %w", err)
	}
	dk := &DataKey{Wrapped: wrapped, KeyVersion: out.KeyVersion}
	if out.Plaintext != nil {
		raw, err := base64.StdEncoding.DecodeString(*out.Plaintext)
		if err != nil {
			return nil, fmt.Errorf("client: server sent invalid base64: %w", err)
		}
		dk.Plaintext, err = secret.FromBytes(raw)
		secret.Wipe(raw)
		if err != nil {
			return nil, fmt.Errorf("client: server sent a data key of the wrong size")
		}
	}
	return dk, nil
}
