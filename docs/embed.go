// Package docs embeds the machine-readable parts of the documentation:
// OpenAPI is docs/openapi.yaml, the description of ekm's HTTP API that
// internal/apispec checks the end-to-end suites' traffic against.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
