package lifecycle_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

// boundDriver is a local driver whose type has an org-bound field, as AWS's
// external_id and GCP's audience are.
type boundDriver struct{ *local.Driver }

func (boundDriver) Type() string { return "bound" }
func (d boundDriver) Spec() kms.Spec {
	s := d.Driver.Spec()
	s.Type, s.OrgBound = "bound", []string{"audience"}
	return s
}
func (d boundDriver) Check(org string, p kms.Params) (kms.Params, error) {
	aud := p["audience"]
	delete(p, "audience")
	out, err := d.Driver.Check(org, p)
	if err == nil {
		out["audience"] = aud
	}
	return out, err
}
func (d boundDriver) Open(org string, p kms.Params) (kms.Provider, error) {
	q := kms.Params{}
	for k, v := range p {
		if k != "audience" {
			q[k] = v
		}
	}
	return d.Driver.Open(org, q)
}

// A registration's org-bound field must name the calling org or one of its
// projects, never another org's: what a customer's trust policy names must
// not be claimable by another customer through ekm.
func TestOrgBoundFields(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(secret.New()), boundDriver{local.NewDriver(secret.New())}),
		Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}}})
	a, b := ids.New("org-"), ids.New("org-")
	for _, o := range []string{a, b} {
		if err := st.CreateOrg(ctx, store.Org{ID: o, Name: o, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	pb, err := svc.CreateProject(ctx, "", b, "theirs", "")
	if err != nil {
		t.Fatal(err)
	}
	pa, err := svc.CreateProject(ctx, "", a, "ours", "")
	if err != nil {
		t.Fatal(err)
	}
	reg := func(aud string) error {
		_, err := svc.RegisterKey(ctx, "", a, lifecycle.Registration{Type: "bound", Name: "k", Purpose: "ekm", Params: kms.Params{"audience": aud}})
		return err
	}
	for _, ok := range []string{a, pa.ID} {
		if err := reg(ok); err != nil {
			t.Fatalf("audience %s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{b, pb.ID, "proj_nope", ""} {
		var le *lifecycle.Error
		if err := reg(bad); !errors.As(err, &le) || le.Code != "org_mismatch" || le.Param != "audience" {
			t.Fatalf("audience %q: %v", bad, err)
		}
	}
}
