package app

import (
	"context"
	"fmt"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/ekm-dev/ekm/internal/dialoverride"
	"github.com/ekm-dev/ekm/kms/aws"
)

// AWSConfig enables the aws key type. ekm's own AWS identity is never
// configured here: it comes from the AWS SDK's default chain (environment,
// shared config files, web identity, container or instance role), as for
// any AWS application, so no secret is on the command line.
type AWSConfig struct {
	// Enabled offers the aws key type.
	Enabled bool
	// Partitions whose keys may be registered: "aws" (default),
	// "aws-us-gov", "aws-cn". ekm's principal can only be trusted by roles
	// of its own partition.
	Partitions []string
	// FIPS calls the FIPS endpoints of STS and KMS.
	FIPS bool
	// PrincipalARN is the principal customers trust, when it cannot be
	// derived from ekm's credentials (a role with a path).
	PrincipalARN string
	// SessionRefresh bounds how long one assumed-role session is used
	// before ekm assumes the role again, i.e. how long a change to a
	// customer's trust policy goes unnoticed. Default: the probe interval.
	SessionRefresh time.Duration
	// DialOverride sends every AWS connection to host:port (the emulator).
	DialOverride string
	// CAFile is a PEM CA to trust for AWS hosts (the emulator's).
	CAFile string
}

func awsDriver(c Config) (*aws.Driver, error) {
	opt, err := dialoverride.TransportOptions(c.AWS.DialOverride, c.AWS.CAFile)
	if err != nil {
		return nil, fmt.Errorf("aws transport: %w", err)
	}
	refresh := c.AWS.SessionRefresh
	if refresh <= 0 {
		refresh = c.ProbeInterval
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := aws.NewDriver(ctx, aws.Config{
		HTTPClient:     awshttp.NewBuildableClient().WithTransportOptions(opt),
		Partitions:     c.AWS.Partitions,
		FIPS:           c.AWS.FIPS,
		PrincipalARN:   c.AWS.PrincipalARN,
		SessionRefresh: refresh,
		// One provider call, retries included, fits in the call layer's
		// KMS timeout.
		Timeout: c.KMSTimeout,
		Logger:  c.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("aws: %w", err)
	}
	return d, nil
}
