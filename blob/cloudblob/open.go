package cloudblob

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/googleapis/gax-go/v2"
	gcaws "gocloud.dev/aws"
	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
	"gocloud.dev/blob/gcsblob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcp"
	"google.golang.org/api/option"

	"github.com/ekm-dev/ekm/blob"
)

// Open returns the blob store of a --blob-url:
//
//	""  or file://           <dataDir>/blobs, a blob.Dir (the default)
//	file:///abs/path         a blob.Dir at that directory
//	s3://bucket?region=R     Amazon S3; endpoint=URL and use_path_style=true
//	                         for S3-compatible stores (gocloud.dev/aws
//	                         lists every parameter)
//	azblob://container       Azure Blob Storage; storage_account=NAME, or
//	                         AZURE_STORAGE_ACCOUNT
//	gs://bucket              Google Cloud Storage
//
// Every bucket URL also takes prefix=P/ to keep ekm's objects under a
// prefix of a shared bucket, and part_size_mib=N and concurrency=N to
// override Options.PartSize and Options.Concurrency. A prefix is not
// required: the sweep of orphans deletes only objects named exactly as
// ekm names them (files.ParseBlobKey), so a bucket without one, or with a
// wrong one, loses nothing that is not ekm's; requiring one would stop
// every deployment that stores at a bucket's root (and adding one hides
// the objects already there). Credentials are never in the URL: each SDK's
// default chain finds them (the environment, shared config files, workload
// identity, instance metadata). The bucket or container must exist.
func Open(ctx context.Context, rawURL, dataDir string, o Options) (blob.Store, error) {
	o.defaults()
	if rawURL == "" {
		return blob.NewDir(filepath.Join(dataDir, "blobs"))
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("blob url: %w", redact(err)) // url.Parse quotes the URL, which should hold no secret
	}
	if u.User != nil {
		return nil, errors.New("blob url: credentials do not belong in the URL; each SDK's default chain finds them")
	}
	if u.Scheme == "file" {
		return openDir(u, dataDir)
	}
	q := u.Query()
	prefix := q.Get("prefix")
	q.Del("prefix")
	u.RawQuery = q.Encode()
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("blob url: prefix %q must end with /", prefix)
	}
	for _, p := range []struct {
		name     string
		min, max int
		set      func(int)
	}{
		{"part_size_mib", 5, 512, func(v int) { o.PartSize = v << 20 }},
		{"concurrency", 1, 16, func(v int) { o.Concurrency = v }},
	} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < p.min || n > p.max {
				return nil, fmt.Errorf("blob url: %s=%q: want an integer from %d to %d", p.name, v, p.min, p.max)
			}
			p.set(n)
		}
		q.Del(p.name)
	}
	u.RawQuery = q.Encode()
	if u.Host == "" {
		return nil, fmt.Errorf("blob url %s://: missing the bucket or container name", u.Scheme)
	}
	hc := newHTTPClient(o)
	b := &Bucket{kind: u.Scheme, opts: o, prefix: prefix}
	switch u.Scheme {
	case "s3":
		err = b.openS3(ctx, u, hc)
	case "azblob":
		err = b.openAzure(ctx, u, hc)
	case "gs":
		err = b.openGCS(ctx, u, hc)
	default:
		return nil, fmt.Errorf("blob url: unknown scheme %q (want file, s3, azblob or gs)", u.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("blob url %s://%s: %w", u.Scheme, u.Host, redact(err))
	}
	if prefix != "" {
		b.b = gcblob.PrefixedBucket(b.b, prefix)
	}
	return b, nil
}

// Describe names the store of a --blob-url for operators (logs, errors):
// the URL without user information and with every secret-bearing query
// value redacted, and for the local directory default its path.
func Describe(rawURL, dataDir string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(an unparseable --blob-url)"
	}
	if rawURL == "" || u.Scheme == "file" && u.Opaque == "" && u.Path == "" {
		if abs, err := filepath.Abs(filepath.Join(dataDir, "blobs")); err == nil {
			return "file://" + filepath.ToSlash(abs)
		}
		return "file://"
	}
	u.User = nil
	return redacted(u.String())
}

func openDir(u *url.URL, dataDir string) (blob.Store, error) {
	if u.Opaque != "" || u.Host != "" && u.Host != "localhost" {
		return nil, errors.New("blob url: want file:///absolute/path, or file:// for <data-dir>/blobs")
	}
	if u.RawQuery != "" {
		return nil, errors.New("blob url: file:// takes no parameters")
	}
	switch u.Path {
	case "":
		return blob.NewDir(filepath.Join(dataDir, "blobs"))
	case "/":
		return nil, errors.New("blob url: refusing file:/// (the root directory)")
	}
	return blob.NewDir(filepath.FromSlash(u.Path))
}

// newHTTPClient is the HTTP client of every SDK: connections that move no
// byte for IdleTimeout fail, so a stalled store is an error, not a hang.
func newHTTPClient(o Options) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	idle := o.IdleTimeout
	return &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, idle: idle}, nil
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       min(30*time.Second, idle/2),
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
}

// idleConn pushes the connection's deadline IdleTimeout ahead on every read
// and write: progress in either direction keeps it alive (a long upload
// whose answer has not started yet), silence for IdleTimeout kills it.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(p)
}

// S3 parameters handled here (gocloud.dev/aws handles the others).
const (
	s3PathStyle       = "use_path_style"
	s3PathStyleLegacy = "s3ForcePathStyle"
	s3DisableHTTPS    = "disable_https"
	s3SSEType         = "ssetype"
	s3KMSKeyID        = "kmskeyid"
)

func (b *Bucket) openS3(ctx context.Context, u *url.URL, hc *http.Client) error {
	q := u.Query()
	var s3opts []func(*s3.Options)
	for _, k := range []string{s3PathStyle, s3PathStyleLegacy, s3DisableHTTPS} {
		if v := q.Get(k); v != "" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if k == s3DisableHTTPS {
				s3opts = append(s3opts, func(o *s3.Options) { o.EndpointOptions.DisableHTTPS = on })
			} else {
				s3opts = append(s3opts, func(o *s3.Options) { o.UsePathStyle = on })
			}
		}
		q.Del(k)
	}
	var bopts s3blob.Options
	if v := q.Get(s3SSEType); v != "" {
		for _, t := range s3types.ServerSideEncryptionAes256.Values() {
			if strings.EqualFold(string(t), v) {
				bopts.EncryptionType = t
			}
		}
		if bopts.EncryptionType == "" {
			return fmt.Errorf("%s: unknown value %q", s3SSEType, v)
		}
	}
	bopts.KMSEncryptionID = q.Get(s3KMSKeyID)
	q.Del(s3SSEType)
	q.Del(s3KMSKeyID)

	cfg, err := gcaws.V2ConfigFromURLParams(ctx, q)
	if err != nil {
		return err
	}
	cfg.HTTPClient = hc
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = b.opts.MaxAttempts
			so.MaxBackoff = b.opts.MaxBackoff
			// An outage must fail each request after its attempts, not
			// exhaust a client-wide retry budget that then fails everything.
			so.RateLimiter = ratelimit.None
		})
	}
	s3opts = append(s3opts, func(o *s3.Options) {
		o.DisableLogOutputChecksumValidationSkipped = true
		// No "Expect: 100-continue" on parts: a store that answers
		// without the interim 100 would cost a new connection per part.
		o.ContinueHeaderThresholdBytes = -1
	})
	client := s3.NewFromConfig(cfg, s3opts...)
	bopts.RequestChecksumCalculation = cfg.RequestChecksumCalculation
	bk, err := s3blob.OpenBucket(ctx, client, u.Host, &bopts)
	if err != nil {
		return err
	}
	b.b, b.s3, b.s3Bucket = bk, client, u.Host
	b.s3Copy = func(in *s3.CopyObjectInput) {
		in.ServerSideEncryption = bopts.EncryptionType
		if bopts.KMSEncryptionID != "" {
			in.SSEKMSKeyId = aws.String(bopts.KMSEncryptionID)
		}
	}
	part := int64(b.opts.PartSize)
	b.before = func(as func(any) bool) error {
		// Replace the transfer manager gocloud made with one sized here:
		// the first part is read into memory up to MultipartUploadThreshold
		// (16 MiB by default), so it is one part too.
		var tm *transfermanager.Client
		if as(&tm) {
			*tm = *transfermanager.New(client, func(o *transfermanager.Options) {
				o.PartSizeBytes = part
				o.MultipartUploadThreshold = part
				o.Concurrency = b.opts.Concurrency
				o.RequestChecksumCalculation = cfg.RequestChecksumCalculation
				// Abort the multipart upload even when the upload's own
				// context is what was cancelled (Writer.Abort).
				o.FailTimeout = 15 * time.Second
			})
		}
		return nil
	}
	return nil
}

// restamp copies an S3 object onto itself, so that its date is now.
func (b *Bucket) restamp(key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	full := b.prefix + key
	in := &s3.CopyObjectInput{
		Bucket:            aws.String(b.s3Bucket),
		Key:               aws.String(full),
		CopySource:        aws.String(b.s3Bucket + "/" + full), // keys are [A-Za-z0-9_/-]: nothing to escape
		MetadataDirective: s3types.MetadataDirectiveReplace,
		ContentType:       aws.String("application/octet-stream"),
	}
	b.s3Copy(in)
	_, err := b.s3.CopyObject(ctx, in)
	return err
}

// RemoveStaleTemps aborts S3 multipart uploads under the bucket's prefix
// whose key (the prefix taken off) ours accepts, started before cutoff and
// with no part written since: those of processes that crashed mid-upload
// (files bounds every write's duration below the sweep's grace, and a
// live upload sends a part every PartSize bytes). Uploads to any other
// key — another application's in a shared bucket — are never touched.
// Other backends have nothing to sweep: Azure and GCS discard abandoned
// uploads themselves.
func (b *Bucket) RemoveStaleTemps(ctx context.Context, cutoff time.Time, ours func(key string) bool) (int, error) {
	if b.s3 == nil || ours == nil {
		return 0, nil
	}
	n := 0
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(b.s3Bucket)}
	if b.prefix != "" {
		in.Prefix = aws.String(b.prefix)
	}
	for {
		out, err := b.s3.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, fmt.Errorf("blob: listing multipart uploads: %w", b.classify(err))
		}
		for _, up := range out.Uploads {
			key, under := strings.CutPrefix(aws.ToString(up.Key), b.prefix)
			if !under || !blob.ValidKey(key) || !ours(key) || up.Initiated == nil || !up.Initiated.Before(cutoff) {
				continue
			}
			// Started long ago, but maybe still going (a slow client):
			// only an upload whose last part is old too is abandoned.
			if busy, err := b.partSince(ctx, in.Bucket, up.Key, up.UploadId, cutoff); err != nil || busy {
				if err != nil && b.classify(err) != blob.ErrNotFound {
					return n, fmt.Errorf("blob: listing the parts of a multipart upload: %w", b.classify(err))
				}
				continue
			}
			_, err := b.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: in.Bucket, Key: up.Key, UploadId: up.UploadId})
			if err != nil && b.classify(err) != blob.ErrNotFound {
				return n, fmt.Errorf("blob: aborting a stale multipart upload: %w", b.classify(err))
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// partSince reports whether a part of the upload was written at or after t.
func (b *Bucket) partSince(ctx context.Context, bucket, key, id *string, t time.Time) (bool, error) {
	in := &s3.ListPartsInput{Bucket: bucket, Key: key, UploadId: id}
	for {
		out, err := b.s3.ListParts(ctx, in)
		if err != nil {
			return false, err
		}
		for _, p := range out.Parts {
			if p.LastModified != nil && !p.LastModified.Before(t) {
				return true, nil
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return false, nil
		}
		in.PartNumberMarker = out.NextPartNumberMarker
	}
}

var _ blob.TempSweeper = (*Bucket)(nil)

func (b *Bucket) openAzure(ctx context.Context, u *url.URL, hc *http.Client) error {
	// The Azure SDK frees an upload's buffers when the call returns, even
	// if the transport may still read them (guardBodies).
	hc = &http.Client{Transport: guardBodies(hc.Transport)}
	opener := &azureblob.URLOpener{
		MakeClient: func(svcURL azureblob.ServiceURL, name azureblob.ContainerName) (*container.Client, error) {
			return azureContainer(svcURL, name, hc, b.opts)
		},
		ServiceURLOptions: *azureblob.NewDefaultServiceURLOptions(),
	}
	bk, err := opener.OpenBucketURL(ctx, u)
	if err != nil {
		return err
	}
	b.b = bk
	return nil
}

// azureContainer builds a container client with ekm's HTTP client and
// retries, and the credentials gocloud's azureblob would pick: a shared
// key (AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY), a SAS token
// (AZURE_STORAGE_SAS_TOKEN, already in svcURL), a connection string
// (AZURE_STORAGE_CONNECTION_STRING), else azidentity's default chain
// (workload identity, managed identity, environment, Azure CLI).
func azureContainer(svcURL azureblob.ServiceURL, name azureblob.ContainerName, hc *http.Client, o Options) (*container.Client, error) {
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: hc,
		Retry: policy.RetryOptions{
			MaxRetries:    int32(o.MaxAttempts - 1),
			RetryDelay:    200 * time.Millisecond,
			MaxRetryDelay: o.MaxBackoff,
		},
	}}
	if o.MaxAttempts <= 1 {
		opts.Retry.MaxRetries = -1
	}
	containerURL, err := url.JoinPath(string(svcURL), string(name))
	if err != nil {
		return nil, err
	}
	account, key := os.Getenv("AZURE_STORAGE_ACCOUNT"), os.Getenv("AZURE_STORAGE_KEY")
	cs := os.Getenv("AZURE_STORAGE_CONNECTION_STRING")
	if cs == "" {
		cs = os.Getenv("AZURE_STORAGEBLOB_CONNECTIONSTRING")
	}
	switch {
	case account != "" && key != "":
		cred, err := azblob.NewSharedKeyCredential(account, key)
		if err != nil {
			return nil, err
		}
		return container.NewClientWithSharedKeyCredential(containerURL, cred, opts)
	case os.Getenv("AZURE_STORAGE_SAS_TOKEN") != "":
		return container.NewClientWithNoCredential(containerURL, opts)
	case cs != "":
		return container.NewClientFromConnectionString(cs, string(name), opts)
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("azure credentials: %w", err)
	}
	return container.NewClient(containerURL, cred, opts)
}

func (b *Bucket) openGCS(ctx context.Context, u *url.URL, hc *http.Client) error {
	if len(u.Query()) > 0 {
		return fmt.Errorf("gs:// takes no parameter but prefix (got %q)", u.RawQuery)
	}
	var copts []option.ClientOption
	emu := b.opts.GCSEmulatorHost
	if emu == "" {
		emu = os.Getenv("STORAGE_EMULATOR_HOST")
	}
	if emu != "" {
		if !strings.Contains(emu, "://") {
			emu = "http://" + emu
		}
		copts = append(copts, option.WithoutAuthentication(), option.WithEndpoint(strings.TrimSuffix(emu, "/")+"/storage/v1/"),
			option.WithHTTPClient(hc), storage.WithJSONReads())
	} else {
		creds, err := gcp.DefaultCredentials(ctx)
		if err != nil {
			return fmt.Errorf("google credentials: %w", err)
		}
		ac, err := gcp.NewHTTPClient(hc.Transport, creds.TokenSource)
		if err != nil {
			return err
		}
		copts = append(copts, option.WithHTTPClient(&ac.Client))
	}
	client, err := storage.NewClient(ctx, copts...)
	if err != nil {
		return err
	}
	client.SetRetry(storage.WithMaxAttempts(b.opts.MaxAttempts),
		storage.WithBackoff(gax.Backoff{Initial: 100 * time.Millisecond, Max: b.opts.MaxBackoff, Multiplier: 2}))
	bk, err := gcsblob.OpenBucket(ctx, nil, u.Host, &gcsblob.Options{Client: client})
	if err != nil {
		_ = client.Close()
		return err
	}
	b.b = bk
	chunk := (b.opts.PartSize + 256<<10 - 1) / (256 << 10) * (256 << 10)
	b.opts.PartSize = chunk
	attempts := b.opts.MaxAttempts
	b.before = func(as func(any) bool) error {
		// Uploads retry failed requests until their context ends: bound
		// them by MaxAttempts, counted since the last chunk that went
		// through (so a long upload does not spend its budget on hiccups
		// hours apart). Ask for the handle first: the writer is made
		// lazily from it.
		var failed atomic.Int32
		var op **storage.ObjectHandle
		if as(&op) {
			*op = (*op).Retryer(storage.WithErrorFunc(func(err error) bool {
				return failed.Add(1) < int32(attempts) && storage.ShouldRetry(err)
			}))
		}
		var w *storage.Writer
		if as(&w) {
			w.ChunkSize = chunk
			w.ProgressFunc = func(int64) { failed.Store(0) }
			w.ChunkRetryDeadline = time.Duration(attempts) * (b.opts.MaxBackoff + b.opts.IdleTimeout)
		}
		return nil
	}
	return nil
}
