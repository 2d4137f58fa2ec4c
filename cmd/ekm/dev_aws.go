package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/emulator/awscloud"
	"github.com/ekm-dev/ekm/internal/awsonboard"
)

func init() { devClouds["aws"] = runDevAWS }

// devAWSRegion is the region of the demo customer's key.
const devAWSRegion = "eu-west-1"

// awsDemo is what `ekm dev --cloud aws` keeps in <data-dir>/aws-demo.json
// to reuse its demo org and customer account on the next start. It holds
// the demo account's root key: a development sandbox whose data dir is
// private (0700); the customer's commands printed need it.
type awsDemo struct {
	devDemo
	AccountID       string `json:"account_id"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	KeyARN          string `json:"key_arn"`
	AliasARN        string `json:"alias_arn"`
	RoleARN         string `json:"role_arn"`
	PolicyARN       string `json:"policy_arn"`
}

func (d *awsDemo) customer() string { return d.AccountID }

// devAWSEnv are the AWS SDK variables `ekm dev --cloud aws` replaces in its
// own environment: ekm's identity is given to the server exactly as an
// operator would, through the SDK's default chain.
var devAWSEnv = []string{"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CA_BUNDLE", "AWS_WEB_IDENTITY_TOKEN_FILE",
	"AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"}

// runDevAWS runs the AWS emulator and the server wired together: ekm's
// identity is the emulator's vendor user (its keys in this process's
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, read by the SDK's default
// chain), and a demo customer account has done onboarding steps 1-4 of
// docs/aws.md for the demo org.
func runDevAWS(ctx context.Context, c devConfig, out io.Writer) error {
	var (
		emu  *awscloud.Emulator
		demo awsDemo
	)
	return devRun(ctx, c, out, devCloud{
		Name: "AWS", EmulatorAddr: "127.0.0.1:8444", EmulatorDir: "aws-emulator", DemoFile: "aws-demo.json", DemoOrg: "Demo Org (AWS)",
		Customer: "account", FreshNote: "Created a new demo org and customer account.%s",
		Demo: &demo,
		NewEmulator: func(addr, stateDir string) (devEmulator, error) {
			var err error
			emu, err = awscloud.New(awscloud.Options{Addr: addr, StateDir: stateDir})
			return emu, err
		},
		Identity: func(cfg *app.Config) {
			v := emu.Vendor()
			for _, k := range devAWSEnv {
				os.Unsetenv(k)
			}
			os.Setenv("AWS_ACCESS_KEY_ID", v.AccessKeyID)
			os.Setenv("AWS_SECRET_ACCESS_KEY", v.SecretAccessKey)
			os.Setenv("AWS_CONFIG_FILE", os.DevNull)
			os.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
			os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			cfg.AWS = app.AWSConfig{Enabled: true, DialOverride: emu.Addr(), CAFile: emu.CAFile()}
		},
		CustomerExists: func(id string) bool { return awsAccountExists(emu, id) },
		Onboard: func(ctx context.Context, org devDemo) (err error) {
			demo, err = newAWSDemo(ctx, emu, org)
			return err
		},
		NextSteps: func(out io.Writer, r devRunning) {
			reg, _ := json.Marshal(map[string]string{"type": "aws", "name": "demo", "role_arn": demo.RoleARN, "kms_arn": demo.KeyARN, "external_id": demo.OrgID})
			// The customer's own calls, signed with its keys (curl's SigV4), to the
			// real host names, dialled to the emulator.
			kmsHost := "kms." + devAWSRegion + ".amazonaws.com"
			kmsCall := func(op string) string {
				return fmt.Sprintf(`curl -s --cacert %s --connect-to %s:443:%s --aws-sigv4 "aws:amz:%s:kms" --user "%s:%s" \
    -H 'Content-Type: application/x-amz-json-1.1' -H 'X-Amz-Target: TrentService.%s' https://%s/ -d '{"KeyId":"%s"}'`,
					emu.CAFile(), kmsHost, emu.Addr(), devAWSRegion, demo.AccessKeyID, demo.SecretAccessKey, op, kmsHost, demo.KeyARN)
			}
			fmt.Fprintf(out, `ekm dev is running (AWS).
  %[1]s
  ekm server:       %[2]s
  data dir:         %[3]s  (demo org and account kept in %[4]s)
  AWS emulator:     %[5]s  (CA %[6]s; control API %[7]s)
  ekm's identity:   %[8]s (AWS_ACCESS_KEY_ID of this process, from the SDK's default chain)
  demo org:         %[9]s
  admin key:        %[10]s
  customer account: %[11]s, steps 1-4 of docs/aws.md done:
                    key   %[12]s
                    alias %[13]s
                    role  %[14]s
                          (trusts ekm with sts:ExternalId %[9]s; permission policy attached)
  health probe:     every %[15]s (--probe-interval)

%[16]s
Revoke access as the customer would (aws kms disable-key), then watch reads fail within the probe interval:

  %[17]s

Restore it (aws kms enable-key); reads work again within the probe interval, or at once after
POST /v1/organization/external_keys/$EXTKEY/validate:

  %[18]s

The customer's steps and every other way to revoke are in docs/aws.md. Ctrl-C stops both.
`, r.Note, r.Base, r.DataDir, r.StatePath, emu.Addr(), emu.CAFile(), emu.ControlURL(), emu.Vendor().ARN, demo.OrgID, demo.AdminKey,
				demo.AccountID, demo.KeyARN, demo.AliasARN, demo.RoleARN, r.ProbeInterval, devRegisterSteps(r.Base, demo.AdminKey, string(reg)),
				kmsCall("DisableKey"), kmsCall("EnableKey"))
		},
	})
}

// awsAccountExists asks the emulator's control API for its accounts.
func awsAccountExists(emu *awscloud.Emulator, id string) bool {
	resp, err := emu.HTTPClient().Get(emu.ControlURL() + "/accounts")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var list struct {
		Accounts []struct {
			AccountID string `json:"account_id"`
		} `json:"accounts"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list); err != nil {
		return false
	}
	for _, a := range list.Accounts {
		if a.AccountID == id {
			return true
		}
	}
	return false
}

// newAWSDemo makes a customer account that has done the onboarding of
// docs/aws.md for the demo org (internal/awsonboard: a symmetric key with
// an alias, the permission policy, the role trusting ekm's principal with
// the org id as ExternalId, attached).
func newAWSDemo(ctx context.Context, emu *awscloud.Emulator, org devDemo) (awsDemo, error) {
	root, err := emu.CreateAccount()
	if err != nil {
		return awsDemo{}, err
	}
	res, err := awsonboard.Run(ctx, awsonboard.Options{HTTPClient: emu.HTTPClient(),
		Credentials: credentials.NewStaticCredentialsProvider(root.AccessKeyID, root.SecretAccessKey, ""), Region: devAWSRegion,
		VendorPrincipalARN: emu.Vendor().ARN, ExternalID: org.OrgID, Alias: "alias/ekm-demo", Description: "ekm dev demo KEK"})
	if err != nil {
		return awsDemo{}, fmt.Errorf("onboarding the demo account: %w", err)
	}
	alias := strings.Replace(res.KeyARN, "key/"+res.KeyID, res.Alias, 1)
	return awsDemo{devDemo: org, AccountID: root.AccountID, AccessKeyID: root.AccessKeyID,
		SecretAccessKey: root.SecretAccessKey, KeyARN: res.KeyARN, AliasARN: alias, RoleARN: res.RoleARN, PolicyARN: res.PolicyARN}, nil
}
