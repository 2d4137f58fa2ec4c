package awscloud

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// trustFor is a trust policy trusting principal with an ExternalId.
func trustFor(principal, externalID string) string {
	cond := ""
	if externalID != "" {
		cond = `,"Condition":{"StringEquals":{"sts:ExternalId":"` + externalID + `"}}`
	}
	return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + principal + `"},"Action":"sts:AssumeRole"` + cond + `}]}`
}

func createRole(t *testing.T, e *Emulator, root Credentials, name, trust string) string {
	t.Helper()
	out, err := iamClient(e, static(root)).CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(name), AssumeRolePolicyDocument: aws.String(trust)})
	if err != nil {
		t.Fatal(err)
	}
	return *out.Role.Arn
}

func assumeRole(e *Emulator, caller aws.CredentialsProvider, roleARN, externalID string, dur int32) (*sts.AssumeRoleOutput, error) {
	in := &sts.AssumeRoleInput{RoleArn: aws.String(roleARN), RoleSessionName: aws.String("s1")}
	if externalID != "" {
		in.ExternalId = aws.String(externalID)
	}
	if dur != 0 {
		in.DurationSeconds = aws.Int32(dur)
	}
	return stsClient(e, "us-east-1", caller).AssumeRole(ctx, in)
}

func TestGetCallerIdentity(t *testing.T) {
	e := shared
	v := e.Vendor()
	out, err := stsClient(e, "eu-west-1", static(v)).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *out.Arn != v.ARN || *out.Account != v.AccountID || !strings.HasPrefix(*out.UserId, "AIDA") || v.UserName != "ekm" {
		t.Fatalf("%+v %+v", out, v)
	}
	// Global endpoint (aws-global signs as us-east-1) and the SDK's own
	// BuildableClient.
	out, err = sts.NewFromConfig(buildableCfg(e, "aws-global", static(v))).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || *out.Arn != v.ARN {
		t.Fatal(err)
	}
	root, _ := e.CreateAccount()
	out, err = stsClient(e, "us-east-1", static(root)).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || *out.Arn != "arn:aws:iam::"+root.AccountID+":root" || *out.UserId != root.AccountID {
		t.Fatalf("%v %+v", err, out)
	}
}

func TestAssumeRole(t *testing.T) {
	e := shared
	v := e.Vendor()
	cust, _ := e.CreateAccount()
	roleARN := createRole(t, e, cust, "ekm-access", trustFor(v.ARN, "org-abc"))
	out, err := assumeRole(e, static(v), roleARN, "org-abc", 900)
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	if !strings.HasPrefix(*c.AccessKeyId, "ASIA") || *c.SessionToken == "" || c.Expiration.Sub(e.Now()) > 901*time.Second ||
		*out.AssumedRoleUser.Arn != "arn:aws:sts::"+cust.AccountID+":assumed-role/ekm-access/s1" || !strings.HasSuffix(*out.AssumedRoleUser.AssumedRoleId, ":s1") {
		t.Fatalf("%+v %+v", c, out.AssumedRoleUser)
	}
	sess := credentials.NewStaticCredentialsProvider(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken)
	who, err := stsClient(e, "us-east-1", sess).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || *who.Arn != *out.AssumedRoleUser.Arn || *who.Account != cust.AccountID {
		t.Fatalf("%v %+v", err, who)
	}
	denied := "User: " + v.ARN + " is not authorized to perform: sts:AssumeRole on resource: "
	for name, tc := range map[string]struct{ role, ext string }{
		"wrong external id":   {roleARN, "org-other"},
		"missing external id": {roleARN, ""},
		"no such role":        {"arn:aws:iam::" + cust.AccountID + ":role/nope", "org-abc"},
		"no such account":     {"arn:aws:iam::999999999999:role/ekm-access", "org-abc"},
	} {
		_, err := assumeRole(e, static(v), tc.role, tc.ext, 0)
		if msg := wantCode(t, err, "AccessDenied"); msg != denied+tc.role {
			t.Errorf("%s: %q", name, msg)
		}
	}
	// A role that does not trust the vendor.
	other := createRole(t, e, cust, "other", trustFor("arn:aws:iam::"+cust.AccountID+":root", ""))
	_, err = assumeRole(e, static(v), other, "org-abc", 0)
	wantCode(t, err, "AccessDenied")
	// Root users may not assume roles.
	_, err = assumeRole(e, static(cust), other, "", 0)
	if msg := wantCode(t, err, "AccessDenied"); msg != "Roles may not be assumed by root accounts." {
		t.Fatal(msg)
	}
	// Cross-account: the trust policy names the user, but the user's own
	// identity policy must allow sts:AssumeRole too.
	bare, err := e.CreateUser(v.AccountID, "no-perms", "")
	if err != nil {
		t.Fatal(err)
	}
	r2 := createRole(t, e, cust, "trusts-bare", trustFor(bare.ARN, ""))
	_, err = assumeRole(e, static(bare), r2, "", 0)
	wantCode(t, err, "AccessDenied")
	// Same account: the trust policy alone suffices.
	local, _ := e.CreateUser(cust.AccountID, "local", "")
	r3 := createRole(t, e, cust, "trusts-local", trustFor(local.ARN, ""))
	if _, err := assumeRole(e, static(local), r3, "", 0); err != nil {
		t.Fatal(err)
	}
	// Durations: above the role's maximum, and role chaining's 1 hour.
	_, err = assumeRole(e, static(v), roleARN, "org-abc", 7200)
	if msg := wantCode(t, err, "ValidationError"); !strings.Contains(msg, "MaxSessionDuration") {
		t.Fatal(msg)
	}
	_, err = assumeRole(e, static(v), roleARN, "org-abc", 60)
	wantCode(t, err, "ValidationError")
	self := createRole(t, e, cust, "chain", trustFor(roleARN, ""))
	_, err = assumeRole(e, sess, self, "", 3601)
	if msg := wantCode(t, err, "ValidationError"); !strings.Contains(msg, "role chaining") {
		t.Fatal(msg)
	}
	if _, err := assumeRole(e, sess, self, "", 3600); err != nil {
		t.Fatal(err)
	}
	// Parameters the emulator does not honour are refused, not ignored.
	_, err = stsClient(e, "us-east-1", static(v)).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(roleARN),
		RoleSessionName: aws.String("s"), ExternalId: aws.String("org-abc"), SerialNumber: aws.String("arn:aws:iam::1:mfa/x"), TokenCode: aws.String("123456")})
	wantCode(t, err, "ValidationError")
	_, err = stsClient(e, "us-east-1", static(v)).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(roleARN), RoleSessionName: aws.String("bad:name")})
	if msg := wantCode(t, err, "ValidationError"); !strings.Contains(msg, "roleSessionName") {
		t.Fatal(msg)
	}
}

func TestAssumeRoleTrustDetails(t *testing.T) {
	e := shared
	v := e.Vendor()
	cust, _ := e.CreateAccount()
	ic := iamClient(e, static(cust))
	// A principal that does not exist is refused at write time.
	_, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("x"), AssumeRolePolicyDocument: aws.String(trustFor("arn:aws:iam::"+v.AccountID+":role/ghost", ""))})
	if msg := wantCode(t, err, "MalformedPolicyDocument"); !strings.Contains(msg, `Invalid principal in policy: "AWS":"arn:aws:iam::`) {
		t.Fatal(msg)
	}
	_, err = ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("x"), AssumeRolePolicyDocument: aws.String("%7B%7D")})
	if msg := wantCode(t, err, "MalformedPolicyDocument"); msg != "This policy contains invalid Json" {
		t.Fatal(msg)
	}
	// The document comes back URL-encoded, as IAM returns it.
	trust := trustFor(v.ARN, "org-1")
	roleARN := createRole(t, e, cust, "enc", trust)
	got, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("enc")})
	if err != nil {
		t.Fatal(err)
	}
	if dec, _ := urlDecode(*got.Role.AssumeRolePolicyDocument); dec != trust || strings.Contains(*got.Role.AssumeRolePolicyDocument, "{") {
		t.Fatalf("%s", *got.Role.AssumeRolePolicyDocument)
	}
	// aws:PrincipalArn and StringLike conditions.
	if _, err := ic.UpdateAssumeRolePolicy(ctx, &iam.UpdateAssumeRolePolicyInput{RoleName: aws.String("enc"), PolicyDocument: aws.String(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + v.AccountID + `"},"Action":"sts:AssumeRole","Condition":{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/ek?"},"StringEquals":{"sts:ExternalId":["org-1","org-2"]}}}]}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := assumeRole(e, static(v), roleARN, "org-2", 0); err != nil {
		t.Fatal(err)
	}
	// An explicit deny wins.
	if _, err := ic.UpdateAssumeRolePolicy(ctx, &iam.UpdateAssumeRolePolicyInput{RoleName: aws.String("enc"), PolicyDocument: aws.String(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + v.ARN + `"},"Action":"sts:AssumeRole"},{"Effect":"Deny","Principal":"*","Action":"sts:*","Condition":{"StringEquals":{"sts:ExternalId":"org-2"}}}]}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := assumeRole(e, static(v), roleARN, "org-1", 0); err != nil {
		t.Fatal(err)
	}
	_, err = assumeRole(e, static(v), roleARN, "org-2", 0)
	wantCode(t, err, "AccessDenied")
	// Principals are kept by unique id: a deleted and re-created user no
	// longer matches, and the policy shows the old id.
	u, _ := e.CreateUser(cust.AccountID, "temp", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}`)
	r := createRole(t, e, cust, "by-id", trustFor(u.ARN, ""))
	e.mu.Lock()
	delete(e.st.Accounts[cust.AccountID].Users, "temp")
	e.mu.Unlock()
	u2, _ := e.CreateUser(cust.AccountID, "temp", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}`)
	_, err = assumeRole(e, static(u2), r, "", 0)
	wantCode(t, err, "AccessDenied")
	got, _ = ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("by-id")})
	if dec, _ := urlDecode(*got.Role.AssumeRolePolicyDocument); !strings.Contains(dec, `"AIDA`) {
		t.Fatalf("%s", dec)
	}
}

func TestRoleSessionsAndCredentialCache(t *testing.T) {
	e := startEmu(t, Options{Now: fixedClock()})
	v := e.Vendor()
	cust, _ := e.CreateAccount()
	kc := kmsClient(e, "us-east-1", static(cust))
	key, err := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	roleARN := createRole(t, e, cust, "r", trustFor(v.ARN, "org-o"))
	if _, err := iamClient(e, static(cust)).PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("r"), PolicyName: aws.String("p"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:DescribeKey","Resource":"*"}]}`)}); err != nil {
		t.Fatal(err)
	}
	out, err := assumeRole(e, static(v), roleARN, "org-o", 900)
	if err != nil {
		t.Fatal(err)
	}
	sess := credentials.NewStaticCredentialsProvider(*out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken)
	if _, err := kmsClient(e, "us-east-1", sess).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: key.KeyMetadata.Arn}); err != nil {
		t.Fatal(err)
	}
	// After expiry the session token is refused (the SDK first corrects
	// its clock skew from the emulator's Date header, then gets the
	// expired-token error).
	e.AdvanceClock(16 * time.Minute)
	_, err = kmsClient(e, "us-east-1", sess).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: key.KeyMetadata.Arn})
	wantCode(t, err, "ExpiredTokenException")
	_, err = stsClient(e, "us-east-1", sess).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantCode(t, err, "ExpiredToken")
	// A credentials cache over the AssumeRole provider renews.
	prov := aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient(e, "us-east-1", static(v)), roleARN,
		func(o *stscreds.AssumeRoleOptions) { o.ExternalID = aws.String("org-o") }))
	if _, err := kmsClient(e, "us-east-1", prov).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: key.KeyMetadata.Arn}); err != nil {
		t.Fatal(err)
	}
	// Deleting the role's policy revokes the session's access at once.
	if _, err := iamClient(e, static(cust)).DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String("r"), PolicyName: aws.String("p")}); err != nil {
		t.Fatal(err)
	}
	_, err = kmsClient(e, "us-east-1", prov).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: key.KeyMetadata.Arn})
	wantCode(t, err, "AccessDeniedException")
}

// TestWebIdentity: the vendor runs with a web identity (e.g. a Kubernetes
// service account token) and exchanges it for a role in its own account.
func TestWebIdentity(t *testing.T) {
	e := shared
	v := e.Vendor()
	issuer := "https://oidc.example.com/cluster"
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "kid": "k1",
		"x": b64(key.X.FillBytes(make([]byte, 32))), "y": b64(key.Y.FillBytes(make([]byte, 32)))}}})
	if err := e.RegisterIssuer(issuer, jwks); err != nil {
		t.Fatal(err)
	}
	// The vendor account's admin: a user allowed to manage IAM.
	admin, err := e.CreateUser(v.AccountID, "admin", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:*","Resource":"*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	ic := iamClient(e, static(admin))
	prov, err := ic.CreateOpenIDConnectProvider(ctx, &iam.CreateOpenIDConnectProviderInput{Url: aws.String(issuer), ClientIDList: []string{"sts.amazonaws.com"}})
	if err != nil {
		t.Fatal(err)
	}
	trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"` + *prov.OpenIDConnectProviderArn +
		`"},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"oidc.example.com/cluster:sub":"system:serviceaccount:ekm:ekm","oidc.example.com/cluster:aud":"sts.amazonaws.com"}}}]}`
	role, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("ekm-web"), AssumeRolePolicyDocument: aws.String(trust)})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(sub, aud string, exp time.Time) string {
		h := b64([]byte(`{"alg":"ES256","kid":"k1","typ":"JWT"}`))
		c, _ := json.Marshal(map[string]any{"iss": issuer, "sub": sub, "aud": aud, "exp": exp.Unix(), "iat": time.Now().Unix()})
		in := h + "." + b64(c)
		d := sha256.Sum256([]byte(in))
		r, s, _ := ecdsa.Sign(rand.Reader, key, d[:])
		return in + "." + b64(append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...))
	}
	anon := stsClient(e, "us-east-1", nil)
	web := func(token string) (*sts.AssumeRoleWithWebIdentityOutput, error) {
		return anon.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{RoleArn: role.Role.Arn,
			RoleSessionName: aws.String("pod"), WebIdentityToken: aws.String(token)})
	}
	out, err := web(tok("system:serviceaccount:ekm:ekm", "sts.amazonaws.com", e.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if *out.SubjectFromWebIdentityToken != "system:serviceaccount:ekm:ekm" || *out.Audience != "sts.amazonaws.com" {
		t.Fatalf("%+v", out)
	}
	_, err = web(tok("system:serviceaccount:other:x", "sts.amazonaws.com", e.Now().Add(time.Hour)))
	wantCode(t, err, "AccessDenied")
	_, err = web(tok("system:serviceaccount:ekm:ekm", "other-aud", e.Now().Add(time.Hour)))
	wantCode(t, err, "InvalidIdentityToken")
	_, err = web(tok("system:serviceaccount:ekm:ekm", "sts.amazonaws.com", e.Now().Add(-time.Minute)))
	wantCode(t, err, "ExpiredTokenException")
	forged := tok("system:serviceaccount:ekm:ekm", "sts.amazonaws.com", e.Now().Add(time.Hour))
	_, err = web(forged[:len(forged)-4] + "AAAA")
	wantCode(t, err, "InvalidIdentityToken")
	// The web-identity session chains into a customer role like the
	// vendor user does (it is the vendor principal then).
	cust, _ := e.CreateAccount()
	webSess := credentials.NewStaticCredentialsProvider(*out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken)
	if _, err := ic.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("ekm-web"), PolicyName: aws.String("assume"), PolicyDocument: aws.String(VendorPolicy)}); err != nil {
		t.Fatal(err)
	}
	custRole := createRole(t, e, cust, "ekm", trustFor(*role.Role.Arn, "org-9"))
	if _, err := assumeRole(e, webSess, custRole, "org-9", 3600); err != nil {
		t.Fatal(err)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

var _ = big.NewInt
