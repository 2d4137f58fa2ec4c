package ekmtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/ekm-dev/ekm/emulator/awscloud"
	"github.com/ekm-dev/ekm/internal/awsonboard"
)

// AWSRegion is the region of the AWS customers' keys in tests.
const AWSRegion = "eu-west-1"

// awsEnv lists the variables the AWS SDK reads that could point a test
// elsewhere: a developer's credentials or profile, endpoint overrides,
// FIPS, container and instance credentials, proxies.
var awsEnv = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY", "AWS_SECRET_KEY",
	"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL",
	"AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_IAM", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
	"AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
	"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
	"AWS_SDK_LOAD_CONFIG", "AWS_ACCOUNT_ID", "AWS_ENABLE_DEFAULT_SOCKET_TIMEOUT_2026",
	"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"}

// SetAWSEnv gives the process the AWS environment of an operator whose
// server runs as the emulator's vendor user: AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY set, every other AWS_* variable cleared, the
// shared config and credentials files pointed at an empty file and
// instance metadata off, for the rest of the test. ekm serve reads its AWS
// identity from there (the SDK's default chain), as in production.
func SetAWSEnv(t testing.TB, e *awscloud.Emulator) {
	t.Helper()
	for _, k := range awsEnv {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	empty := filepath.Join(t.TempDir(), "aws-empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", empty)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	v := e.Vendor()
	t.Setenv("AWS_ACCESS_KEY_ID", v.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", v.SecretAccessKey)
}

func startAWS(t testing.TB, o Options) *awscloud.Emulator {
	t.Helper()
	if o.AWSEmulator != nil {
		return o.AWSEmulator
	}
	emu, err := awscloud.New(awscloud.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu
}

// AWSCustomer is one customer account in the AWS emulator, with its
// administrator's clients.
type AWSCustomer struct {
	Root awscloud.Credentials
	// Options are the onboarding options (awsonboard.Run), Result what
	// the customer registers.
	Options awsonboard.Options
	Result  awsonboard.Result
	KMS     *kms.Client
	IAM     *iam.Client
}

// NewAWSCustomer creates a customer account in the AWS emulator whose
// onboarding options name this env's org as external id and the vendor
// user as ekm's principal; mod may change them (skip steps, add an alias)
// before Onboard runs them.
func (e *Env) NewAWSCustomer(t testing.TB, mod func(*awsonboard.Options)) *AWSCustomer {
	t.Helper()
	root, err := e.AWS.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewStaticCredentialsProvider(root.AccessKeyID, root.SecretAccessKey, "")
	c := &AWSCustomer{Root: root, Options: awsonboard.Options{HTTPClient: e.AWS.HTTPClient(), Credentials: creds, Region: AWSRegion,
		VendorPrincipalARN: e.AWS.Vendor().ARN, ExternalID: e.OrgID}}
	cfg := aws.Config{Region: AWSRegion, HTTPClient: e.AWS.HTTPClient(), Credentials: creds}
	c.KMS, c.IAM = kms.NewFromConfig(cfg), iam.NewFromConfig(cfg)
	if mod != nil {
		mod(&c.Options)
	}
	return c
}

// OnboardAWS creates a customer account and runs its onboarding steps
// (internal/awsonboard: the documents of docs/aws.md).
func (e *Env) OnboardAWS(t testing.TB, mod func(*awsonboard.Options)) *AWSCustomer {
	t.Helper()
	c := e.NewAWSCustomer(t, mod)
	var err error
	if c.Result, err = awsonboard.Run(context.Background(), c.Options); err != nil {
		t.Fatal(err)
	}
	return c
}

// RoleARN is the role the customer created (or would have, had it not
// skipped that step).
func (c *AWSCustomer) RoleARN() string {
	if c.Result.RoleARN != "" {
		return c.Result.RoleARN
	}
	name := c.Options.RoleName
	if name == "" {
		name = "ekm-kms-access"
	}
	return "arn:aws:iam::" + c.Root.AccountID + ":role/" + name
}

// RoleName is the role's name.
func (c *AWSCustomer) RoleName() string {
	if c.Options.RoleName != "" {
		return c.Options.RoleName
	}
	return "ekm-kms-access"
}

// AliasARN is the ARN of the customer's alias (Options.Alias).
func (c *AWSCustomer) AliasARN() string {
	return "arn:aws:kms:" + AWSRegion + ":" + c.Root.AccountID + ":" + c.Options.Alias
}
