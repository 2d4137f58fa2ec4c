package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/app"
)

// TestMain lets the test binary stand in for the ekm command: the
// quickstart script runs it as $EKM.
func TestMain(m *testing.M) {
	if os.Getenv("EKM_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestQuickstartScript runs scripts/quickstart.sh (the README's quickstart)
// against a server, with this binary as the ekm command.
func TestQuickstartScript(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: skipping the quickstart script", tool)
		}
	}
	dir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.Open(ctx, app.Config{Addr: "127.0.0.1:0", DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	t.Cleanup(func() {
		cancel()
		<-done
		a.Close()
	})
	addr := <-ready

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "../../scripts/quickstart.sh")
	cmd.Env = append(os.Environ(), "EKM_URL=http://"+addr, "EKM="+self, "EKM_TEST_RUN_MAIN=1", "EKM_DATA_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("quickstart.sh: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, want := range []string{"decrypted: hello", "listed: file-", "report.txt 18 bytes", "downloaded: quarterly numbers", "all steps passed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
