package emukit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// SerialNumber returns a random 126-bit certificate serial number.
func SerialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

// NewCA creates an emulator root CA (ECDSA P-256, which keeps start-up
// fast), valid for ten years from now. name is the subject's common-name
// prefix, e.g. "ekm Azure emulator CA"; a random suffix tells instances apart.
func NewCA(name string, now time.Time) (certDER, keyDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := SerialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name + " " + serial.Text(16)[:8], Organization: []string{"ekm emulator (not for production)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	return certDER, keyDER, err
}

// CA is a parsed emulator CA.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// ParseCA parses what NewCA returned (for example after reloading state).
func ParseCA(certDER, keyDER []byte) (*CA, error) {
	c, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	ck, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("CA key is not ECDSA")
	}
	return &CA{Cert: c, Key: ck}, nil
}

// PEM is the CA certificate in PEM.
func (ca *CA) PEM() []byte { return PEMCert(ca.Cert.Raw) }

// ValidateDNSNames checks a certificate's DNS names: every name is a
// plain host name, and a wildcard is a whole left-most label ("*.x.y")
// over at least two labels. Go's verifier (crypto/x509 matchHostnames)
// lets "*" stand for exactly one label, so "*.amazonaws.com" does not
// cover "kms.us-east-1.amazonaws.com": list such names per region.
func ValidateDNSNames(names []string) error {
	for _, n := range names {
		rest, wild := strings.CutPrefix(n, "*.")
		if rest == "" || strings.Contains(rest, "*") || strings.Count(rest, ".") < 1 && wild {
			return fmt.Errorf("invalid certificate name %q", n)
		}
		for _, label := range strings.Split(rest, ".") {
			if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				return fmt.Errorf("invalid certificate name %q", n)
			}
		}
	}
	return nil
}

// Covers reports whether a certificate with these DNS names is valid for
// host under Go's rules: exact (case-insensitive) match, or a "*." name
// whose wildcard stands for exactly one non-empty label.
func Covers(names []string, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, n := range names {
		n = strings.ToLower(n)
		if n == host {
			return true
		}
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			label, tail, found := strings.Cut(host, ".")
			if found && label != "" && tail == rest {
				return true
			}
		}
	}
	return false
}

// NewServerCert issues the TLS certificate for dnsNames plus ips (so the
// control API is reachable by address), signed by ca, valid for a year.
func NewServerCert(ca *CA, commonName string, dnsNames []string, ips []net.IP, now time.Time) (certDER []byte, key *ecdsa.PrivateKey, err error) {
	if err := ValidateDNSNames(dnsNames); err != nil {
		return nil, nil, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := SerialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	return certDER, key, err
}

// PEMCert encodes a DER certificate as PEM.
func PEMCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// PEMKey encodes a PKCS #8 DER private key as PEM.
func PEMKey(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
