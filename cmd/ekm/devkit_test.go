package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// What the tests of `ekm dev` share, one flow per cloud: running a flow
// and reading what it printed, then following its printed commands as its
// user would.

// startDevRun runs one `ekm dev` flow (run, with c) until t ends or stop
// is called, and returns what it printed up to "Ctrl-C stops both". name
// names the flow in a failure; env are variables cleared for the run
// (t.Setenv restores them afterwards).
func startDevRun(t *testing.T, name string, env []string, run func(context.Context, devConfig, io.Writer) error, c devConfig) (string, func()) {
	t.Helper()
	for _, k := range env {
		t.Setenv(k, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, c, pw)
		pw.Close()
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil && ctx.Err() == nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(stop)
	var printed strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "Ctrl-C stops both") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if !strings.Contains(printed.String(), "Ctrl-C") {
		stop()
		t.Fatalf("%s stopped early:\n%s", name, printed.String())
	}
	return printed.String(), stop
}

// devCloudConfig is `ekm dev --cloud <cloud>` as the tests run it: the
// server and the emulator on any free port, data in dir, and no probe
// before the test ends.
func devCloudConfig(cloud, dir string) devConfig {
	return devConfig{Cloud: cloud, Addr: "127.0.0.1:0", EmulatorAddr: "127.0.0.1:0", EmulatorAddrSet: true,
		DataDir: dir, ProbeInterval: time.Hour}
}

// devCall calls the ekm server at base as key (with a body of type ctype,
// if any) and decodes its answer, which must be 200, into out.
func devCall(t *testing.T, base, method, path, key, ctype string, body io.Reader, out any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), method, base+path, body)
	req.Header.Set("Authorization", "Bearer "+key)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

// devSession is a running `ekm dev` as its user sees it: what it printed,
// and the server and admin key printed.
type devSession struct {
	t           *testing.T
	text        string
	base, admin string
}

func newDevSession(t *testing.T, text string) *devSession {
	t.Helper()
	return &devSession{t: t, text: text, base: findIn(t, text, `ekm server:\s+(http://\S+)`), admin: findIn(t, text, `export ADMIN=(\S+)`)}
}

// find returns the first group of re in what was printed.
func (s *devSession) find(re string) string {
	s.t.Helper()
	return findIn(s.t, s.text, re)
}

// call calls the server with the admin key and a JSON body, if any.
func (s *devSession) call(method, path, body string, out any) {
	s.t.Helper()
	if body == "" {
		devCall(s.t, s.base, method, path, s.admin, "", nil, out)
		return
	}
	devCall(s.t, s.base, method, path, s.admin, "application/json", strings.NewReader(body), out)
}

// registerKey registers the customer's key with the request body printed
// and creates a project on it, as the printed commands do, and returns
// their ids.
func (s *devSession) registerKey(register string) (ekID, projID string) {
	s.t.Helper()
	var ek, proj struct {
		ID string `json:"id"`
	}
	s.call("POST", "/v1/organization/external_keys", register, &ek)
	s.call("POST", "/v1/organization/projects", `{"name":"demo","external_key_id":"`+ek.ID+`"}`, &proj)
	return ek.ID, proj.ID
}

// devKeyHealth is what validating an external key answers.
type devKeyHealth struct {
	Status    string `json:"status"`
	KeyStatus string `json:"key_status"`
}

func (s *devSession) validate(ekID string) devKeyHealth {
	s.t.Helper()
	var v devKeyHealth
	s.call("POST", "/v1/organization/external_keys/"+ekID+"/validate", "", &v)
	return v
}

// revokeAndRestore runs the customer's revoke command and checks that the
// key is then found revoked, then its restore command and checks that the
// key is valid again.
func (s *devSession) revokeAndRestore(ekID string, revoke, restore func()) {
	s.t.Helper()
	revoke()
	if v := s.validate(ekID); v.Status != "invalid" || v.KeyStatus != "unavailable" {
		s.t.Fatalf("after the revoke command: %+v", v)
	}
	restore()
	if v := s.validate(ekID); v.Status != "valid" || v.KeyStatus != "valid" {
		s.t.Fatalf("after the restore command: %+v", v)
	}
}

// revokeAndRestoreWithCurl is revokeAndRestore with the two customer's
// commands printed as `curl -s --cacert …` (the revoke one holding
// revokeMark, the restore one restoreMark), run as printed; without curl
// installed it only says so.
func (s *devSession) revokeAndRestoreWithCurl(ekID, revokeMark, restoreMark string) {
	s.t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		s.t.Log("curl is not installed: the printed customer commands are not run")
		return
	}
	cmds := regexp.MustCompile(`(?m)^  (curl -s --cacert .*\\\n.*)$`).FindAllStringSubmatch(s.text, -1)
	if len(cmds) != 2 || !strings.Contains(cmds[0][1], revokeMark) || !strings.Contains(cmds[1][1], restoreMark) {
		s.t.Fatalf("revoke and restore commands not found:\n%s", s.text)
	}
	runCurl := func(cmd string) func() {
		return func() {
			s.t.Helper()
			out, err := exec.Command("bash", "-c", cmd+" --fail-with-body").CombinedOutput()
			if err != nil {
				s.t.Fatalf("%s: %v %s", cmd, err, out)
			}
		}
	}
	s.revokeAndRestore(ekID, runCurl(cmds[0][1]), runCurl(cmds[1][1]))
}

// restarted checks that what a restart printed reuses the demo org orgID,
// and returns the restarted session.
func (s *devSession) restarted(text, orgID string) *devSession {
	s.t.Helper()
	if got := findIn(s.t, text, `demo org:\s+(org-\S+)`); got != orgID || !strings.Contains(text, "Reusing the demo org") {
		s.t.Fatalf("restart: org %s (was %s):\n%s", got, orgID, text)
	}
	return newDevSession(s.t, text)
}

// checkKeptProject checks, after a restart, that the demo org's projects
// are the one made before, projID.
func (s *devSession) checkKeptProject(projID string) {
	s.t.Helper()
	var list struct {
		Data []struct{ ID string } `json:"data"`
	}
	s.call("GET", "/v1/organization/projects", "", &list)
	if len(list.Data) != 1 || list.Data[0].ID != projID {
		s.t.Fatalf("after a restart, projects %+v, want %s", list.Data, projID)
	}
}

// devCustomerClient is the customer's HTTP client of the printed commands
// to the emulator: it trusts the CA in caFile and dials every host at
// emuAddr, as curl's --cacert and --connect-to do.
func devCustomerClient(t *testing.T, caFile, emuAddr string) *http.Client {
	t.Helper()
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, emuAddr)
		}}}
}

// devCustomerCall makes one of the customer's printed calls: method url
// as token with a JSON body; what names it in a failure.
func devCustomerCall(t *testing.T, c *http.Client, method, url, token, body, what string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Fatalf("%s: %d %s", what, res.StatusCode, b)
	}
}
