package cloudblob

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/blob"
)

func TestRedacted(t *testing.T) {
	for in, want := range map[string]string{
		`Get "https://a.blob.core.windows.net/c/k?se=2030&sig=abc%2Bdef%3D&sv=1": dial`: `Get "https://a.blob.core.windows.net/c/k?se=2030&sig=REDACTED&sv=1": dial`,
		`?X-Amz-Signature=ff00&X-Amz-Credential=AKIA%2F1&x-amz-security-token=tok`:      `?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&x-amz-security-token=REDACTED`,
		`u?access_token=ya29.x y X-Goog-Signature=1 'X-Goog-Credential=2'`:              `u?access_token=REDACTED y X-Goog-Signature=REDACTED 'X-Goog-Credential=REDACTED'`,
		`next=https%3A%2F%2Fh%2Fp%3Fsig%3Dsecret%26a%3Db`:                               `next=https%3A%2F%2Fh%2Fp%3Fsig%3DREDACTED%26a%3Db`,
		`json "https://h/p?a=1\u0026sig=secret"`:                                        `json "https://h/p?a=1\u0026sig=REDACTED"`,
		`{"u":"https:\/\/h\/p?a=1\u0026sig=AbC+def\/ghi=\u0026b=2"}`:                    `{"u":"https:\/\/h\/p?a=1\u0026sig=REDACTED\u0026b=2"}`,
		`signature=kept design=kept xsig=kept`:                                          `signature=kept design=kept xsig=kept`,
	} {
		if got := redacted(in); got != want {
			t.Errorf("redacted(%s)\n = %s\nwant %s", in, got, want)
		}
	}
	ue := &url.Error{Op: "Get", URL: "http://h/p?sig=s3cr3t", Err: errors.New("refused")}
	b := &Bucket{}
	err := b.classify(ue)
	if strings.Contains(err.Error(), "s3cr3t") || !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("classify: %v", err)
	}
	var got *url.Error
	if !errors.As(err, &got) || got != ue {
		t.Fatal("the redacted error no longer unwraps to the SDK's")
	}
	if plain := errors.New("no secret here"); redact(plain) != plain {
		t.Fatal("an error without secrets is wrapped")
	}
}
