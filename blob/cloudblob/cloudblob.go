// Package cloudblob stores ekm's blobs in object storage — Amazon S3 (and
// S3-compatible stores), Azure Blob Storage and Google Cloud Storage —
// through gocloud.dev/blob, behind ekm's own blob.Store interface. Open
// turns a --blob-url into a store: file:// (and "") is today's local
// blob.Dir, s3://, azblob:// and gs:// are buckets.
//
// The adapter keeps blob.Store's guarantees on every backend:
//
//   - Uploads stream. Memory per upload is bounded by Options.PartSize and
//     Options.Concurrency (see Options), whatever the object's size.
//   - An object becomes visible under its key only when Commit returns nil.
//     Writes go straight to the final key, because every backend publishes
//     an object atomically when its upload completes (S3 PutObject or
//     CompleteMultipartUpload, Azure Put Blob or Put Block List, GCS the
//     last request of a resumable upload); until then the parts, blocks or
//     chunks are invisible to reads and lists. Abort (or a cancelled
//     context) abandons the upload: S3's multipart upload is aborted, Azure's
//     uncommitted blocks and GCS's upload session are discarded by the
//     service (after 7 days at most). A crashed process leaves the same
//     invisible leftovers; on S3 RemoveStaleTemps (run by files.Sweep)
//     aborts multipart uploads older than the sweep's cutoff.
//   - Commit never overwrites: it is a conditional write (If-None-Match: *
//     on S3 and Azure, ifGenerationMatch=0 on GCS), blob.ErrExists if an
//     object is already there.
//   - If Commit fails in a way that leaves it unknown whether the upload
//     completed (a lost answer), Commit deletes the key before returning,
//     best effort; what that misses is a complete object without a record,
//     which files.Sweep removes after its grace period. Never a partial one.
//   - Errors that mean "try later" (connection refused or reset, no byte
//     moved within Options.IdleTimeout, 5xx, throttling) wrap
//     blob.ErrUnavailable, after the SDK's own retries (Options.MaxAttempts).
package cloudblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"
	"google.golang.org/api/googleapi"

	"github.com/ekm-dev/ekm/blob"
)

// Options tune a bucket. Zero values take the defaults documented on each
// field.
type Options struct {
	// PartSize is what one upload buffers per part (S3), block (Azure) or
	// chunk (GCS, rounded up to 256 KiB). Default 5 MiB, S3's smallest
	// part; objects up to 10,000 parts (48.8 GiB at the default) can be
	// written.
	PartSize int
	// Concurrency is how many parts (S3) or blocks (Azure) of one upload
	// are sent at once; GCS sends one chunk at a time. Default 1: memory
	// first (many uploads at once use the store in parallel anyway); raise
	// it for the throughput of single uploads over high-latency links.
	//
	// Memory of one upload in flight: S3 (Concurrency+2) × PartSize
	// (15 MiB at the defaults), Azure Concurrency × PartSize (5 MiB),
	// GCS PartSize (5 MiB). Downloads stream with small fixed buffers.
	Concurrency int
	// IdleTimeout fails a connection on which no byte moved, in either
	// direction, for this long (a stalled or overloaded store): the
	// operation then fails with blob.ErrUnavailable instead of hanging.
	// Default 60s.
	IdleTimeout time.Duration
	// MaxAttempts is how often one request is tried, the first included,
	// before its error is returned (default 3); retries back off
	// exponentially up to MaxBackoff (default 2s).
	MaxAttempts int
	MaxBackoff  time.Duration
	// RestampAfter (S3 only): S3 dates an object written in parts by the
	// start of its upload. An upload that took longer than this is copied
	// onto itself after it completes, which dates it by its completion
	// (as Azure, GCS and blob.Dir do). Default 10 minutes. The sweep of
	// orphan blobs does not rely on it (files.SweepGrace exceeds the
	// longest a write may take, files.DefaultMaxWrite): it only keeps
	// List's dates meaning "committed at".
	RestampAfter time.Duration
	// GCSEmulatorHost sends gs:// buckets to a Cloud Storage emulator at
	// this host:port over plain HTTP, without credentials. Default: the
	// STORAGE_EMULATOR_HOST environment variable, as Google's SDK reads it.
	GCSEmulatorHost string
	// Logger receives warnings (best-effort clean-ups that failed).
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultPartSize     = 5 << 20
	DefaultConcurrency  = 1
	DefaultIdleTimeout  = 60 * time.Second
	DefaultMaxAttempts  = 3
	DefaultMaxBackoff   = 2 * time.Second
	DefaultRestampAfter = 10 * time.Minute
)

func (o *Options) defaults() {
	if o.PartSize <= 0 {
		o.PartSize = DefaultPartSize
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.RestampAfter <= 0 {
		o.RestampAfter = DefaultRestampAfter
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Bucket is a blob.Store on a gocloud.dev bucket.
type Bucket struct {
	b      *gcblob.Bucket
	kind   string // "s3", "azblob", "gs"
	opts   Options
	before func(as func(any) bool) error // WriterOptions.BeforeWrite

	// S3 only: the client and the bucket's name and key prefix, for what
	// gocloud does not cover (multipart uploads, restamping).
	s3       *s3.Client
	s3Bucket string
	prefix   string
	s3Copy   func(*s3.CopyObjectInput) // adds the bucket's SSE settings
}

var _ blob.Store = (*Bucket)(nil)

// Close releases the bucket's clients.
func (b *Bucket) Close() error { return redact(b.b.Close()) }

// Kind is the URL scheme of the bucket: "s3", "azblob" or "gs".
func (b *Bucket) Kind() string { return b.kind }

// Create starts an upload to key. The upload belongs to ctx: cancelling it
// aborts the upload.
func (b *Bucket) Create(ctx context.Context, key string) (blob.Writer, error) {
	if !blob.ValidKey(key) {
		return nil, blob.ErrInvalidKey
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	gw, err := b.b.NewWriter(wctx, key, &gcblob.WriterOptions{
		ContentType:                 "application/octet-stream",
		DisableContentTypeDetection: true,
		BufferSize:                  b.opts.PartSize,
		MaxConcurrency:              b.opts.Concurrency,
		IfNotExist:                  true,
		BeforeWrite:                 b.before,
	})
	if err != nil {
		cancel()
		return nil, b.classify(err)
	}
	return &writer{b: b, key: key, w: gw, cancel: cancel, start: time.Now()}, nil
}

type writer struct {
	b      *Bucket
	key    string
	w      *gcblob.Writer
	cancel context.CancelFunc
	start  time.Time
	n      int64

	mu   sync.Mutex
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	if err != nil {
		return n, w.b.classify(err)
	}
	return n, nil
}

func (w *writer) Commit() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	defer w.cancel()
	if err := w.w.Close(); err != nil {
		err = w.b.classify(err)
		if !errors.Is(err, blob.ErrExists) {
			// The answer may have been lost after the store completed the
			// upload: make sure nothing is left under the key.
			w.b.forget(w.key, err)
		}
		return err
	}
	if w.b.s3 != nil && w.n > int64(w.b.opts.PartSize) && time.Since(w.start) > w.b.opts.RestampAfter {
		if w.n > maxCopy {
			// CopyObject stops at 5 GiB: leave the date as it is.
			w.b.opts.Logger.Info("blob: an upload over 5 GiB that took long keeps the date of its start (the sweep's grace covers the longest write)", "key", w.key)
			return nil
		}
		if err := w.b.restamp(w.key); err != nil {
			err = w.b.classify(err)
			w.b.forget(w.key, err)
			return fmt.Errorf("blob: dating the completed upload: %w", err)
		}
	}
	return nil
}

func (w *writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	// A cancelled context makes Close abandon the upload (S3: abort the
	// multipart upload) instead of completing it.
	w.cancel()
	_ = w.w.Close()
	return nil
}

// maxCopy is the largest object S3's CopyObject copies.
const maxCopy = 5 << 30

// forget deletes key after a commit that failed ambiguously, best effort.
func (b *Bucket) forget(key string, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.b.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		b.opts.Logger.Warn("blob: removing the object of a failed commit; the sweep will", "key", key, "cause", cause, "err", b.classify(err))
	}
}

// Open opens a committed object for streaming.
func (b *Bucket) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if !blob.ValidKey(key) {
		return nil, 0, blob.ErrInvalidKey
	}
	r, err := b.b.NewReader(ctx, key, nil)
	if err != nil {
		return nil, 0, b.classify(err)
	}
	return &reader{b: b, r: r}, r.Size(), nil
}

type reader struct {
	b *Bucket
	r *gcblob.Reader
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = r.b.classify(err)
	}
	return n, err
}

func (r *reader) Close() error { return r.b.classify(r.r.Close()) }

// Delete removes an object; blob.ErrNotFound if there is none.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if !blob.ValidKey(key) {
		return blob.ErrInvalidKey
	}
	return b.classify(b.b.Delete(ctx, key))
}

// List calls fn for every committed object under the bucket's prefix whose
// key is a valid blob key.
func (b *Bucket) List(ctx context.Context, fn func(blob.Info) error) error {
	it := b.b.List(nil)
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("blob: list: %w", b.classify(err))
		}
		if o.IsDir || !blob.ValidKey(o.Key) {
			continue
		}
		if err := fn(blob.Info{Key: o.Key, Size: o.Size, ModTime: o.ModTime}); err != nil {
			return err
		}
	}
}

// classify maps a gocloud or SDK error onto blob's errors: not found,
// exists, unavailable; anything else is returned as it is. Either way the
// values of secret-bearing query parameters are redacted from its text
// (redact): every error a Bucket returns or logs passes through here.
func (b *Bucket) classify(err error) error {
	if err == nil {
		return nil
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		return blob.ErrNotFound
	case gcerrors.FailedPrecondition:
		return blob.ErrExists
	}
	err = redact(err)
	if Retryable(err) {
		return blob.Unavailable(err)
	}
	return err
}

// Retryable reports whether err means the store cannot serve now but may
// later: a network failure (refused, reset, timed out, cut short), an HTTP
// 5xx, 408 or 429 from any of the three SDKs, or throttling. A cancelled
// context is not: the caller gave up.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error // *url.Error (any transport failure), *net.OpError, timeouts
	if errors.As(err, &ne) {
		return true
	}
	if s := httpStatus(err); s >= 500 || s == http.StatusTooManyRequests || s == http.StatusRequestTimeout {
		return true
	}
	switch gcerrors.Code(err) {
	case gcerrors.ResourceExhausted, gcerrors.DeadlineExceeded:
		return true
	}
	return false
}

// httpStatus digs the HTTP status out of an SDK error, or 0.
func httpStatus(err error) int {
	var aws interface{ HTTPStatusCode() int } // smithy-go / aws-sdk-go-v2
	if errors.As(err, &aws) {
		return aws.HTTPStatusCode()
	}
	var az *azcore.ResponseError
	if errors.As(err, &az) {
		return az.StatusCode
	}
	var g *googleapi.Error
	if errors.As(err, &g) {
		return g.Code
	}
	return 0
}

// ClaimDeployment writes the marker blob.MarkerName under the bucket's
// prefix if it is absent: a conditional write (If-None-Match: * on S3 and
// Azure, ifGenerationMatch=0 on GCS), as every Commit is.
func (b *Bucket) ClaimDeployment(ctx context.Context, id string) error {
	return blob.Claim(ctx, id, b.createMarker, b.readMarker)
}

// Deployment reads the marker blob.MarkerName under the bucket's prefix.
func (b *Bucket) Deployment(ctx context.Context) (string, error) {
	return blob.ReadDeployment(ctx, b.readMarker)
}

func (b *Bucket) createMarker(ctx context.Context, content []byte) error {
	err := b.b.WriteAll(ctx, blob.MarkerName, content, &gcblob.WriterOptions{
		ContentType:                 "application/json",
		DisableContentTypeDetection: true,
		IfNotExist:                  true,
		BeforeWrite:                 b.before,
	})
	return b.classify(err)
}

func (b *Bucket) readMarker(ctx context.Context) ([]byte, error) {
	c, err := b.b.ReadAll(ctx, blob.MarkerName)
	return c, b.classify(err)
}
