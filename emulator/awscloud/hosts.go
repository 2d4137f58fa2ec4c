package awscloud

import (
	"sort"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// partition is an AWS partition the emulator serves.
type partition struct {
	ID        string // aws, aws-cn, aws-us-gov
	DNSSuffix string
	// IAMHost and IAMRegion: IAM is global per partition and signed for
	// one region (botocore partitions.json / the SDK's endpoint rules).
	IAMHosts  []string
	IAMRegion string
	Regions   []string
}

// partitions lists the regions of the SDK's partitions.json
// (aws-sdk-go-v2 v1.48.0, internal/endpoints/awsrulesfn/partitions.json).
// The certificate names every region explicitly: Go's x509 wildcard
// stands for one label only, so "*.amazonaws.com" would not cover
// "kms.us-east-1.amazonaws.com".
var partitions = []*partition{
	{ID: "aws", DNSSuffix: "amazonaws.com", IAMHosts: []string{"iam.amazonaws.com", "iam-fips.amazonaws.com"}, IAMRegion: "us-east-1",
		Regions: []string{"af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
			"ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6",
			"ap-southeast-7", "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
			"eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1", "me-west-1", "mx-central-1",
			"sa-east-1", "sa-west-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2"}},
	{ID: "aws-cn", DNSSuffix: "amazonaws.com.cn", IAMHosts: []string{"iam.cn-north-1.amazonaws.com.cn", "iam-fips.amazonaws.com.cn"}, IAMRegion: "cn-north-1",
		Regions: []string{"cn-north-1", "cn-northwest-1"}},
	{ID: "aws-us-gov", DNSSuffix: "amazonaws.com", IAMHosts: []string{"iam.us-gov.amazonaws.com"}, IAMRegion: "us-gov-west-1",
		Regions: []string{"us-gov-east-1", "us-gov-west-1"}},
}

func partitionByID(id string) *partition {
	for _, p := range partitions {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// regionPartition returns the partition of a known region.
func regionPartition(region string) *partition {
	for _, p := range partitions {
		for _, r := range p.Regions {
			if r == region {
				return p
			}
		}
	}
	return nil
}

type service int

const (
	svcUnknown service = iota
	svcSTS
	svcIAM
	svcKMS
	svcControl
)

var serviceNames = map[service]string{svcSTS: "sts", svcIAM: "iam", svcKMS: "kms"}

// endpoint is what a host name means: a service, the region requests to
// it must be signed for, and its partition.
type endpoint struct {
	svc    service
	region string
	part   *partition
}

var hostTable = buildHosts()

func buildHosts() map[string]endpoint {
	m := map[string]endpoint{}
	aws := partitionByID("aws")
	// The global STS endpoint is signed as us-east-1 (Region "aws-global").
	m["sts.amazonaws.com"] = endpoint{svcSTS, "us-east-1", aws}
	for _, p := range partitions {
		for _, h := range p.IAMHosts {
			m[h] = endpoint{svcIAM, p.IAMRegion, p}
		}
		for _, r := range p.Regions {
			for _, prefix := range []string{"sts", "sts-fips"} {
				m[prefix+"."+r+"."+p.DNSSuffix] = endpoint{svcSTS, r, p}
			}
			for _, prefix := range []string{"kms", "kms-fips"} {
				m[prefix+"."+r+"."+p.DNSSuffix] = endpoint{svcKMS, r, p}
			}
		}
	}
	return m
}

// serverDNSNames are the certificate's names: one wildcard per region
// (covering sts., sts-fips., kms., kms-fips.), the global hosts and the
// control-API names.
func serverDNSNames() []string {
	set := map[string]bool{"sts.amazonaws.com": true, emukit.ControlHost: true, "localhost": true}
	for _, p := range partitions {
		for _, h := range p.IAMHosts {
			set[h] = true
		}
		for _, r := range p.Regions {
			set["*."+r+"."+p.DNSSuffix] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// classify maps a Host header to an endpoint.
func classify(hostport string) (endpoint, string) {
	host := emukit.HostName(hostport)
	if ep, ok := hostTable[host]; ok {
		return ep, host
	}
	if emukit.IsControlHost(host) {
		return endpoint{svc: svcControl}, host
	}
	return endpoint{}, host
}

// Hosts lists every production host name the emulator serves (for
// documentation and tests).
func Hosts() []string {
	out := make([]string, 0, len(hostTable))
	for h := range hostTable {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

func isKnownRegion(r string) bool { return regionPartition(r) != nil }
