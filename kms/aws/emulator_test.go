package aws

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ekm-dev/ekm/emulator/awscloud"
	"github.com/ekm-dev/ekm/internal/awsonboard"
	"github.com/ekm-dev/ekm/internal/dialoverride"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

// The emulator tests drive the provider through the production code path:
// ekm's identity comes from the SDK's default chain (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY of the emulator's vendor user, set in TestMain),
// and only Config.HTTPClient's transport (dial override + CA) differs from
// real AWS.

var emu *awscloud.Emulator

// awsEnv lists the variables the SDK reads that could point a test
// elsewhere (a developer's profile, endpoint overrides, proxies, IMDS).
var awsEnv = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY", "AWS_SECRET_KEY",
	"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL",
	"AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_IAM", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
	"AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
	"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
	"AWS_SDK_LOAD_CONFIG", "AWS_ACCOUNT_ID", "AWS_ENABLE_DEFAULT_SOCKET_TIMEOUT_2026",
	"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ekm-kms-aws")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	for _, k := range awsEnv {
		os.Unsetenv(k)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		panic(err)
	}
	os.Setenv("AWS_CONFIG_FILE", empty)
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	e, err := awscloud.New(awscloud.Options{})
	if err != nil {
		panic(err)
	}
	if err := e.Start(); err != nil {
		panic(err)
	}
	defer e.Close()
	emu = e
	v := e.Vendor()
	os.Setenv("AWS_ACCESS_KEY_ID", v.AccessKeyID)
	os.Setenv("AWS_SECRET_ACCESS_KEY", v.SecretAccessKey)
	return m.Run()
}

const region = "eu-west-1"

// testAAD is a project wrap's associated data.
var testAAD = kms.AAD{OrgID: testOrg, ProjectID: "proj_0123456789abcdefghjkmnpqrs", Version: 1}

// fakeClock is a settable clock for session renewal.
type fakeClock struct{ off atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

func emuBuildable(t testing.TB) *awshttp.BuildableClient {
	t.Helper()
	opt, err := dialoverride.TransportOptionsFromPEM(emu.Addr(), emu.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	return awshttp.NewBuildableClient().WithTransportOptions(opt)
}

func emuDriver(t testing.TB, mod func(*Config)) *Driver {
	t.Helper()
	cfg := Config{HTTPClient: emuBuildable(t), MaxBackoff: 20 * time.Millisecond, Timeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDriver(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// customer is one onboarded customer account.
type customer struct {
	t    testing.TB
	root awscloud.Credentials
	o    awsonboard.Options
	res  awsonboard.Result
	kc   *awskms.Client // the customer's admin
	ic   *iam.Client
	org  string
}

func static(c awscloud.Credentials) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")
}

// onboard creates a customer account and runs the onboarding steps
// (internal/awsonboard: the documents of docs/aws.md) for org.
func onboard(t testing.TB, org string, mod func(*awsonboard.Options)) *customer {
	t.Helper()
	root, err := emu.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	c := &customer{t: t, root: root, org: org}
	c.o = awsonboard.Options{HTTPClient: emu.HTTPClient(), Credentials: static(root), Region: region,
		VendorPrincipalARN: emu.Vendor().ARN, ExternalID: org}
	cfg := aws.Config{Region: region, HTTPClient: emu.HTTPClient(), Credentials: static(root)}
	c.kc, c.ic = awskms.NewFromConfig(cfg), iam.NewFromConfig(cfg)
	if mod != nil {
		mod(&c.o)
	}
	if c.res, err = awsonboard.Run(context.Background(), c.o); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *customer) roleARN() string {
	if c.res.RoleARN != "" {
		return c.res.RoleARN
	}
	name := c.o.RoleName
	if name == "" {
		name = "ekm-kms-access"
	}
	return "arn:aws:iam::" + c.root.AccountID + ":role/" + name
}

func (c *customer) params(kmsARN string) kms.Params {
	if kmsARN == "" {
		kmsARN = c.res.KeyARN
	}
	return kms.Params{ParamRoleARN: c.roleARN(), ParamKMSARN: kmsARN, ParamExternalID: c.org}
}

func (c *customer) open(t testing.TB, d *Driver, kmsARN string) *Provider {
	t.Helper()
	p, err := d.open(c.org, c.params(kmsARN))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (c *customer) roleName() string { return c.roleARN()[strings.LastIndex(c.roleARN(), "/")+1:] }

func (c *customer) detach() error {
	_, err := c.ic.DetachRolePolicy(context.Background(), &iam.DetachRolePolicyInput{RoleName: aws.String(c.roleName()), PolicyArn: aws.String(c.res.PolicyARN)})
	return err
}

func (c *customer) attach() error {
	_, err := c.ic.AttachRolePolicy(context.Background(), &iam.AttachRolePolicyInput{RoleName: aws.String(c.roleName()), PolicyArn: aws.String(c.res.PolicyARN)})
	return err
}

func (c *customer) newKey(t testing.TB, spec types.KeySpec) string {
	t.Helper()
	in := &awskms.CreateKeyInput{KeySpec: spec}
	if spec != types.KeySpecSymmetricDefault {
		in.KeyUsage = types.KeyUsageTypeEncryptDecrypt
	}
	out, err := c.kc.CreateKey(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.KeyMetadata.Arn)
}

var orgSeq atomic.Int64

// newOrg returns a fresh org id, so that every customer has its own
// credentials cache in a shared driver.
func newOrg() string {
	return fmt.Sprintf("org-%026d", orgSeq.Add(1))
}

func key32() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

type wantErr struct {
	class kms.Class
	code  string
	step  string
}

func checkErr(t *testing.T, what string, err error, want wantErr, mentions ...string) *kms.Error {
	t.Helper()
	var ke *kms.Error
	if !errors.As(err, &ke) {
		t.Fatalf("%s: want *kms.Error %s, got %v", what, want.code, err)
	}
	if ke.Class != want.class || ke.Code != want.code || ke.Step != want.step {
		t.Fatalf("%s: got %s/%s step %q (%s), want %s/%s step %q", what, ke.Class, ke.Code, ke.Step, ke.Message, want.class, want.code, want.step)
	}
	for _, m := range mentions {
		if !strings.Contains(ke.Message, m) {
			t.Fatalf("%s: message does not mention %q: %s", what, m, ke.Message)
		}
	}
	if i := strings.Index(ke.Message, "ASIA"); i >= 0 {
		t.Fatalf("%s: message leaks a session key: %s", what, ke.Message)
	}
	return ke
}

func TestConformanceEmulator(t *testing.T) {
	d := emuDriver(t, nil) // one driver: sessions and clients are shared across customers
	kmstest.Run(t, func(t *testing.T) kmstest.Harness {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		if err := p.Preflight(context.Background()); err != nil {
			t.Fatalf("Preflight: %v", err)
		}
		var mu sync.Mutex
		return kmstest.Harness{
			Provider: p, Driver: d, OrgID: c.org,
			// AWS rotation keeps the key ARN and old material: transparent
			// to ekm (TestRotationIsTransparent), so no Rotate here.
			Revoke:  func(context.Context) error { mu.Lock(); defer mu.Unlock(); return c.detach() },
			Restore: func(context.Context) error { mu.Lock(); defer mu.Unlock(); return c.attach() },
		}
	})
}

// TestConformanceAlias runs the suite with an alias ARN registered.
func TestConformanceAlias(t *testing.T) {
	d := emuDriver(t, nil)
	kmstest.Run(t, func(t *testing.T) kmstest.Harness {
		c := onboard(t, newOrg(), func(o *awsonboard.Options) { o.Alias = "alias/ekm" })
		aliasARN := strings.Replace(c.res.KeyARN, "key/"+c.res.KeyID, "alias/ekm", 1)
		p := c.open(t, d, aliasARN)
		return kmstest.Harness{Provider: p, Driver: d, OrgID: c.org,
			Revoke: func(ctx context.Context) error {
				_, err := c.kc.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: aws.String(c.res.KeyARN)})
				return err
			},
			Restore: func(ctx context.Context) error {
				_, err := c.kc.EnableKey(ctx, &awskms.EnableKeyInput{KeyId: aws.String(c.res.KeyARN)})
				return err
			},
		}
	})
}

// TestRotationIsTransparent: automatic or on-demand rotation keeps the key
// ARN (the recorded KEK version) and old material, so nothing changes for
// ekm and old wraps stay readable.
func TestRotationIsTransparent(t *testing.T) {
	ctx := context.Background()
	d := emuDriver(t, nil)
	c := onboard(t, newOrg(), nil)
	p := c.open(t, d, "")
	pt := key32()
	old, err := p.Wrap(ctx, pt, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if old.KeyVersion != c.res.KeyARN || old.Algorithm != Algorithm {
		t.Fatalf("wrap recorded %q %q", old.KeyVersion, old.Algorithm)
	}
	if _, err := c.kc.RotateKeyOnDemand(ctx, &awskms.RotateKeyOnDemandInput{KeyId: aws.String(c.res.KeyARN)}); err != nil {
		t.Fatal(err)
	}
	info, err := p.Describe(ctx)
	if err != nil || info.CurrentVersion != old.KeyVersion {
		t.Fatalf("Describe after rotation: %+v %v", info, err)
	}
	nw, err := p.Wrap(ctx, pt, testAAD)
	if err != nil || nw.KeyVersion != old.KeyVersion {
		t.Fatalf("wrap after rotation: %+v %v", nw.KeyVersion, err)
	}
	for _, w := range []kms.Wrapped{old, nw} {
		got, err := p.Unwrap(ctx, w, testAAD)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("unwrap after rotation: %v", err)
		}
	}
}
