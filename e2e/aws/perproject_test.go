package aws

import (
	"context"
	"net/http"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/awsonboard"
)

// TestPerProjectDeny: the customer denies one project in its own key
// policy (a Deny on kms:EncryptionContext:ekm:project). That project's
// reads are refused within the probe interval + 5 s; the org's other
// projects on the same key keep working; removing the statement restores
// the project with the same bytes.

// The provider tells a refusal of one project from a refusal of the key
// (kms.ScopeProject); the keyring keeps a gate per (external key, project)
// and the probe checks every project of a key whose type can refuse single
// projects (kms.Spec.ProjectScoped).
func TestPerProjectDeny(t *testing.T) {
	env := ekmtest.Start(t, ekmtest.Options{AWS: true, ProbeInterval: revocationProbeInterval})
	ctx := context.Background()
	bound := e2ekit.RevocationBound(revocationProbeInterval)
	cust := env.OnboardAWS(t, nil)
	f := register(t, env, cust, "per-project", "", 2)
	denied, other := f.Projects[0], f.Projects[1]
	f.MustRead(denied, "before")
	f.MustRead(other, "before")
	f.WaitStatus("valid", 10*time.Second)
	cur, err := cust.KMS.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: awssdk.String(cust.Result.KeyARN), PolicyName: awssdk.String("default")})
	e2ekit.Check(t, err)

	t0 := time.Now()
	e2ekit.Check(t, awsonboard.DenyProject(ctx, cust.Options, cust.Result.KeyARN, denied.ID))
	var refusal e2ekit.Result
	e2ekit.WaitFor(t, bound+5*time.Second, "the denied project's first refusal", func() bool {
		refusal = f.Read(denied)
		if r := f.Read(other); !r.OK {
			t.Fatalf("another project of the org refused after %v: %v", time.Since(t0), r)
		}
		return !refusal.OK
	})
	d := time.Since(t0)
	t.Logf("per-project deny: first refusal %v after the customer's action", d.Round(time.Millisecond))
	if refusal.Status != http.StatusForbidden || refusal.Code != e2ekit.CodeRevoked {
		t.Fatalf("refusal = %v", refusal)
	}
	if d > bound {
		t.Errorf("revocation took %v, guarantee is %v", d, bound)
	}
	// The other project keeps working for several probe intervals.
	deadline := time.Now().Add(4 * revocationProbeInterval)
	for time.Now().Before(deadline) {
		f.MustRead(other, "while another project is denied")
		time.Sleep(e2ekit.Poll)
	}
	putKeyPolicy(t, cust, awssdk.ToString(cur.Policy))
	// The project's gate opens at the next probe round.
	t1 := time.Now()
	e2ekit.WaitFor(t, bound+5*time.Second, "the denied project's restoration", func() bool { return f.Read(denied).OK })
	t.Logf("per-project deny lifted: first read %v after the statement was removed", time.Since(t1).Round(time.Millisecond))
	f.MustRead(other, "after the restoration")
}
