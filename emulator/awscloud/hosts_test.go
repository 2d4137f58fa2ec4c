package awscloud

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// TestEveryEndpointIsServed resolves the SDK's own endpoints for every
// region and partition, with and without FIPS, and checks that the
// certificate covers each host and the emulator routes it with the right
// signing region.
func TestEveryEndpointIsServed(t *testing.T) {
	names := serverDNSNames()
	if err := emukit.ValidateDNSNames(names); err != nil {
		t.Fatal(err)
	}
	check := func(svc service, host, region string) {
		t.Helper()
		if !emukit.Covers(names, host) {
			t.Errorf("certificate does not cover %s", host)
		}
		ep, _ := classify(host)
		if ep.svc != svc || ep.region != region {
			t.Errorf("%s routed to %v/%s, want %v/%s", host, ep.svc, ep.region, svc, region)
		}
	}
	for _, p := range partitions {
		for _, r := range p.Regions {
			for _, fips := range []bool{false, true} {
				ke, err := kms.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, kms.EndpointParameters{Region: aws.String(r), UseFIPS: aws.Bool(fips)})
				if err != nil {
					t.Fatal(err)
				}
				check(svcKMS, ke.URI.Host, r)
				se, err := sts.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, sts.EndpointParameters{Region: aws.String(r), UseFIPS: aws.Bool(fips)})
				if err != nil {
					t.Fatal(err)
				}
				check(svcSTS, se.URI.Host, r)
				ie, err := iam.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, iam.EndpointParameters{Region: aws.String(r), UseFIPS: aws.Bool(fips)})
				if err != nil {
					t.Fatal(err)
				}
				check(svcIAM, ie.URI.Host, p.IAMRegion)
			}
		}
	}
	se, _ := sts.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, sts.EndpointParameters{Region: aws.String("aws-global")})
	check(svcSTS, se.URI.Host, "us-east-1")
	if len(Hosts()) < 100 {
		t.Fatal("Hosts() too short")
	}
}

// TestOtherPartitions runs STS and KMS in aws-cn and aws-us-gov.
func TestOtherPartitions(t *testing.T) {
	e := shared
	for _, tc := range []struct{ part, region string }{{"aws-cn", "cn-northwest-1"}, {"aws-us-gov", "us-gov-west-1"}} {
		root, err := e.CreateAccountIn(tc.part)
		if err != nil {
			t.Fatal(err)
		}
		kc := kmsClient(e, tc.region, static(root))
		k, err := kc.CreateKey(ctx, &kms.CreateKeyInput{})
		if err != nil {
			t.Fatal(err)
		}
		if want := "arn:" + tc.part + ":kms:" + tc.region + ":" + root.AccountID + ":key/"; (*k.KeyMetadata.Arn)[:len(want)] != want {
			t.Fatal(*k.KeyMetadata.Arn)
		}
		fips := kms.NewFromConfig(cfg(e, tc.region, static(root)), func(o *kms.Options) { o.EndpointOptions.UseFIPSEndpoint = aws.FIPSEndpointStateEnabled })
		if _, err := fips.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: k.KeyMetadata.Arn}); err != nil {
			t.Fatal(err)
		}
		if _, err := iamClientIn(e, tc.region, static(root)).CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("r"),
			AssumeRolePolicyDocument: aws.String(trustFor("arn:"+tc.part+":iam::"+root.AccountID+":root", ""))}); err != nil {
			t.Fatal(err)
		}
		who, err := stsClient(e, tc.region, static(root)).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil || *who.Arn != "arn:"+tc.part+":iam::"+root.AccountID+":root" {
			t.Fatal(err)
		}
	}
}

func iamClientIn(e *Emulator, region string, creds aws.CredentialsProvider) *iam.Client {
	return iam.NewFromConfig(cfg(e, region, creds))
}
