package app

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

func TestLoadRootKeyRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "local-root.key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadRootKey(path)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = bytes.Clone(k.Bytes())
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatal("concurrent creators got different root keys")
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("root key file: %v %v", fi, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRootKey(path); err == nil {
		t.Fatal("a truncated root key file was accepted")
	}
}

func TestMissingRootKeyFailsClosedOnceDataExists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)}
	a, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// No projects yet: a missing root key is simply created.
	if err := os.Remove(filepath.Join(dir, "local-root.key")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	a, err = Open(ctx, cfg)
	if err != nil {
		t.Fatalf("fresh data dir without projects: %v", err)
	}
	org := store.Org{ID: ids.New("org-"), Name: "o", CreatedAt: time.Now()}
	if err := a.Store.CreateOrg(ctx, org); err != nil {
		t.Fatal(err)
	}
	if err := a.Store.CreateProject(ctx, store.Project{ID: ids.New("proj_"), OrgID: org.ID, Name: "p", CreatedAt: time.Now(), CurrentKeyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := os.Remove(filepath.Join(dir, "local-root.key")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open with projects and no root key = %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "local-root.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a new root key was created anyway")
	}
}

func TestAzureCloudIsChecked(t *testing.T) {
	root := secretForTest()
	c := Config{Azure: AzureConfig{ClientID: "11111111-2222-3333-4444-555555555555", ClientSecret: "s", Cloud: "mars"}}
	if _, err := Drivers(c, root); err == nil || !strings.Contains(err.Error(), "mars") {
		t.Fatalf("unknown cloud accepted: %v", err)
	}
	c.Azure.Cloud = "usgov"
	ds, err := Drivers(c, root)
	if err != nil || len(ds) != 2 {
		t.Fatalf("usgov: %d drivers, %v", len(ds), err)
	}
	// A US Government app accepts only US Government vaults.
	p := map[string]string{"tenant_id": "11111111-2222-3333-4444-555555555555", "vault_uri": "https://vault1.vault.azure.net/", "key_name": "org-0123456789abcdefghjkmnpqrs--k"}
	if _, err := ds[1].Check("org-0123456789abcdefghjkmnpqrs", p); err == nil {
		t.Fatal("a public-cloud vault was accepted by a usgov app")
	}
	p["vault_uri"] = "https://vault1.vault.usgovcloudapi.net/"
	if _, err := ds[1].Check("org-0123456789abcdefghjkmnpqrs", p); err != nil {
		t.Fatalf("usgov vault refused: %v", err)
	}
}

func secretForTest() secret.Key { return secret.New() }

// TestRunStartsWorkers checks the wiring of App.Run: scheduled project-key
// rotation and audit retention run from the first moment.
func TestRunStartsWorkers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := Open(ctx, Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), ProjectKeyRotationPeriod: time.Hour,
		AuditRetention: 24 * time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	org := store.Org{ID: ids.New("org-"), Name: "o", CreatedAt: time.Now()}
	pid := ids.New("proj_")
	rec, pk, err := a.Service.NewVersion(ctx, org.ID, pid, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	pk.Zero()
	rec.CreatedAt = time.Now().Add(-2 * time.Hour) // due for rotation
	old := store.AuditEvent{ID: ids.New("audit_log-"), OrgID: org.ID, Type: "project.created", EffectiveAt: time.Now().Add(-48 * time.Hour), Data: []byte(`{}`)}
	err = a.Store.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateOrg(ctx, org); err != nil {
			return err
		}
		if err := q.CreateProject(ctx, store.Project{ID: pid, OrgID: org.ID, Name: "p", CreatedAt: time.Now(), CurrentKeyVersion: 1}); err != nil {
			return err
		}
		if err := q.PutProjectKey(ctx, rec); err != nil {
			return err
		}
		return q.AppendAudit(ctx, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, err := a.Store.GetProject(ctx, org.ID, pid)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := a.Store.ListAudit(ctx, org.ID, store.AuditFilter{Types: []string{"project.created"}})
		if err != nil {
			t.Fatal(err)
		}
		if p.CurrentKeyVersion == 2 && len(evs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Run: project key version %d (want 2), %d expired audit events left (want 0)", p.CurrentKeyVersion, len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Without AES instructions ekm says so at start (the project key's AES
// would run in a table-based implementation); with them it says nothing.
func TestWarnSoftwareAES(t *testing.T) {
	for _, hw := range []bool{false, true} {
		var buf bytes.Buffer
		warnSoftwareAES(slog.New(slog.NewTextHandler(&buf, nil)), hw)
		if got := strings.Contains(buf.String(), "level=WARN") && strings.Contains(buf.String(), "no AES instructions"); got == hw {
			t.Errorf("hardware AES %v: logged %q", hw, buf.String())
		}
	}
}
