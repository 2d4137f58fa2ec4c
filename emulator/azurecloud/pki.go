package azurecloud

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// serverDNSNames are the production host names the emulator answers for.
// One label wildcards cover vault names, which are single DNS labels.
var serverDNSNames = []string{
	"login.microsoftonline.com", "login.microsoft.com", "login.windows.net", "sts.windows.net",
	"login.microsoftonline.us", "login.chinacloudapi.cn", "login.partner.microsoftonline.cn",
	"graph.microsoft.com",
	"management.azure.com", "management.usgovcloudapi.net", "management.chinacloudapi.cn",
	"*.vault.azure.net", "*.vault.azure.cn", "*.vault.usgovcloudapi.net", "*.managedhsm.azure.net",
	emukit.ControlHost, "localhost",
}

// vaultCertNames are the names of the certificate that signs key release
// responses.
var vaultCertNames = []string{"*.vault.azure.net", "*.vault.azure.cn", "*.vault.usgovcloudapi.net", "*.managedhsm.azure.net"}

func init() {
	for _, r := range attestRegions {
		serverDNSNames = append(serverDNSNames, "*."+r+".attest.azure.net")
	}
}

// newCASignedRSA issues an RSA certificate for names from the emulator CA
// (valid two years).
func newCASignedRSA(ca *emukit.CA, cn string, names []string, now time.Time) (certDER, keyDER []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := emukit.SerialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(2, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
	}
	if certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key); err != nil {
		return nil, nil, err
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	return certDER, keyDER, err
}

// newSelfSignedRSA creates an RSA key with a self-signed certificate, used for
// the token-signing key (published in JWKS with x5c) and the app credential.
func newSelfSignedRSA(cn string, now time.Time, years int) (certDER, keyDER []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := emukit.SerialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(years, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	return certDER, keyDER, err
}

func parseRSAKey(der []byte) (*rsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want RSA", k)
	}
	return rk, nil
}

// x5tS256 is the certificate thumbprint Entra matches in client assertions.
func x5tS256(der []byte) []byte { s := sha256.Sum256(der); return s[:] }

// x5tSHA1 is the legacy thumbprint (x5t header, JWKS kid).
func x5tSHA1(der []byte) []byte { s := sha1.Sum(der); return s[:] }

var b64url = base64.RawURLEncoding
