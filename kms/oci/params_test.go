package oci

import (
	"errors"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/kms"
)

const (
	keyIAD   = "ocid1.key.oc1.iad.afnxza26aag4s.abuwcljrkxhhdzwu6bdmmc2e5xcnbmhmwdkyhc3sjbgxdzcqylcqyukfh3wq"
	vaultIAD = "ocid1.vault.oc1.iad.afnxza26aag4s.abuwcljrxbiq6hdbl4fqqwbtghqdb3o3wkdvdw5qr4z3bq5vqdq7tyrd3kva"
	verIAD   = "ocid1.keyversion.oc1.iad.afnxza26aag4s.dcqsme3rnhyaa.abuwcljrkbu2dkhbsbfdglrshsp7nmd6y6dvd4ezzobxpnsm6fbvsqtpiqoq"
	keyFRA   = "ocid1.key.oc1.eu-frankfurt-1.cnqtaqh2aagiu.abtheljr3x3xpqoonwpnnyyyxx2ur3ewmpvnmqsgqejjx5hpvbnwpnlvxxia"
	vaultFRA = "ocid1.vault.oc1.eu-frankfurt-1.cnqtaqh2aagiu.abtheljruaxmdxgoqx6lpo5b7vdlmf5ct7luqnhsvw2gcolmqzmfnrldxaiq"
	keyGov   = "ocid1.key.oc2.us-langley-1.bbqehaq3aadfa.abuwcljrkxhhdzwu6bdmmc2e5xcnbmhmwdkyhc3sjbgxdzcqylcqyukfh3wq"
)

func TestCheckParams(t *testing.T) {
	realms := map[string]bool{"oc1": true}
	good := kms.Params{ParamKeyOCID: keyIAD, ParamVaultOCID: vaultIAD, ParamRegion: "us-ashburn-1"}
	out, ps, err := checkParams(good, realms)
	if err != nil || out[ParamRegion] != "us-ashburn-1" || ps.region.kmsHost() != "kms.us-ashburn-1.oraclecloud.com" || ps.version != nil {
		t.Fatal(out, err)
	}
	// The short code normalised; a key version pinned.
	short := kms.Params{ParamKeyOCID: keyIAD, ParamVaultOCID: vaultIAD, ParamRegion: "iad", ParamKeyVersionOCID: verIAD}
	out, ps, err = checkParams(short, realms)
	if err != nil || out[ParamRegion] != "us-ashburn-1" || out[ParamKeyVersionOCID] != verIAD || ps.version == nil {
		t.Fatal(out, err)
	}
	if _, _, err := checkParams(kms.Params{ParamKeyOCID: keyFRA, ParamVaultOCID: vaultFRA, ParamRegion: "eu-frankfurt-1"}, realms); err != nil {
		t.Fatal(err)
	}
	with := func(k, v string) kms.Params {
		p := kms.Params{}
		for a, b := range good {
			p[a] = b
		}
		if v == "" {
			delete(p, k)
		} else {
			p[k] = v
		}
		return p
	}
	for name, tc := range map[string]struct {
		p           kms.Params
		code, param string
	}{
		"unknown param":       {with("role_arn", "x"), CodeUnknownParameter, "role_arn"},
		"missing key":         {with(ParamKeyOCID, ""), CodeMissingParameter, ParamKeyOCID},
		"missing vault":       {with(ParamVaultOCID, ""), CodeMissingParameter, ParamVaultOCID},
		"missing region":      {with(ParamRegion, ""), CodeMissingParameter, ParamRegion},
		"too long":            {with(ParamKeyOCID, strings.Repeat("a", 2049)), CodeParameterTooLong, ParamKeyOCID},
		"bad region":          {with(ParamRegion, "us-east-1"), CodeInvalidRegion, ParamRegion},
		"upper-case region":   {with(ParamRegion, "US-ASHBURN-1"), CodeInvalidRegion, ParamRegion},
		"realm not enabled":   {with(ParamRegion, "us-langley-1"), CodeRealmNotEnabled, ParamRegion},
		"key is a vault":      {with(ParamKeyOCID, vaultIAD), CodeInvalidKeyOCID, ParamKeyOCID},
		"vault is a key":      {with(ParamVaultOCID, keyIAD), CodeInvalidVaultOCID, ParamVaultOCID},
		"key not an OCID":     {with(ParamKeyOCID, "https://evil.example/"), CodeInvalidKeyOCID, ParamKeyOCID},
		"key upper case":      {with(ParamKeyOCID, strings.ToUpper(keyIAD)), CodeInvalidKeyOCID, ParamKeyOCID},
		"key unknown region":  {with(ParamKeyOCID, strings.Replace(keyIAD, ".iad.", ".xyz.", 1)), CodeInvalidKeyOCID, ParamKeyOCID},
		"key unknown realm":   {with(ParamKeyOCID, strings.Replace(keyIAD, ".oc1.", ".oc99.", 1)), CodeInvalidKeyOCID, ParamKeyOCID},
		"key realm mismatch":  {with(ParamKeyOCID, strings.Replace(keyIAD, ".oc1.", ".oc2.", 1)), CodeInvalidKeyOCID, ParamKeyOCID},
		"key other region":    {with(ParamKeyOCID, keyFRA), CodeRegionMismatch, ParamKeyOCID},
		"vault other region":  {with(ParamVaultOCID, vaultFRA), CodeRegionMismatch, ParamVaultOCID},
		"version not version": {with(ParamKeyVersionOCID, keyIAD), CodeInvalidKeyVersionOCID, ParamKeyVersionOCID},
		"version other region": {with(ParamKeyVersionOCID, strings.Replace(verIAD, ".iad.", ".phx.", 1)), CodeRegionMismatch,
			ParamKeyVersionOCID},
		"key with a slash":   {with(ParamKeyOCID, keyIAD+"/x"), CodeInvalidKeyOCID, ParamKeyOCID},
		"key with a newline": {with(ParamKeyOCID, keyIAD+"\n"), CodeInvalidKeyOCID, ParamKeyOCID},
	} {
		_, _, err := checkParams(tc.p, realms)
		var e *kms.Error
		if !errors.As(err, &e) || e.Code != tc.code || e.Param != tc.param || e.Class != kms.Invalid {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, err := checkParams(kms.Params{ParamKeyOCID: keyGov, ParamVaultOCID: strings.Replace(keyGov, ".key.", ".vault.", 1), ParamRegion: "us-langley-1"},
		map[string]bool{"oc1": true, "oc2": true}); err != nil {
		t.Fatal(err)
	}
}

func TestEndpointHost(t *testing.T) {
	r, _ := regionOf("us-ashburn-1")
	if h, err := endpointHost("https://afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com", "crypto", r); err != nil || h != "afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com" {
		t.Fatal(h, err)
	}
	if _, err := endpointHost("https://afnxza26aag4s-management.kms.us-ashburn-1.oraclecloud.com/", "management", r); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"http://afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com",
		"https://afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com:8443",
		"https://afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com/x",
		"https://afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com?x=1",
		"https://u@afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com",
		"https://afnxza26aag4s-crypto.kms.us-phoenix-1.oraclecloud.com",
		"https://afnxza26aag4s-management.kms.us-ashburn-1.oraclecloud.com",
		"https://a.b-crypto.kms.us-ashburn-1.oraclecloud.com",
		"https://afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com.evil.example",
		"https://169.254.169.254",
		"https://-crypto.kms.us-ashburn-1.oraclecloud.com",
		"afnxza26aag4s-crypto.kms.us-ashburn-1.oraclecloud.com",
	} {
		if _, err := endpointHost(bad, "crypto", r); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// FuzzCheckParams: Check never panics, and what it accepts names only
// OCIDs of one enabled realm and region, whose hosts are OCI's.
func FuzzCheckParams(f *testing.F) {
	f.Add(keyIAD, vaultIAD, "us-ashburn-1", "")
	f.Add(keyFRA, vaultFRA, "eu-frankfurt-1", "")
	f.Add(keyIAD, vaultIAD, "iad", verIAD)
	f.Add("ocid1.key.oc1.iad..x", "ocid1.vault.oc1..", "", "x")
	f.Fuzz(func(t *testing.T, key, vault, region, version string) {
		p := kms.Params{ParamKeyOCID: key, ParamVaultOCID: vault, ParamRegion: region}
		if version != "" {
			p[ParamKeyVersionOCID] = version
		}
		out, ps, err := checkParams(p, map[string]bool{"oc1": true})
		if err != nil {
			var e *kms.Error
			if !errors.As(err, &e) || e.Class != kms.Invalid || e.Code == "" {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		if ps.region.realm != "oc1" || !strings.HasSuffix(ps.region.kmsHost(), ".oraclecloud.com") || out[ParamRegion] != ps.region.id {
			t.Fatalf("accepted %+v", out)
		}
		if strings.ContainsAny(out[ParamKeyOCID]+out[ParamVaultOCID], "/:@?# \n") {
			t.Fatalf("accepted %+v", out)
		}
		again, _, err := checkParams(out, map[string]bool{"oc1": true})
		if err != nil || len(again) != len(out) {
			t.Fatalf("normalised params do not check: %v", err)
		}
	})
}
