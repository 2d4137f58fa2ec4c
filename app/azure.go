package app

import (
	"net/http"

	"github.com/ekm-dev/ekm/kms/azure"
)

func azureDriverConfig(c AzureConfig, hc *http.Client) azure.Config {
	return azure.Config{
		ClientID:            c.ClientID,
		ClientSecret:        c.ClientSecret,
		CertificateFile:     c.ClientCertificate,
		CertificatePassword: c.ClientCertificatePassword,
		FederatedTokenFile:  c.FederatedTokenFile,
		HTTPClient:          hc,
	}
}
