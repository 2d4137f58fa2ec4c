package issuer

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/ekm-dev/ekm/internal/filelock"
)

// Key states. Every key in the file is published in the JWKS; exactly one
// signs.
const (
	// StateActive signs every new token.
	StateActive = "active"
	// StateNext is published but does not sign yet: it waits out the
	// overlap so that every customer's provider knows it before it is used.
	StateNext = "next"
	// StatePrevious signed before the last activation; it stays published
	// until tokens it signed have expired and customers have moved on,
	// then Retire drops it.
	StatePrevious = "previous"
)

// KeyBits is the size of new RSA signing keys.
const KeyBits = 2048

// maxKeyFile bounds the key file.
const maxKeyFile = 1 << 20

// Key is one signing key of the issuer.
type Key struct {
	ID         string    `json:"kid"`
	State      string    `json:"state"`
	Created    time.Time `json:"created_at"`
	StateSince time.Time `json:"state_since"`
	// PrivateKey is a PKCS#8 PEM RSA key.
	PrivateKey string `json:"private_key"`

	priv *rsa.PrivateKey
}

// KeySet is the content of the issuer's key file.
type KeySet struct {
	Keys []*Key `json:"keys"`
}

// NewKey generates a key in state.
func NewKey(state string, now time.Time) (*Key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	k := &Key{State: state, Created: now.UTC(), StateSince: now.UTC(), priv: priv,
		PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))}
	k.ID = thumbprint(&priv.PublicKey)
	return k, nil
}

// thumbprint is the RFC 7638 JWK thumbprint of an RSA public key.
func thumbprint(pub *rsa.PublicKey) string {
	canon := `{"e":"` + b64(big.NewInt(int64(pub.E)).Bytes()) + `","kty":"RSA","n":"` + b64(pub.N.Bytes()) + `"}`
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:])
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ParseKeySet parses and checks a key file: RSA keys whose ids match
// their thumbprints, known states, exactly one active key, at most one
// next key.
func ParseKeySet(b []byte) (*KeySet, error) {
	var ks KeySet
	if err := json.Unmarshal(b, &ks); err != nil {
		return nil, fmt.Errorf("issuer key file: %w", err)
	}
	active, next := 0, 0
	seen := map[string]bool{}
	for _, k := range ks.Keys {
		if k == nil {
			return nil, errors.New("issuer key file: empty key entry")
		}
		blk, _ := pem.Decode([]byte(k.PrivateKey))
		if blk == nil {
			return nil, fmt.Errorf("issuer key file: key %s: no PEM private key", k.ID)
		}
		pk, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("issuer key file: key %s: %w", k.ID, err)
		}
		priv, ok := pk.(*rsa.PrivateKey)
		if !ok || priv.N.BitLen() < 2048 {
			return nil, fmt.Errorf("issuer key file: key %s: not an RSA key of at least 2048 bits", k.ID)
		}
		if thumbprint(&priv.PublicKey) != k.ID {
			return nil, fmt.Errorf("issuer key file: key %s: kid is not the key's thumbprint", k.ID)
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("issuer key file: key %s appears twice", k.ID)
		}
		seen[k.ID] = true
		k.priv = priv
		switch k.State {
		case StateActive:
			active++
		case StateNext:
			next++
		case StatePrevious:
		default:
			return nil, fmt.Errorf("issuer key file: key %s: unknown state %q", k.ID, k.State)
		}
	}
	if active != 1 {
		return nil, fmt.Errorf("issuer key file: %d active keys, want exactly 1", active)
	}
	if next > 1 {
		return nil, fmt.Errorf("issuer key file: %d next keys, want at most 1", next)
	}
	return &ks, nil
}

// Active returns the signing key.
func (ks *KeySet) Active() *Key { return ks.find(StateActive) }

// Next returns the key waiting for activation, or nil.
func (ks *KeySet) Next() *Key { return ks.find(StateNext) }

func (ks *KeySet) find(state string) *Key {
	for _, k := range ks.Keys {
		if k.State == state {
			return k
		}
	}
	return nil
}

// Signer returns the active key's signer and id.
func (ks *KeySet) Signer() (crypto.Signer, string) {
	a := ks.Active()
	return a.priv, a.ID
}

// Add generates the next key (rollover phase 1: publish it). It refuses
// while a next key already waits.
func (ks *KeySet) Add(now time.Time) (*Key, error) {
	if ks.Next() != nil {
		return nil, fmt.Errorf("key %s is already waiting for activation; activate it first", ks.Next().ID)
	}
	k, err := NewKey(StateNext, now)
	if err != nil {
		return nil, err
	}
	ks.Keys = append(ks.Keys, k)
	return k, nil
}

// Activate makes the next key sign (rollover phase 2) once it has been
// published for at least minOverlap; the active key becomes previous and
// stays published.
func (ks *KeySet) Activate(now time.Time, minOverlap time.Duration) (*Key, error) {
	n := ks.Next()
	if n == nil {
		return nil, errors.New("no key is waiting for activation; add one first (ekm issuer rotate add)")
	}
	if published := now.Sub(n.StateSince); published < minOverlap {
		return nil, fmt.Errorf("key %s has been published for %s only, less than the overlap of %s: customers' providers may not know it yet (wait, or pass a shorter --min-overlap)",
			n.ID, published.Round(time.Second), minOverlap)
	}
	a := ks.Active()
	a.State, a.StateSince = StatePrevious, now.UTC()
	n.State, n.StateSince = StateActive, now.UTC()
	return n, nil
}

// Retire drops the previous keys (rollover phase 3) once they have been
// previous for at least minAge (tokens they signed must have expired).
func (ks *KeySet) Retire(now time.Time, minAge time.Duration) ([]string, error) {
	var kept []*Key
	var dropped []string
	for _, k := range ks.Keys {
		if k.State != StatePrevious {
			kept = append(kept, k)
			continue
		}
		if age := now.Sub(k.StateSince); age < minAge {
			return nil, fmt.Errorf("key %s stopped signing %s ago only, less than %s: tokens it signed may still be in use", k.ID, age.Round(time.Second), minAge)
		}
		dropped = append(dropped, k.ID)
	}
	if len(dropped) == 0 {
		return nil, errors.New("no previous key to retire")
	}
	ks.Keys = kept
	return dropped, nil
}

// JWK is the public half of a key as an RFC 7517 JSON Web Key, with no
// x5c or x5t (Google refuses them in an uploaded jwksJson).
type JWK struct {
	Kty string `json:"kty"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// JWKS returns the published keys: active first, then next, then previous.
func (ks *KeySet) JWKS() []byte {
	var keys []JWK
	for _, st := range []string{StateActive, StateNext, StatePrevious} {
		for _, k := range ks.Keys {
			if k.State == st {
				pub := k.priv.PublicKey
				keys = append(keys, JWK{Kty: "RSA", Alg: "RS256", Use: "sig", Kid: k.ID, N: b64(pub.N.Bytes()), E: b64(big.NewInt(int64(pub.E)).Bytes())})
			}
		}
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// Marshal encodes the key file.
func (ks *KeySet) Marshal() []byte {
	b, _ := json.MarshalIndent(ks, "", "  ")
	return append(b, '\n')
}

// ReadKeySet reads and parses the key file at path.
func ReadKeySet(path string) (*KeySet, error) {
	b, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	return ParseKeySet(b)
}

// Save writes ks to path atomically (a temporary file renamed into
// place), mode 0600.
func (ks *KeySet) Save(path string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".issuer-keys-*.tmp")
	if err != nil {
		return fmt.Errorf("writing issuer key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, werr := f.Write(ks.Marshal())
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(tmp, 0o600)); err != nil {
		return fmt.Errorf("writing issuer key file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("installing issuer key file: %w", err)
	}
	return nil
}

// Update applies change to the key file at path and saves the result,
// holding a lock (path + ".lock") so that two rollovers run one after the
// other rather than one losing the other's key. A second Update while one
// runs fails at once, naming the holder's pid.
func Update(path string, change func(*KeySet) error) error {
	release, holder, err := filelock.Lock(path + ".lock")
	if errors.Is(err, filelock.ErrLocked) {
		return fmt.Errorf("another process (pid %s) is changing the issuer key file %s; wait for it and try again", holder, path)
	}
	if err != nil {
		return fmt.Errorf("locking the issuer key file: %w", err)
	}
	defer release()
	ks, err := ReadKeySet(path)
	if err != nil {
		return err
	}
	if err := change(ks); err != nil {
		return err
	}
	return ks.Save(path)
}

// EnsureKeyFile creates the key file with one active key unless it
// exists. The file is written to a temporary name and linked into place,
// so a reader never sees a partial file and exactly one creator wins when
// several replicas start at once.
func EnsureKeyFile(path string, now time.Time) (created bool, err error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	k, err := NewKey(StateActive, now)
	if err != nil {
		return false, err
	}
	ks := &KeySet{Keys: []*Key{k}}
	f, err := os.CreateTemp(dir, ".issuer-keys-*.tmp")
	if err != nil {
		return false, fmt.Errorf("creating issuer key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, werr := f.Write(ks.Marshal())
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(tmp, 0o600)); err != nil {
		return false, fmt.Errorf("writing issuer key file: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("installing issuer key file: %w", err)
	}
	return true, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, errors.New("issuer key file too large")
	}
	return b, nil
}
