package main

import (
	"bytes"
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
