package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ekm-dev/ekm/app"
)

// storeFlags are shared by serve and the operator commands that work on the
// same store.
func storeFlags(fs *pflag.FlagSet, c *app.Config) {
	fs.StringVar(&c.DataDir, "data-dir", "ekm-data", "directory for the embedded SQLite database, blobs and the local root key")
	fs.StringVar(&c.Database, "database", "", "PostgreSQL URL (postgres://…) for multi-replica deployments; empty = SQLite in the data dir")
	fs.StringVar(&c.BlobURL, "blob-url", "", "where file contents go: file:///path, s3://bucket?region=…, azblob://container or gs://bucket; credentials come from each SDK's default chain (default: <data-dir>/blobs)")
	fs.StringVar(&c.LocalRootKeyFile, "local-root-key-file", "", "file holding the root of local keys (default <data-dir>/local-root.key; replicas must share it)")
}

// envelopeFlag is the envelope format version new ciphertexts are written
// in, for serve and every operator command that seals data (reencrypt).
func envelopeFlag(fs *pflag.FlagSet, c *app.Config) {
	c.EnvelopeWriteVersion = app.DefaultEnvelopeWriteVersion
	fs.Var((*writeVersionValue)(&c.EnvelopeWriteVersion), "envelope-write-version",
		"envelope format version of new ciphertexts: 3, or an older one (2, 1) while replicas of a release that cannot read the newer one run (rolling upgrade, rollback), or 2 to keep version 2's SHA-256 key commitment; all are always read (docs/OPERATIONS.md)")
}

// writeVersionValue is the value of --envelope-write-version: 1, 2 or 3,
// and nothing else (0 would mean the default to app.Config).
type writeVersionValue int

func (v *writeVersionValue) String() string { return strconv.Itoa(int(*v)) }
func (v *writeVersionValue) Type() string   { return "1|2|3" }
func (v *writeVersionValue) Set(s string) error {
	switch s {
	case "1", "2", "3":
		*v = writeVersionValue(s[0] - '0')
		return nil
	}
	return fmt.Errorf("%q is not an envelope format version ekm writes: want 1, 2 or 3", s)
}

func azureFlags(fs *pflag.FlagSet, c *app.AzureConfig) {
	fs.StringVar(&c.ClientID, "azure-client-id", "", "client (application) id of ekm's multi-tenant Entra ID app; enables the azure key type")
	fs.StringVar(&c.ClientSecret, "azure-client-secret", "", "client secret of the app (prefer the env var to keep it out of process listings)")
	fs.StringVar(&c.ClientCertificate, "azure-client-certificate", "", "PEM or PKCS#12 file with the app's certificate and private key")
	fs.StringVar(&c.ClientCertificatePassword, "azure-client-certificate-password", "", "password of a PKCS#12 certificate file")
	fs.StringVar(&c.FederatedTokenFile, "azure-federated-token-file", "", "workload identity token file (federated credential)")
	fs.StringVar(&c.Cloud, "azure-cloud", "", "cloud ekm's app is registered in: public (default), china or usgov; only that cloud's vaults can be registered")
	fs.StringVar(&c.DialOverride, "azure-dial-override", "", "send every Azure connection to this host:port (the Azure emulator); TLS still verifies the real host names")
	fs.StringVar(&c.CAFile, "azure-ca-file", "", "extra CA (PEM) to trust for Azure hosts (the emulator's ca.pem)")
}

// awsFlags configure the aws key type. ekm's own AWS identity is not a
// flag: it comes from the AWS SDK's default chain (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, container or instance
// role), so no secret is ever on the command line.
func awsFlags(fs *pflag.FlagSet, c *app.AWSConfig) {
	fs.BoolVar(&c.Enabled, "aws", false, "enable the aws key type; ekm's own AWS identity comes from the AWS SDK's default chain (AWS_* environment, shared config, web identity, container or instance role)")
	fs.StringSliceVar(&c.Partitions, "aws-partitions", []string{"aws"}, "partitions whose keys may be registered: aws, aws-us-gov, aws-cn (that of ekm's own credentials)")
	fs.BoolVar(&c.FIPS, "aws-fips", false, "call the FIPS endpoints of AWS STS and KMS (sts-fips.<region>…, kms-fips.<region>…)")
	fs.StringVar(&c.PrincipalARN, "aws-principal-arn", "", "the IAM role or user ARN customers trust (default: derived from ekm's credentials; set it for a role with a path)")
	fs.DurationVar(&c.SessionRefresh, "aws-session-refresh", 0, "assume each customer role again after this long, so that a trust policy change is noticed (default: the probe interval)")
	fs.StringVar(&c.DialOverride, "aws-dial-override", "", "send every AWS connection to this host:port (the AWS emulator); TLS still verifies the real host names")
	fs.StringVar(&c.CAFile, "aws-ca-file", "", "extra CA (PEM) to trust for AWS hosts (the emulator's ca.pem)")
}

// ociFlags configure the oci key type: ekm's own OCI identity. Nothing
// secret is a flag: the API key's private key and its passphrase are named
// by file.
func ociFlags(fs *pflag.FlagSet, c *app.OCIConfig) {
	fs.StringVar(&c.TenancyOCID, "oci-tenancy", "", "OCID of ekm's OCI tenancy (what customers Define as ekm's tenancy); enables the oci key type, see docs/oci.md")
	fs.StringVar(&c.GroupOCID, "oci-group", "", "OCID of the group (dynamic group for instance and resource principals) the vendor tenancy endorses and customers admit")
	fs.StringVar(&c.Auth, "oci-auth", "api-key", "how ekm signs its OCI requests: api-key (--oci-user, --oci-fingerprint, --oci-private-key-file), instance-principal or resource-principal")
	fs.StringVar(&c.UserOCID, "oci-user", "", "OCID of ekm's API-key user")
	fs.StringVar(&c.Fingerprint, "oci-fingerprint", "", "fingerprint of the user's API signing key (aa:bb:…), checked against the key file at start")
	fs.StringVar(&c.PrivateKeyFile, "oci-private-key-file", "", "PEM file with the API signing key's private key (read once at start)")
	fs.StringVar(&c.PrivateKeyPassphraseFile, "oci-private-key-passphrase-file", "", "file holding the passphrase of an encrypted private key")
	fs.StringSliceVar(&c.Realms, "oci-realms", []string{"oc1"}, "realms whose keys may be registered: oc1 (commercial), oc2, oc3 (US government), oc4 (UK government), … (that of ekm's tenancy)")
	fs.StringVar(&c.DialOverride, "oci-dial-override", "", "send every OCI connection to this host:port (the OCI emulator); TLS still verifies the real host names")
	fs.StringVar(&c.CAFile, "oci-ca-file", "", "extra CA (PEM) to trust for OCI hosts (the emulator's ca.pem)")
}

func serveCmd() *cobra.Command {
	var c app.Config
	var logLevel string
	var kmsRate float64
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the ekm server (embedded SQLite in ./ekm-data by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := setAdminKMSLimit(&c, kmsRate); err != nil {
				return err
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			c.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			a, err := app.Open(cmd.Context(), c)
			if err != nil {
				return err
			}
			defer a.Close()
			return a.Run(cmd.Context(), func(addr string) {
				a.Logger.Info("ekm listening", "addr", addr, "data_dir", c.DataDir, "database", dbKind(c))
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:8080", "address to listen on")
	storeFlags(fs, &c)
	fs.DurationVar(&c.CacheTTL, "cache-ttl", 0, "hard TTL of unwrapped project keys in memory; also how long cached keys keep serving through a KMS outage (default 1h)")
	fs.IntVar(&c.CacheSize, "cache-size", 0, "maximum number of cached project key versions (default 10000)")
	fs.DurationVar(&c.KMSTimeout, "kms-timeout", 0, "timeout of one KMS call (default 30s)")
	fs.DurationVar(&c.ProbeInterval, "probe-interval", 0, "interval of the health probe of each external key in use (default 30s, with jitter)")
	fs.Int64Var(&c.MaxFileBytes, "max-file-bytes", 512<<20, "largest file accepted by the Files API")
	fs.IntVar(&c.MaxConnections, "max-connections", app.DefaultMaxConnections, "connections served at once; further clients wait until one closes")
	fs.DurationVar(&c.BodyTimeout, "body-timeout", 0, "time allowed to send a JSON request body (default 30s; 408 after it)")
	fs.DurationVar(&c.UploadIdleTimeout, "upload-idle-timeout", 0, "an upload that sends nothing for this long is cut off (default 60s; 408)")
	fs.DurationVar(&c.AuditRetention, "audit-retention", 0, "how long audit events are kept (default 90 days)")
	fs.DurationVar(&c.ProjectKeyRotationPeriod, "project-key-rotation-period", 0, "rotate the key of every active project on a customer key once its current version is this old (0 = off)")
	envelopeFlag(fs, &c)
	fs.Float64Var(&kmsRate, "admin-kms-rate", app.DefaultAdminKMSRate, "Admin API calls that make ekm call a KMS (registering, validating or switching keys, creating projects, rotating) allowed per second per organization on this replica; 429 rate_limit_exceeded above it (0 = no limit)")
	fs.IntVar(&c.AdminKMSBurst, "admin-kms-burst", app.DefaultAdminKMSBurst, "how many of those calls an organization may make at once (the bucket of --admin-kms-rate)")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	azureFlags(fs, &c.Azure)
	gcpFlags(fs, &c.GCP)
	awsFlags(fs, &c.AWS)
	ociFlags(fs, &c.OCI)
	documentEnv(fs)
	return cmd
}

// setAdminKMSLimit checks --admin-kms-rate and --admin-kms-burst and sets
// the rate in c, 0 meaning no limit (app.Open refuses the rest: NaN,
// infinite, below app.MinAdminKMSRate).
func setAdminKMSLimit(c *app.Config, rate float64) error {
	if rate < 0 {
		return fmt.Errorf("--admin-kms-rate %v: want a number of calls per second, or 0 for no limit", rate)
	}
	if c.AdminKMSBurst < 1 {
		return fmt.Errorf("--admin-kms-burst %d: want at least 1", c.AdminKMSBurst)
	}
	c.AdminKMSRate = rate
	if rate == 0 {
		c.AdminKMSRate = app.NoAdminKMSLimit
	}
	return nil
}

func dbKind(c app.Config) string {
	if c.Database != "" {
		return "postgres"
	}
	return "sqlite"
}
