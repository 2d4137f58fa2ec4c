package awscloud

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ekm-dev/ekm/emulator/emukit"
	"github.com/ekm-dev/ekm/internal/dialoverride"
)

// rawKMS signs and sends a KMS request by hand, to control every part
// of SigV4.
func rawKMS(t *testing.T, e *Emulator, host, akid, secret, token, region string, at time.Time, mutate func(*http.Request)) (int, map[string]any) {
	t.Helper()
	body := []byte(`{}`)
	req, _ := http.NewRequest(http.MethodPost, "https://"+host+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret, SessionToken: token}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "kms", region, at); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(req)
	}
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	if d, err := http.ParseTime(resp.Header.Get("Date")); err != nil || d.Sub(e.Now()).Abs() > 2*time.Second {
		t.Fatalf("Date header %q is not the emulator's time", resp.Header.Get("Date"))
	}
	if resp.Header.Get("X-Amzn-Requestid") == "" {
		t.Fatal("no x-amzn-RequestId")
	}
	return resp.StatusCode, m
}

func TestSigV4Rejections(t *testing.T) {
	e := shared
	root, _ := e.CreateAccount()
	host := "kms.us-east-1.amazonaws.com"
	now := e.Now()
	if st, m := rawKMS(t, e, host, root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now, nil); st != 200 {
		t.Fatalf("%d %v", st, m)
	}
	for name, tc := range map[string]struct {
		akid, secret, token, region string
		at                          time.Time
		mutate                      func(*http.Request)
		code, msg                   string
	}{
		"bad signature":  {root.AccessKeyID, "wrong", "", "us-east-1", now, nil, "InvalidSignatureException", "The request signature we calculated does not match"},
		"wrong region":   {root.AccessKeyID, root.SecretAccessKey, "", "us-west-2", now, nil, "InvalidSignatureException", "Credential should be scoped to a valid region, not 'us-west-2'."},
		"expired date":   {root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now.Add(-6 * time.Minute), nil, "InvalidSignatureException", "Signature expired: "},
		"future date":    {root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now.Add(6 * time.Minute), nil, "InvalidSignatureException", "Signature not yet current: "},
		"unknown key":    {"AKIAUNKNOWNKEY000000", "x", "", "us-east-1", now, nil, "UnrecognizedClientException", "The security token included in the request is invalid."},
		"token on AKIA":  {root.AccessKeyID, root.SecretAccessKey, "tok", "us-east-1", now, nil, "UnrecognizedClientException", ""},
		"tampered body":  {root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now, func(r *http.Request) { r.Header.Set("X-Amz-Target", "TrentService.ListAliases") }, "InvalidSignatureException", ""},
		"no auth":        {root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now, func(r *http.Request) { r.Header.Del("Authorization") }, "MissingAuthenticationTokenException", ""},
		"malformed auth": {root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now, func(r *http.Request) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential") }, "IncompleteSignatureException", ""},
		"sigv4a":         {root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now, func(r *http.Request) { r.Header.Set("Authorization", "AWS4-ECDSA-P256-SHA256 x") }, "IncompleteSignatureException", ""},
		"no date":        {root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now, func(r *http.Request) { r.Header.Del("X-Amz-Date") }, "IncompleteSignatureException", ""},
	} {
		st, m := rawKMS(t, e, host, tc.akid, tc.secret, tc.token, tc.region, tc.at, tc.mutate)
		msg, _ := m["message"].(string)
		if st != 400 || m["__type"] != tc.code || !strings.HasPrefix(msg, tc.msg) {
			t.Errorf("%s: %d %v", name, st, m)
		}
	}
	// Wrong service in the scope (an STS-scoped signature sent to KMS).
	st, m := rawKMS(t, e, host, root.AccessKeyID, root.SecretAccessKey, "", "us-east-1", now, func(r *http.Request) {
		r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/kms/", "/sts/", 1))
	})
	if st != 400 || !strings.HasPrefix(m["message"].(string), "Credential should be scoped to correct service: 'kms'.") {
		t.Fatalf("%d %v", st, m)
	}
	// Credentials of another partition are unknown there.
	if st, m := rawKMS(t, e, "kms.cn-north-1.amazonaws.com.cn", root.AccessKeyID, root.SecretAccessKey, "", "cn-north-1", now, nil); st != 400 || m["__type"] != "UnrecognizedClientException" {
		t.Fatalf("%d %v", st, m)
	}
	// STS / IAM use the Query protocol's codes, through the SDK.
	bad := credentials.NewStaticCredentialsProvider(root.AccessKeyID, "wrong", "")
	_, err := stsClient(e, "us-east-1", bad).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantCode(t, err, "SignatureDoesNotMatch")
	_, err = iamClient(e, credentials.NewStaticCredentialsProvider("AKIANOPE", "x", "")).GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("x")})
	wantCode(t, err, "InvalidClientTokenId")
	// An expired session token: see TestRoleSessionsAndCredentialCache.
	// A temporary key with the wrong token.
	v := e.Vendor()
	r := createRole(t, e, root, "sig", trustFor(v.ARN, ""))
	out, err := assumeRole(e, static(v), r, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, m := rawKMS(t, e, host, *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, "forged", "us-east-1", now, nil); st != 400 || m["__type"] != "UnrecognizedClientException" {
		t.Fatalf("%d %v", st, m)
	}
	// With the right token it authenticates (the role has no identity
	// policy, so ListKeys is then refused by authorization).
	if st, m := rawKMS(t, e, host, *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken, "us-east-1", now, nil); st != 400 || m["__type"] != "AccessDeniedException" {
		t.Fatal(st, m)
	}
}

func TestThrottling(t *testing.T) {
	s := DefaultSettings()
	s.Quotas.SymmetricByRegion["eu-west-1"] = 3
	s.Quotas.Operations["DescribeKey"] = 2
	e := startEmu(t, Options{Now: fixedClock(), Settings: &s})
	root, _ := e.CreateAccount()
	kc := kmsClient(e, "eu-west-1", static(root), noRetry)
	k, _ := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	// The symmetric quota is shared by Encrypt, Decrypt and GenerateDataKey.
	enc, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: k.KeyMetadata.KeyId, NumberOfBytes: aws.Int32(32)}); err != nil {
		t.Fatal(err)
	}
	_, err = kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if msg := wantCode(t, err, "ThrottlingException"); msg != "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls." {
		t.Fatal(msg)
	}
	// Other regions and other accounts have their own budgets.
	if _, err := kmsClient(e, "us-east-1", static(root), noRetry).GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Fatal(err)
	}
	// Per-operation quotas.
	for i := 0; i < 2; i++ {
		if _, err := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: k.KeyMetadata.KeyId}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: k.KeyMetadata.KeyId})
	wantCode(t, err, "ThrottlingException")
	// The next second admits requests again.
	e.AdvanceClock(time.Second)
	if _, err := kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	if e.Settings().Quotas.SymmetricByRegion["us-east-1"] != 100_000 || DefaultSettings().Quotas.Symmetric != 10_000 {
		t.Fatal("defaults")
	}
	bad := e.Settings()
	bad.Quotas.Operations["Nope"] = 1
	if e.SetSettings(bad) == nil {
		t.Fatal("unknown operation accepted")
	}
}

func TestFaultsCountersAndRequestLog(t *testing.T) {
	e := startEmu(t, Options{})
	root, _ := e.CreateAccount()
	kc := kmsClient(e, "us-east-1", static(root))
	k, _ := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	for _, f := range []Fault{
		{Host: "kms", Operation: "kms.Encrypt", Status: 500, Count: 1},
		{Operation: "kms.*", Status: 400, ErrorCode: "ThrottlingException", Count: 1},
		{Host: "kms.us-east-1.amazonaws.com", Operation: "kms.Encrypt", Reset: true, Count: 1},
	} {
		if _, err := e.InjectFault(f); err != nil {
			t.Fatal(err)
		}
		e.ResetCounters()
		if _, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")}, func(o *kms.Options) {
			o.Retryer = retryFast(o.Retryer)
		}); err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		if n := e.Counters()["kms.Encrypt"]; n != 2 {
			t.Fatalf("%+v: kms.Encrypt = %d, want 2 (fault + retry)", f, n)
		}
		if len(e.Faults()) != 0 {
			t.Fatal("count-limited fault left")
		}
	}
	// A fault that the SDK does not retry reaches the caller.
	if _, err := e.InjectFault(Fault{Operation: "kms.Decrypt", Status: 400, ErrorCode: "KMSInvalidStateException", Message: "injected"}); err != nil {
		t.Fatal(err)
	}
	_, err := kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("x")})
	if msg := wantCode(t, err, "KMSInvalidStateException"); msg != "injected" {
		t.Fatal(msg)
	}
	// STS faults are XML-shaped.
	e.ClearFaults()
	if _, err := e.InjectFault(Fault{Host: "sts", Status: 403, ErrorCode: "RegionDisabledException", Message: "off", Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = stsClient(e, "us-east-1", static(root)).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantCode(t, err, "RegionDisabledException")
	// The request log ties the emulator's request id and the SDK's
	// invocation id to the caller and key.
	e.ResetCounters()
	if _, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x"), EncryptionContext: map[string]string{"p": "1"}}); err != nil {
		t.Fatal(err)
	}
	reqs := e.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d entries", len(reqs))
	}
	r := reqs[0]
	if r.Operation != "kms.Encrypt" || r.Status != 200 || r.RequestID == "" || len(r.InvocationID) != 36 || r.Principal != root.ARN ||
		r.Resource != *k.KeyMetadata.Arn || r.EncryptionContext["p"] != "1" || r.Region != "us-east-1" || r.AccessKeyID != root.AccessKeyID {
		t.Fatalf("%+v", r)
	}
	for _, bad := range []Fault{{}, {Status: 200}, {Status: 500, Reset: true}} {
		if _, err := e.InjectFault(bad); err == nil {
			t.Errorf("invalid fault accepted: %+v", bad)
		}
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	e1, err := New(Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Start(); err != nil {
		t.Fatal(err)
	}
	c := onboardCustomer(t, e1, "us-east-1", "org-persist")
	enc, err := c.vendor.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("kept")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := assumeRole(e1, static(e1.Vendor()), c.roleARN, "org-persist", 0)
	if err != nil {
		t.Fatal(err)
	}
	ca, vendor := e1.CAPEM(), e1.Vendor()
	e1.Close()
	if fi, err := os.Stat(filepath.Join(dir, "state.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v", err)
	}
	e2 := startEmu(t, Options{StateDir: dir})
	if !bytes.Equal(e2.CAPEM(), ca) || e2.Vendor() != vendor {
		t.Fatal("CA or vendor credentials changed")
	}
	if b, _ := os.ReadFile(e2.CAFile()); !bytes.Equal(b, ca) {
		t.Fatal("ca.pem changed")
	}
	// Long-term keys, sessions, roles, policies and key material survive.
	sess := credentials.NewStaticCredentialsProvider(*out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken)
	dec, err := kmsClient(e2, "us-east-1", sess).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "kept" {
		t.Fatalf("decrypt after restart: %v", err)
	}
	hc, err := dialoverride.NewClient(e2.Addr(), filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cf := aws.Config{Region: "us-east-1", Credentials: static(c.root), HTTPClient: hc}
	if _, err := kms.NewFromConfig(cf).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &c.keyARN}); err != nil {
		t.Fatal(err)
	}
}

func TestControlAPI(t *testing.T) {
	e := startEmu(t, Options{})
	hc, err := dialoverride.NewClientFromPEM("", e.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, e.ControlURL()+path, rd)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	st, acct := do("POST", "/accounts", nil)
	if st != 201 || acct["access_key_id"] == "" || acct["partition"] != "aws" {
		t.Fatalf("%d %v", st, acct)
	}
	if st, m := do("POST", "/accounts", map[string]string{"partition": "aws-cn"}); st != 201 || !strings.HasPrefix(m["arn"].(string), "arn:aws-cn:iam::") {
		t.Fatalf("%d %v", st, m)
	}
	if st, _ := do("POST", "/accounts", map[string]string{"partition": "aws-iso"}); st != 400 {
		t.Fatal(st)
	}
	if st, m := do("POST", "/accounts/"+acct["account_id"].(string)+"/users", map[string]any{"name": "u", "policy": map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}}}}); st != 201 || m["user_name"] != "u" {
		t.Fatalf("%d %v", st, m)
	}
	if st, m := do("GET", "/vendor", nil); st != 200 || m["user_name"] != "ekm" {
		t.Fatalf("%d %v", st, m)
	}
	if st, m := do("GET", "/accounts", nil); st != 200 || len(m["accounts"].([]any)) != 3 {
		t.Fatalf("%d %v", st, m)
	}
	if st, m := do("POST", "/faults", map[string]any{"operation": "kms.Decrypt", "status": 503, "count": 2}); st != 201 || m["id"] == "" {
		t.Fatalf("%d %v", st, m)
	}
	if st, m := do("GET", "/faults", nil); st != 200 || len(m["faults"].([]any)) != 1 {
		t.Fatalf("%d %v", st, m)
	}
	if st, _ := do("DELETE", "/faults", nil); st != 204 || len(e.Faults()) != 0 {
		t.Fatal(st)
	}
	before := e.Now()
	if st, _ := do("POST", "/clock", map[string]any{"advance": "1h"}); st != 200 || e.Now().Sub(before) < time.Hour {
		t.Fatal(st)
	}
	if st, m := do("PUT", "/settings", map[string]any{"quotas": map[string]any{"rsa": 7}}); st != 200 || e.Settings().Quotas.RSA != 7 || m["quotas"] == nil {
		t.Fatalf("%d %v", st, m)
	}
	if st, _ := do("PUT", "/settings", map[string]any{"quotas": map[string]any{"rsa": 0}}); st != 400 {
		t.Fatal(st)
	}
	if st, m := do("GET", "/requests", nil); st != 200 || m["requests"] == nil {
		t.Fatal(st)
	}
	if st, _ := do("GET", "/counters", nil); st != 200 {
		t.Fatal(st)
	}
	if st, _ := do("GET", "/nope", nil); st != 404 {
		t.Fatal(st)
	}
	// Never under an AWS host name, nor a foreign IP literal.
	req, _ := http.NewRequest("GET", "https://sts.amazonaws.com/_emulator/vendor", nil)
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), e.Vendor().SecretAccessKey) {
		t.Fatal("control API exposed on an AWS host")
	}
	for _, h := range []string{"8.8.8.8", "10.1.2.3:443", "[2001:db8::1]:1", "evil.example.com"} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/_emulator/vendor", nil)
		r.Host = h
		e.ServeHTTP(rec, r)
		if rec.Code == 200 || strings.Contains(rec.Body.String(), e.Vendor().SecretAccessKey) {
			t.Errorf("Host %s reached the control API", h)
		}
	}
	for _, h := range []string{"127.0.0.1:1", "localhost", "[::1]:5", emukit.ControlHost} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/_emulator/vendor", nil)
		r.Host = h
		e.ServeHTTP(rec, r)
		if rec.Code != 200 {
			t.Errorf("Host %s: %d", h, rec.Code)
		}
	}
}

func TestMainPrintsUsage(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Main(ctx, Options{StateDir: dir}, pw); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Address, CAFile string
		ControlURL      string `json:"control_url"`
		Create          string `json:"create_account"`
		Vendor          Credentials
	}
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatal(err)
	}
	if info.Vendor.AccessKeyID == "" || !strings.Contains(info.Create, "curl --cacert") || !strings.HasSuffix(info.ControlURL, "/_emulator") {
		t.Fatalf("%s", line)
	}
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:8443"} {
		if err := Main(context.Background(), Options{Addr: addr}, io.Discard); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Main(%s) = %v", addr, err)
		}
	}
}

// TestGarbageNeverBreaks throws malformed requests at every service.
func TestGarbageNeverBreaks(t *testing.T) {
	e := shared
	root, _ := e.CreateAccount()
	hosts := []string{"sts.amazonaws.com", "iam.amazonaws.com", "kms.us-east-1.amazonaws.com", "sts-fips.us-west-2.amazonaws.com"}
	bodies := []string{"", "{", "null", "[]", `{"KeyId":5}`, "Action=AssumeRole&Version=2011-06-15&RoleArn=x", "Action=CreateRole&Version=2010-05-08&Tags.member.1.Key=a",
		"Action=GetCallerIdentity&Version=2011-06-15&Action=x", "%zz", strings.Repeat("x", 2<<20)}
	for i, b := range bodies {
		for j, h := range hosts {
			req, _ := http.NewRequest([]string{"POST", "GET", "PUT"}[(i+j)%3], "https://"+h+"/", strings.NewReader(b))
			req.Header.Set("Content-Type", []string{"application/x-www-form-urlencoded", "application/x-amz-json-1.1"}[j%2])
			req.Header.Set("X-Amz-Target", "TrentService.Encrypt")
			if i%2 == 0 {
				sum := sha256.Sum256([]byte(b))
				v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey}, req,
					hex.EncodeToString(sum[:]), serviceNames[hostTable[h].svc], hostTable[h].region, e.Now())
			}
			resp, err := e.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Fatalf("%s %q: %d", h, truncate(b, 40), resp.StatusCode)
			}
		}
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest("GET", "https://s3.amazonaws.com/", nil))
	if rec.Code != http.StatusMisdirectedRequest {
		t.Fatal(rec.Code)
	}
}
