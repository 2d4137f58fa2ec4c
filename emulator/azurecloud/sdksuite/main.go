// Command sdksuite runs the official azkeys test suite (the Azure SDK for
// Go's own Key Vault keys tests, at the version go.mod pins) in live mode
// against the Azure emulator, as the suite's CI runs it against a real
// vault and Managed HSM.
//
// It starts the emulator in-process, provisions what the suite's
// test-resources.json and test-resources-post.ps1 describe (a premium,
// RBAC, soft-delete vault with 7 days' retention; the test application
// as Key Vault Administrator on its resource group; a Managed HSM whose
// initial administrator is the application, which then holds Managed HSM
// Crypto Officer and Crypto User), all through ARM and the pool's own
// role assignment API with the tenant admin's tokens, and an attestation
// provider standing in for the suite's mock attestation service. It then
// copies the module from the module cache, runs `go test -json` on it
// with AZURE_RECORD_MODE=live and the suite's environment variables, the
// test process reaching the emulator through a local CONNECT proxy
// (HTTPS_PROXY) and trusting its CA (SSL_CERT_FILE), and prints the
// counts. It exits non-zero on any failure not in the exclusion list.
//
//	go run ./emulator/azurecloud/sdksuite [-v] [-keep]
//
// docs/emulator-azure.md ("The official azkeys suite") records the counts.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/emulator/azurecloud"
)

const azkeysModule = "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

// excluded lists the suite's tests allowed to fail, each with the reason.
// Empty: every test of the suite passes (or skips for its own reasons).
var excluded = map[string]string{}

// attestationURL is the emulated attestation provider the release test
// uses in place of the suite's mock attestation service.
const attestationURL = "https://ekmsuite.eus.attest.azure.net/"

func main() {
	verbose := flag.Bool("v", false, "print the suite's test output")
	keep := flag.Bool("keep", false, "keep the temporary copy of the suite")
	timeout := flag.Duration("timeout", 6*time.Minute, "go test timeout")
	flag.Parse()
	if err := run(*verbose, *keep, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "sdksuite:", err)
		os.Exit(1)
	}
}

func run(verbose, keep bool, timeout time.Duration) error {
	ctx := context.Background()
	version, err := goOut(ctx, "", nil, "list", "-m", "-f", "{{.Version}}", azkeysModule)
	if err != nil {
		return fmt.Errorf("azkeys version from go.mod: %w", err)
	}
	dl, err := goOut(ctx, "", nil, "mod", "download", "-json", azkeysModule+"@"+version)
	if err != nil {
		return fmt.Errorf("download azkeys %s: %w", version, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal([]byte(dl), &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("download azkeys %s: no module directory in %q", version, dl)
	}
	work, err := os.MkdirTemp("", "azkeys-suite-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("suite copy:", work)
	} else {
		defer os.RemoveAll(work)
	}
	suiteDir := filepath.Join(work, "azkeys")
	if err := copyTree(mod.Dir, suiteDir); err != nil {
		return fmt.Errorf("copy the suite: %w", err)
	}
	// The suite's own dependencies, at its go.mod's versions, fetched
	// before the proxy variables below point at the emulator.
	if _, err := goOut(ctx, suiteDir, nil, "mod", "download"); err != nil {
		return fmt.Errorf("download the suite's dependencies: %w", err)
	}

	e, err := azurecloud.New(azurecloud.Options{Addr: "127.0.0.1:0", StateDir: filepath.Join(work, "emulator")})
	if err != nil {
		return err
	}
	if err := e.Start(); err != nil {
		return err
	}
	defer e.Close()
	env, err := provision(ctx, e)
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	proxy, err := startConnectProxy(e.Addr())
	if err != nil {
		return err
	}
	defer proxy.Close()

	cmdEnv := suiteEnv(env, "http://"+proxy.Addr().String(), e.CAFile())
	fmt.Printf("azkeys %s: running the official suite (live mode) against the emulator at %s\n", version, e.Addr())
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "test", "-json", "-count=1", "-timeout", timeout.String(), "./...")
	cmd.Dir, cmd.Env = suiteDir, cmdEnv
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	res := collect(out, verbose)
	waitErr := cmd.Wait()
	if stderr.Len() > 0 {
		fmt.Fprint(os.Stderr, stderr.String())
	}
	throttled := 0
	ops := map[string]int{}
	for _, r := range e.Requests() {
		ops[r.Operation]++
		if r.Status == http.StatusTooManyRequests {
			throttled++
		}
	}
	fmt.Printf("emulator: %d requests, %d answered 429 (throttled); key creations %d, imports %d, restores %d, releases %d\n",
		len(e.Requests()), throttled, ops["kv.create"], ops["kv.import"], ops["kv.restore"], ops["kv.release"])
	return report(res, waitErr, time.Since(start))
}

// suiteEnv is the test process's environment: the caller's, less every
// Azure credential variable, plus the suite's live-mode settings.
func suiteEnv(env map[string]string, proxyURL, caFile string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "AZURE_"), strings.HasPrefix(k, "KEYVAULT_"), strings.HasPrefix(k, "AZURESUBSCRIPTION_"),
			k == "SYSTEM_ACCESSTOKEN", k == "HTTPS_PROXY", k == "https_proxy", k == "HTTP_PROXY", k == "http_proxy",
			k == "NO_PROXY", k == "no_proxy", k == "SSL_CERT_FILE", k == "SSL_CERT_DIR", k == "GOPROXY", k == "GOFLAGS":
			continue
		}
		out = append(out, kv)
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return append(out,
		"AZURE_RECORD_MODE=live",
		"HTTPS_PROXY="+proxyURL, "HTTP_PROXY="+proxyURL, "NO_PROXY=",
		"SSL_CERT_FILE="+caFile, "SSL_CERT_DIR=/nonexistent",
		// Everything was downloaded above; the go command must not try the
		// network through the proxy, which leads only to the emulator.
		"GOPROXY=off", "GOFLAGS=-buildvcs=false",
	)
}

// provision creates the suite's resources as its test-resources.json and
// test-resources-post.ps1 do, through ARM and the Managed HSM's role
// assignment API, and returns the suite's environment variables.
func provision(ctx context.Context, e *azurecloud.Emulator) (map[string]string, error) {
	t, err := e.CreateTenant()
	if err != nil {
		return nil, err
	}
	app := e.App()
	hc := e.HTTPClient()
	call := func(method, url, token string, body any, want ...int) (map[string]any, error) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, w := range want {
			if resp.StatusCode == w {
				var m map[string]any
				_ = json.Unmarshal(b, &m)
				return m, nil
			}
		}
		return nil, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	arm := "https://management.azure.com/subscriptions/" + t.SubscriptionID
	mgmt := t.AdminTokens.Management
	// The test application's service principal (Graph).
	sp, err := call(http.MethodPost, "https://graph.microsoft.com/v1.0/servicePrincipals", t.AdminTokens.Graph, map[string]string{"appId": app.ClientID}, 201)
	if err != nil {
		return nil, err
	}
	spID, _ := sp["id"].(string)
	rg := arm + "/resourcegroups/azkeys-suite"
	if _, err := call(http.MethodPut, rg+"?api-version=2021-04-01", mgmt, map[string]string{"location": "westus2"}, 200, 201); err != nil {
		return nil, err
	}
	// The vault: premium, RBAC, soft delete with 7 days' retention.
	vaultName := "azkeyssuite" + strings.ToLower(t.ID[:6])
	if _, err := call(http.MethodPut, rg+"/providers/Microsoft.KeyVault/vaults/"+vaultName+"?api-version=2019-09-01", mgmt, map[string]any{
		"location": "westus2",
		"properties": map[string]any{"sku": map[string]string{"family": "A", "name": "premium"}, "tenantId": t.ID,
			"enableSoftDelete": true, "enableRbacAuthorization": true, "softDeleteRetentionInDays": 7},
	}, 200, 201); err != nil {
		return nil, err
	}
	// Key Vault Administrator for the application at the resource group.
	if _, err := call(http.MethodPut, rg+"/providers/Microsoft.Authorization/roleAssignments/"+newGUID()+"?api-version=2022-04-01", mgmt, map[string]any{
		"properties": map[string]string{"roleDefinitionId": "/subscriptions/" + t.SubscriptionID + "/providers/Microsoft.Authorization/roleDefinitions/00482a5a-887f-4fb3-b363-3b7fe8e74483",
			"principalId": spID, "principalType": "ServicePrincipal"},
	}, 200, 201); err != nil {
		return nil, err
	}
	// The Managed HSM, its initial administrator the application and the
	// tenant admin; then, as the admin would after activation, Managed HSM
	// Crypto Officer and Crypto User for the application.
	hsmName := vaultName + "hsm"
	if _, err := call(http.MethodPut, rg+"/providers/Microsoft.KeyVault/managedHSMs/"+hsmName+"?api-version=2021-04-01-preview", mgmt, map[string]any{
		"location": "australiaeast", "sku": map[string]string{"family": "B", "name": "Standard_B1"},
		"properties": map[string]any{"tenantId": t.ID, "initialAdminObjectIds": []string{spID, t.AdminObjectID},
			"enablePurgeProtection": false, "enableSoftDelete": true, "softDeleteRetentionInDays": 7, "publicNetworkAccess": "Enabled"},
	}, 200, 201); err != nil {
		return nil, err
	}
	hsmURL := "https://" + hsmName + ".managedhsm.azure.net"
	for _, role := range []string{"515eb02d-2335-4d2d-92f2-b1cbdf9c3778", "21dbd100-6940-42c2-9190-5d6cb909625b"} {
		if _, err := call(http.MethodPut, hsmURL+"//providers/Microsoft.Authorization/roleAssignments/"+newGUID()+"?api-version=7.6", t.AdminTokens.ManagedHSM, map[string]any{
			"properties": map[string]string{"roleDefinitionId": "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/" + role, "principalId": spID},
		}, 201); err != nil {
			return nil, err
		}
	}
	return map[string]string{
		"AZURE_KEYVAULT_URL":             "https://" + vaultName + ".vault.azure.net/",
		"AZURE_MANAGEDHSM_URL":           hsmURL + "/",
		"AZURE_KEYVAULT_ATTESTATION_URL": attestationURL,
		"AZURE_SERVICE_DIRECTORY":        "KEYVAULT",
		"KEYVAULT_TENANT_ID":             t.ID,
		"KEYVAULT_CLIENT_ID":             app.ClientID,
		"KEYVAULT_CLIENT_SECRET":         app.ClientSecret,
	}, nil
}

func newGUID() string {
	b := make([]byte, 16)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err)
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// startConnectProxy serves HTTP CONNECT on loopback and tunnels every
// connection to the emulator, whatever host the client names: the test
// process keeps production URLs, as with a dial override.
func startConnectProxy(target string) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "this proxy only tunnels (CONNECT) to the Azure emulator", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			up.Close()
			http.Error(w, "no hijacking", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
		conn, buf, err := hj.Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() {
			defer conn.Close()
			defer up.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				if n := buf.Reader.Buffered(); n > 0 {
					b, _ := buf.Reader.Peek(n)
					_, _ = up.Write(b)
				}
				_, _ = io.Copy(up, conn)
				if tc, ok := up.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}()
			_, _ = io.Copy(conn, up)
			_ = conn.Close()
			wg.Wait()
		}()
	})}
	go func() { _ = srv.Serve(ln) }()
	return ln, nil
}

// event is one line of `go test -json`.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type results struct {
	passed, failed, skipped []string
	output                  map[string]*strings.Builder // per test, for failures
	pkgFailed               []string                    // packages that failed outside any test (build errors)
	pkgOutput               map[string]*strings.Builder
}

func collect(r io.Reader, verbose bool) *results {
	res := &results{output: map[string]*strings.Builder{}, pkgOutput: map[string]*strings.Builder{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			fmt.Println(sc.Text())
			continue
		}
		name := ev.Test
		switch ev.Action {
		case "output":
			if verbose {
				fmt.Print(ev.Output)
			}
			m := res.output
			key := name
			if name == "" {
				m, key = res.pkgOutput, ev.Package
			}
			if m[key] == nil {
				m[key] = &strings.Builder{}
			}
			if m[key].Len() < 64<<10 {
				m[key].WriteString(ev.Output)
			}
		case "pass":
			if name != "" {
				res.passed = append(res.passed, name)
			}
		case "skip":
			if name != "" {
				res.skipped = append(res.skipped, name)
			}
		case "fail":
			if name != "" {
				res.failed = append(res.failed, name)
			} else {
				res.pkgFailed = append(res.pkgFailed, ev.Package)
			}
		}
	}
	return res
}

// report prints the counts and decides the outcome: a failure counts
// unless the test, or the parent of every failed subtest, is excluded.
func report(res *results, waitErr error, took time.Duration) error {
	var bad []string
	for _, name := range res.failed {
		if _, ok := excluded[name]; ok {
			continue
		}
		// A parent fails when a subtest fails: count it only if some failed
		// subtest of it is not excluded, or it failed by itself.
		childFailed, childBad := false, false
		for _, other := range res.failed {
			if strings.HasPrefix(other, name+"/") {
				childFailed = true
				if _, ok := excluded[other]; !ok {
					childBad = true
				}
			}
		}
		if childFailed && !childBad {
			continue
		}
		bad = append(bad, name)
	}
	sort.Strings(bad)
	for _, name := range bad {
		fmt.Printf("--- FAIL: %s\n%s", name, indent(res.output[name]))
	}
	for _, name := range res.failed {
		if reason, ok := excluded[name]; ok {
			fmt.Printf("--- FAIL (excluded): %s: %s\n", name, reason)
		}
	}
	fmt.Printf("skipped: %s\n", strings.Join(res.skipped, ", "))
	fmt.Printf("azkeys: %d passed, %d failed, %d skipped\n", len(res.passed), len(res.failed), len(res.skipped))
	fmt.Printf("(%s; %d failures not excluded)\n", took.Round(time.Second), len(bad))
	if len(res.pkgFailed) > 0 && len(res.failed) == 0 {
		for _, p := range res.pkgFailed {
			fmt.Printf("package %s failed:\n%s", p, indent(res.pkgOutput[p]))
		}
		return errors.New("the suite did not build or run")
	}
	if len(res.passed) == 0 {
		return errors.New("the suite ran no test")
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d of the suite's tests failed", len(bad))
	}
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		return waitErr
	}
	return nil
}

func indent(b *strings.Builder) string {
	if b == nil {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(b.String(), "\n"), "\n", "\n    ") + "\n"
}

// goOut runs the go command and returns its trimmed standard output.
func goOut(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = dir, env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// copyTree copies the read-only module directory into a writable tree.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
