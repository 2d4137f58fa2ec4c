package e2ekit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// BuildEKM builds the ekm binary into a new temporary directory (named by
// pattern, as os.MkdirTemp) for a package's TestMain, and returns the
// binary's path and the directory, which the caller removes when done.
func BuildEKM(pattern string) (bin, dir string, err error) {
	dir, err = os.MkdirTemp("", pattern)
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "ekm")
	build := exec.Command("go", "build", "-o", bin, "github.com/ekm-dev/ekm/cmd/ekm")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("building ekm: %w", err)
	}
	return bin, dir, nil
}

// ChildEnv is the test's environment without anything that would configure
// a child other than its flags (EKM_*, AZURE_*), plus extra.
func ChildEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "EKM_") || strings.HasPrefix(kv, "AZURE_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// Proc is a running ekm child process.
type Proc struct {
	// URL is the server's base URL once it listens (StartServer).
	URL string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, once done is closed

	mu     sync.Mutex
	stderr bytes.Buffer
	addr   chan string
}

// Start runs the ekm binary bin with args and env, keeping its log
// (stderr). The child is killed at test cleanup if still running.
func Start(t testing.TB, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{cmd: exec.Command(bin, args...), done: make(chan struct{}), addr: make(chan string, 1)}
	p.cmd.Env = env
	p.cmd.Stdout = io.Discard
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
					case p.addr <- l.Addr:
					default:
					}
				}
			}
		}
	}()
	go func() {
		<-scanned // Wait must come after the pipe is drained
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.Kill)
	return p
}

// StartServer runs `ekm serve --addr 127.0.0.1:0` with args and waits up to
// timeout until it listens.
func StartServer(t testing.TB, bin string, env []string, timeout time.Duration, args ...string) *Proc {
	t.Helper()
	p := Start(t, bin, env, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	select {
	case addr := <-p.addr:
		p.URL = "http://" + addr
		return p
	case <-p.done:
		t.Fatalf("ekm serve exited: %v\n%s", p.err, p.Output())
	case <-time.After(timeout):
		t.Fatalf("ekm serve did not start in %v\n%s", timeout, p.Output())
	}
	return nil
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit status, once it has exited.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL (if still running) and waits for the process to end.
func (p *Proc) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Output is the process's log so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Logged counts the process's log lines with message msg.
func (p *Proc) Logged(msg string) int {
	return strings.Count(p.Output(), `"msg":"`+msg+`"`)
}

// Tool runs an ekm operator command to completion and returns its stdout
// and stderr.
func Tool(t testing.TB, bin string, env []string, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ekm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

// JSONField is a field of the JSON object s (an operator command's output).
func JSONField(t testing.TB, s, field string) string {
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

// AzureChild is an Azure emulator in the test process and the flags and
// environment that point an ekm child at it, exactly as an operator would.
type AzureChild struct {
	Emu  *azurecloud.Emulator
	Args []string // --azure-* flags
	Env  []string // child environment (the client secret stays out of argv)
}

// StartAzureChild starts an Azure emulator, closed at test cleanup; extraEnv
// is added to the child environment.
func StartAzureChild(t testing.TB, extraEnv ...string) *AzureChild {
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
	return &AzureChild{Emu: emu,
		Args: []string{"--azure-client-id", creds.ClientID, "--azure-dial-override", emu.Addr(), "--azure-ca-file", emu.CAFile()},
		Env:  ChildEnv(append([]string{"EKM_AZURE_CLIENT_SECRET=" + creds.ClientSecret}, extraEnv...)...)}
}

// Onboard creates a customer tenant and runs the customer's onboarding
// steps for orgID: a vault and a key <org>--<suffix> ekm may use.
func (z *AzureChild) Onboard(t testing.TB, orgID, suffix string) (*azonboard.Customer, azonboard.Onboarding) {
	t.Helper()
	ten, err := z.Emu.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	c := &azonboard.Customer{HTTP: z.Emu.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
	vault := "v" + strings.ReplaceAll(ten.ID, "-", "")[:20]
	o, err := c.Onboard(context.Background(), z.Emu.App().ClientID, orgID, vault, suffix)
	if err != nil {
		t.Fatal(err)
	}
	return c, o
}
