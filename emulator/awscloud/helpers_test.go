package awscloud

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

// awsEnv are the variables the SDK reads; tests clear them so they never
// depend on (or reach) a developer's AWS setup.
var awsEnv = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
	"AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_STS",
	"AWS_ENDPOINT_URL_IAM", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_CONFIG_FILE",
	"AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS",
	"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"}

// shared is the package's emulator; tests that move its clock or
// restart it start their own.
var shared *Emulator

func TestMain(m *testing.M) {
	for _, k := range awsEnv {
		os.Unsetenv(k)
	}
	e, err := New(Options{})
	if err != nil {
		panic(err)
	}
	if err := e.Start(); err != nil {
		panic(err)
	}
	shared = e
	code := m.Run()
	e.Close()
	os.Exit(code)
}

func startEmu(t *testing.T, opts Options) *Emulator {
	t.Helper()
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// cfg is an SDK configuration that reaches the emulator through its HTTP
// client (a dial override; production host names, real TLS).
func cfg(e *Emulator, region string, creds aws.CredentialsProvider) aws.Config {
	return aws.Config{Region: region, Credentials: creds, HTTPClient: e.HTTPClient(), RetryMaxAttempts: 3}
}

// buildableCfg uses the SDK's own BuildableClient with the emulator's
// dial and CA, as the protocol notes recommend.
func buildableCfg(e *Emulator, region string, creds aws.CredentialsProvider) aws.Config {
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		base := e.HTTPClient().Transport.(*http.Transport)
		tr.DialContext = base.DialContext
		tr.TLSClientConfig = base.TLSClientConfig.Clone()
		tr.Proxy = nil
	})
	return aws.Config{Region: region, Credentials: creds, HTTPClient: hc}
}

func static(c Credentials) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")
}

func kmsClient(e *Emulator, region string, creds aws.CredentialsProvider, optFns ...func(*kms.Options)) *kms.Client {
	return kms.NewFromConfig(cfg(e, region, creds), optFns...)
}

func noRetry(o *kms.Options) { o.RetryMaxAttempts = 1 }

func stsClient(e *Emulator, region string, creds aws.CredentialsProvider) *sts.Client {
	return sts.NewFromConfig(cfg(e, region, creds))
}

func iamClient(e *Emulator, creds aws.CredentialsProvider) *iam.Client {
	return iam.NewFromConfig(cfg(e, "us-east-1", creds))
}

// assumed returns cached credentials of role roleARN assumed by the
// vendor with externalID.
func assumed(e *Emulator, roleARN, externalID string) aws.CredentialsProvider {
	st := stsClient(e, "us-east-1", static(e.Vendor()))
	return aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(st, roleARN, func(o *stscreds.AssumeRoleOptions) {
		if externalID != "" {
			o.ExternalID = aws.String(externalID)
		}
		o.RoleSessionName = "ekm"
	}))
}

func apiCode(t *testing.T, err error) (string, string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want an API error, got %T: %v", err, err)
	}
	return ae.ErrorCode(), ae.ErrorMessage()
}

func wantCode(t *testing.T, err error, code string) string {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s, got success", code)
	}
	got, msg := apiCode(t, err)
	if got != code {
		t.Fatalf("want %s, got %s: %s", code, got, msg)
	}
	return msg
}

var ctx = context.Background()

func fixedClock() func() time.Time {
	t0 := time.Now()
	return func() time.Time { return t0 }
}

func urlDecode(s string) (string, error) { return url.QueryUnescape(s) }

func stsAssumeInput(roleARN, externalID, policy string) *sts.AssumeRoleInput {
	in := &sts.AssumeRoleInput{RoleArn: aws.String(roleARN), RoleSessionName: aws.String("ekm"), ExternalId: aws.String(externalID)}
	if policy != "" {
		in.Policy = aws.String(policy)
	}
	return in
}

// retryFast keeps the SDK's retry decisions but not its backoff.
func retryFast(r aws.Retryer) aws.Retryer { return retry.AddWithMaxBackoffDelay(r, time.Millisecond) }
