package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

func TestReencryptAndRotateKeyRefuseBadArguments(t *testing.T) {
	dir := t.TempDir()
	org, proj := "org-0123456789abcdefghjkmnpqrs", "proj_0123456789abcdefghjkmnpqrs"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"reencrypt", "--org", org}, "exactly one of --project or --all-projects"},
		{[]string{"reencrypt", "--org", org, "--project", proj, "--all-projects"}, "exactly one of"},
		{[]string{"reencrypt", "--org", "acme", "--project", proj}, "--org must be"},
		{[]string{"reencrypt", "--org", org, "--project", "../x"}, "--project must be"},
		{[]string{"reencrypt", "--org", org, "--all-projects", "--rate", "-1"}, "--rate"},
		{[]string{"project", "rotate-key", "--org", org}, "--project must be"},
		{[]string{"project", "rotate-key", "--org", org, "--project", proj, "--data-dir", dir}, "no project " + proj},
	} {
		root := rootCmd()
		root.SetArgs(c.args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ekm %s: %v, want an error containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

func TestServeHelpDocumentsRotationPeriod(t *testing.T) {
	var out bytes.Buffer
	root := rootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"serve", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--project-key-rotation-period") || !strings.Contains(out.String(), "EKM_PROJECT_KEY_ROTATION_PERIOD") {
		t.Fatal("serve --help lacks --project-key-rotation-period")
	}
}

// The operator commands that unwrap or validate project keys take every
// KMS identity flag serve takes (and its environment variable): without
// them a key of that type could not be reached.
func TestToolsTakeEveryKMSFlagOfServe(t *testing.T) {
	help := func(args ...string) string {
		var out bytes.Buffer
		root := rootCmd()
		root.SetOut(&out)
		root.SetArgs(append(args, "--help"))
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	var kmsFlags []string
	for _, f := range regexp.MustCompile(`--((?:azure|aws|gcp|oci)[a-z-]*)`).FindAllStringSubmatch(help("serve"), -1) {
		kmsFlags = append(kmsFlags, f[1])
	}
	if len(kmsFlags) < 30 {
		t.Fatalf("found only %d KMS flags in serve --help", len(kmsFlags))
	}
	for _, cmd := range [][]string{{"reencrypt"}, {"project", "rotate-key"}, {"org", "set-key"}, {"org", "settings"}} {
		h := help(cmd...)
		for _, f := range kmsFlags {
			if !strings.Contains(h, "--"+f+" ") || !strings.Contains(h, envName(f)) {
				t.Errorf("ekm %s lacks --%s or %s", strings.Join(cmd, " "), f, envName(f))
			}
		}
	}
}
