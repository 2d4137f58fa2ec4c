package replicas_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// ekmBin is the ekm binary built for this package's process tests.
var ekmBin string

// servers are the object storage servers started for this package.
var servers cloudblobtest.Servers

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ekm-replicas-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ekmBin = filepath.Join(dir, "ekm")
	build := exec.Command("go", "build", "-o", ekmBin, "github.com/ekm-dev/ekm/cmd/ekm")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ekm:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The object store of the three-replica test (and the credentials its
	// SDK reads from the environment, which the children inherit).
	servers = cloudblobtest.Start()
	code := m.Run()
	servers.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// childEnv is the test's environment without anything that would configure
// a child other than its flags, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "EKM_") || strings.HasPrefix(kv, "AZURE_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proc is a running `ekm serve` child.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	url  string

	mu     sync.Mutex
	stderr bytes.Buffer
}

// startServer runs `ekm serve` with args and waits until it listens. The
// child is killed at test cleanup if still running.
func startServer(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(ekmBin, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = io.Discard
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.Contains(line, `"msg":"ekm listening"`) {
				var l struct{ Addr string }
				if json.Unmarshal([]byte(line), &l) == nil {
					select {
					case addr <- l.Addr:
					default:
					}
				}
			}
		}
	}()
	go func() {
		<-scanned
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	select {
	case a := <-addr:
		p.url = "http://" + a
	case <-p.done:
		t.Fatalf("ekm serve exited: %v\n%s", p.err, p.output())
	case <-time.After(60 * time.Second):
		t.Fatalf("ekm serve did not start in 60 s\n%s", p.output())
	}
	return p
}

// kill sends SIGKILL (if still running) and waits for the process to end.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// logged counts the child's log lines with message msg.
func (p *proc) logged(msg string) int {
	return strings.Count(p.output(), `"msg":"`+msg+`"`)
}

// tool runs an ekm operator command to completion and returns its stdout.
func tool(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(ekmBin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ekm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func jsonField(t *testing.T, s, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	v, ok := m[field]
	if !ok {
		t.Fatalf("%q has no %s", s, field)
	}
	return fmt.Sprint(v)
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

// azureEnv is an Azure emulator in the test process and the flags and
// environment that point an ekm child at it.
type azureEnv struct {
	emu  *azurecloud.Emulator
	args []string
	env  []string
}

func startAzure(t *testing.T, extraEnv ...string) *azureEnv {
	t.Helper()
	emu, err := azurecloud.New(azurecloud.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	creds := emu.App()
	return &azureEnv{emu: emu,
		args: []string{"--azure-client-id", creds.ClientID, "--azure-dial-override", emu.Addr(), "--azure-ca-file", emu.CAFile()},
		env:  childEnv(append([]string{"EKM_AZURE_CLIENT_SECRET=" + creds.ClientSecret}, extraEnv...)...)}
}

// onboard creates a customer tenant and runs its onboarding steps for orgID.
func (z *azureEnv) onboard(t *testing.T, orgID, suffix string) (*azonboard.Customer, azonboard.Onboarding) {
	t.Helper()
	ten, err := z.emu.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	c := &azonboard.Customer{HTTP: z.emu.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
	vault := "v" + strings.ReplaceAll(ten.ID, "-", "")[:20]
	o, err := c.Onboard(context.Background(), z.emu.App().ClientID, orgID, vault, suffix)
	if err != nil {
		t.Fatal(err)
	}
	return c, o
}
