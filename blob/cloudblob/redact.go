package cloudblob

import "regexp"

// secretParam matches a query parameter whose value is a credential, and
// its value: an Azure SAS signature (sig), the parts of an S3 presigned or
// STS-signed request (X-Amz-Signature, X-Amz-Credential,
// X-Amz-Security-Token), a GCS signed URL's (X-Goog-Signature,
// X-Goog-Credential) and an OAuth token in a query (access_token). The
// name follows the start, a separator, or an escaped "?" or "&" (a URL
// inside a query, or in JSON); the "=" may be escaped; the value ends
// where a query value (also an escaped one) or a quoted URL in an error
// message ends; a JSON-escaped "/" (\/) is part of the value.
var secretParam = regexp.MustCompile(`(?i)(^|[^a-z0-9_]|%3f|%26|\\u0026)` +
	`(sig|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|access_token)` +
	`(=|%3d)(?:[^&\s"'<>\\%]|\\/|%[013-9a-f][0-9a-f]|%2[0-57-9a-f])*`)

// redacted replaces the value of every secret-bearing query parameter in
// s (see secretParam).
func redacted(s string) string {
	return secretParam.ReplaceAllString(s, "${1}${2}${3}REDACTED")
}

// redact is the one point where an error of a bucket loses its secrets:
// the SDKs' transport errors (*url.Error) and their wrappers print the
// request's whole URL, query included, and with a SAS token
// (AZURE_STORAGE_SAS_TOKEN), a presigned request or a token in the query
// that URL holds a credential. Every error a Bucket returns or logs goes
// through classify, and so through redact. The result prints redacted and
// unwraps to err, so errors.Is and errors.As classify it as before (a
// caller that digs out the *url.Error itself and prints its URL would see
// the secret: nothing in ekm does; the SDKs' errors are not changed in
// place, other goroutines of an upload may hold them).
func redact(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*redactedError); ok {
		return err
	}
	if s := err.Error(); redacted(s) == s {
		return err
	}
	return &redactedError{err: err}
}

type redactedError struct{ err error }

func (e *redactedError) Error() string { return redacted(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }
