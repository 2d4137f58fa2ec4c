package azure

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

var testAAD = kms.AAD{OrgID: fakeOrg, ProjectID: "proj_test", Version: 1}

const rbacDenyBody = `{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=99999999-8888-7777-6666-555555555555;oid=0b5e2a5b-0000-0000-0000-000000000000;iss=https://sts.windows.net/11111111-2222-3333-4444-555555555555/\r\nAction: 'Microsoft.KeyVault/vaults/keys/decrypt/action'\r\nResource: '/subscriptions/x/resourcegroups/rg/providers/microsoft.keyvault/vaults/ekmtest/keys/k'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: ekmtest;location=westeurope\r\n","innererror":{"code":"ForbiddenByRbac"}}}`

// TestConformanceFake runs the provider conformance suite against the
// in-test fake; the emulator run is in emulator_test.go.
func TestConformanceFake(t *testing.T) {
	kmstest.Run(t, func(t *testing.T) kmstest.Harness {
		f := newFakeAzure(t)
		p := f.provider(t, f.driver(t, nil), fakeTenant)
		var revoked atomic.Bool
		f.kvFault = func(w http.ResponseWriter, r *http.Request) bool {
			if revoked.Load() {
				writeRaw(w, 403, rbacDenyBody)
				return true
			}
			return false
		}
		return kmstest.Harness{
			Provider: p, Driver: p.d, OrgID: fakeOrg,
			Rotate:  func(context.Context) error { f.rotate(); return nil },
			Revoke:  func(context.Context) error { revoked.Store(true); return nil },
			Restore: func(context.Context) error { revoked.Store(false); return nil },
		}
	})
}

func TestWrapRecordsVersionAndUnwrapUsesIt(t *testing.T) {
	f := newFakeAzure(t)
	p := f.provider(t, f.driver(t, nil), fakeTenant)
	ctx := context.Background()
	pt := bytes.Repeat([]byte{7}, 32)
	w, err := p.Wrap(ctx, pt, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if w.KeyVersion != f.kid(f.versions[0].id) || w.Algorithm != Algorithm {
		t.Fatalf("wrapped = %q %q", w.KeyVersion, w.Algorithm)
	}
	f.rotate()
	var path string
	f.kvFault = func(_ http.ResponseWriter, r *http.Request) bool { path = r.URL.Path; return false }
	got, err := p.Unwrap(ctx, w, testAAD)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Unwrap after rotation: %v", err)
	}
	if want := "/keys/" + fakeKey + "/" + f.versions[0].id + "/decrypt"; path != want {
		t.Fatalf("decrypt path %q, want %q", path, want)
	}
}

func TestUnwrapRefusesForeignKid(t *testing.T) {
	f := newFakeAzure(t)
	p := f.provider(t, f.driver(t, nil), fakeTenant)
	w, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	if err != nil {
		t.Fatal(err)
	}
	before := f.kvAttempts.Load()
	v := f.versions[0].id
	for _, kid := range []string{
		"https://evil.com/keys/" + fakeKey + "/" + v,
		"https://ekmtest.vault.azure.net.evil.com/keys/" + fakeKey + "/" + v,
		"https://other.vault.azure.net/keys/" + fakeKey + "/" + v,
		"https://ekmtest.vault.azure.net/keys/" + fakeOrg + "--other/" + v,
		"https://ekmtest.vault.azure.net/keys/" + fakeKey,
		"https://ekmtest.vault.azure.net/keys/" + fakeKey + "/" + v + "/decrypt",
		"https://ekmtest.vault.azure.net/keys/" + fakeKey + "/" + v + "x",
		"https://ekmtest.vault.azure.net:444/keys/" + fakeKey + "/" + v,
		"http://ekmtest.vault.azure.net/keys/" + fakeKey + "/" + v,
	} {
		bad := w
		bad.KeyVersion = kid
		_, err := p.Unwrap(context.Background(), bad, testAAD)
		var ke *kms.Error
		if !errors.As(err, &ke) || ke.Class != kms.Invalid || ke.Code != CodeWrongKey {
			t.Errorf("Unwrap(%s) = %v, want Invalid %s", kid, err, CodeWrongKey)
		}
	}
	if n := f.kvAttempts.Load(); n != before {
		t.Fatalf("refused kids still reached Key Vault (%d requests)", n-before)
	}
	// Case differences in host and key name are the same key to Key Vault.
	w.KeyVersion = strings.Replace(w.KeyVersion, "ekmtest.vault.azure.net", "EKMTEST.vault.azure.net", 1)
	if _, err := p.Unwrap(context.Background(), w, testAAD); err != nil {
		t.Fatalf("upper-case host: %v", err)
	}
}

func TestRequestIDReported(t *testing.T) {
	f := newFakeAzure(t)
	p := f.provider(t, f.driver(t, nil), fakeTenant)
	var ci kms.CallInfo
	ctx := kms.WithCallInfo(context.Background(), &ci)
	if _, err := p.Describe(ctx); err != nil {
		t.Fatal(err)
	}
	first := ci.RequestID
	if first == "" || first != f.lastKVReqID.Load().(string) {
		t.Fatalf("CallInfo.RequestID %q, sent %q", first, f.lastKVReqID.Load())
	}
	f.kvFault = func(w http.ResponseWriter, r *http.Request) bool { writeRaw(w, 403, rbacDenyBody); return true }
	_, err := p.Wrap(ctx, make([]byte, 32), testAAD)
	var ke *kms.Error
	if !errors.As(err, &ke) {
		t.Fatal(err)
	}
	if ci.RequestID == first || ci.RequestID != f.lastKVReqID.Load().(string) || ke.RequestID != ci.RequestID {
		t.Fatalf("failure: CallInfo %q, error %q, sent %q", ci.RequestID, ke.RequestID, f.lastKVReqID.Load())
	}
}

func TestWrapBoundsPlaintext(t *testing.T) {
	f := newFakeAzure(t)
	p := f.provider(t, f.driver(t, nil), fakeTenant)
	for _, n := range []int{0, 65} {
		if _, err := p.Wrap(context.Background(), make([]byte, n), testAAD); kms.ClassOf(err) != kms.Invalid {
			t.Errorf("Wrap(%d bytes) = %v", n, err)
		}
	}
}

func TestDescribe(t *testing.T) {
	f := newFakeAzure(t)
	p := f.provider(t, f.driver(t, nil), fakeTenant)
	info, err := p.Describe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.CurrentVersion != f.kid(f.versions[0].id) || info.KeyType != "RSA" || !info.Enabled || len(info.Operations) != 4 {
		t.Fatalf("Describe = %+v", info)
	}
}
