package gcpcloud

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/api/googleapi"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ekm-dev/ekm/internal/gcponboard"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func encryptBody(t *testing.T, c *customer, tok, name string, body map[string]any) (int, map[string]any) {
	t.Helper()
	return api(t, "POST", kmsURL(name)+":encrypt", tok, body)
}

func setVersionState(t *testing.T, c *customer, v int, state string) {
	t.Helper()
	name := c.res.KeyName + "/cryptoKeyVersions/" + strconv.Itoa(v)
	if st, m := api(t, "PATCH", kmsURL(name)+"?updateMask=state", c.proj.AdminToken, map[string]any{"name": name, "state": state}); st != 200 {
		t.Fatalf("set state: %d %v", st, m)
	}
}

func violation(m map[string]any) string {
	e := m["error"].(map[string]any)
	for _, d := range e["details"].([]any) {
		dm := d.(map[string]any)
		if dm["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure" {
			return dm["violations"].([]any)[0].(map[string]any)["type"].(string)
		}
	}
	return ""
}

func TestKMSPermissionDeniedNamesPermission(t *testing.T) {
	c := newCustomer(t, func(cfg *gcponboard.Config) { cfg.NoViewer = true })
	tok := fedToken(t, c)
	st, m := api(t, "GET", kmsURL(c.res.KeyName), tok, nil)
	wantErr(t, st, m, 403, "PERMISSION_DENIED", "Permission 'cloudkms.cryptoKeys.get' denied on resource '"+c.res.KeyName+"' (or it may not exist).")
	// A key that does not exist looks the same to a caller without access.
	missing := c.res.KeyName + "x"
	st, m = encryptRaw(t, &customer{res: gcponboard.Result{KeyName: missing}}, tok)
	wantErr(t, st, m, 403, "PERMISSION_DENIED", "Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource '"+missing+"'")
	// The owner sees NOT_FOUND.
	st, m = api(t, "GET", kmsURL(missing), c.proj.AdminToken, nil)
	wantErr(t, st, m, 404, "NOT_FOUND", "CryptoKey "+missing+" not found.")
	// No token at all.
	st, m = api(t, "GET", kmsURL(c.res.KeyName), "", nil)
	wantErr(t, st, m, 401, "UNAUTHENTICATED", "Request is missing required authentication credential.")
}

func TestKMSDisabledAndDestroyedVersions(t *testing.T) {
	c := newCustomer(t, nil)
	cl := gapicClient(t, c, nil)
	ctx := context.Background()
	enc, err := cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	setVersionState(t, c, 1, "DISABLED")
	_, err = cl.Decrypt(ctx, &kmspb.DecryptRequest{Name: c.res.KeyName, Ciphertext: enc.Ciphertext})
	var ae *apierror.APIError
	if !errors.As(err, &ae) || ae.HTTPCode() != 400 || ae.Details().PreconditionFailure == nil ||
		ae.Details().PreconditionFailure.Violations[0].Type != "KEY_DISABLED" ||
		!strings.Contains(ae.Error(), c.res.KeyName+"/cryptoKeyVersions/1 is not enabled, current state is: DISABLED.") {
		t.Fatalf("disabled: %v", err)
	}
	var ge *googleapi.Error
	if !errors.As(err, &ge) || !strings.Contains(ge.Body, `"status":"FAILED_PRECONDITION"`) {
		t.Fatalf("body lacks FAILED_PRECONDITION: %v", err)
	}
	setVersionState(t, c, 1, "ENABLED")
	if _, err := cl.Decrypt(ctx, &kmspb.DecryptRequest{Name: c.res.KeyName, Ciphertext: enc.Ciphertext}); err != nil {
		t.Fatal(err)
	}
	// Destroy: DESTROY_SCHEDULED, refused; restore -> DISABLED.
	vn := c.res.KeyName + "/cryptoKeyVersions/1"
	st, m := api(t, "POST", kmsURL(vn)+":destroy", c.proj.AdminToken, "{}")
	if st != 200 || m["state"] != "DESTROY_SCHEDULED" || m["destroyTime"] == nil {
		t.Fatalf("destroy: %d %v", st, m)
	}
	st, m = api(t, "POST", kmsURL(c.res.KeyName)+":decrypt", fedToken(t, c), map[string]any{"ciphertext": base64.StdEncoding.EncodeToString(enc.Ciphertext)})
	wantErr(t, st, m, 400, "FAILED_PRECONDITION", "current state is: DESTROY_SCHEDULED.")
	st, m = api(t, "POST", kmsURL(vn)+":restore", c.proj.AdminToken, "{}")
	if st != 200 || m["state"] != "DISABLED" {
		t.Fatalf("restore: %d %v", st, m)
	}
	// After the scheduled duration (30 days) the material is gone.
	api(t, "POST", kmsURL(vn)+":destroy", c.proj.AdminToken, "{}")
	advance(t, 31*24*time.Hour)
	c.proj = must(emu.AdminToken(c.proj.ID)) // the old admin token expired
	st, m = api(t, "GET", kmsURL(vn), c.proj.AdminToken, nil)
	if st != 200 || m["state"] != "DESTROYED" || m["destroyEventTime"] == nil {
		t.Fatalf("destroyed: %d %v", st, m)
	}
	st, m = api(t, "POST", kmsURL(vn)+":restore", c.proj.AdminToken, "{}")
	wantErr(t, st, m, 400, "FAILED_PRECONDITION", "is not scheduled for destruction")
	if violation(m) != "KEY_DESTROYED" {
		t.Fatalf("violation %q", violation(m))
	}
}

func TestKMSWrongPurpose(t *testing.T) {
	c := newCustomer(t, nil)
	ring := c.res.KeyName[:strings.LastIndex(c.res.KeyName, "/cryptoKeys/")]
	st, m := api(t, "POST", kmsURL(ring)+"/cryptoKeys?cryptoKeyId=signer", c.proj.AdminToken,
		map[string]any{"purpose": "ASYMMETRIC_SIGN", "versionTemplate": map[string]any{"algorithm": "EC_SIGN_P256_SHA256"}})
	if st != 200 || m["primary"] != nil || m["purpose"] != "ASYMMETRIC_SIGN" {
		t.Fatalf("create: %d %v", st, m)
	}
	signer := ring + "/cryptoKeys/signer"
	st, m = encryptBody(t, c, c.proj.AdminToken, signer, map[string]any{"plaintext": b64("x")})
	// roles/owner has every permission, so the purpose is what fails.
	wantErr(t, st, m, 400, "FAILED_PRECONDITION", "has purpose ASYMMETRIC_SIGN, but Encrypt requires purpose ENCRYPT_DECRYPT.")
	// Mismatched algorithm and purpose, unsupported purposes and fields are refused.
	st, m = api(t, "POST", kmsURL(ring)+"/cryptoKeys?cryptoKeyId=bad", c.proj.AdminToken,
		map[string]any{"purpose": "ENCRYPT_DECRYPT", "versionTemplate": map[string]any{"algorithm": "EC_SIGN_P256_SHA256"}})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "not compatible")
	st, m = api(t, "POST", kmsURL(ring)+"/cryptoKeys?cryptoKeyId=bad", c.proj.AdminToken, map[string]any{"purpose": "MAC"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "not supported by the emulator")
	st, m = api(t, "POST", kmsURL(ring)+"/cryptoKeys?cryptoKeyId=bad", c.proj.AdminToken, map[string]any{"purpose": "ENCRYPT_DECRYPT", "importOnly": true})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "importOnly")
	st, m = api(t, "POST", kmsURL(ring)+"/cryptoKeys?cryptoKeyId=bad", c.proj.AdminToken, map[string]any{"purpose": "ENCRYPT_DECRYPT", "colour": "red"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", `Unknown name "colour"`)
	st, m = api(t, "POST", kmsURL(ring)+"/cryptoKeys?cryptoKeyId=bad.id", c.proj.AdminToken, map[string]any{"purpose": "ENCRYPT_DECRYPT"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "Invalid crypto key id")
}

func TestKMSAADAndCRCMismatch(t *testing.T) {
	c := newCustomer(t, nil)
	tok := fedToken(t, c)
	st, m := encryptBody(t, c, tok, c.res.KeyName, map[string]any{"plaintext": b64("secret"), "additionalAuthenticatedData": b64("aad-1")})
	if st != 200 {
		t.Fatalf("%d %v", st, m)
	}
	ct := m["ciphertext"].(string)
	// Wrong AAD, no AAD, a tampered ciphertext, another key: Google's one text.
	tampered, _ := base64.StdEncoding.DecodeString(ct)
	tampered[len(tampered)-1] ^= 1
	other := newCustomer(t, nil)
	for name, tc := range map[string]struct {
		key  string
		tok  string
		body map[string]any
	}{
		"wrong aad":   {c.res.KeyName, tok, map[string]any{"ciphertext": ct, "additionalAuthenticatedData": b64("aad-2")}},
		"missing aad": {c.res.KeyName, tok, map[string]any{"ciphertext": ct}},
		"tampered":    {c.res.KeyName, tok, map[string]any{"ciphertext": base64.StdEncoding.EncodeToString(tampered), "additionalAuthenticatedData": b64("aad-1")}},
		"other key":   {other.res.KeyName, fedToken(t, other), map[string]any{"ciphertext": ct, "additionalAuthenticatedData": b64("aad-1")}},
	} {
		st, m := api(t, "POST", kmsURL(tc.key)+":decrypt", tc.tok, tc.body)
		if code, msg := errOf(m); st != 400 || code != "INVALID_ARGUMENT" || msg != "Decryption failed: verify that 'name' refers to the correct CryptoKey." {
			t.Fatalf("%s: %d %v", name, st, m)
		}
	}
	// Request checksums that do not match are refused, on both calls.
	st, m = encryptBody(t, c, tok, c.res.KeyName, map[string]any{"plaintext": b64("secret"), "plaintextCrc32c": "12345"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "The checksum in field plaintext_crc32c did not match the data in field plaintext.")
	st, m = encryptBody(t, c, tok, c.res.KeyName, map[string]any{"plaintext": b64("secret"), "additionalAuthenticatedData": b64("a"), "additionalAuthenticatedDataCrc32c": "1"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "additional_authenticated_data_crc32c")
	st, m = api(t, "POST", kmsURL(c.res.KeyName)+":decrypt", tok, map[string]any{"ciphertext": ct, "ciphertextCrc32c": "7"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.")

	// Response corruption (a fault) is what the client must catch.
	cl := gapicClient(t, c, nil)
	if _, err := emu.InjectFault(Fault{Operation: "kms.encrypt", Corrupt: "ciphertext_crc32c", Count: 1}); err != nil {
		t.Fatal(err)
	}
	enc, err := cl.Encrypt(context.Background(), &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("p"), PlaintextCrc32C: wrapperspb.Int64(crc([]byte("p")))})
	if err != nil {
		t.Fatal(err)
	}
	if enc.CiphertextCrc32C.GetValue() == crc(enc.Ciphertext) {
		t.Fatal("corrupt fault did not damage ciphertextCrc32c")
	}
	emu.InjectFault(Fault{Operation: "kms.decrypt", Corrupt: "plaintext_crc32c", Count: 1})
	dec, err := cl.Decrypt(context.Background(), &kmspb.DecryptRequest{Name: c.res.KeyName, Ciphertext: enc.Ciphertext})
	if err != nil || dec.PlaintextCrc32C.GetValue() == crc(dec.Plaintext) {
		t.Fatalf("corrupt decrypt: %v %v", dec, err)
	}
	emu.InjectFault(Fault{Operation: "kms.encrypt", Corrupt: "unverified", Count: 1})
	enc, err = cl.Encrypt(context.Background(), &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("p"), PlaintextCrc32C: wrapperspb.Int64(crc([]byte("p")))})
	if err != nil || enc.VerifiedPlaintextCrc32C {
		t.Fatalf("unverified: %v %v", enc, err)
	}
	// Size limits.
	st, m = encryptBody(t, c, tok, c.res.KeyName, map[string]any{"plaintext": base64.StdEncoding.EncodeToString(make([]byte, 64<<10+1))})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "at most 65536 bytes")
}

func TestKMSRotation(t *testing.T) {
	c := newCustomer(t, nil)
	cl := gapicClient(t, c, nil)
	ctx := context.Background()
	old, err := cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("v1 data")})
	if err != nil {
		t.Fatal(err)
	}
	// Manual rotation: a new version made primary.
	st, m := api(t, "POST", kmsURL(c.res.KeyName)+"/cryptoKeyVersions", c.proj.AdminToken, "{}")
	if st != 200 || m["state"] != "ENABLED" || !strings.HasSuffix(m["name"].(string), "/cryptoKeyVersions/2") {
		t.Fatalf("create version: %d %v", st, m)
	}
	st, m = api(t, "POST", kmsURL(c.res.KeyName)+":updatePrimaryVersion", c.proj.AdminToken, map[string]any{"cryptoKeyVersionId": "2"})
	if st != 200 || !strings.HasSuffix(m["primary"].(map[string]any)["name"].(string), "/2") {
		t.Fatalf("update primary: %d %v", st, m)
	}
	enc, err := cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("v2 data")})
	if err != nil || !strings.HasSuffix(enc.Name, "/cryptoKeyVersions/2") {
		t.Fatalf("encrypt after rotation: %v %v", enc, err)
	}
	dec, err := cl.Decrypt(ctx, &kmspb.DecryptRequest{Name: c.res.KeyName, Ciphertext: old.Ciphertext})
	if err != nil || string(dec.Plaintext) != "v1 data" || dec.UsedPrimary {
		t.Fatalf("old version: %v %v", dec, err)
	}
	// Encrypt with an explicit version name.
	if enc, err := cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName + "/cryptoKeyVersions/1", Plaintext: []byte("x")}); err != nil || !strings.HasSuffix(enc.Name, "/1") {
		t.Fatalf("encrypt with version: %v %v", enc, err)
	}
	// Automatic rotation on the emulator clock.
	next := emu.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	st, m = api(t, "PATCH", kmsURL(c.res.KeyName)+"?updateMask=rotationPeriod,nextRotationTime", c.proj.AdminToken,
		map[string]any{"rotationPeriod": "86400s", "nextRotationTime": next})
	if st != 200 || m["rotationPeriod"] != "86400s" {
		t.Fatalf("patch: %d %v", st, m)
	}
	advance(t, 2*time.Hour)
	cl = gapicClient(t, c, nil) // the cached federated token expired on the emulator clock
	enc, err = cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("v3 data")})
	if err != nil || !strings.HasSuffix(enc.Name, "/cryptoKeyVersions/3") {
		t.Fatalf("automatic rotation: %v %v", enc, err)
	}
	st, m = api(t, "PATCH", kmsURL(c.res.KeyName)+"?updateMask=rotationPeriod", c.proj.AdminToken, map[string]any{"rotationPeriod": "60s"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "rotation period")
	// Listing versions, with enums as numbers when the gapic client asks.
	st, m = api(t, "GET", kmsURL(c.res.KeyName)+"/cryptoKeyVersions?$alt=json;enum-encoding=int", c.proj.AdminToken, nil)
	if st != 200 || m["totalSize"].(float64) != 3 || m["cryptoKeyVersions"].([]any)[0].(map[string]any)["state"].(float64) != 1 {
		t.Fatalf("list: %d %v", st, m)
	}
}

func TestKMSIAMPolicyReplaced(t *testing.T) {
	c := newCustomer(t, nil)
	tok := fedToken(t, c)
	st, pol := api(t, "GET", kmsURL(c.res.KeyName)+":getIamPolicy", c.proj.AdminToken, nil)
	if st != 200 || len(pol["bindings"].([]any)) != 2 || pol["etag"] == "" {
		t.Fatalf("get policy: %d %v", st, pol)
	}
	// A stale etag is refused.
	st, m := api(t, "POST", kmsURL(c.res.KeyName)+":setIamPolicy", c.proj.AdminToken, map[string]any{"policy": map[string]any{"etag": "AAAAAAAAAAA="}})
	wantErr(t, st, m, 409, "ABORTED", "concurrent policy changes")
	// Unknown roles, roles not grantable on keys, conditions, bad members.
	for body, want := range map[string]string{
		`{"policy":{"bindings":[{"role":"roles/cloudkms.nope","members":["user:a@b.c"]}]}}`:                                     "Role roles/cloudkms.nope is not supported for this resource.",
		`{"policy":{"bindings":[{"role":"roles/owner","members":["user:a@b.c"]}]}}`:                                             "Role roles/owner is not supported",
		`{"policy":{"bindings":[{"role":"roles/cloudkms.viewer","members":["user:a@b.c"],"condition":{"expression":"true"}}]}}`: "conditions are not supported",
		`{"policy":{"bindings":[{"role":"roles/cloudkms.viewer","members":["allUsers"]}]}}`:                                     "Invalid principal",
		`{"policy":{"bindings":[{"role":"roles/cloudkms.viewer","members":["principal://iam.googleapis.com/projects/x/y"]}]}}`:  "Invalid principal",
	} {
		st, m := api(t, "POST", kmsURL(c.res.KeyName)+":setIamPolicy", c.proj.AdminToken, body)
		wantErr(t, st, m, 400, "INVALID_ARGUMENT", want)
	}
	// Replacing the policy with one without ekm revokes it at once.
	st, m = api(t, "POST", kmsURL(c.res.KeyName)+":setIamPolicy", c.proj.AdminToken, map[string]any{"policy": map[string]any{"etag": pol["etag"]}})
	if st != 200 || m["bindings"] != nil {
		t.Fatalf("set: %d %v", st, m)
	}
	st, m = encryptRaw(t, c, tok)
	wantErr(t, st, m, 403, "PERMISSION_DENIED", "cloudkms.cryptoKeyVersions.useToEncrypt")
	// testIamPermissions answers the subset held.
	st, m = api(t, "POST", kmsURL(c.res.KeyName)+":testIamPermissions", tok,
		map[string]any{"permissions": []string{"cloudkms.cryptoKeyVersions.useToEncrypt"}})
	if st != 200 || m["permissions"] != nil {
		t.Fatalf("test: %d %v", st, m)
	}
	// A grant on the key ring applies to its keys.
	ring := c.res.KeyName[:strings.LastIndex(c.res.KeyName, "/cryptoKeys/")]
	st, m = api(t, "POST", kmsURL(ring)+":setIamPolicy", c.proj.AdminToken, map[string]any{"policy": map[string]any{"bindings": []any{
		map[string]any{"role": "roles/cloudkms.cryptoKeyEncrypter", "members": []string{c.res.Member}}}}})
	if st != 200 {
		t.Fatalf("ring policy: %d %v", st, m)
	}
	if st, m := encryptRaw(t, c, tok); st != 200 {
		t.Fatalf("ring grant: %d %v", st, m)
	}
	st, m = api(t, "POST", kmsURL(c.res.KeyName)+":decrypt", tok, map[string]any{"ciphertext": b64("xx")})
	wantErr(t, st, m, 403, "PERMISSION_DENIED", "cloudkms.cryptoKeyVersions.useToDecrypt")
	// A project-level roles/owner grant covers everything.
	if err := emu.AddProjectBinding(c.proj.ID, "roles/owner", c.res.Member); err != nil {
		t.Fatal(err)
	}
	if st, m := api(t, "GET", kmsURL(c.res.KeyName), tok, nil); st != 200 {
		t.Fatalf("owner: %d %v", st, m)
	}
}

// With a configured propagation lag, a revocation takes effect only after it.
func TestKMSIAMPropagationLag(t *testing.T) {
	c := newCustomer(t, nil)
	tok := fedToken(t, c)
	s := emu.Settings()
	defer emu.SetSettings(s)
	s2 := s
	s2.IAMPropagationSeconds = 120
	if err := emu.SetSettings(s2); err != nil {
		t.Fatal(err)
	}
	st, pol := api(t, "GET", kmsURL(c.res.KeyName)+":getIamPolicy", c.proj.AdminToken, nil)
	api(t, "POST", kmsURL(c.res.KeyName)+":setIamPolicy", c.proj.AdminToken, map[string]any{"policy": map[string]any{"etag": pol["etag"]}})
	if st, m := encryptRaw(t, c, tok); st != 200 {
		t.Fatalf("within the lag: %d %v", st, m)
	}
	advance(t, 121*time.Second)
	st, m := encryptRaw(t, c, tok)
	wantErr(t, st, m, 403, "PERMISSION_DENIED", "useToEncrypt")
}

func TestKMSQuota(t *testing.T) {
	c := newCustomer(t, nil)
	tok := fedToken(t, c)
	s := emu.Settings()
	defer emu.SetSettings(s)
	s2 := s
	s2.Quota.CryptoPerMinute = 120 // 2 per second
	emu.SetSettings(s2)
	advance(t, time.Second) // a fresh second
	for i := 0; i < 2; i++ {
		if st, m := encryptRaw(t, c, tok); st != 200 {
			t.Fatalf("%d: %d %v", i, st, m)
		}
	}
	st, m := encryptRaw(t, c, tok)
	wantErr(t, st, m, 429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Cryptographic requests' and limit 'Cryptographic requests per minute' of service 'cloudkms.googleapis.com' for consumer 'project_number:"+c.proj.Number+"'.")
	// Reads have their own quota; the next second has a fresh budget.
	if st, m := api(t, "GET", kmsURL(c.res.KeyName), tok, nil); st != 200 {
		t.Fatalf("read: %d %v", st, m)
	}
	advance(t, time.Second)
	if st, m := encryptRaw(t, c, tok); st != 200 {
		t.Fatalf("next second: %d %v", st, m)
	}
}

func TestKMSFaults(t *testing.T) {
	c := newCustomer(t, nil)
	cl := gapicClient(t, c, nil)
	ctx := context.Background()
	// The gapic client retries 503 on Encrypt: one fault, then success.
	before := emu.Counters()["kms.encrypt"]
	id, err := emu.InjectFault(Fault{Host: "kms", Operation: "kms.encrypt", Status: 503, Count: 1})
	if err != nil || id == "" {
		t.Fatal(err)
	}
	if _, err := cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if got := emu.Counters()["kms.encrypt"] - before; got != 2 {
		t.Fatalf("encrypt calls %d, want 2 (one retry)", got)
	}
	// 429 is not retried and keeps Google's shape.
	emu.InjectFault(Fault{Operation: "kms.*", Status: 429, Count: 1})
	_, err = cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("x")})
	var ae *apierror.APIError
	if !errors.As(err, &ae) || ae.HTTPCode() != 429 {
		t.Fatalf("429: %v", err)
	}
	// STS faults use the OAuth error shape.
	emu.InjectFault(Fault{Host: "sts.googleapis.com", Status: 503, Count: 1})
	st, m := stsRaw(t, c.res.STSAudience, subjectToken(t, c, nil), nil)
	if st != 503 || m["error"] != "temporarily_unavailable" {
		t.Fatalf("sts fault: %d %v", st, m)
	}
	// A reset aborts the connection.
	emu.InjectFault(Fault{Operation: "kms.decrypt", Reset: true, Count: 1})
	if _, err := emu.HTTPClient().Post(kmsURL(c.res.KeyName)+":decrypt", "application/json", strings.NewReader("{}")); err == nil {
		t.Fatal("reset fault: no error")
	}
	if len(emu.Faults()) != 0 {
		t.Fatalf("faults left: %v", emu.Faults())
	}
}

func TestKMSKeyRingsAndNames(t *testing.T) {
	c := newCustomer(t, nil)
	base := "projects/" + c.proj.ID + "/locations/"
	st, m := api(t, "POST", kmsURL(base+"global/keyRings")+"?keyRingId=ekm", c.proj.AdminToken, "{}")
	wantErr(t, st, m, 409, "ALREADY_EXISTS", "already exists")
	st, m = api(t, "POST", kmsURL(base+"mars-north1/keyRings")+"?keyRingId=r", c.proj.AdminToken, "{}")
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "not a valid Cloud KMS location")
	st, m = api(t, "GET", kmsURL(base+"global/keyRings"), c.proj.AdminToken, nil)
	if st != 200 || m["totalSize"].(float64) != 1 {
		t.Fatalf("list: %d %v", st, m)
	}
	st, m = api(t, "GET", kmsURL(base+"global/keyRings/ekm/cryptoKeys/kek/cryptoKeyVersions/0"), c.proj.AdminToken, nil)
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "does not match any known pattern")
	st, _ = api(t, "GET", kmsURL(base+"global/keyRings/ekm/somethingElse"), c.proj.AdminToken, nil)
	if st != 404 {
		t.Fatalf("unknown path: %d", st)
	}
	// The vendor's service account (another project) has no access.
	v := emu.Vendor()
	saTok := emu.mintToken(accessToken{Kind: "sa", Email: v.ServiceAccountEmail, Scope: scopeCloudPlatform, Exp: emu.Now().Add(time.Hour).Unix()})
	st, m = api(t, "GET", kmsURL(c.res.KeyName), saTok, nil)
	wantErr(t, st, m, 403, "PERMISSION_DENIED", "cloudkms.cryptoKeys.get")
}

// Concurrent callers (under -race): encrypts, decrypts and policy reads.
func TestKMSConcurrentCalls(t *testing.T) {
	c := newCustomer(t, nil)
	tok := fedToken(t, c)
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 10; i++ {
				st, m := encryptRaw(t, c, tok)
				if st != 200 {
					errs <- errors.New(strconv.Itoa(st))
					return
				}
				if st, _ := api(t, "POST", kmsURL(c.res.KeyName)+":decrypt", tok, map[string]any{"ciphertext": m["ciphertext"]}); st != 200 {
					errs <- errors.New("decrypt " + strconv.Itoa(st))
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
