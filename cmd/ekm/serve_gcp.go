package main

import (
	"github.com/spf13/pflag"

	"github.com/ekm-dev/ekm/app"
)

// gcpFlags configure the gcp key type: ekm's own identity toward Google
// Cloud. Nothing secret is a flag: a service account key file is named by
// path, the issuer's signing keys live in a file.
func gcpFlags(fs *pflag.FlagSet, c *app.GCPConfig) {
	fs.StringVar(&c.Identity, "gcp-identity", "", "enable the gcp key type with ekm's identity toward customers' workload identity providers: "+
		"google (Google-signed ID tokens of a service account: Application Default Credentials, then IAM Credentials generateIdToken), "+
		"metadata (the same from the metadata server), or issuer (ekm's own OIDC issuer, --gcp-issuer-url); see docs/gcp.md")
	fs.StringVar(&c.CredentialsFile, "gcp-credentials-file", "", "Application Default Credentials file (a service account key file) for --gcp-identity google; empty = ADC's own search")
	fs.StringVar(&c.ServiceAccount, "gcp-service-account", "", "email of the service account whose ID tokens ekm presents (default: the key file's); ekm impersonates it when ADC is another principal")
	fs.StringVar(&c.Subject, "gcp-subject", "", "sub of ekm's ID tokens: the service account's unique id (google: default the key file's; metadata: required) or the issuer's subject (default ekm)")
	fs.StringVar(&c.IssuerURL, "gcp-issuer-url", "", "https URL of ekm's own OIDC issuer (--gcp-identity issuer), reaching this server: ekm serves <url>/.well-known/openid-configuration and <url>/.well-known/jwks.json")
	fs.StringVar(&c.IssuerKeyFile, "gcp-issuer-key-file", "", "the issuer's signing keys (default <data-dir>/gcp-issuer.json; created 0600 on SQLite; replicas on PostgreSQL share one made by ekm issuer init; ekm issuer rotate rolls it over)")
	fs.DurationVar(&c.TrustRecheck, "gcp-trust-recheck", 0, "longest a federated token is used without a new token exchange, so that a disabled provider is noticed (default: 4/5 of the probe interval: every probe exchanges anew)")
	fs.StringVar(&c.DialOverride, "gcp-dial-override", "", "send every Google connection to this host:port (the GCP emulator); TLS still verifies the real host names")
	fs.StringVar(&c.CAFile, "gcp-ca-file", "", "extra CA (PEM) to trust for Google hosts (the emulator's ca.pem)")
}
