// Package app assembles an ekm server from its configuration: the store, the
// KMS drivers, the lifecycle service (with the KMS call layer and the
// keyring), the blob store, the HTTP API and the background workers. cmd/ekm maps flags to a Config; tests build a Config directly, so
// the code they run is the code the binary runs.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/cloudblob"
	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/console"
	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/httpx"
	"github.com/ekm-dev/ekm/internal/dialoverride"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/aws"
	"github.com/ekm-dev/ekm/kms/azure"
	"github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/kms/oci"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/metrics"
	"github.com/ekm-dev/ekm/probe"
	"github.com/ekm-dev/ekm/readcache"
	"github.com/ekm-dev/ekm/rotation"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

// Config is everything `ekm serve` can be told. Zero values take the
// defaults documented on each field.
type Config struct {
	// Addr to listen on (default 127.0.0.1:8080).
	Addr string
	// DataDir holds the SQLite database, blobs and the local root key
	// (default ./ekm-data).
	DataDir string
	// Database is a postgres:// URL; "" means SQLite in DataDir/ekm.db.
	Database string
	// BlobURL is where file contents go: "" or file:// for DataDir/blobs,
	// file:///path, s3://, azblob:// or gs:// (blob/cloudblob.Open).
	BlobURL string
	// LocalRootKeyFile holds the 32-byte root of every local key (default
	// DataDir/local-root.key, created 0600 if absent). Replicas sharing a
	// database must share this file.
	LocalRootKeyFile string

	CacheTTL   time.Duration // hard TTL of unwrapped project keys (default 1h)
	CacheSize  int           // default 10000
	KMSTimeout time.Duration // one KMS call (default 30s)

	MaxFileBytes int64 // default 512 MiB

	// MaxConnections bounds the connections served at once (default 1024;
	// further clients wait in the kernel's accept queue).
	MaxConnections int
	// BodyTimeout bounds the time to receive a JSON request body (default
	// 30s; 408 after it).
	BodyTimeout time.Duration
	// UploadIdleTimeout cuts off an upload that sends nothing for this long
	// (default 60s; 408).
	UploadIdleTimeout time.Duration

	// ProbeInterval is how often each external key in use is health-checked
	// (default 30s, ±10% jitter). Revocation is enforced within about one
	// interval.
	ProbeInterval time.Duration
	// AuditRetention is how long audit events are kept (default 90 days).
	AuditRetention time.Duration
	// ProjectKeyRotationPeriod, if > 0, rotates the key of every active
	// project on a customer key once its current version is this old.
	ProjectKeyRotationPeriod time.Duration

	// AdminKMSRate is how many calls per second, on average, each org may
	// make on this replica to the Admin API routes that make ekm call a
	// KMS or a cloud's identity endpoint (adminapi.KMSRateLimit; default
	// DefaultAdminKMSRate; < 0 = no limit). AdminKMSBurst is how many it
	// may make at once (default DefaultAdminKMSBurst).
	AdminKMSRate  float64
	AdminKMSBurst int

	// EnvelopeWriteVersion is the envelope format version new ciphertexts
	// are written in (docs/FORMAT.md): 3 (the default; 0 means 3), or 2 or
	// 1 while replicas of a release that cannot read the newer version may
	// still read the data (a rolling upgrade, or to keep a rollback
	// possible; docs/OPERATIONS.md), or 2 to keep version 2's SHA-256 key
	// commitment. All three are always read. Open refuses
	// any other value and applies it with envelope.SetWriteVersion, which
	// is process-wide: the last App opened in a process decides for all.
	EnvelopeWriteVersion int

	Azure AzureConfig
	// AWS enables the aws key type (app/aws.go).
	AWS AWSConfig
	// GCP enables the gcp key type (app/gcp.go).
	GCP GCPConfig
	// OCI enables the oci key type (app/oci.go).
	OCI OCIConfig

	Logger  *slog.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time
}

// AzureConfig is ekm's own identity in Microsoft Entra ID (a multi-tenant app)
// and, for the emulator only, where to dial.
type AzureConfig struct {
	ClientID                  string
	ClientSecret              string
	ClientCertificate         string // path to PEM or PKCS#12
	ClientCertificatePassword string
	FederatedTokenFile        string
	// Cloud the app is registered in: "public" (default), "china" or
	// "usgov". Only vaults of that cloud can be registered.
	Cloud string
	// DialOverride sends every Azure connection to host:port (the emulator).
	DialOverride string
	// CAFile is a PEM CA to trust for Azure hosts (the emulator's).
	CAFile string
}

// App is a running server's parts.
type App struct {
	Config Config
	Store  store.Store
	// Service makes every change to keys and projects; Keyring is its hot
	// path (plaintext project keys).
	Service *lifecycle.Service
	Keyring *keyring.Keyring
	Blobs   blob.Store
	// Deployment is this deployment's id: the database's, which the blob
	// store's marker names (claimBlobStore).
	Deployment string
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
	Handler    http.Handler
	// Changes is the change log replicas cooperate through (package
	// cluster); Replica names this process in leases.
	Changes *cluster.Log
	Replica string
	// LastUsed records API key use; Run flushes it every minute and at
	// the end.
	LastUsed *auth.LastUsed

	closeOnce sync.Once
}

// DefaultMaxConnections is Config.MaxConnections' default.
const DefaultMaxConnections = 1024

// The defaults of Config.AdminKMSRate and AdminKMSBurst (docs/OPERATIONS.md
// says why these), and the value of AdminKMSRate for no limit.
const (
	DefaultAdminKMSRate  = 5.0
	DefaultAdminKMSBurst = 50
	NoAdminKMSLimit      = -1.0
	// MinAdminKMSRate is the smallest limit: one call per 1,000 seconds.
	MinAdminKMSRate = 0.001
)

// checkAdminKMSLimit refuses a rate or burst that makes no sense (after
// defaults).
func (c *Config) checkAdminKMSLimit() error {
	r := c.AdminKMSRate
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		return fmt.Errorf("admin KMS rate limit (--admin-kms-rate) %v: want a number of calls per second", r)
	case r < 0:
		return nil // no limit
	case r < MinAdminKMSRate:
		return fmt.Errorf("admin KMS rate limit (--admin-kms-rate) %v: want at least %v calls per second (or 0 for no limit)", r, MinAdminKMSRate)
	case c.AdminKMSBurst < 1:
		return fmt.Errorf("admin KMS burst (--admin-kms-burst) %d: want at least 1", c.AdminKMSBurst)
	}
	return nil
}

// DefaultEnvelopeWriteVersion is Config.EnvelopeWriteVersion's default.
const DefaultEnvelopeWriteVersion = envelope.Version3

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.DataDir == "" {
		c.DataDir = "ekm-data"
	}
	if c.LocalRootKeyFile == "" {
		c.LocalRootKeyFile = filepath.Join(c.DataDir, "local-root.key")
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = 30 * time.Second
	}
	if c.AuditRetention == 0 {
		c.AuditRetention = 90 * 24 * time.Hour
	}
	if c.MaxFileBytes == 0 {
		c.MaxFileBytes = 512 << 20
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.AdminKMSRate == 0 {
		c.AdminKMSRate = DefaultAdminKMSRate
	}
	if c.AdminKMSBurst == 0 {
		c.AdminKMSBurst = DefaultAdminKMSBurst
	}
	if c.EnvelopeWriteVersion == 0 {
		c.EnvelopeWriteVersion = DefaultEnvelopeWriteVersion
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if c.Metrics == nil {
		c.Metrics = metrics.New()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DSN returns the store DSN of the config.
func (c Config) DSN() string {
	if c.Database != "" {
		return c.Database
	}
	dir := c.DataDir
	if dir == "" {
		dir = "ekm-data"
	}
	return filepath.Join(dir, "ekm.db")
}

// OpenStore opens (and migrates) the configured database, creating the data
// directory if needed. Operator commands use it to share the server's store.
func OpenStore(ctx context.Context, c Config) (store.Store, error) {
	st, _, err := OpenStoreInfo(ctx, c)
	return st, err
}

// StoreInfo says which store OpenStoreInfo opened.
type StoreInfo struct {
	// Postgres is true for a PostgreSQL database, false for SQLite.
	Postgres bool
	// DataDir is the absolute data directory (blobs, root key; SQLite).
	DataDir string
	// Path is the absolute SQLite file, or "" for PostgreSQL.
	Path string
	// Created is true when the SQLite file did not exist before: a new,
	// empty store.
	Created bool
	// Warning, if not "", is a warning about the data directory to log.
	Warning string
}

// Describe names the store for people (never with credentials).
func (i StoreInfo) Describe() string {
	if i.Postgres {
		return "the PostgreSQL database of --database (data dir " + i.DataDir + ")"
	}
	return "SQLite database " + i.Path + " (data dir " + i.DataDir + ")"
}

// OpenStoreInfo is OpenStore, also saying which store it opened and whether
// it was just created. The data directory is created 0700 and every file
// ekm creates in it is 0600; an existing data directory (or database or
// root key file) that its group or others can read gets StoreInfo.Warning.
func OpenStoreInfo(ctx context.Context, c Config) (store.Store, StoreInfo, error) {
	dir := c.DataDir
	if dir == "" {
		dir = "ekm-data"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, StoreInfo{}, fmt.Errorf("data dir: %w", err)
	}
	info := StoreInfo{Postgres: c.Database != "", DataDir: abs}
	// PostgreSQL keeps the records elsewhere: the data dir (blobs, root
	// key) is then created by Open only, not by operator commands.
	if info.Warning, err = prepareDataDir(abs, !info.Postgres); err != nil {
		return nil, info, err
	}
	if !info.Postgres {
		info.Path = filepath.Join(abs, "ekm.db")
		if _, err := os.Stat(info.Path); errors.Is(err, os.ErrNotExist) {
			info.Created = true
		}
	}
	st, err := sqlstore.Open(ctx, c.DSN())
	return st, info, err
}

// prepareDataDir creates dir 0700, or checks an existing one: a data
// directory its group or others can enter, or files of ekm's in it they
// can read (created by older versions, or copied in), expose the database,
// blobs and local root key of a deployment that may not mean to share
// them. That is a warning, not a refusal: the operator may have set it so
// on purpose (a backup user's group).
func prepareDataDir(dir string, create bool) (warning string, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if !create {
			return "", nil
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("creating data dir: %w", err)
		}
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("data dir %s is not a directory", dir)
	}
	var open []string
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		open = append(open, fmt.Sprintf("%s (%#o)", dir, perm))
	}
	for _, name := range []string{"ekm.db", "ekm.db-wal", "ekm.db-shm", "local-root.key"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && fi.Mode().Perm()&0o077 != 0 {
			open = append(open, fmt.Sprintf("%s (%#o)", name, fi.Mode().Perm()))
		}
	}
	if len(open) == 0 {
		return "", nil
	}
	return fmt.Sprintf("the data dir's group or other users can reach the database, blobs or local root key: %s; "+
		"unless that is intended, run chmod -R go-rwx %s", strings.Join(open, ", "), dir), nil
}

// LoadRootKey reads the local root key file, creating it if absent. If
// several processes race to create it, the first writer wins and the others
// read its key.
func LoadRootKey(path string) (secret.Key, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := createRootKey(path); err != nil {
			return secret.Key{}, err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return secret.Key{}, fmt.Errorf("reading local root key: %w", err)
	}
	defer secret.Wipe(b)
	k, err := secret.FromBytes(b)
	if err != nil {
		return secret.Key{}, fmt.Errorf("local root key file %s: %w", path, err)
	}
	return k, nil
}

// checkRootKeyPresent fails closed when the root key file is missing but
// projects exist: their keys may be wrapped by the operator default or local
// keys derived from it, and a fresh root key would silently make them
// unreadable (and new versions unreadable by every other replica).
func checkRootKeyPresent(ctx context.Context, st store.Store, path string) error {
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for after := ""; ; {
		orgs, err := st.ListOrgs(ctx, store.Page{After: after, Limit: 100})
		if err != nil {
			return err
		}
		for _, o := range orgs {
			ps, err := st.ListProjects(ctx, o.ID, true, store.Page{Limit: 1})
			if err != nil {
				return err
			}
			if len(ps) > 0 {
				return fmt.Errorf("local root key file %s is missing, but the database already has projects: "+
					"restore the file from backup (or point --local-root-key-file at it); refusing to create a new root key, "+
					"which would make projects on the default or local keys unreadable", path)
			}
		}
		if len(orgs) < 100 {
			return nil
		}
		after = orgs[len(orgs)-1].ID
	}
}

// createRootKey writes a fresh key to path unless it exists. The key is
// written to a temporary file and linked into place, so a reader never sees
// a partial file and exactly one creator wins.
func createRootKey(path string) (bool, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	f, err := os.CreateTemp(dir, ".local-root-*.tmp")
	if err != nil {
		return false, fmt.Errorf("creating local root key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	k := secret.New()
	defer k.Zero()
	_, werr := f.Write(k.Bytes())
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(tmp, 0o600)); err != nil {
		return false, fmt.Errorf("writing local root key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("installing local root key: %w", err)
	}
	return true, nil
}

// Drivers builds the KMS drivers this config enables: local always, azure
// when an app client id is configured, gcp when a Google identity is, oci
// when ekm's tenancy is.
func Drivers(c Config, root secret.Key) ([]kms.Driver, error) {
	ds := []kms.Driver{local.NewDriver(root)}
	if c.Azure.ClientID != "" {
		hc, err := dialoverride.NewClient(c.Azure.DialOverride, c.Azure.CAFile)
		if err != nil {
			return nil, fmt.Errorf("azure transport: %w", err)
		}
		d, err := azure.NewDriver(azureDriverConfig(c.Azure, hc, c.KMSTimeout))
		if err != nil {
			return nil, fmt.Errorf("azure: %w", err)
		}
		ds = append(ds, d)
	}
	if c.AWS.Enabled {
		d, err := awsDriver(c)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	if d, err := gcpDriver(c); err != nil {
		return nil, err
	} else if d != nil {
		ds = append(ds, d)
	}
	if d, err := ociDriver(c); err != nil {
		return nil, err
	} else if d != nil {
		ds = append(ds, d)
	}
	return ds, nil
}

// Registry is the registry of drivers, describing every built-in type so
// that a registration of a type whose driver is not configured is refused
// as not enabled, saying how to enable it (Spec.Enable).
func Registry(drivers []kms.Driver) *kms.Registry {
	az, aw, gc, oc := azure.Spec(), aws.Spec(), gcp.Spec(), oci.Spec()
	az.Enable = "start ekm serve with --azure-client-id and a credential of ekm's Entra ID app " +
		"(--azure-client-secret, --azure-client-certificate or --azure-federated-token-file; see docs/azure.md), " +
		"or try it locally with ekm dev"
	for _, s := range []*kms.Spec{&aw, &gc, &oc} {
		s.Enable = "give ekm serve its identity in " + s.Title + " (ekm serve --help lists the flags; if it lists none for " +
			s.Type + ", this version has no driver for it yet)"
	}
	aw.Enable = "start ekm serve with --aws, ekm's own AWS identity being in the AWS SDK's default chain " +
		"(environment, shared config, web identity, container or instance role; see docs/aws.md), or try it locally with ekm dev --cloud aws"
	gc.Enable = gcpEnable
	oc.Enable = ociEnable
	return kms.NewRegistry(drivers...).Describe(az, aw, gc, oc)
}

// Open builds the app. Close releases it.
func Open(ctx context.Context, c Config) (*App, error) {
	c.defaults()
	if err := c.checkAdminKMSLimit(); err != nil {
		return nil, err
	}
	if err := checkEnvelopeWriteVersion(c.EnvelopeWriteVersion); err != nil {
		return nil, err
	}
	st, info, err := OpenStoreInfo(ctx, c)
	if err != nil {
		return nil, err
	}
	if info.Warning != "" {
		c.Logger.Warn(info.Warning)
	}
	a := &App{Config: c, Store: st, Metrics: c.Metrics, Logger: c.Logger}
	fail := func(err error) (*App, error) { _ = st.Close(); return nil, err }

	if err := checkRootKeyPresent(ctx, st, c.LocalRootKeyFile); err != nil {
		return fail(err)
	}
	root, err := LoadRootKey(c.LocalRootKeyFile)
	if err != nil {
		return fail(err)
	}
	drivers, err := Drivers(c, root)
	if err != nil {
		return fail(err)
	}
	a.Replica, a.Changes = cluster.ReplicaID(), newChanges(st, c)
	a.Service = lifecycle.New(lifecycle.Config{
		Store: st, Registry: Registry(drivers), Changes: a.Changes,
		Default:  kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default", local.ParamKeyVersion: "1"}},
		CacheTTL: c.CacheTTL, CacheSize: c.CacheSize, KMSTimeout: c.KMSTimeout,
		Now: c.Now, Metrics: c.Metrics, Logger: c.Logger,
	})
	a.Keyring = a.Service.Keyring()
	a.LastUsed = auth.NewLastUsed(st, auth.DefaultLastUsedResolution, c.Now, c.Logger)
	a.Blobs, err = cloudblob.Open(ctx, c.BlobURL, c.DataDir, cloudblob.Options{Logger: c.Logger})
	if err != nil {
		return fail(err)
	}
	if a.Deployment, err = claimBlobStore(ctx, st, a.Blobs, cloudblob.Describe(c.BlobURL, c.DataDir), c.Logger); err != nil {
		closeBlobs(a.Blobs)
		return fail(err)
	}
	a.Handler = a.routes()
	// Checked above, before anything was opened.
	if err := envelope.SetWriteVersion(c.EnvelopeWriteVersion); err != nil {
		return fail(err)
	}
	return a, nil
}

// OneDeploymentPerStore is the docs/OPERATIONS.md section on the
// deployment marker, named in the error that refuses another deployment's
// blob store.
const OneDeploymentPerStore = `docs/OPERATIONS.md, "One deployment per bucket and prefix"`

// claimBlobStore makes sure the blob store is this deployment's: it gets
// the database's deployment id (created at the first start, insert if
// absent: replicas starting at once agree on one), then claims the store
// with it (its marker is written if absent, conditionally: of two
// deployments starting at once on one store, one wins). A store whose
// marker names another deployment is refused: two deployments sharing a
// bucket and prefix would sweep each other's files away. A store that
// cannot be reached now does not stop the start (the crypto and Admin APIs
// need no blob store, and a replica restarting during a bucket outage must
// come back): the claim is made again before every sweep, and the sweep
// deletes nothing until the marker is this deployment's.
func claimBlobStore(ctx context.Context, st store.Store, blobs blob.Store, where string, logger *slog.Logger) (string, error) {
	id, err := st.ClaimDeploymentID(ctx, blob.NewDeploymentID())
	if err != nil {
		return "", fmt.Errorf("deployment id: %w", err)
	}
	err = blobs.ClaimDeployment(ctx, id)
	var ce *blob.ClaimError
	if errors.As(err, &ce) {
		return "", fmt.Errorf("the blob store %s belongs to another ekm deployment: its marker %s names deployment %s, "+
			"this database is deployment %s. Two deployments (say staging and production) must never share a bucket and prefix: "+
			"each one's sweep would delete the other's files. Give this deployment a bucket of its own, or a prefix= of its own "+
			"(--blob-url, EKM_BLOB_URL); if this store is this deployment's and the other deployment is gone for good, "+
			"re-claim it as %s says", where, blob.MarkerName, ce.Theirs, ce.Ours, OneDeploymentPerStore)
	}
	if errors.Is(err, blob.ErrUnavailable) {
		logger.Warn("blob store unreachable at start: its deployment marker is claimed before the next sweep, which deletes nothing until then",
			"store", where, "deployment", id, "err", err)
		return id, nil
	}
	if err != nil {
		return "", fmt.Errorf("blob store %s: claiming it for deployment %s: %w", where, id, err)
	}
	return id, nil
}

// closeBlobs releases a blob store that has clients to release.
func closeBlobs(b blob.Store) {
	if c, ok := b.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

// checkEnvelopeWriteVersion refuses a format version ekm cannot write.
func checkEnvelopeWriteVersion(v int) error {
	if v != envelope.Version1 && v != envelope.Version2 && v != envelope.Version3 {
		return fmt.Errorf("envelope write version %d (--envelope-write-version, EKM_ENVELOPE_WRITE_VERSION): must be 1, 2 or 3", v)
	}
	return nil
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	admin := adminapi.New(adminapi.Deps{Store: a.Store, Service: a.Service, Logger: a.Logger, Now: a.Config.Now,
		BodyTimeout: a.Config.BodyTimeout, LastUsed: a.LastUsed,
		KMSRate: adminapi.KMSRateLimit{PerSecond: a.Config.AdminKMSRate, Burst: a.Config.AdminKMSBurst}})
	// The data plane's API key and project reads, cached and invalidated
	// through the change log (package readcache).
	keys, projects := readcache.NewKeys(a.Store, readcache.Config{}), readcache.NewProjects(a.Store, readcache.Config{})
	readcache.Follow(a.Changes, keys, projects)
	data := dataplane.New(dataplane.Deps{Store: a.Store, Keyring: a.Keyring, Blobs: a.Blobs, Logger: a.Logger, Now: a.Config.Now,
		MaxFileBytes: a.Config.MaxFileBytes, BodyTimeout: a.Config.BodyTimeout, UploadIdleTimeout: a.Config.UploadIdleTimeout, LastUsed: a.LastUsed,
		Keys: keys, Projects: projects})
	mux.Handle("/v1/organization/", admin)
	reads := adminapi.NewReads(adminapi.Deps{Store: a.Store, Service: a.Service, Logger: a.Logger, Now: a.Config.Now, LastUsed: a.LastUsed})
	for _, p := range adminapi.ReadPatterns {
		mux.Handle(p, reads)
	}
	mux.Handle(console.Prefix, lastOnConn(console.Handler()))
	mux.Handle("GET /{$}", lastOnConn(console.Redirect()))
	mux.Handle("/v1/files", data)
	mux.Handle("/v1/files/", data)
	mux.Handle("/v1/crypto/", data)
	mux.Handle("GET /healthz", lastOnConn(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})))
	mux.Handle("GET /readyz", lastOnConn(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if err := a.Store.Ping(ctx); err != nil {
			a.Logger.Warn("readiness check failed", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"unavailable","reason":"database"}` + "\n"))
			return
		}
		_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
	})))
	a.gcpRoutes(mux)
	mux.Handle("GET /metrics", lastOnConn(promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{})))
	return httpx.Wrap(unknownAsJSON(mux), a.Logger, a.Metrics)
}

// lastOnConn makes the answers of a route anyone may call (no API key) the
// last on their connection. Otherwise a client with no credentials could
// keep up to MaxConnections connections open for IdleTimeout each by
// calling such a route now and then, and starve the APIs (and Google's
// fetches of the issuer's keys). A client with a key can still hold a
// connection, as its calls are attributed; failed authentication already
// closes (httpx.CloseAfterReply).
func lastOnConn(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.CloseAfterReply(w, r)
		h.ServeHTTP(w, r)
	})
}

// unknownAsJSON answers a request no route of mux matches in the APIs'
// JSON error shape (404 unknown_url, or 405 method_not_allowed with Allow
// for a known path), where the mux would answer text/plain. Routes mux
// has, whatever their patterns, are served as they are.
func unknownAsJSON(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		probe := &statusProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		switch probe.code {
		case http.StatusNotFound:
			apierr.Write(w, apierr.New(http.StatusNotFound, "invalid_request_error", "unknown_url", "",
				"Unknown request URL: %s %s.", r.Method, clipPath(r.URL.Path)))
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", probe.header.Get("Allow"))
			apierr.Write(w, apierr.New(http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "",
				"Method %s is not allowed on %s.", r.Method, clipPath(r.URL.Path)))
		default: // e.g. a redirect to the canonical path
			mux.ServeHTTP(w, r)
		}
	})
}

func clipPath(p string) string {
	if len(p) > 200 {
		return p[:200] + "…"
	}
	return p
}

// statusProbe records what the mux's own not-found and not-allowed
// handlers would answer, without sending it.
type statusProbe struct {
	header http.Header
	code   int
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) WriteHeader(code int) {
	if p.code == 0 {
		p.code = code
	}
}
func (p *statusProbe) Write(b []byte) (int, error) {
	if p.code == 0 {
		p.code = http.StatusOK
	}
	return len(b), nil
}

// Serve listens on Config.Addr and serves until ctx is done, then shuts down
// gracefully. ready, if non-nil, receives the bound address.
func (a *App) Serve(ctx context.Context, ready func(addr string)) error {
	ln, err := net.Listen("tcp", a.Config.Addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: another process (an ekm serve or ekm dev still running?) uses %s; stop it, or pass --addr", err, a.Config.Addr)
	}
	if err != nil {
		return err
	}
	ln = httpx.LimitListener(ln, a.Config.MaxConnections)
	srv := &http.Server{Handler: a.Handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(a.Logger.Handler(), slog.LevelWarn)}
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.Logger.Info("shutting down", "addr", ln.Addr().String(), "grace_seconds", 10)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// Close releases the store.
func (a *App) Close() error {
	var err error
	a.closeOnce.Do(func() { err = a.Store.Close() })
	return err
}

// Prober returns the health prober of this app's keys.
func (a *App) Prober() *probe.Prober {
	return probe.New(probe.Config{Store: a.Store, Service: a.Service, Interval: a.Config.ProbeInterval,
		Holder: a.Replica, Logger: a.Logger, Metrics: a.Metrics})
}

// Run serves HTTP and runs the background workers (health probe, audit
// retention, blob sweep, scheduled key rotation) until ctx is done.
func (a *App) Run(ctx context.Context, ready func(addr string)) error {
	a.Logger.Info("ekm starting", "version", Version(), "key_types", enabledTypes(a.Service.Registry()),
		"data_dir", a.Config.DataDir, "database", a.dbKind(), "envelope_write_version", envelope.WriteVersion())
	warnSoftwareAES(a.Logger, hardwareAES())
	unlock, lerr := a.singleServer()
	if lerr != nil {
		return lerr
	}
	defer unlock()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		a.Logger.Info("stopped")
	}()
	defer cancel()
	// Last use is flushed once more after the server has stopped serving,
	// so the requests of the last minute are recorded too.
	luCtx, luCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer luCancel()
	wg.Go(func() { a.LastUsed.Run(luCtx, time.Minute) })
	wg.Go(func() { a.Changes.Run(ctx) })
	p := a.Prober()
	wg.Go(func() { p.Run(ctx) })
	wg.Go(func() { a.leader().Run(ctx, a.leaderJobs) })
	err := a.Serve(ctx, ready)
	luCancel()
	return err
}

// enabledTypes lists the external key types this server can register.
func enabledTypes(reg *kms.Registry) []string {
	var out []string
	for _, t := range reg.Known() {
		if _, enabled, _ := reg.Spec(t); enabled {
			out = append(out, t)
		}
	}
	return out
}

func (a *App) dbKind() string {
	if a.Config.Database != "" {
		return "postgres"
	}
	return "sqlite"
}

// rotator returns the scheduled project-key rotation worker, or nil if off.
func (a *App) rotator() *rotation.Rotator {
	if a.Config.ProjectKeyRotationPeriod <= 0 {
		return nil
	}
	r, _ := rotation.New(rotation.Config{Store: a.Store, Service: a.Service, Period: a.Config.ProjectKeyRotationPeriod,
		Now: a.Config.Now, Logger: a.Logger})
	return r
}

// sweepBlobs removes, at start and then hourly, blobs that no record points
// to and that are older than files.SweepGrace (left by a crash between
// writing a blob and committing its record, or after a failed delete). The
// grace exceeds the longest a write may take (files.DefaultMaxWrite), so
// uploads and re-encryptions in flight are safe however slow.
func (a *App) sweepBlobs(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		// Claimed again first: a store unreachable at start is claimed
		// once it answers (a no-op read when the marker is ours).
		err := a.Blobs.ClaimDeployment(ctx, a.Deployment)
		var res files.SweepResult
		if err == nil {
			res, err = files.Sweep(ctx, a.Store, a.Blobs, a.Config.Now().Add(-files.SweepGrace))
		}
		var ce *blob.ClaimError
		if errors.Is(err, files.ErrNotOurStore) || errors.As(err, &ce) {
			a.Logger.Error("blob sweep skipped: the blob store is not this deployment's, nothing was deleted", "deployment", a.Deployment, "err", err)
		} else if err != nil && ctx.Err() == nil {
			a.Logger.Warn("blob sweep failed", "err", err)
		} else if err == nil {
			a.Logger.Info("blob sweep", "orphan_blobs", res.OrphanBlobs, "stale_temps", res.StaleTemps)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *App) pruneAudit(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := a.Store.PruneAudit(ctx, a.Config.Now().Add(-a.Config.AuditRetention))
		if err != nil && ctx.Err() == nil {
			a.Logger.Warn("audit retention: prune failed", "err", err)
		} else if n > 0 {
			a.Logger.Info("audit retention: pruned events", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
