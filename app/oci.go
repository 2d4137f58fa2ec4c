package app

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ekm-dev/ekm/internal/dialoverride"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/oci"
)

// OCIConfig is ekm's own identity in OCI and, for the emulator only, where
// to dial. The oci key type is enabled when TenancyOCID is set. Nothing
// secret is configured here: the API key's private key (and its
// passphrase) are named by file.
type OCIConfig struct {
	// TenancyOCID is ekm's tenancy and GroupOCID the group (or dynamic
	// group) it endorses and customers admit: the OCIDs customers' Define
	// statements name.
	TenancyOCID string
	GroupOCID   string
	// Auth is api-key (default), instance-principal or
	// resource-principal.
	Auth string
	// UserOCID, Fingerprint and PrivateKeyFile are the API-key user's;
	// PrivateKeyPassphraseFile holds the passphrase of an encrypted key.
	UserOCID                 string
	Fingerprint              string
	PrivateKeyFile           string
	PrivateKeyPassphraseFile string
	// Realms whose keys may be registered (default oc1).
	Realms []string
	// DialOverride sends every OCI connection to host:port (the emulator);
	// CAFile is a PEM CA to trust (the emulator's).
	DialOverride string
	CAFile       string
}

// ociEnable says how to enable the oci key type (Spec.Enable).
const ociEnable = "start ekm serve with --oci-tenancy and --oci-group (the OCIDs customers' Define statements name) and ekm's OCI identity: " +
	"an API key (--oci-user, --oci-fingerprint, --oci-private-key-file) or --oci-auth instance-principal or resource-principal; " +
	"see docs/oci.md, or try it locally with ekm dev --cloud oci"

// ociDriver builds the oci driver c configures, or nil when the oci type
// is not enabled.
func ociDriver(c Config) (kms.Driver, error) {
	o := c.OCI
	if o.TenancyOCID == "" {
		if o.GroupOCID != "" || o.UserOCID != "" || o.PrivateKeyFile != "" {
			return nil, errors.New("oci: set --oci-tenancy to enable the oci key type")
		}
		return nil, nil
	}
	hc, err := dialoverride.NewClient(o.DialOverride, o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("oci transport: %w", err)
	}
	var pass string
	if o.PrivateKeyPassphraseFile != "" {
		b, err := os.ReadFile(o.PrivateKeyPassphraseFile)
		if err != nil {
			return nil, fmt.Errorf("oci: passphrase file: %w", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	d, err := oci.NewDriver(oci.Config{Auth: o.Auth, TenancyOCID: o.TenancyOCID, GroupOCID: o.GroupOCID, UserOCID: o.UserOCID,
		Fingerprint: o.Fingerprint, PrivateKeyFile: o.PrivateKeyFile, PrivateKeyPassphrase: pass, Realms: o.Realms, HTTPClient: hc,
		// One provider call, retries included, fits in the call layer's
		// KMS timeout.
		Timeout: c.KMSTimeout, Logger: c.Logger})
	if err != nil {
		return nil, err
	}
	return d, nil
}
