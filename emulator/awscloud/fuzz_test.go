package awscloud

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("a", 64))
	f.Add("AWS4-HMAC-SHA256 Credential=a/b/c/d/e,SignedHeaders=a,Signature=")
	f.Add("AWS4-HMAC-SHA256 ")
	f.Add("Bearer x")
	f.Fuzz(func(t *testing.T, h string) {
		s, err := parseAuthorization(h)
		if err != nil {
			return
		}
		if s.AccessKeyID == "" || len(s.Signature) != 64 || len(s.SignedHeaders) == 0 {
			t.Fatalf("accepted incomplete header %q: %+v", h, s)
		}
		r, _ := http.NewRequest("POST", "https://kms.us-east-1.amazonaws.com/", nil)
		r.Header.Set("X-Amz-Date", "20260101T000000Z")
		canonicalRequest(r, nil, s.SignedHeaders)
	})
}

func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		VendorPolicy,
		DefaultKeyPolicy("aws", "111122223333"),
		trustFor("arn:aws:iam::111122223333:user/ekm", "org-1"),
		`{"Statement":{"Effect":"Deny","NotAction":"kms:*","NotResource":"arn:aws:kms:*","Condition":{"ForAllValues:StringLike":{"kms:EncryptionContextKeys":["a*"]},"NumericLessThan":{"aws:EpochTime":5},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"},"Null":{"x:y":"true"}}}}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/${aws:username}/*"}]}`,
	} {
		f.Add(s, 0)
		f.Add(s, 1)
		f.Add(s, 2)
	}
	f.Fuzz(func(t *testing.T, doc string, kind int) {
		if kind < 0 || kind > 2 {
			return
		}
		p, err := parsePolicy(doc, policyKind(kind))
		if err != nil {
			return
		}
		keys := map[string][]string{"aws:username": {"u"}, "kms:encryptioncontextkeys": {"a", "b"}, "aws:epochtime": {"3"}, "aws:sourceip": {"10.1.2.3"}}
		p.evaluate(&evalContext{Action: "kms:Decrypt", Resource: "arn:aws:kms:us-east-1:111122223333:key/x", Keys: keys,
			MatchPrincipal: func(*principalSet) principalMatch { return matchDirect }}, kind == 1)
	})
}

func FuzzParseQueryForm(f *testing.F) {
	f.Add("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&PolicyArns.member.1.arn=x")
	f.Add("a=b&a=c")
	f.Add("%zz=1")
	f.Add("&&=&")
	f.Fuzz(func(t *testing.T, raw string) {
		form, err := parseQueryForm(raw)
		if err != nil {
			return
		}
		for k, v := range form {
			if k == "" || len(v) != 1 {
				t.Fatalf("bad form entry %q=%q", k, v)
			}
		}
		c := &call{form: form}
		c.list("PolicyArns", "arn", 10)
		c.tags()
	})
}

func FuzzBlob(f *testing.F) {
	m := newMaterial(fixedClock()())
	b, _ := sealBlob("arn:aws:kms:us-east-1:111122223333:key/k", &m, []byte("x"), map[string]string{"a": "b"})
	f.Add(b)
	f.Add([]byte{1, 0, 1})
	f.Fuzz(func(t *testing.T, blob []byte) {
		h, err := parseBlob(blob)
		if err != nil {
			return
		}
		if h.headerLen+12+16 > len(blob) {
			t.Fatal("header beyond the blob")
		}
		if pt, err := openBlob(blob, h, &m, map[string]string{"a": "b"}); err == nil && !bytes.Equal(blob, b) && bytes.Equal(pt, []byte("x")) && !bytes.Equal(blob[:h.headerLen], b[:h.headerLen]) {
			t.Fatal("forged header accepted")
		}
	})
}

func TestGlobAndConditions(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{{"kms:*", "kms:Decrypt", true}, {"kms:GenerateDataKey*", "kms:GenerateDataKeyWithoutPlaintext", true}, {"kms:?ecrypt", "kms:Decrypt", true},
		{"kms:Decrypt", "kms:Decrypts", false}, {"*", "", true}, {"a*b*c", "aXbYc", true}, {"a*b*c", "aXbY", false}} {
		if got := globMatch(tc.p, tc.s, true); got != tc.want {
			t.Errorf("%s ~ %s = %v", tc.p, tc.s, got)
		}
	}
	if !arnLike("arn:aws:iam::*:role/ek?", "arn:aws:iam::123456789012:role/ekm") || arnLike("arn:aws:iam::*:role/ekm", "arn:aws:iam::1:user/ekm") {
		t.Fatal("arnLike")
	}
}
