#!/usr/bin/env bash
# The README's five-minute quickstart, end to end, against a running
# `ekm serve` (started from the same directory, so that both use ./ekm-data).
# Needs curl and jq. Prints each step's result; exits non-zero on the first
# failure.
#
#   go run ./cmd/ekm serve &          # in another terminal
#   scripts/quickstart.sh
#
# EKM_URL      the server (default http://127.0.0.1:8080)
# EKM          the ekm command (default: go run ./cmd/ekm)
# EKM_DATA_DIR the server's --data-dir, if not ./ekm-data (read by `ekm org create`)
set -euo pipefail

URL="${EKM_URL:-http://127.0.0.1:8080}"
read -r -a EKM <<<"${EKM:-go run ./cmd/ekm}"
for tool in curl jq base64; do
  command -v "$tool" >/dev/null || { echo "quickstart: $tool is required" >&2; exit 1; }
done
# Every call: fail on HTTP errors, but print the server's error body.
api() { curl -sS --fail-with-body "$@"; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "1. An organization and its first admin key"
ADMIN="$("${EKM[@]}" org create --name "Acme" | jq -r .admin_key)"
echo "   admin key: ${ADMIN:0:12}…"

echo "2. A local external key (development only)"
EXTKEY="$(api "$URL/v1/organization/external_keys" \
  -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"type":"local","name":"dev key"}' | jq -r .id)"
echo "   external key: $EXTKEY"

echo "3. A project protected by that key"
PROJECT="$(api "$URL/v1/organization/projects" \
  -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d "{\"name\":\"demo\",\"external_key_id\":\"$EXTKEY\"}" | jq -r .id)"
echo "   project: $PROJECT"

echo "4. A project API key for the data plane"
PROJ="$(api "$URL/v1/organization/projects/$PROJECT/service_accounts" \
  -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"name":"backend"}' | jq -r .api_key.value)"
echo "   project key: ${PROJ:0:11}…"

echo "5. Encrypt and decrypt"
CIPHERTEXT="$(api "$URL/v1/crypto/encrypt" -H "Authorization: Bearer $PROJ" \
  -H 'Content-Type: application/json' \
  -d "{\"plaintext\":\"$(printf hello | base64)\"}" | jq -r .ciphertext)"
echo "   ciphertext: ${CIPHERTEXT:0:24}…"
PLAINTEXT="$(api "$URL/v1/crypto/decrypt" -H "Authorization: Bearer $PROJ" \
  -H 'Content-Type: application/json' \
  -d "{\"ciphertext\":\"$CIPHERTEXT\"}" | jq -r .plaintext | base64 -d)"
echo "   decrypted: $PLAINTEXT"
[ "$PLAINTEXT" = hello ]

echo "6. Upload a file, list it, download it"
printf 'quarterly numbers\n' >"$work/report.txt"
FILE="$(api "$URL/v1/files" -H "Authorization: Bearer $PROJ" \
  -F purpose=assistants -F file=@"$work/report.txt" | jq -r .id)"
echo "   file: $FILE"
api "$URL/v1/files" -H "Authorization: Bearer $PROJ" | jq -r '.data[] | "   listed: \(.id) \(.filename) \(.bytes) bytes"'
api "$URL/v1/files/$FILE/content" -H "Authorization: Bearer $PROJ" -o "$work/download.txt"
cmp "$work/report.txt" "$work/download.txt"
echo "   downloaded: $(cat "$work/download.txt")"

echo "quickstart: all steps passed"
