// Package dialoverride builds the HTTP client used to reach a cloud (Azure,
// AWS). The only difference between talking to the real cloud and to ekm's
// emulator of it is this client (or, for SDKs that build their own
// transport, TransportOptions): it can send every TCP connection to one address while TLS
// (SNI and certificate verification) still uses the production host name,
// and it can trust an extra CA.
package dialoverride

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// maxCAFileSize bounds the CA file we are willing to read.
const maxCAFileSize = 1 << 20

// NewClient returns an HTTP client for Azure endpoints.
//
// With dialOverride and caFile both empty it is a normal production client:
// system roots, proxy from the environment, HTTP/2, bounded timeouts.
//
// dialOverride ("host:port") sends every TCP dial to that address whatever
// the requested host name; TLS SNI and certificate verification still use
// the URL's host name, so the server must present a certificate for the
// production names. Proxies are disabled in that mode, since a proxy would
// change the dial target.
//
// caFile names a PEM file whose certificates are trusted in addition to the
// system roots (so one client can verify both the emulator and real Azure).
func NewClient(dialOverride, caFile string) (*http.Client, error) {
	var caPEM []byte
	if caFile != "" {
		pem, err := readBounded(caFile)
		if err != nil {
			return nil, fmt.Errorf("dialoverride: read CA file: %w", err)
		}
		caPEM = pem
	}
	return NewClientFromPEM(dialOverride, caPEM)
}

// NewClientFromPEM is NewClient with the CA given in memory (nil or empty
// means system roots only).
func NewClientFromPEM(dialOverride string, caPEM []byte) (*http.Client, error) {
	if dialOverride != "" {
		if err := validateAddr(dialOverride); err != nil {
			return nil, err
		}
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			// Some platforms have no readable system pool; the given CA alone
			// is still a correct (stricter) trust set.
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("dialoverride: CA PEM contains no certificate")
		}
		tlsConf.RootCAs = pool
	}

	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if dialOverride != "" {
		target := dialOverride
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, target)
		}
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}, nil
}

// TransportOptions returns a function that applies the same dial override
// and extra CA to an existing *http.Transport, for SDKs that build their own
// transport (the AWS SDK's awshttp.BuildableClient.WithTransportOptions,
// which keeps AWS_CA_BUNDLE handling working). Empty arguments change
// nothing: the production transport is left as the SDK built it. With
// dialOverride set, proxies are disabled (a proxy would change the dial
// target).
func TransportOptions(dialOverride, caFile string) (func(*http.Transport), error) {
	var caPEM []byte
	if caFile != "" {
		pem, err := readBounded(caFile)
		if err != nil {
			return nil, fmt.Errorf("dialoverride: read CA file: %w", err)
		}
		caPEM = pem
	}
	return TransportOptionsFromPEM(dialOverride, caPEM)
}

// TransportOptionsFromPEM is TransportOptions with the CA given in memory.
func TransportOptionsFromPEM(dialOverride string, caPEM []byte) (func(*http.Transport), error) {
	if dialOverride != "" {
		if err := validateAddr(dialOverride); err != nil {
			return nil, err
		}
	}
	var pool *x509.CertPool
	if len(caPEM) > 0 {
		p, err := x509.SystemCertPool()
		if err != nil || p == nil {
			p = x509.NewCertPool()
		}
		if !p.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("dialoverride: CA PEM contains no certificate")
		}
		pool = p
	}
	return func(tr *http.Transport) {
		if pool != nil {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		if dialOverride != "" {
			dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
			target := dialOverride
			tr.Proxy = nil
			tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, target)
			}
		}
	}, nil
}

func validateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dialoverride: dial override %q is not host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("dialoverride: dial override %q has no host", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("dialoverride: dial override %q has an invalid port", addr)
	}
	return nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, maxCAFileSize+1)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if n > maxCAFileSize {
		return nil, fmt.Errorf("file larger than %d bytes", maxCAFileSize)
	}
	return buf[:n], nil
}
