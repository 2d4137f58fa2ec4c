// Package replicas tests two ekm servers sharing one PostgreSQL database
// (and one blob volume and local root key), as a multi-replica deployment
// runs them: whatever one replica does, the other sees and can serve.
package replicas_test

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

func TestTwoReplicasOnePostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	dir := t.TempDir()
	a := ekmtest.Start(t, ekmtest.Options{Database: dsn, DataDir: dir})
	b := ekmtest.Start(t, ekmtest.Options{Database: dsn, DataDir: dir, Emulator: a.Emu})
	ctx := context.Background()

	// The org was created through replica a's store; replica b serves it.
	adminA, adminB := a.Admin(), b.Client(a.AdminKey)
	cust, ob := a.Onboard(t, "shared")
	ek, err := adminA.Admin.Organization.ExternalKeys.New(ctx, openai.AdminOrganizationExternalKeyNewParams{OfAzure: &openai.AdminOrganizationExternalKeyNewParamsBodyAzure{
		Name: "k", TenantID: cust.TenantID, VaultURI: ob.VaultURI, KeyName: ob.KeyName}})
	if err != nil {
		t.Fatal(err)
	}
	proj, err := adminB.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(ek.ID)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := adminA.Admin.Organization.ExternalKeys.Get(ctx, ek.ID)
	if err != nil || len(got.APIProjectIDs) != 1 || got.APIProjectIDs[0] != proj.ID {
		t.Fatalf("replica a does not see replica b's project: %v %v", got.APIProjectIDs, err)
	}
	sa, err := adminA.Admin.Organization.Projects.ServiceAccounts.New(ctx, proj.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := client.New(a.URL, sa.APIKey.Value, client.WithHTTPClient(a.HTTPClient()))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := client.New(b.URL, sa.APIKey.Value, client.WithHTTPClient(b.HTTPClient()))
	if err != nil {
		t.Fatal(err)
	}

	// Encrypt on one replica, decrypt on the other, concurrently.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Go(func() {
			enc, dec := ca, cb
			if i%2 == 1 {
				enc, dec = cb, ca
			}
			pt := []byte{byte(i), 1, 2, 3}
			c, err := enc.Encrypt(ctx, pt, []byte("ctx"))
			if err != nil {
				errs <- err
				return
			}
			back, err := dec.Decrypt(ctx, c.Ciphertext, []byte("ctx"))
			if err != nil || !bytes.Equal(back, pt) {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// A file uploaded through b downloads through a.
	content := bytes.Repeat([]byte("replicated "), 10000)
	f, err := cb.UploadFile(ctx, "r.txt", bytes.NewReader(content), "assistants")
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := ca.OpenFile(ctx, f.ID)
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(back, content) {
		t.Fatalf("download via the other replica: %v", err)
	}

	// Re-key through a; b then writes under the new key and reads the old data.
	// local is ekm's own type, not in the SDK's union: post raw JSON.
	var local openai.ExternalKey
	if err := adminA.Post(ctx, "organization/external_keys", map[string]any{"type": "local", "name": "second"}, &local); err != nil {
		t.Fatal(err)
	}
	if _, err := adminA.Admin.Organization.Projects.Update(ctx, proj.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(local.ID)}); err != nil {
		t.Fatal(err)
	}
	p2, err := adminB.Admin.Organization.Projects.Get(ctx, proj.ID)
	if err != nil || p2.ExternalKeyID != local.ID {
		t.Fatalf("replica b sees external key %q, want %q (%v)", p2.ExternalKeyID, local.ID, err)
	}
	rc, _, err = cb.OpenFile(ctx, f.ID)
	if err != nil {
		t.Fatal(err)
	}
	back, err = io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(back, content) {
		t.Fatalf("download after re-key: %v", err)
	}
}
