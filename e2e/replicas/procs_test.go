package replicas_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
	"github.com/ekm-dev/ekm/e2e/e2ekit"
)

// ekmBin is the ekm binary built for this package's process tests.
var ekmBin string

// servers are the object storage servers started for this package.
var servers cloudblobtest.Servers

func TestMain(m *testing.M) {
	bin, dir, err := e2ekit.BuildEKM("ekm-replicas-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ekmBin = bin
	// The object store of the three-replica test (and the credentials its
	// SDK reads from the environment, which the children inherit).
	servers = cloudblobtest.Start()
	code := m.Run()
	servers.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startServer runs `ekm serve` with args and waits until it listens. The
// child is killed at test cleanup if still running.
func startServer(t *testing.T, env []string, args ...string) *e2ekit.Proc {
	t.Helper()
	return e2ekit.StartServer(t, ekmBin, env, 60*time.Second, args...)
}

// tool runs an ekm operator command to completion and returns its stdout.
func tool(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, _ := e2ekit.Tool(t, ekmBin, env, args...)
	return out
}

// admin calls the Admin API of one replica.
type admin struct{ url, key string }

func (a admin) post(t *testing.T, path string, body any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, a.url+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+a.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %v %v", path, res.StatusCode, out, err)
	}
	return out
}
