package gcpcloud

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const iamV1 = "https://iam.googleapis.com/v1/"

func TestIAMPoolLifecycle(t *testing.T) {
	p := must(emu.CreateProject())
	parent := iamV1 + "projects/" + p.ID + "/locations/global/workloadIdentityPools"
	st, op := api(t, "POST", parent+"?workloadIdentityPoolId=my-pool", p.AdminToken, map[string]any{"displayName": "Mine"})
	resp, _ := op["response"].(map[string]any)
	wantName := "projects/" + p.Number + "/locations/global/workloadIdentityPools/my-pool"
	if st != 200 || op["done"] != true || !strings.HasPrefix(op["name"].(string), wantName+"/operations/") ||
		resp["@type"] != "type.googleapis.com/google.iam.v1.WorkloadIdentityPool" || resp["name"] != wantName || resp["state"] != "ACTIVE" {
		t.Fatalf("create: %d %v", st, op)
	}
	// The operation can be polled.
	if st, m := api(t, "GET", iamV1+op["name"].(string), p.AdminToken, nil); st != 200 || m["done"] != true {
		t.Fatalf("operation: %d %v", st, m)
	}
	st, m := api(t, "POST", parent+"?workloadIdentityPoolId=my-pool", p.AdminToken, "{}")
	wantErr(t, st, m, 409, "ALREADY_EXISTS", "already exists")
	for _, id := range []string{"gcp-pool", "ab", "Upper-Case", strings.Repeat("a", 33)} {
		st, m := api(t, "POST", parent+"?workloadIdentityPoolId="+id, p.AdminToken, "{}")
		wantErr(t, st, m, 400, "INVALID_ARGUMENT", "Invalid workload identity pool id")
	}
	st, m = api(t, "POST", parent+"?workloadIdentityPoolId=other-pool", p.AdminToken, map[string]any{"displayName": strings.Repeat("x", 33)})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "at most 32")
	// Patch needs an update mask.
	st, m = api(t, "PATCH", iamV1+wantName, p.AdminToken, map[string]any{"disabled": true})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "update_mask is required")
	st, m = api(t, "PATCH", iamV1+wantName+"?updateMask=display_name", p.AdminToken, map[string]any{"displayName": "Renamed", "disabled": true})
	if st != 200 || m["response"].(map[string]any)["displayName"] != "Renamed" || m["response"].(map[string]any)["disabled"] != nil {
		t.Fatalf("patch: %d %v", st, m)
	}
	// Soft delete: hidden from list unless showDeleted, undeletable, purged after 30 days.
	st, m = api(t, "DELETE", iamV1+wantName, p.AdminToken, nil)
	if st != 200 || m["response"].(map[string]any)["state"] != "DELETED" || m["response"].(map[string]any)["expireTime"] == nil {
		t.Fatalf("delete: %d %v", st, m)
	}
	if st, m := api(t, "GET", parent, p.AdminToken, nil); st != 200 || m["workloadIdentityPools"] != nil {
		t.Fatalf("list: %d %v", st, m)
	}
	if st, m := api(t, "GET", parent+"?showDeleted=true", p.AdminToken, nil); st != 200 || len(m["workloadIdentityPools"].([]any)) != 1 {
		t.Fatalf("list deleted: %d %v", st, m)
	}
	st, m = api(t, "PATCH", iamV1+wantName+"?updateMask=disabled", p.AdminToken, map[string]any{"disabled": true})
	wantErr(t, st, m, 400, "FAILED_PRECONDITION", "deleted")
	st, m = api(t, "POST", parent+"?workloadIdentityPoolId=my-pool", p.AdminToken, "{}")
	wantErr(t, st, m, 409, "ALREADY_EXISTS", "")
	advance(t, 31*24*time.Hour)
	p = must(emu.AdminToken(p.ID))
	st, m = api(t, "GET", iamV1+wantName, p.AdminToken, nil)
	wantErr(t, st, m, 404, "NOT_FOUND", "")
}

func TestIAMProviderValidation(t *testing.T) {
	p := must(emu.CreateProject())
	pool := iamV1 + "projects/" + p.Number + "/locations/global/workloadIdentityPools/pool-1"
	if st, m := api(t, "POST", iamV1+"projects/"+p.Number+"/locations/global/workloadIdentityPools?workloadIdentityPoolId=pool-1", p.AdminToken, "{}"); st != 200 {
		t.Fatalf("%d %v", st, m)
	}
	good := func() map[string]any {
		return map[string]any{"attributeMapping": map[string]string{"google.subject": "assertion.sub"},
			"attributeCondition": `assertion.sub == "x"`, "oidc": map[string]any{"issuerUri": "https://issuer.example", "allowedAudiences": []string{"org-1"}}}
	}
	x5c, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB", "x5c": []string{"MII"}}}})
	cases := map[string]struct {
		mod  func(map[string]any)
		want string
	}{
		"x5c in jwksJson":   {func(b map[string]any) { b["oidc"].(map[string]any)["jwksJson"] = string(x5c) }, "Input JWK is not in a valid json format."},
		"condition true":    {func(b map[string]any) { b["attributeCondition"] = "true" }, "constant 'true'"},
		"bad CEL":           {func(b map[string]any) { b["attributeCondition"] = `assertion.sub ==` }, "Invalid attribute condition"},
		"unsupported CEL":   {func(b map[string]any) { b["attributeCondition"] = `size(assertion.sub) > 3` }, "Invalid attribute condition"},
		"unknown ident":     {func(b map[string]any) { b["attributeCondition"] = `request.sub == "x"` }, "undeclared reference"},
		"no google.subject": {func(b map[string]any) { b["attributeMapping"] = map[string]string{"attribute.x": "assertion.x"} }, "google.subject"},
		"bad attribute key": {func(b map[string]any) {
			b["attributeMapping"] = map[string]string{"google.subject": "assertion.sub", "attribute.X-Y": "assertion.x"}
		}, "Invalid attribute mapping key"},
		"http issuer":   {func(b map[string]any) { b["oidc"].(map[string]any)["issuerUri"] = "http://issuer.example" }, "https"},
		"11 audiences":  {func(b map[string]any) { b["oidc"].(map[string]any)["allowedAudiences"] = make([]string, 11) }, "At most 10"},
		"aws provider":  {func(b map[string]any) { b["aws"] = map[string]any{"accountId": "1"} }, "Only OIDC providers"},
		"unknown field": {func(b map[string]any) { b["colour"] = "red" }, `Unknown name "colour"`},
		"no oidc":       {func(b map[string]any) { delete(b, "oidc") }, "oidc"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b := good()
			tc.mod(b)
			st, m := api(t, "POST", pool+"/providers?workloadIdentityPoolProviderId=prov-1", p.AdminToken, b)
			wantErr(t, st, m, 400, "INVALID_ARGUMENT", tc.want)
		})
	}
	st, m := api(t, "POST", pool+"/providers?workloadIdentityPoolProviderId=prov-1", p.AdminToken, good())
	if st != 200 || m["response"].(map[string]any)["oidc"].(map[string]any)["issuerUri"] != "https://issuer.example" {
		t.Fatalf("%d %v", st, m)
	}
	if st, m := api(t, "GET", pool+"/providers", p.AdminToken, nil); st != 200 || len(m["workloadIdentityPoolProviders"].([]any)) != 1 {
		t.Fatalf("list: %d %v", st, m)
	}
	// Another project's owner is denied, with the permission named.
	other := must(emu.CreateProject())
	st, m = api(t, "GET", pool, other.AdminToken, nil)
	wantErr(t, st, m, 403, "PERMISSION_DENIED", "Permission 'iam.workloadIdentityPools.get' denied on resource '//iam.googleapis.com/projects/"+p.Number+"/locations/global/workloadIdentityPools/pool-1' (or it may not exist).")
}

func TestIAMServiceAccountsAndGenerateIdToken(t *testing.T) {
	p := must(emu.CreateProject())
	base := iamV1 + "projects/" + p.ID + "/serviceAccounts"
	st, sa := api(t, "POST", base, p.AdminToken, map[string]any{"accountId": "caller-sa", "serviceAccount": map[string]any{"displayName": "Caller"}})
	if st != 200 || sa["email"] != "caller-sa@"+p.ID+".iam.gserviceaccount.com" || len(sa["uniqueId"].(string)) != 21 {
		t.Fatalf("create: %d %v", st, sa)
	}
	st, m := api(t, "POST", base, p.AdminToken, map[string]any{"accountId": "caller-sa"})
	wantErr(t, st, m, 409, "ALREADY_EXISTS", "Service account caller-sa already exists within project projects/"+p.ID+".")
	st, m = api(t, "POST", base, p.AdminToken, map[string]any{"accountId": "x"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "Invalid account ID")
	email := sa["email"].(string)
	st, key := api(t, "POST", base+"/"+email+"/keys", p.AdminToken, "{}")
	if st != 200 {
		t.Fatalf("key: %d %v", st, key)
	}
	kf, _ := base64.StdEncoding.DecodeString(key["privateKeyData"].(string))
	var file map[string]string
	if err := json.Unmarshal(kf, &file); err != nil || file["client_email"] != email || !strings.Contains(file["private_key"], "PRIVATE KEY") ||
		file["token_uri"] != "https://oauth2.googleapis.com/token" {
		t.Fatalf("key file: %v %s", err, kf)
	}
	// That account may not mint ID tokens as the vendor: Google's denial.
	tok := emu.mintToken(accessToken{Kind: "sa", Email: email, Scope: scopeCloudPlatform, Exp: emu.Now().Add(time.Hour).Unix()})
	v := emu.Vendor()
	st, m = api(t, "POST", "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"+v.ServiceAccountEmail+":generateIdToken", tok,
		map[string]any{"audience": "org-1"})
	wantErr(t, st, m, 403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).")
	// The project segment must be '-'.
	vt := emu.mintToken(accessToken{Kind: "sa", Email: v.ServiceAccountEmail, Scope: scopeCloudPlatform, Exp: emu.Now().Add(time.Hour).Unix()})
	st, m = api(t, "POST", "https://iamcredentials.googleapis.com/v1/projects/"+v.ProjectID+"/serviceAccounts/"+v.ServiceAccountEmail+":generateIdToken", vt,
		map[string]any{"audience": "org-1"})
	wantErr(t, st, m, 400, "INVALID_ARGUMENT", "must be '-'")
	// Google's OIDC documents.
	st, disc := api(t, "GET", "https://accounts.google.com/.well-known/openid-configuration", "", nil)
	if st != 200 || disc["issuer"] != googleIssuer || disc["jwks_uri"] != "https://www.googleapis.com/oauth2/v3/certs" {
		t.Fatalf("discovery: %d %v", st, disc)
	}
	st, certs := api(t, "GET", "https://www.googleapis.com/oauth2/v3/certs", "", nil)
	if st != 200 || len(certs["keys"].([]any)) != 1 {
		t.Fatalf("certs: %d %v", st, certs)
	}
}
