package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/emulator/awscloud"
	"github.com/ekm-dev/ekm/internal/awsonboard"
	"github.com/ekm-dev/ekm/store"
)

func init() { devClouds["aws"] = runDevAWS }

// devAWSRegion is the region of the demo customer's key.
const devAWSRegion = "eu-west-1"

// awsDemo is what `ekm dev --cloud aws` keeps in <data-dir>/aws-demo.json
// to reuse its demo org and customer account on the next start. It holds
// the demo account's root key: a development sandbox whose data dir is
// private (0700); the customer's commands printed need it.
type awsDemo struct {
	OrgID           string `json:"org_id"`
	AdminKey        string `json:"admin_key"`
	AccountID       string `json:"account_id"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	KeyARN          string `json:"key_arn"`
	AliasARN        string `json:"alias_arn"`
	RoleARN         string `json:"role_arn"`
	PolicyARN       string `json:"policy_arn"`
}

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
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("%w (stop the other server, or pass --addr)", err)
	}
	ln.Close()
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	emuAddr := c.EmulatorAddr
	if !c.EmulatorAddrSet {
		emuAddr = "127.0.0.1:8444"
	}
	emu, err := awscloud.New(awscloud.Options{Addr: emuAddr, StateDir: filepath.Join(dataDir, "aws-emulator")})
	if err != nil {
		return err
	}
	if err := emu.Start(); err != nil {
		return fmt.Errorf("starting the AWS emulator: %w (stop the other emulator, or pass --emulator-addr)", err)
	}
	defer emu.Close()
	v := emu.Vendor()
	for _, k := range devAWSEnv {
		os.Unsetenv(k)
	}
	os.Setenv("AWS_ACCESS_KEY_ID", v.AccessKeyID)
	os.Setenv("AWS_SECRET_ACCESS_KEY", v.SecretAccessKey)
	os.Setenv("AWS_CONFIG_FILE", os.DevNull)
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	cfg := app.Config{Addr: c.Addr, DataDir: dataDir, ProbeInterval: c.ProbeInterval,
		AWS: app.AWSConfig{Enabled: true, DialOverride: emu.Addr(), CAFile: emu.CAFile()}}
	a, err := app.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()

	statePath := filepath.Join(dataDir, "aws-demo.json")
	demo, note, err := loadAWSDemo(ctx, statePath, a.Store, emu)
	if err != nil {
		return err
	}
	if demo == nil {
		if demo, err = newAWSDemo(ctx, a.Store, emu); err != nil {
			return err
		}
		if err := saveAWSDemo(statePath, demo); err != nil {
			return err
		}
	}

	serverErr := make(chan error, 1)
	ready := make(chan string, 1)
	go func() { serverErr <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	var base string
	select {
	case base = <-ready:
	case err := <-serverErr:
		return err
	}
	base = "http://" + base
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

Register the customer's key, create a project on it, and upload a file:

  export ADMIN=%[10]s
  curl -s %[2]s/v1/organization/external_keys -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d '%[16]s'
  export EXTKEY=extkey_...   # the "id" printed above
  curl -s %[2]s/v1/organization/projects -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"demo\",\"external_key_id\":\"$EXTKEY\"}"
  export PROJECT=proj_...    # the "id" printed above
  curl -s %[2]s/v1/organization/projects/$PROJECT/service_accounts -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d '{"name":"backend"}'
  export PROJ=sk-proj-...    # api_key.value printed above
  curl -s %[2]s/v1/files -H "Authorization: Bearer $PROJ" -F purpose=assistants -F file=@README.md
  curl -s %[2]s/v1/files -H "Authorization: Bearer $PROJ"

Revoke access as the customer would (aws kms disable-key), then watch reads fail within the probe interval:

  %[17]s

Restore it (aws kms enable-key); reads work again within the probe interval, or at once after
POST /v1/organization/external_keys/$EXTKEY/validate:

  %[18]s

The customer's steps and every other way to revoke are in docs/aws.md. Ctrl-C stops both.
`, note, base, dataDir, statePath, emu.Addr(), emu.CAFile(), emu.ControlURL(), v.ARN, demo.OrgID, demo.AdminKey,
		demo.AccountID, demo.KeyARN, demo.AliasARN, demo.RoleARN, c.ProbeInterval, reg, kmsCall("DisableKey"), kmsCall("EnableKey"))

	select {
	case err := <-serverErr:
		return err
	case <-ctx.Done():
		return <-serverErr
	}
}

// loadAWSDemo returns the demo of an earlier run if its org and account
// still exist (nil otherwise), and a line saying which it is.
func loadAWSDemo(ctx context.Context, path string, st store.Store, emu *awscloud.Emulator) (*awsDemo, string, error) {
	fresh := "Created a new demo org and customer account."
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fresh, nil
	}
	if err != nil {
		return nil, "", err
	}
	var d awsDemo
	if err := json.Unmarshal(b, &d); err != nil || d.OrgID == "" || d.AccountID == "" {
		return nil, fresh + " (" + path + " was unreadable)", nil
	}
	if _, err := st.GetOrg(ctx, d.OrgID); errors.Is(err, store.ErrNotFound) {
		return nil, fresh + " (the earlier demo org is gone from the store)", nil
	} else if err != nil {
		return nil, "", err
	}
	if !awsAccountExists(emu, d.AccountID) {
		return nil, fresh + " (the earlier account is gone from the emulator)", nil
	}
	note := "Reusing the demo org and customer account of an earlier run (delete " + path + " to start afresh)."
	if _, err := st.APIKeyByHash(ctx, auth.Hash(d.AdminKey)); errors.Is(err, store.ErrNotFound) {
		_, d.AdminKey, err = adminapi.CreateAdminKey(ctx, st, d.OrgID, "ekm dev", time.Now())
		if err != nil {
			return nil, "", err
		}
		if err := saveAWSDemo(path, &d); err != nil {
			return nil, "", err
		}
		note += " Its admin key was deleted: this is a new one."
	} else if err != nil {
		return nil, "", err
	}
	return &d, note, nil
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

// newAWSDemo creates the demo org and a customer account that has done the
// onboarding of docs/aws.md for it (internal/awsonboard: a symmetric key
// with an alias, the permission policy, the role trusting ekm's principal
// with the org id as ExternalId, attached).
func newAWSDemo(ctx context.Context, st store.Store, emu *awscloud.Emulator) (*awsDemo, error) {
	org, adminKey, err := adminapi.CreateOrg(ctx, st, "Demo Org (AWS)", time.Now())
	if err != nil {
		return nil, err
	}
	root, err := emu.CreateAccount()
	if err != nil {
		return nil, err
	}
	res, err := awsonboard.Run(ctx, awsonboard.Options{HTTPClient: emu.HTTPClient(),
		Credentials: credentials.NewStaticCredentialsProvider(root.AccessKeyID, root.SecretAccessKey, ""), Region: devAWSRegion,
		VendorPrincipalARN: emu.Vendor().ARN, ExternalID: org.ID, Alias: "alias/ekm-demo", Description: "ekm dev demo KEK"})
	if err != nil {
		return nil, fmt.Errorf("onboarding the demo account: %w", err)
	}
	alias := strings.Replace(res.KeyARN, "key/"+res.KeyID, res.Alias, 1)
	return &awsDemo{OrgID: org.ID, AdminKey: adminKey, AccountID: root.AccountID, AccessKeyID: root.AccessKeyID,
		SecretAccessKey: root.SecretAccessKey, KeyARN: res.KeyARN, AliasARN: alias, RoleARN: res.RoleARN, PolicyARN: res.PolicyARN}, nil
}

func saveAWSDemo(path string, d *awsDemo) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
