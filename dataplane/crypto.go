package dataplane

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/httpx"
	"github.com/ekm-dev/ekm/secret"
)

// Crypto API limits (docs/API.md). The request body limit (Deps.MaxBodyBytes)
// bounds the total; these bound each item.
const (
	MaxBatchItems    = 1000
	MaxItemBytes     = 1 << 20 // decoded plaintext
	MaxContextBytes  = 4 << 10 // decoded caller context
	maxCiphertextLen = MaxItemBytes + envelope.SingleOverhead
	// CryptoObjectID is the envelope ObjectID of every crypto API ciphertext:
	// they are not tied to a stored object, and the constant keeps them apart
	// from file names and contents (whose ObjectID is the file id), so the
	// crypto API can never be used to decrypt those.
	CryptoObjectID = "crypto-api"
)

// cryptoItem is one input. Which of Plaintext/Ciphertext is allowed depends
// on the endpoint.
type cryptoItem struct {
	Plaintext  *string `json:"plaintext,omitempty"`
	Ciphertext *string `json:"ciphertext,omitempty"`
	Context    *string `json:"context,omitempty"`
}

type cryptoRequest struct {
	cryptoItem
	BatchInput *[]cryptoItem `json:"batch_input,omitempty"`
}

type cryptoResult struct {
	Plaintext  *string       `json:"plaintext,omitempty"`
	Ciphertext string        `json:"ciphertext,omitempty"`
	KeyVersion uint32        `json:"key_version,omitempty"`
	Error      *apierr.Error `json:"error,omitempty"`
}

// decodeJSON reads a bounded JSON body into v, strictly: within the body
// timeout, no unknown fields, no duplicate names, no trailing data.
func (s *server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := s.readJSON(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(b, v)
}

// readJSON reads a bounded JSON body within the body timeout.
func (s *server) readJSON(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if mt := r.Header.Get("Content-Type"); mt != "" && !strings.HasPrefix(mt, "application/json") {
		return nil, apierr.BadRequest("", "The request body must be application/json.")
	}
	if r.ContentLength > s.MaxBodyBytes {
		return nil, apierr.TooLarge(s.MaxBodyBytes)
	}
	b, err := httpx.ReadBody(w, r, s.MaxBodyBytes, s.BodyTimeout)
	switch {
	case errors.Is(err, httpx.ErrBodyTooLarge):
		return nil, apierr.TooLarge(s.MaxBodyBytes)
	case errors.Is(err, httpx.ErrBodyTimeout):
		return nil, apierr.RequestTimeout(s.BodyTimeout)
	case err != nil:
		return nil, apierr.BadRequest("", "The request body ended unexpectedly.")
	}
	return b, nil
}

// decodeStrict decodes the JSON body b into v: no unknown fields, no
// duplicate names, no trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			return apierr.BadRequest("", "The request body must be a single JSON object.")
		}
		if path, dup := httpx.DuplicateKey(b); dup {
			return apierr.BadRequest(path, "'%s' is given more than once.", path)
		}
		return nil
	}
	var ute *json.UnmarshalTypeError
	switch {
	case errors.As(err, &ute):
		f := strings.ReplaceAll(ute.Field, "cryptoItem.", "")
		if f == "" { // the body itself, e.g. an array or a string
			return apierr.BadRequest("", "The request body must be a JSON object.")
		}
		return apierr.BadRequest(f, "'%s' has the wrong type.", f)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		if len(f) > 64 {
			f = f[:64]
		}
		return apierr.New(http.StatusBadRequest, "invalid_request_error", "unknown_parameter", f, "Unknown parameter: '%s'.", f)
	case err == io.EOF:
		return apierr.BadRequest("", "The request body is empty.")
	default:
		return apierr.BadRequest("", "The request body is not valid JSON.")
	}
}

// decodeB64 decodes standard, padded base64 strictly (no whitespace, no
// line breaks, canonical padding bits).
func decodeB64(param, v string, max int) ([]byte, *apierr.Error) {
	if base64.StdEncoding.EncodedLen(max) < len(v) {
		return nil, apierr.BadRequest(param, "'%s' exceeds the limit of %d bytes.", param, max)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(v)
	// Strict mode still skips \r and \n: then the input is longer than the
	// encoding of what it decoded to. Refuse them.
	if (err != nil || base64.StdEncoding.EncodedLen(len(b)) != len(v)) && strings.ContainsAny(v, "\r\n") {
		secret.Wipe(b)
		return nil, apierr.BadRequest(param, "'%s' must be standard base64 without line breaks.", param)
	}
	if err != nil {
		return nil, apierr.BadRequest(param, "'%s' is not valid standard base64.", param)
	}
	if len(b) > max {
		return nil, apierr.BadRequest(param, "'%s' exceeds the limit of %d bytes.", param, max)
	}
	return b, nil
}

// cryptoOp processes one item; item errors are *apierr.Error, anything else
// fails the whole request.
type cryptoOp func(ks *keys, sc scope, it *cryptoItem, param string) (cryptoResult, error)

// serveCrypto handles the single and batch forms of one operation. input
// is the field each item must carry ("plaintext" or "ciphertext").
func (s *server) serveCrypto(w http.ResponseWriter, r *http.Request, input string, op cryptoOp) {
	sc, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := s.readJSON(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req cryptoRequest
	if it, ok := parseFlatItem(b); ok {
		req.cryptoItem = it
	} else if err := decodeStrict(b, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	ks := s.keys(r.Context(), sc)
	defer ks.zero()
	if req.BatchInput == nil {
		if err := checkFields(&req.cryptoItem, input, ""); err != nil {
			s.fail(w, r, err)
			return
		}
		res, err := op(ks, sc, &req.cryptoItem, "")
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeResult(w, &res)
		return
	}
	if req.Plaintext != nil || req.Ciphertext != nil || req.Context != nil {
		s.fail(w, r, apierr.BadRequest("batch_input", "Give either 'batch_input' or a single item, not both."))
		return
	}
	items := *req.BatchInput
	if len(items) == 0 || len(items) > MaxBatchItems {
		s.fail(w, r, apierr.BadRequest("batch_input", "'batch_input' must hold 1 to %d items.", MaxBatchItems))
		return
	}
	out := make([]cryptoResult, len(items))
	for i := range items {
		prefix := fmt.Sprintf("batch_input[%d].", i)
		if err := checkFields(&items[i], input, prefix); err != nil {
			out[i] = cryptoResult{Error: err}
			continue
		}
		res, err := op(ks, sc, &items[i], prefix)
		var ae *apierr.Error
		if errors.As(err, &ae) {
			res = cryptoResult{Error: ae}
		} else if err != nil {
			s.fail(w, r, err) // key unavailable, store failure: the whole request
			return
		}
		out[i] = res
	}
	writeJSON(w, struct {
		BatchResults []cryptoResult `json:"batch_results"`
	}{out})
}

// checkFields requires the endpoint's input field and refuses the other.
func checkFields(it *cryptoItem, input, prefix string) *apierr.Error {
	has, other, otherHas := it.Plaintext != nil, "ciphertext", it.Ciphertext != nil
	if input == "ciphertext" {
		has, other, otherHas = otherHas, "plaintext", has
	}
	if otherHas {
		return apierr.New(http.StatusBadRequest, "invalid_request_error", "unknown_parameter", prefix+other, "Unknown parameter: '%s'.", prefix+other)
	}
	if !has {
		return apierr.Missing(prefix + input)
	}
	return nil
}

// writeResult writes one item's result. Its buffer is wiped after the
// write: it may hold plaintext.
func writeResult(w http.ResponseWriter, res *cryptoResult) {
	n := len(res.Ciphertext) + 64
	if res.Plaintext != nil {
		n += len(*res.Plaintext)
	}
	b, ok := appendResult(make([]byte, 0, n), res)
	if !ok {
		writeJSON(w, res)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
	secret.Wipe(b)
}

func cryptoContext(sc scope, version uint32, caller []byte) envelope.Context {
	return envelope.Context{OrgID: sc.OrgID, ProjectID: sc.ProjectID, ObjectID: CryptoObjectID, KeyVersion: version, Caller: caller}
}

func callerContext(it *cryptoItem, prefix string) ([]byte, *apierr.Error) {
	if it.Context == nil {
		return nil, nil
	}
	return decodeB64(prefix+"context", *it.Context, MaxContextBytes)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func (s *server) encrypt(w http.ResponseWriter, r *http.Request) {
	s.serveCrypto(w, r, "plaintext", func(ks *keys, sc scope, it *cryptoItem, prefix string) (cryptoResult, error) {
		pt, aerr := decodeB64(prefix+"plaintext", *it.Plaintext, MaxItemBytes)
		if aerr != nil {
			return cryptoResult{}, aerr
		}
		defer secret.Wipe(pt)
		caller, aerr := callerContext(it, prefix)
		if aerr != nil {
			return cryptoResult{}, aerr
		}
		v, key, err := ks.current(sc)
		if err != nil {
			return cryptoResult{}, err
		}
		ct, err := envelope.Seal(key, cryptoContext(sc, v, caller), pt)
		if err != nil {
			return cryptoResult{}, fmt.Errorf("sealing: %w", err)
		}
		return cryptoResult{Ciphertext: b64(ct), KeyVersion: v}, nil
	})
}

// open authenticates and decrypts one crypto API ciphertext.
func open(ks *keys, sc scope, it *cryptoItem, prefix string) (pt, caller []byte, version uint32, err error) {
	ct, aerr := decodeB64(prefix+"ciphertext", *it.Ciphertext, maxCiphertextLen)
	if aerr != nil {
		return nil, nil, 0, aerr
	}
	caller, aerr = callerContext(it, prefix)
	if aerr != nil {
		return nil, nil, 0, aerr
	}
	version, err = envelope.KeyVersion(ct)
	if err == nil {
		pt, err = envelope.Open(ks.get, cryptoContext(sc, version, caller), ct)
	}
	if err != nil {
		if errors.Is(err, envelope.ErrAuth) || errors.Is(err, envelope.ErrFormat) || errors.Is(err, errNoSuchVersion) {
			return nil, nil, 0, apierr.New(http.StatusBadRequest, "invalid_request_error", "decryption_failed", prefix+"ciphertext",
				"'%sciphertext' could not be decrypted: it is malformed, was modified, or belongs to another project or context.", prefix)
		}
		return nil, nil, 0, err
	}
	return pt, caller, version, nil
}

func (s *server) decrypt(w http.ResponseWriter, r *http.Request) {
	s.serveCrypto(w, r, "ciphertext", func(ks *keys, sc scope, it *cryptoItem, prefix string) (cryptoResult, error) {
		pt, _, v, err := open(ks, sc, it, prefix)
		if err != nil {
			return cryptoResult{}, err
		}
		enc := b64(pt)
		secret.Wipe(pt)
		return cryptoResult{Plaintext: &enc, KeyVersion: v}, nil
	})
}

// rewrap re-encrypts under the current key version; the plaintext never
// leaves the server. A ciphertext already under the current version is
// authenticated and returned unchanged.
func (s *server) rewrap(w http.ResponseWriter, r *http.Request) {
	s.serveCrypto(w, r, "ciphertext", func(ks *keys, sc scope, it *cryptoItem, prefix string) (cryptoResult, error) {
		pt, caller, v, err := open(ks, sc, it, prefix)
		if err != nil {
			return cryptoResult{}, err
		}
		defer secret.Wipe(pt)
		cur, key, err := ks.current(sc)
		if err != nil {
			return cryptoResult{}, err
		}
		if v == cur {
			return cryptoResult{Ciphertext: *it.Ciphertext, KeyVersion: v}, nil
		}
		ct, err := envelope.Seal(key, cryptoContext(sc, cur, caller), pt)
		if err != nil {
			return cryptoResult{}, fmt.Errorf("sealing: %w", err)
		}
		return cryptoResult{Ciphertext: b64(ct), KeyVersion: cur}, nil
	})
}

type datakeyRequest struct {
	Context *string `json:"context,omitempty"`
	Bits    *int    `json:"bits,omitempty"`
}

// datakey returns a fresh 256-bit key sealed like a crypto API ciphertext
// (so /decrypt with the same context returns it), with or without its
// plaintext.
func (s *server) datakey(withPlaintext bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sc, err := s.project(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		var req datakeyRequest
		if err := s.decodeJSON(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
		if req.Bits != nil && *req.Bits != 256 {
			s.fail(w, r, apierr.BadRequest("bits", "'bits' must be 256."))
			return
		}
		caller, aerr := callerContext(&cryptoItem{Context: req.Context}, "")
		if aerr != nil {
			s.fail(w, r, aerr)
			return
		}
		ks := s.keys(r.Context(), sc)
		defer ks.zero()
		v, key, err := ks.current(sc)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		dk := secret.New()
		defer dk.Zero()
		ct, err := envelope.Seal(key, cryptoContext(sc, v, caller), dk.Bytes())
		if err != nil {
			s.fail(w, r, fmt.Errorf("sealing: %w", err))
			return
		}
		res := cryptoResult{Ciphertext: b64(ct), KeyVersion: v}
		if withPlaintext {
			p := b64(dk.Bytes())
			res.Plaintext = &p
		}
		var buf bytes.Buffer
		_ = json.NewEncoder(&buf).Encode(res)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(buf.Bytes())
		secret.Wipe(buf.Bytes())
	}
}
