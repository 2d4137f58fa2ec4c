package apispec_test

import (
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/internal/apispec"
)

// TestNodeSDK runs scripts/sdk-node/smoke.mjs, the official OpenAI Node SDK
// driving the Admin, Files and crypto APIs, through a proxy that checks
// every exchange against docs/openapi.yaml, so the Node SDK's own requests
// are checked too. It needs node and EKM_TEST_NODE_OPENAI, a directory with
// node_modules/openai (.ci/run installs the version docs/API.md names);
// without them it skips, or fails under EKM_CI.
func TestNodeSDK(t *testing.T) {
	dir := os.Getenv("EKM_TEST_NODE_OPENAI")
	node, err := exec.LookPath("node")
	if dir == "" || err != nil {
		msg := "TestNodeSDK needs node and EKM_TEST_NODE_OPENAI (a directory with node_modules/openai)"
		if os.Getenv("EKM_CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	url0, adminKey := startServer(t)
	target, _ := url.Parse(url0)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = apispec.Transport(t, nil)
	front := httptest.NewServer(proxy)
	defer front.Close()

	cmd := exec.Command(node, filepath.Join("..", "..", "scripts", "sdk-node", "smoke.mjs"))
	cmd.Env = append(os.Environ(), "EKM_URL="+front.URL, "EKM_ADMIN_KEY="+adminKey, "EKM_OPENAI_NODE="+dir,
		"OPENAI_API_KEY=", "OPENAI_ADMIN_KEY=", "OPENAI_BASE_URL=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node smoke test: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"ok":true`) {
		t.Fatalf("node smoke test printed no result:\n%s", out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}
