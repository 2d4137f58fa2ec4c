package app

import (
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/kms/aws"
)

func TestAWSDriverIsWired(t *testing.T) {
	for _, k := range []string{"AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	root := secretForTest()
	// Nothing is dialled outside this test: the override points nowhere.
	c := Config{ProbeInterval: time.Second, AWS: AWSConfig{Enabled: true, DialOverride: "127.0.0.1:1"}}
	ds, err := Drivers(c, root)
	if err != nil {
		t.Fatal(err)
	}
	var d *aws.Driver
	for _, x := range ds {
		if x.Type() == aws.Type {
			d = x.(*aws.Driver)
		}
	}
	if d == nil {
		t.Fatalf("no aws driver among %d", len(ds))
	}
	p := map[string]string{"role_arn": "arn:aws:iam::111122223333:role/r", "external_id": "org-0123456789abcdefghjkmnpqrs",
		"kms_arn": "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
	if _, err := d.Check("org-0123456789abcdefghjkmnpqrs", p); err == nil {
		t.Fatal("a us-gov key was accepted by an aws-only server")
	}
	c.AWS.Partitions = []string{"aws-mars"}
	if _, err := Drivers(c, root); err == nil || !strings.Contains(err.Error(), "aws-mars") {
		t.Fatalf("unknown partition accepted: %v", err)
	}
	c.AWS = AWSConfig{Enabled: true, DialOverride: "not an address"}
	if _, err := Drivers(c, root); err == nil {
		t.Fatal("bad dial override accepted")
	}
	// Not enabled: the type is described, and says how to enable it.
	s, enabled, ok := Registry(nil).Spec(aws.Type)
	if !ok || enabled || !strings.Contains(s.Enable, "--aws") {
		t.Fatalf("aws without a driver: enabled %v, %q", enabled, s.Enable)
	}
}
