package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/app"
)

// --admin-kms-rate and --admin-kms-burst (and their EKM_* variables):
// 0 is no limit, values that make no sense are refused before anything is
// opened or created.
func TestServeAdminKMSLimitFlags(t *testing.T) {
	var c app.Config
	c.AdminKMSBurst = 50
	if err := setAdminKMSLimit(&c, 0); err != nil || c.AdminKMSRate != app.NoAdminKMSLimit {
		t.Fatalf("rate 0: %v %v, want no limit", c.AdminKMSRate, err)
	}
	if err := setAdminKMSLimit(&c, 2.5); err != nil || c.AdminKMSRate != 2.5 {
		t.Fatalf("rate 2.5: %v %v", c.AdminKMSRate, err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--admin-kms-rate", "-1"}, want: "--admin-kms-rate"},
		{args: []string{"--admin-kms-rate", "NaN"}, want: "--admin-kms-rate"},
		{args: []string{"--admin-kms-rate", "0.00001"}, want: "--admin-kms-rate"},
		{args: []string{"--admin-kms-burst", "0"}, want: "--admin-kms-burst"},
		{env: map[string]string{"EKM_ADMIN_KMS_BURST": "-3"}, want: "--admin-kms-burst"},
		{env: map[string]string{"EKM_ADMIN_KMS_RATE": "fast"}, want: "EKM_ADMIN_KMS_RATE"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		dir := filepath.Join(t.TempDir(), "data")
		root := rootCmd()
		root.SetArgs(append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir}, tc.args...))
		root.SilenceUsage, root.SilenceErrors = true, true
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want an error naming %s", tc.args, tc.env, err, tc.want)
		}
		if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%v %v: the data dir was created", tc.args, tc.env)
		}
		for k := range tc.env {
			os.Unsetenv(k)
		}
	}
}
