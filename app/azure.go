package app

import (
	"net/http"
	"time"

	"github.com/ekm-dev/ekm/kms/azure"
)

func azureDriverConfig(c AzureConfig, hc *http.Client, kmsTimeout time.Duration) azure.Config {
	return azure.Config{
		ClientID:            c.ClientID,
		ClientSecret:        c.ClientSecret,
		CertificateFile:     c.ClientCertificate,
		CertificatePassword: c.ClientCertificatePassword,
		FederatedTokenFile:  c.FederatedTokenFile,
		HTTPClient:          hc,
		// One provider call, retries included, fits in the keyring's KMS timeout.
		Timeout: kmsTimeout,
	}
}
