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
//
// Skipped: KMS refuses the project at once (kms/aws TestDiagnosisPerStep
// checks it), but ekm cannot enforce it per project yet. Health is kept per
// external key: the probe decrypts one sample project key per external key
// (the newest), and the keyring's gate closes for the whole external key on
// the first revocation-class refusal. So the denied project is served from
// cache until its key expires (--cache-ttl), and its next unwrap then closes
// the gate of every project on the key, until a probe of another project's
// key opens it again (flapping). Enforcing this needs per-(external key,
// project) gates in keyring and a probe that samples each project, or a
// revocation scope in kms.Error; see docs/aws.md, "Per-project revocation".
func TestPerProjectDeny(t *testing.T) {
	t.Skip("needs per-project gates in keyring/probe (shared layers); see the comment above and docs/aws.md")
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
	f.mustReadEventually(denied, "after the statement is removed")
}
