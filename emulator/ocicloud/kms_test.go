package ocicloud

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"
)

func b64(b []byte) *string { s := base64.StdEncoding.EncodeToString(b); return &s }

func encrypt(cu *customer, keyID string, pt []byte, ad map[string]string) (keymanagement.EncryptResponse, error) {
	return cu.c.Encrypt(context.Background(), keymanagement.EncryptRequest{EncryptDataDetails: keymanagement.EncryptDataDetails{
		KeyId: &keyID, Plaintext: b64(pt), AssociatedData: ad}})
}

func decrypt(cu *customer, keyID, ct string, ad map[string]string) (keymanagement.DecryptResponse, error) {
	return cu.c.Decrypt(context.Background(), keymanagement.DecryptRequest{DecryptDataDetails: keymanagement.DecryptDataDetails{
		KeyId: &keyID, Ciphertext: &ct, AssociatedData: ad}})
}

// The customer's own admin creates a vault and keys and round-trips data
// bound to associated data; every other binding fails.
func TestCryptoAssociatedData(t *testing.T) {
	cu := newCustomer(t)
	ctx := context.Background()
	if !strings.HasPrefix(*cu.vault.CryptoEndpoint, "https://") || !strings.HasSuffix(*cu.vault.CryptoEndpoint, "-crypto.kms.us-ashburn-1.oraclecloud.com") {
		t.Fatalf("crypto endpoint %s", *cu.vault.CryptoEndpoint)
	}
	if !strings.HasPrefix(*cu.key.Id, "ocid1.key.oc1.iad.") || cu.key.LifecycleState != keymanagement.KeyLifecycleStateEnabled {
		t.Fatalf("key %+v", cu.key)
	}
	ad := map[string]string{"ekm:org": "org-1", "ekm:project": "proj_1", "ekm:version": "1"}
	pt := []byte("0123456789abcdef0123456789abcdef")
	enc, err := encrypt(cu, *cu.key.Id, pt, ad)
	must(t, err)
	if *enc.KeyVersionId != *cu.key.CurrentKeyVersion || *enc.KeyId != *cu.key.Id {
		t.Fatalf("encrypt named %s/%s", *enc.KeyId, *enc.KeyVersionId)
	}
	dec, err := decrypt(cu, *cu.key.Id, *enc.Ciphertext, ad)
	must(t, err)
	got, _ := base64.StdEncoding.DecodeString(*dec.Plaintext)
	if !bytes.Equal(got, pt) || dec.PlaintextChecksum == nil || *dec.KeyVersionId != *enc.KeyVersionId {
		t.Fatalf("decrypt = %+v", dec)
	}
	for name, other := range map[string]map[string]string{
		"none":    nil,
		"project": {"ekm:org": "org-1", "ekm:project": "proj_2", "ekm:version": "1"},
		"extra":   {"ekm:org": "org-1", "ekm:project": "proj_1", "ekm:version": "1", "x": "y"},
	} {
		_, err := decrypt(cu, *cu.key.Id, *enc.Ciphertext, other)
		if s, c := serviceError(err); s != 400 || c != "InvalidParameter" {
			t.Errorf("%s: %v", name, err)
		}
	}
	raw, _ := base64.StdEncoding.DecodeString(*enc.Ciphertext)
	raw[len(raw)/2] ^= 1
	_, err = decrypt(cu, *cu.key.Id, base64.StdEncoding.EncodeToString(raw), ad)
	wantError(t, err, 400, "InvalidParameter")
	// Another key of the same vault cannot decrypt it.
	k2 := cu.newKey(t, cu.creds.TenancyOCID, "AES", 32)
	_, err = decrypt(cu, *k2.Id, *enc.Ciphertext, ad)
	wantError(t, err, 400, "InvalidParameter")
	// A version other than the ciphertext's.
	_, err = cu.c.Decrypt(ctx, keymanagement.DecryptRequest{DecryptDataDetails: keymanagement.DecryptDataDetails{
		KeyId: cu.key.Id, Ciphertext: enc.Ciphertext, AssociatedData: ad, KeyVersionId: k2.CurrentKeyVersion}})
	wantError(t, err, 400, "InvalidParameter")
	// Bounds.
	_, err = encrypt(cu, *cu.key.Id, make([]byte, 4097), nil)
	wantError(t, err, 400, "InvalidParameter")
	big := map[string]string{"a": strings.Repeat("x", 4096)}
	_, err = encrypt(cu, *cu.key.Id, pt, big)
	wantError(t, err, 400, "InvalidParameter")
	// RSA keys do not encrypt with AES-GCM.
	rk := cu.newKey(t, cu.creds.TenancyOCID, "RSA", 256)
	_, err = encrypt(cu, *rk.Id, pt, nil)
	wantError(t, err, 400, "InvalidParameter")
	// Data keys.
	dk, err := cu.c.GenerateDataEncryptionKey(ctx, keymanagement.GenerateDataEncryptionKeyRequest{GenerateKeyDetails: keymanagement.GenerateKeyDetails{
		KeyId: cu.key.Id, IncludePlaintextKey: common.Bool(true), KeyShape: &keymanagement.KeyShape{Algorithm: "AES", Length: common.Int(32)}, AssociatedData: ad}})
	must(t, err)
	dd, err := decrypt(cu, *cu.key.Id, *dk.Ciphertext, ad)
	must(t, err)
	if *dd.Plaintext != *dk.Plaintext {
		t.Fatal("data key round trip")
	}
}

// Rotation, disabling, deletion scheduled and cancelled, deletion.
func TestKeyLifecycle(t *testing.T) {
	cu := newCustomer(t)
	ctx := context.Background()
	id := cu.key.Id
	pt := []byte("k")
	old, err := encrypt(cu, *id, pt, nil)
	must(t, err)

	kv, err := cu.m.CreateKeyVersion(ctx, keymanagement.CreateKeyVersionRequest{KeyId: id})
	must(t, err)
	k, err := cu.m.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: id})
	must(t, err)
	if *k.CurrentKeyVersion != *kv.Id || *kv.Id == *cu.key.CurrentKeyVersion {
		t.Fatal("rotation did not make the new version current")
	}
	nw, err := encrypt(cu, *id, pt, nil)
	must(t, err)
	if *nw.KeyVersionId != *kv.Id {
		t.Fatal("encrypt after rotation used the old version")
	}
	for _, ct := range []string{*old.Ciphertext, *nw.Ciphertext} {
		_, err := decrypt(cu, *id, ct, nil)
		must(t, err)
	}
	vs, err := cu.m.ListKeyVersions(ctx, keymanagement.ListKeyVersionsRequest{KeyId: id})
	must(t, err)
	if len(vs.Items) != 2 || *vs.Items[0].Id != *kv.Id {
		t.Fatalf("versions %+v", vs.Items)
	}
	_, err = cu.m.GetKeyVersion(ctx, keymanagement.GetKeyVersionRequest{KeyId: id, KeyVersionId: cu.key.CurrentKeyVersion})
	must(t, err)

	// Disabled: crypto refused (409 IncorrectState), then enabled again.
	d, err := cu.m.DisableKey(ctx, keymanagement.DisableKeyRequest{KeyId: id})
	must(t, err)
	if d.LifecycleState != keymanagement.KeyLifecycleStateDisabled {
		t.Fatal(d.LifecycleState)
	}
	_, err = decrypt(cu, *id, *old.Ciphertext, nil)
	wantError(t, err, 409, "IncorrectState")
	_, err = cu.m.CreateKeyVersion(ctx, keymanagement.CreateKeyVersionRequest{KeyId: id})
	wantError(t, err, 409, "Conflict")
	s := emu.Settings()
	s.DisabledKeyError = "InvalidParameter"
	must(t, emu.SetSettings(s))
	_, err = decrypt(cu, *id, *old.Ciphertext, nil)
	wantError(t, err, 400, "InvalidParameter")
	s.DisabledKeyError = "IncorrectState"
	must(t, emu.SetSettings(s))
	_, err = cu.m.EnableKey(ctx, keymanagement.EnableKeyRequest{KeyId: id})
	must(t, err)

	// If-Match.
	_, err = cu.m.DisableKey(ctx, keymanagement.DisableKeyRequest{KeyId: id, IfMatch: common.String("nope")})
	wantError(t, err, 412, "NoEtagMatch")

	// Deletion: 7-30 days ahead; cancelled, the key is as it was.
	_, err = cu.m.ScheduleKeyDeletion(ctx, keymanagement.ScheduleKeyDeletionRequest{KeyId: id, ScheduleKeyDeletionDetails: keymanagement.ScheduleKeyDeletionDetails{
		TimeOfDeletion: &common.SDKTime{Time: emu.Now().Add(24 * time.Hour)}}})
	wantError(t, err, 400, "InvalidParameter")
	sk, err := cu.m.ScheduleKeyDeletion(ctx, keymanagement.ScheduleKeyDeletionRequest{KeyId: id})
	must(t, err)
	if sk.LifecycleState != keymanagement.KeyLifecycleStatePendingDeletion || sk.TimeOfDeletion == nil {
		t.Fatalf("%+v", sk.Key)
	}
	_, err = encrypt(cu, *id, pt, nil)
	wantError(t, err, 409, "IncorrectState")
	ck, err := cu.m.CancelKeyDeletion(ctx, keymanagement.CancelKeyDeletionRequest{KeyId: id})
	must(t, err)
	if ck.LifecycleState != keymanagement.KeyLifecycleStateEnabled || ck.TimeOfDeletion != nil {
		t.Fatalf("%+v", ck.Key)
	}
	_, err = cu.m.CancelKeyDeletion(ctx, keymanagement.CancelKeyDeletionRequest{KeyId: id})
	wantError(t, err, 409, "Conflict")

	// Once the deletion date passes, the key is DELETED and unusable.
	_, err = cu.m.ScheduleKeyDeletion(ctx, keymanagement.ScheduleKeyDeletionRequest{KeyId: id, ScheduleKeyDeletionDetails: keymanagement.ScheduleKeyDeletionDetails{
		TimeOfDeletion: &common.SDKTime{Time: emu.Now().Add(7 * 24 * time.Hour)}}})
	must(t, err)
	// (The SDK signs with the real clock, so instead of moving the
	// emulator's clock eight days on, the deletion date is moved back.)
	emu.mu.Lock()
	emu.st.Keys[*id].TimeOfDeletion = emu.Now().Add(-time.Second)
	emu.mu.Unlock()
	gk, err := cu.m.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: id})
	must(t, err)
	if gk.LifecycleState != keymanagement.KeyLifecycleStateDeleted {
		t.Fatal(gk.LifecycleState)
	}
	_, err = decrypt(cu, *id, *old.Ciphertext, nil)
	wantError(t, err, 404, "NotAuthorizedOrNotFound")
}
