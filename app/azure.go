package app

import (
	"net/http"
	"time"

	"github.com/ekm-dev/ekm/kms/azure"
)

func azureDriverConfig(c AzureConfig, hc *http.Client, kmsTimeout time.Duration) azure.Config {
	var clouds []azure.Cloud
	if c.Cloud != "" {
		clouds = []azure.Cloud{azure.Cloud(c.Cloud)}
	}
	return azure.Config{
		Clouds:              clouds,
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
