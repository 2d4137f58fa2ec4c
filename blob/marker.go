package blob

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MarkerName is the name of the deployment marker at the root of a store
// (under a bucket's prefix; <root>/.ekm-deployment for a Dir). It starts
// with a dot, so it is never a valid key (ValidKey): Create, Open, Delete
// and List never reach it, and neither does the sweep, which only ever
// sees what List returns. Only ClaimDeployment and Deployment touch it.
const MarkerName = ".ekm-deployment"

// ErrOtherDeployment: the store's marker names another deployment. Such
// errors are a *ClaimError.
var ErrOtherDeployment = errors.New("blob: the store belongs to another ekm deployment")

// ClaimError says the store is another deployment's.
type ClaimError struct {
	Ours, Theirs string
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("blob: the store belongs to another ekm deployment: its marker %s names deployment %s, this database is deployment %s",
		MarkerName, e.Theirs, e.Ours)
}

func (e *ClaimError) Unwrap() error { return ErrOtherDeployment }

// NewDeploymentID returns a fresh random deployment id: "dep-" and 26
// characters of lower-case base32.
func NewDeploymentID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "dep-" + markerEnc.EncodeToString(b[:])
}

var markerEnc = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// validDeploymentID: 1–128 characters of [A-Za-z0-9_-] (a key segment).
func validDeploymentID(id string) bool {
	return id != "" && !strings.Contains(id, "/") && len(id) <= maxSegmentSize && ValidKey(id)
}

// marker is the content of the marker object (JSON, one line).
type marker struct {
	DeploymentID string `json:"deployment_id"`
	CreatedAt    string `json:"created_at"`
}

// EncodeMarker returns the content of a marker naming id.
func EncodeMarker(id string) []byte {
	b, _ := json.Marshal(marker{DeploymentID: id, CreatedAt: time.Now().UTC().Format(time.RFC3339)})
	return append(b, '\n')
}

// DecodeMarker returns the deployment id a marker's content names.
func DecodeMarker(b []byte) (string, error) {
	var m marker
	if err := json.Unmarshal(b, &m); err != nil || !validDeploymentID(m.DeploymentID) {
		return "", fmt.Errorf("blob: deployment marker %s is not one ekm wrote (%d bytes): remove it only if no other deployment uses this store", MarkerName, len(b))
	}
	return m.DeploymentID, nil
}

// Claim is ClaimDeployment over a backend's two primitives: create writes
// the marker only if there is none (ErrExists otherwise, atomically: two
// concurrent creates never both succeed, and a reader never sees a partial
// marker), read returns its content (ErrNotFound if there is none).
func Claim(ctx context.Context, id string, create func(ctx context.Context, content []byte) error, read func(ctx context.Context) ([]byte, error)) error {
	if !validDeploymentID(id) {
		return fmt.Errorf("blob: invalid deployment id %q", id)
	}
	// A marker removed between our create and read (an operator
	// re-claiming the store) makes us try again, a few times.
	for range 3 {
		err := create(ctx, EncodeMarker(id))
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrExists) {
			return fmt.Errorf("blob: writing the deployment marker: %w", err)
		}
		b, err := read(ctx)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("blob: reading the deployment marker: %w", err)
		}
		theirs, err := DecodeMarker(b)
		if err != nil {
			return err
		}
		if theirs != id {
			return &ClaimError{Ours: id, Theirs: theirs}
		}
		return nil
	}
	return errors.New("blob: the deployment marker keeps disappearing between its creation and its reading")
}

// ReadDeployment is Deployment over a backend's read.
func ReadDeployment(ctx context.Context, read func(ctx context.Context) ([]byte, error)) (string, error) {
	b, err := read(ctx)
	if err != nil {
		return "", err
	}
	return DecodeMarker(b)
}
