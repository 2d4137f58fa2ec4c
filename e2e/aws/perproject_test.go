package aws

import (
	"context"
	"net/http"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

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
	cust := env.OnboardAWS(t, nil)
	f := register(t, env, cust, "per-project", "", 2)
	denied, other := f.projects[0], f.projects[1]
	f.mustRead(denied, "before")
	f.mustRead(other, "before")
	f.waitStatus("valid", 10*time.Second)
	cur, err := cust.KMS.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: awssdk.String(cust.Result.KeyARN), PolicyName: awssdk.String("default")})
	check(t, err)

	t0 := time.Now()
	check(t, awsonboard.DenyProject(ctx, cust.Options, cust.Result.KeyARN, denied.id))
	var refusal result
	waitFor(t, revocationBound+5*time.Second, "the denied project's first refusal", func() bool {
		refusal = f.read(denied)
		if r := f.read(other); !r.ok {
			t.Fatalf("another project of the org refused after %v: %v", time.Since(t0), r)
		}
		return !refusal.ok
	})
	d := time.Since(t0)
	t.Logf("per-project deny: first refusal %v after the customer's action", d.Round(time.Millisecond))
	if refusal.status != http.StatusForbidden || refusal.code != codeRevoked {
		t.Fatalf("refusal = %v", refusal)
	}
	if d > revocationBound {
		t.Errorf("revocation took %v, guarantee is %v", d, revocationBound)
	}
	// The other project keeps working for several probe intervals.
	deadline := time.Now().Add(4 * revocationProbeInterval)
	for time.Now().Before(deadline) {
		f.mustRead(other, "while another project is denied")
		time.Sleep(poll)
	}
	putKeyPolicy(t, cust, awssdk.ToString(cur.Policy))
	// The project's gate opens at the next probe round.
	t1 := time.Now()
	waitFor(t, revocationBound+5*time.Second, "the denied project's restoration", func() bool { return f.read(denied).ok })
	t.Logf("per-project deny lifted: first read %v after the statement was removed", time.Since(t1).Round(time.Millisecond))
	f.mustRead(other, "after the restoration")
}
