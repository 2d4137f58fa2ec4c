// Package dataplanetest runs a data plane over a real SQLite store, a local
// KMS and a blob directory in a test's temp dir, and creates orgs, projects
// and project API keys directly in the store. The dataplane and client
// tests share it.
package dataplanetest

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/readcache"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

// Env is a running data plane.
type Env struct {
	DataDir string // holds the SQLite file and the blob directory
	Store   store.Store
	Service *lifecycle.Service
	Keyring *keyring.Keyring
	Dir     *blob.Dir
	Handler http.Handler // what Server serves
	Server  *httptest.Server
	URL     string // Server.URL
	// Keys and Projects are the data plane's caches (nil with NoCache).
	Keys     *readcache.Keys
	Projects *readcache.Projects
}

// Options adjust an Env.
type Options struct {
	// Blobs wraps the blob directory (e.g. to inject failures); nil = as is.
	Blobs func(*blob.Dir) blob.Store
	// Deps edits the dataplane dependencies before New.
	Deps   func(*dataplane.Deps)
	Logger *slog.Logger
	// NoCache reads API keys and projects from the store on every request,
	// instead of through the caches the server uses (package readcache,
	// following the service's change log).
	NoCache bool
}

// New starts a data plane for t; everything is cleaned up with t.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.Open(ctx, filepath.Join(dir, "ekm.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	root := secret.New()
	svc := lifecycle.New(lifecycle.Config{
		Store:    st,
		Registry: kms.NewRegistry(local.NewDriver(root)),
		Default:  kms.Ref{Type: "local", Params: kms.Params{"local_key_id": "default"}},
	})
	kr := svc.Keyring()
	bd, err := blob.NewDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	var bs blob.Store = bd
	if o.Blobs != nil {
		bs = o.Blobs(bd)
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := dataplane.Deps{Store: st, Keyring: kr, Blobs: bs, Logger: logger}
	var keys *readcache.Keys
	var projects *readcache.Projects
	if !o.NoCache {
		keys, projects = readcache.NewKeys(st, readcache.Config{}), readcache.NewProjects(st, readcache.Config{})
		readcache.Follow(svc.Changes(), keys, projects)
		d.Keys, d.Projects = keys, projects
	}
	if o.Deps != nil {
		o.Deps(&d)
	}
	h := dataplane.New(d)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Env{DataDir: dir, Store: st, Service: svc, Keyring: kr, Dir: bd, Handler: h, Server: srv, URL: srv.URL, Keys: keys, Projects: projects}
}

// Project is a project with one API key.
type Project struct {
	OrgID, ID     string
	ExternalKeyID string // "" = the operator's default key
	APIKey        string // sk-proj-… value
}

// NewOrg creates an org and returns its id.
func (e *Env) NewOrg(t testing.TB) string {
	t.Helper()
	id := ids.New("org-")
	if err := e.Store.CreateOrg(context.Background(), store.Org{ID: id, Name: "test org", CreatedAt: time.Now()}); err != nil {
		t.Fatalf("create org: %v", err)
	}
	return id
}

// NewProject creates a project with key version 1 in orgID ("" = a new
// org), wrapped by a customer (local) external key if external is set, else
// by the default key, plus a project API key.
func (e *Env) NewProject(t testing.TB, orgID string, external bool) Project {
	t.Helper()
	ctx := context.Background()
	if orgID == "" {
		orgID = e.NewOrg(t)
	}
	p := Project{OrgID: orgID, ID: ids.New("proj_")}
	var ek *store.ExternalKey
	if external {
		k := store.ExternalKey{ID: ids.New("extkey_"), OrgID: orgID, Type: "local", Name: "customer key", Purpose: "ekm",
			Params: map[string]string{"local_key_id": "cust-" + p.ID[len("proj_"):], "key_version": "1"}, Status: store.StatusValid, CreatedAt: time.Now()}
		if err := e.Store.CreateExternalKey(ctx, k); err != nil {
			t.Fatalf("create external key: %v", err)
		}
		ek, p.ExternalKeyID = &k, k.ID
	}
	rec, pk, err := e.Service.NewVersion(ctx, orgID, p.ID, 1, ek)
	if err != nil {
		t.Fatalf("new project key: %v", err)
	}
	pk.Zero()
	value, hash, redacted := auth.NewKeyValue(store.KindProject)
	p.APIKey = value
	err = e.Store.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateProject(ctx, store.Project{ID: p.ID, OrgID: orgID, Name: "test project", ExternalKeyID: p.ExternalKeyID, CreatedAt: time.Now(), CurrentKeyVersion: 1}); err != nil {
			return err
		}
		if err := q.PutProjectKey(ctx, rec); err != nil {
			return err
		}
		sa := store.ServiceAccount{ID: ids.New("svc_acct_"), OrgID: orgID, ProjectID: p.ID, Name: "svc", Role: "member", CreatedAt: time.Now()}
		if err := q.CreateServiceAccount(ctx, sa); err != nil {
			return err
		}
		return q.CreateAPIKey(ctx, store.APIKey{ID: ids.New("key_"), OrgID: orgID, Kind: store.KindProject, ProjectID: p.ID,
			ServiceAccountID: sa.ID, Name: "svc", Hash: hash, RedactedValue: redacted, CreatedAt: time.Now()})
	})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	return p
}

// Rotate adds a new version of p's project key and makes it current.
func (e *Env) Rotate(t testing.TB, p Project) int {
	t.Helper()
	ctx := context.Background()
	pr, err := e.Store.GetProject(ctx, p.OrgID, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	var ek *store.ExternalKey
	if p.ExternalKeyID != "" {
		k, err := e.Store.GetExternalKey(ctx, p.OrgID, p.ExternalKeyID)
		if err != nil {
			t.Fatal(err)
		}
		ek = &k
	}
	v := pr.CurrentKeyVersion + 1
	rec, pk, err := e.Service.NewVersion(ctx, p.OrgID, p.ID, v, ek)
	if err != nil {
		t.Fatal(err)
	}
	pk.Zero()
	pr.CurrentKeyVersion = v
	err = e.Service.Changes().InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		if err := q.PutProjectKey(ctx, rec); err != nil {
			return err
		}
		if err := q.UpdateProject(ctx, pr); err != nil {
			return err
		}
		return pub.Publish(ctx, cluster.ProjectKeyRotated, p.OrgID, p.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Revoke closes the keyring's gate for p's external key, as the health
// probe does when the customer withdraws access (class kms.Revoked) or
// when its KMS is down (kms.Outage).
func (e *Env) Revoke(t testing.TB, p Project, class kms.Class) {
	t.Helper()
	if p.ExternalKeyID == "" {
		t.Fatal("Revoke needs a project with an external key")
	}
	e.Keyring.MarkUnavailable(p.ExternalKeyID, &keyring.UnavailableError{ExternalKeyID: p.ExternalKeyID, Class: class,
		Code: "test_" + string(class), Message: "The key was made unavailable by the test."})
}

// Archive archives p.
func (e *Env) Archive(t testing.TB, p Project) {
	t.Helper()
	ctx := context.Background()
	pr, err := e.Store.GetProject(ctx, p.OrgID, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	pr.ArchivedAt = &now
	err = e.Service.Changes().InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		if err := q.UpdateProject(ctx, pr); err != nil {
			return err
		}
		return pub.Publish(ctx, cluster.ProjectArchived, p.OrgID, p.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
}
