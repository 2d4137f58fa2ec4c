package envelope_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/secret"
)

func Example() {
	projectKey := secret.New() // in ekm: a project key version unwrapped by the keyring
	keys := func(version uint32) (secret.Key, error) { return projectKey, nil }
	ctx := envelope.Context{OrgID: "org_1", ProjectID: "proj_1", ObjectID: "file-1", KeyVersion: 1}

	ct, err := envelope.Seal(projectKey, ctx, []byte("report.pdf"))
	if err != nil {
		panic(err)
	}
	name, err := envelope.Open(keys, ctx, ct)
	fmt.Println(string(name), err)

	ctx.ObjectID = "file-2" // the ciphertext was moved to another object
	_, err = envelope.Open(keys, ctx, ct)
	fmt.Println(err != nil)
	// Output:
	// report.pdf <nil>
	// true
}

func ExampleNewWriter() {
	projectKey := secret.New()
	keys := func(version uint32) (secret.Key, error) { return projectKey, nil }
	ctx := envelope.Context{OrgID: "org_1", ProjectID: "proj_1", ObjectID: "file-1", KeyVersion: 1}
	content := strings.Repeat("x", 100_000)

	var blob bytes.Buffer
	w, err := envelope.NewWriter(&blob, projectKey, ctx)
	if err != nil {
		panic(err)
	}
	if _, err := io.Copy(w, strings.NewReader(content)); err != nil {
		panic(err)
	}
	if err := w.Close(); err != nil { // writes the final segment
		panic(err)
	}
	fmt.Println(int64(blob.Len()) == envelope.StreamSize(int64(len(content))))

	r, err := envelope.NewReader(&blob, keys, ctx)
	if err != nil {
		panic(err)
	}
	got, err := io.ReadAll(r)
	fmt.Println(len(got), err)
	// Output:
	// true
	// 100000 <nil>
}
