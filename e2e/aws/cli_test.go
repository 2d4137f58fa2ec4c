package aws

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/awsonboard"
)

// TestDocsCLI runs the customer's commands of docs/aws.md — the sh blocks
// of steps 1-4 and of the per-project revocation, word for word, with the
// policy files saved from the doc's json blocks — with the real aws CLI
// against the emulator, then registers the key they made and checks the
// per-project statement. The CLI reaches the emulator through an HTTPS
// proxy that tunnels every CONNECT to it (the CLI keeps the production host
// names and verifies them against the emulator's CA, AWS_CA_BUNDLE). It is
// skipped when the aws CLI is not installed.
func TestDocsCLI(t *testing.T) {
	awsCLI, err := exec.LookPath("aws")
	if err != nil {
		t.Skip("the aws CLI is not installed")
	}
	if out, err := exec.Command(awsCLI, "--version").CombinedOutput(); err != nil {
		t.Skipf("the aws CLI does not run: %v %s", err, out)
	}
	env := ekmtest.Start(t, ekmtest.Options{AWS: true, ProbeInterval: time.Hour})
	cust := env.NewAWSCustomer(t, nil)
	doc, err := os.ReadFile("../../docs/aws.md")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"permission-policy.json", "trust-policy.json", "deny-project-statement.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(docBlock(t, name)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	steps := shBlocks(t, string(doc), "TestDocsCLI runs the sh blocks", "**Register the key with ekm:**")
	if len(steps) != 4 {
		t.Fatalf("found %d sh blocks for steps 1-4 in docs/aws.md", len(steps))
	}
	tunnels := atomic.Int64{}
	proxy := connectProxy(t, env.AWS.Addr(), &tunnels)
	vars := map[string]string{"REGION": ekmtest.AWSRegion, "ORG_ID": env.OrgID, "EKM_PRINCIPAL_ARN": env.AWS.Vendor().ARN}
	out := runCLI(t, dir, proxy, env, cust, vars, strings.Join(steps, "\n")+"\necho \"KEY_ARN=$KEY_ARN\"; echo \"ROLE_ARN=$ROLE_ARN\"; echo \"POLICY_ARN=$POLICY_ARN\"\n")
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(KEY_ARN|ROLE_ARN|POLICY_ARN)=(\S+)$`).FindAllStringSubmatch(out, -1) {
		got[m[1]] = m[2]
	}
	if got["KEY_ARN"] == "" || got["ROLE_ARN"] == "" || got["POLICY_ARN"] == "" || tunnels.Load() == 0 {
		t.Fatalf("the doc's commands printed %q (%d tunnels)", out, tunnels.Load())
	}
	cust.Result = awsonboard.Result{KeyARN: got["KEY_ARN"], RoleARN: got["ROLE_ARN"], PolicyARN: got["POLICY_ARN"]}

	// What the commands made is what ekm needs.
	f := register(t, env, cust, "made with the aws CLI", "", 2)
	f.MustRead(f.Projects[0], "key made with the aws CLI")

	// The per-project revocation commands, for the first project.
	if _, err := exec.LookPath("jq"); err != nil {
		t.Log("jq is not installed: the per-project commands are not run")
		return
	}
	perProject := shBlocks(t, string(doc), "Save this statement as `deny-project-statement.json`", "The resulting key policy")
	if len(perProject) != 1 {
		t.Fatalf("found %d sh blocks for the per-project revocation", len(perProject))
	}
	vars["KEY_ARN"] = got["KEY_ARN"]
	script := strings.Replace(perProject[0], "PROJECT_ID=proj_...", "PROJECT_ID="+f.Projects[0].ID, 1)
	runCLI(t, dir, proxy, env, cust, vars, script)
	ctx := context.Background()
	encrypt := func(project string) error {
		_, err := cust.KMS.Encrypt(ctx, &awskms.EncryptInput{KeyId: awssdk.String(got["KEY_ARN"]), Plaintext: []byte("x"),
			EncryptionContext: map[string]string{"ekm:org": env.OrgID, "ekm:project": project, "ekm:version": "1"}})
		return err
	}
	if err := encrypt(f.Projects[0].ID); err == nil || !strings.Contains(err.Error(), "AccessDeniedException") {
		t.Fatalf("the denied project still encrypts: %v", err)
	}
	if err := encrypt(f.Projects[1].ID); err != nil {
		t.Fatalf("another project is refused: %v", err)
	}
}

// shBlocks returns the ```sh blocks of doc between the first line
// containing from and the next containing to.
func shBlocks(t *testing.T, doc, from, to string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, from)
	if !ok {
		t.Fatalf("docs/aws.md has no %q", from)
	}
	rest, _, ok = strings.Cut(rest, to)
	if !ok {
		t.Fatalf("docs/aws.md has no %q after %q", to, from)
	}
	var out []string
	for {
		_, after, ok := strings.Cut(rest, "```sh\n")
		if !ok {
			return out
		}
		block, tail, ok := strings.Cut(after, "\n```")
		if !ok {
			t.Fatal("unterminated sh block in docs/aws.md")
		}
		out = append(out, block)
		rest = tail
	}
}

// runCLI runs script with bash in dir, as the customer's administrator
// (its root user's keys), with nothing of this machine's AWS setup.
func runCLI(t *testing.T, dir, proxy string, env *ekmtest.Env, cust *ekmtest.AWSCustomer, vars map[string]string, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LANG=C.UTF-8",
		"AWS_ACCESS_KEY_ID=" + cust.Root.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + cust.Root.SecretAccessKey,
		"AWS_DEFAULT_REGION=" + ekmtest.AWSRegion, "AWS_CONFIG_FILE=" + os.DevNull, "AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=", "AWS_CA_BUNDLE=" + env.AWS.CAFile(), "HTTPS_PROXY=" + proxy, "https_proxy=" + proxy}
	if p := os.Getenv("PYENV_ROOT"); p != "" {
		cmd.Env = append(cmd.Env, "PYENV_ROOT="+p)
	}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the doc's commands failed: %v\n%s\n--- script:\n%s", err, stderr.String(), script)
	}
	return stdout.String()
}

// connectProxy is an HTTPS proxy that tunnels every CONNECT to an AWS host
// to the emulator's address (and refuses anything else).
func connectProxy(t *testing.T, target string, tunnels *atomic.Int64) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		if r.Method != http.MethodConnect || !strings.HasSuffix(host, ".amazonaws.com") {
			http.Error(w, "only CONNECT to AWS hosts", http.StatusForbidden)
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		tunnels.Add(1)
		_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() {
			if n := buf.Reader.Buffered(); n > 0 {
				b, _ := buf.Reader.Peek(n)
				_, _ = up.Write(b)
			}
			_, _ = io.Copy(up, conn)
			up.Close()
		}()
		_, _ = io.Copy(conn, up)
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
