package aws

import (
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
)

// kit: every test ciphertext is bound to "aws-e2e"; creation calls retry a
// 503 as a real client would.
var kit = e2ekit.Suite{AAD: []byte("aws-e2e"), Retry: true}

func awsKey(name string, c *ekmtest.AWSCustomer, kmsARN, externalID string) openai.AdminOrganizationExternalKeyNewParams {
	if kmsARN == "" {
		kmsARN = c.Result.KeyARN
	}
	return openai.AdminOrganizationExternalKeyNewParams{OfAws: &openai.AdminOrganizationExternalKeyNewParamsBodyAws{
		Name: name, RoleArn: c.RoleARN(), KmsArn: kmsARN, ExternalID: externalID}}
}

// fixture is one customer account's key registered with ekm, with projects.
type fixture struct {
	*e2ekit.ExternalKey
	cust *ekmtest.AWSCustomer
}

// register registers the customer's key (kmsARN, or its key ARN) with the
// OpenAI SDK and creates n projects on it, each with a file and a crypto API
// ciphertext.
func register(t *testing.T, env *ekmtest.Env, cust *ekmtest.AWSCustomer, name, kmsARN string, n int) *fixture {
	t.Helper()
	return &fixture{kit.Register(t, env, name, awsKey(name, cust, kmsARN, env.OrgID), n), cust}
}
