package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/secret"
)

// BenchmarkSealCosts breaks a version 3 1 KiB Seal into its parts and
// times each the way BenchmarkInterleaved1KiB does (batches of 100,
// interleaved, fastest and median batch), so that the figures of one run
// add up: what a seal costs beyond raw AES-256-GCM, part by part. The
// derivations (data key and commitment, versions 2 and 3) use the cached
// project cipher; cache-lookup is what finding it costs.
//
//	go test -run '^$' -bench SealCosts -benchtime 1x -count 5 ./envelope
func BenchmarkSealCosts(b *testing.B) {
	const batch, rounds = 100, 300
	key := secret.New()
	pt := make([]byte, 1<<10)
	kx, kc, x := make([]byte, 32), make([]byte, 32), make([]byte, 16)
	block, _ := aes.NewCipher(kx)
	raw, _ := cipher.NewGCM(block)
	nonce := make([]byte, raw.NonceSize())
	c := Context{OrgID: "org_01j9zq4xk3f7d2m8r5t0v6w1y9", ProjectID: "proj_01j9zq4xk3f7d2m8r5t0v6w1y9",
		ObjectID: "file-01j9zq4xk3f7d2m8r5t0v6w1y9", KeyVersion: 3}
	aad := c.appendEncoding(make([]byte, HeaderSize))
	var xnonce [xnonceSize]byte
	pc := projectCipherOf(key)
	parts := []struct {
		name string
		f    func()
	}{
		{"raw-gcm", func() { raw.Seal(make([]byte, 0, len(pt)+16), nonce, pt, nil) }},
		{"raw-gcm-aad", func() { raw.Seal(make([]byte, 0, len(pt)+16), nonce, pt, aad) }},
		{"data-key-setup", func() { dataAEAD(kx) }},
		{"cache-lookup", func() { projectCipherOf(key) }},
		{"derive-v2", func() { xaesSubkey(pc, xnonce[:12], kx); commitV2(kx) }},
		{"derive-v3", func() { xaesSubkeyKC(pc, xnonce[:], kx, kc, x) }},
		{"randomness", func() { rand.Read(xnonce[:]) }},
		{"seal-fixed-nonce", func() { sealXAES(formatV3, key, &c, pt, xnonce[:]) }},
		{"seal", func() { Seal(key, c, pt) }},
	}
	for b.Loop() {
		samples := make([][]float64, len(parts))
		for range rounds {
			for i, p := range parts {
				t0 := time.Now()
				for range batch {
					p.f()
				}
				samples[i] = append(samples[i], float64(time.Since(t0).Nanoseconds())/batch)
			}
		}
		for i, p := range parts {
			slices.Sort(samples[i])
			b.ReportMetric(samples[i][0], p.name+"-min-ns")
			b.ReportMetric(samples[i][len(samples[i])/2], p.name+"-med-ns")
		}
	}
}
