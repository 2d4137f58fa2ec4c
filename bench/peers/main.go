// Command peers compares ekm's crypto API and Files API with two Go
// libraries that encrypt with Azure Key Vault — gocloud.dev/secrets/azurekeyvault
// and github.com/hashicorp/go-kms-wrapping/wrappers/azurekeyvault/v2 — on the
// same emulated vault (emulator/azurecloud), with and without injected Key
// Vault latency and under the vault's throttling, at several concurrencies.
// It prints one table (docs/PERFORMANCE.md, "Peer comparison"):
//
//	cd bench/peers && go run .
//
// It is its own Go module so that the main module does not depend on the
// peers. Everything runs in this process on loopback: the emulator, an ekm
// server (app.Open, as `ekm serve` with the Azure dial override) and the
// three clients. gocloud takes an azkeys client, so it gets the emulator's
// transport; go-kms-wrapping builds its own HTTP client (proxy from the
// environment, system roots), so it reaches the emulator through a local
// CONNECT proxy (HTTPS_PROXY) with the emulator's CA as the only root
// (SSL_CERT_FILE), both set before any TLS or proxy use in the process.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	akvwrap "github.com/hashicorp/go-kms-wrapping/wrappers/azurekeyvault/v2"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"gocloud.dev/secrets/azurekeyvault"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

var (
	duration  = flag.Duration("duration", 2*time.Second, "measured time per cell")
	concList  = flag.String("conc", "1,16,64", "concurrencies")
	latency   = flag.Duration("latency", 20*time.Millisecond, "latency injected into every Key Vault request in the latency scenario")
	itemSize  = flag.Int("item", 128, "crypto item size in bytes (gocloud encrypts with RSA-OAEP-256 in Key Vault: at most 190 bytes)")
	fileSize  = flag.Int("file", 64<<10, "file size in bytes for the Files API comparison")
	kvLimit   = flag.Int("limit", 100, "RSA-2048 operations per second per vault in the throttling scenario (Azure's is 4000 per 10 s; scaled down so that the peers reach it on a 2-core machine)")
	scenarios = flag.String("scenarios", "base,latency,throttle", "scenarios to run")
	markdown  = flag.Bool("md", false, "print the table as Markdown (as in docs/PERFORMANCE.md)")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if err := runAll(); err != nil {
		log.Fatal(err)
	}
}

// system is one thing measured: op does one round trip (seal then open).
type system struct {
	name  string
	group string // "crypto" or "files": ratios compare within a group
	ekm   bool
	op    func(ctx context.Context) error
}

type cell struct {
	scenario string
	conc     int
	sys      *system
	ops      int
	errs     int
	firstErr error
	elapsed  time.Duration
	lat      []time.Duration
	kv       int // Key Vault requests (all operations but the 401 challenge)
	kv429    int // of which answered 429
	tokens   int // Entra token requests
	logFull  bool
}

func (c *cell) opsPerSec() float64 { return float64(c.ops) / c.elapsed.Seconds() }

func (c *cell) pct(p float64) time.Duration {
	if len(c.lat) == 0 {
		return 0
	}
	return c.lat[min(len(c.lat)-1, int(p*float64(len(c.lat))))]
}

type env struct {
	emu       *azurecloud.Emulator
	proxyConn atomic.Int64
}

func runAll() error {
	for _, v := range []string{"AZURE_AUTHORITY_HOST", "AZURE_REGIONAL_AUTHORITY_NAME", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
		"AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_ADDITIONALLY_ALLOWED_TENANTS", "AZURE_ENVIRONMENT",
		"HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "AZUREKEYVAULT_WRAPPER_VAULT_NAME", "VAULT_AZUREKEYVAULT_VAULT_NAME"} {
		os.Unsetenv(v)
	}
	ctx := context.Background()
	e := &env{}
	var err error
	if e.emu, err = azurecloud.New(azurecloud.Options{Addr: "127.0.0.1:0"}); err != nil {
		return err
	}
	if err := e.emu.Start(); err != nil {
		return err
	}
	defer e.emu.Close()
	// Before anything loads the system roots or reads the proxy variables.
	proxy, err := e.startProxy()
	if err != nil {
		return err
	}
	os.Setenv("SSL_CERT_FILE", e.emu.CAFile())
	os.Setenv("SSL_CERT_DIR", "")
	os.Setenv("HTTPS_PROXY", "http://"+proxy)
	os.Setenv("https_proxy", "http://"+proxy)

	// ekm, wired as `ekm serve --azure-dial-override … --azure-ca-file …`.
	dataDir, err := os.MkdirTemp("", "ekm-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	creds := e.emu.App()
	a, err := app.Open(ctx, app.Config{Addr: "127.0.0.1:0", DataDir: dataDir, Logger: slog.New(slog.DiscardHandler),
		Azure: app.AzureConfig{ClientID: creds.ClientID, ClientSecret: creds.ClientSecret, DialOverride: e.emu.Addr(), CAFile: e.emu.CAFile()}})
	if err != nil {
		return err
	}
	defer a.Close()
	org, adminKey, err := adminapi.CreateOrg(ctx, a.Store, "Peers", time.Now())
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.Run(runCtx, func(addr string) { ready <- addr }) }()
	var url string
	select {
	case addr := <-ready:
		url = "http://" + addr
	case err := <-done:
		return err
	}

	// One customer tenant, vault and RSA-2048 key, onboarded for ekm's app;
	// the peers authenticate as the same app with a role that also allows
	// wrapKey/unwrapKey (go-kms-wrapping wraps a data key).
	ten, err := e.emu.CreateTenant()
	if err != nil {
		return err
	}
	cust := &azonboard.Customer{HTTP: e.emu.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
	vault := "v" + strings.ReplaceAll(ten.ID, "-", "")[:20]
	ob, err := cust.Onboard(ctx, creds.ClientID, org.ID, vault, "peers")
	if err != nil {
		return err
	}
	role, err := cust.PutRole(ctx, azonboard.NewGUID(), "peers wrap/unwrap", append(slices.Clone(azonboard.DataActions),
		"Microsoft.KeyVault/vaults/keys/wrap/action", "Microsoft.KeyVault/vaults/keys/unwrap/action"))
	if err != nil {
		return err
	}
	if _, err := cust.Assign(ctx, cust.KeyScope(ob.ResourceGroup, vault, ob.KeyName), role, ob.ServicePrincipalID); err != nil {
		return err
	}

	systems, err := e.systems(ctx, url, adminKey, cust, ob)
	if err != nil {
		return err
	}
	var cells []*cell
	var concs []int
	for _, s := range strings.Split(*concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -conc %q", *concList)
		}
		concs = append(concs, n)
	}
	for _, sc := range strings.Split(*scenarios, ",") {
		if err := e.setScenario(sc); err != nil {
			return err
		}
		for _, n := range concs {
			for _, s := range systems {
				c := e.measure(ctx, sc, n, s)
				fmt.Fprintf(os.Stderr, "%-8s c=%-3d %-34s %8.0f ops/s p50 %-8v p99 %-8v kv/op %.3f 429 %d errs %d\n",
					sc, n, s.name, c.opsPerSec(), c.pct(0.5).Round(time.Microsecond), c.pct(0.99).Round(time.Microsecond),
					float64(c.kv)/float64(max(1, c.ops+c.errs)), c.kv429, c.errs)
				if c.firstErr != nil {
					fmt.Fprintf(os.Stderr, "    first error: %v\n", c.firstErr)
				}
				cells = append(cells, c)
			}
		}
	}
	e.emu.ClearFaults()
	printTable(cells, concs)
	var ekmOps, ekmKV int
	for _, c := range cells {
		if c.sys.ekm {
			ekmOps, ekmKV = ekmOps+c.ops, ekmKV+c.kv
		}
	}
	fmt.Printf("\nekm over all its cells: %d operations, %d Key Vault requests (health probe every 30 s; project key unwrapped once per cache TTL, 1 h).\n", ekmOps, ekmKV)
	fmt.Printf("\nConnections through the CONNECT proxy (go-kms-wrapping): %d\n", e.proxyConn.Load())
	stop()
	<-done
	return nil
}

// setScenario sets the emulator's throttling and latency.
func (e *env) setScenario(sc string) error {
	e.emu.ClearFaults()
	s := e.emu.Settings()
	s.Throttle.Disabled = true
	switch sc {
	case "base":
	case "latency":
		if _, err := e.emu.InjectFault(azurecloud.Fault{Host: "vault", Latency: azurecloud.Duration(*latency)}); err != nil {
			return err
		}
	case "throttle":
		s.Throttle = azurecloud.Throttle{RetryAfter: true, WindowSeconds: 1, RSA2048: *kvLimit,
			RSA3072: max(2, *kvLimit/4), RSA4096: max(2, *kvLimit/8), EC: *kvLimit, Create: 20}
	default:
		return fmt.Errorf("unknown scenario %q", sc)
	}
	return e.emu.SetSettings(s)
}

func scenarioLabel(sc string) string {
	switch sc {
	case "base":
		return "no injected latency, no throttling"
	case "latency":
		return fmt.Sprintf("+%v per Key Vault request", *latency)
	case "throttle":
		return fmt.Sprintf("vault limit %d RSA-2048 ops/s (429 + Retry-After)", *kvLimit)
	}
	return sc
}

// measure runs s at concurrency n for the duration after a warm-up round
// (one op per worker, not counted), counting Key Vault requests with the
// emulator's counters and request log.
func (e *env) measure(ctx context.Context, sc string, n int, s *system) *cell {
	c := &cell{scenario: sc, conc: n, sys: s}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { s.op(ctx) })
	}
	wg.Wait()
	if sc == "throttle" {
		time.Sleep(1100 * time.Millisecond) // a fresh window
	}
	e.emu.ResetCounters()
	var mu sync.Mutex
	start := time.Now()
	deadline := start.Add(*duration)
	for range n {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			ok, bad := 0, 0
			var first error
			for time.Now().Before(deadline) {
				octx, cancel := context.WithTimeout(ctx, 60*time.Second)
				t0 := time.Now()
				err := s.op(octx)
				d := time.Since(t0)
				cancel()
				if err != nil {
					bad++
					if first == nil {
						first = err
					}
					continue
				}
				ok++
				lat = append(lat, d)
			}
			mu.Lock()
			c.ops += ok
			c.errs += bad
			c.lat = append(c.lat, lat...)
			if c.firstErr == nil {
				c.firstErr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	c.elapsed = time.Since(start)
	slices.Sort(c.lat)
	for op, k := range e.emu.Counters() {
		switch {
		case op == "kv.challenge":
		case strings.HasPrefix(op, "kv."):
			c.kv += k
		case op == "entra.token":
			c.tokens += k
		}
	}
	reqs := e.emu.Requests()
	c.logFull = len(reqs) >= 10_000
	for _, r := range reqs {
		if r.Status == http.StatusTooManyRequests {
			c.kv429++
		}
	}
	return c
}

func (e *env) systems(ctx context.Context, url, adminKey string, cust *azonboard.Customer, ob azonboard.Onboarding) ([]*system, error) {
	item := bytes.Repeat([]byte{'i'}, *itemSize)
	file := bytes.Repeat([]byte{'f'}, *fileSize)
	aad := []byte("peers")

	// ekm: register the customer's key, a project, a project API key.
	admin := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey(adminKey), option.WithAdminAPIKey(adminKey), option.WithMaxRetries(0))
	var ek *openai.ExternalKey
	err := retry(func() (err error) {
		ek, err = admin.Admin.Organization.ExternalKeys.New(ctx, openai.AdminOrganizationExternalKeyNewParams{OfAzure: &openai.AdminOrganizationExternalKeyNewParamsBodyAzure{
			Name: "peers", TenantID: cust.TenantID, VaultURI: ob.VaultURI, KeyName: ob.KeyName}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("registering the key with ekm: %w", err)
	}
	var p *openai.Project
	if err := retry(func() (err error) {
		p, err = admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "peers", ExternalKeyID: openai.String(ek.ID)})
		return err
	}); err != nil {
		return nil, fmt.Errorf("ekm project: %w", err)
	}
	sa, err := admin.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "peers"})
	if err != nil {
		return nil, err
	}
	apiKey := sa.APIKey.Value
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256, IdleConnTimeout: time.Minute},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ekmc, err := client.New(url, apiKey, client.WithHTTPClient(hc))
	if err != nil {
		return nil, err
	}

	// gocloud.dev: an azkeys client on the emulator's transport.
	azopts := azcore.ClientOptions{Transport: e.emu.HTTPClient()}
	creds := e.emu.App()
	cred, err := azidentity.NewClientSecretCredential(cust.TenantID, creds.ClientID, creds.ClientSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: azopts})
	if err != nil {
		return nil, err
	}
	keeper, err := azurekeyvault.OpenKeeper(func(uri string) (*azkeys.Client, error) {
		return azkeys.NewClient(uri, cred, &azkeys.ClientOptions{ClientOptions: azopts})
	}, strings.TrimSuffix(ob.VaultURI, "/")+"/keys/"+ob.KeyName, nil)
	if err != nil {
		return nil, err
	}

	// go-kms-wrapping: its own client, through the proxy.
	w := akvwrap.NewWrapper()
	if err := retry(func() error {
		_, err := w.SetConfig(ctx, akvwrap.WithDisallowEnvVars(true),
			akvwrap.WithTenantId(cust.TenantID), akvwrap.WithClientId(creds.ClientID), akvwrap.WithClientSecret(creds.ClientSecret),
			akvwrap.WithVaultName(ob.Vault), akvwrap.WithKeyName(ob.KeyName))
		return err
	}); err != nil {
		return nil, fmt.Errorf("go-kms-wrapping: %w", err)
	}

	ekmCrypto := func(ctx context.Context) error {
		ct, err := ekmc.Encrypt(ctx, item, aad)
		if err != nil {
			return err
		}
		pt, err := ekmc.Decrypt(ctx, ct.Ciphertext, aad)
		return check(pt, item, err)
	}
	gocloud := func(ctx context.Context) error {
		ct, err := keeper.Encrypt(ctx, item)
		if err != nil {
			return err
		}
		pt, err := keeper.Decrypt(ctx, ct)
		return check(pt, item, err)
	}
	kmsWrap := func(data []byte) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			blob, err := w.Encrypt(ctx, data)
			if err != nil {
				return err
			}
			pt, err := w.Decrypt(ctx, blob)
			return check(pt, data, err)
		}
	}
	ekmFiles := func(ctx context.Context) error {
		id, err := upload(ctx, hc, url, apiKey, file)
		if err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/files/"+id+"/content", nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		res, err := hc.Do(req)
		if err != nil {
			return err
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil && res.StatusCode != 200 {
			err = fmt.Errorf("download: %s", res.Status)
		}
		return check(got, file, err)
	}
	fs := fmt.Sprintf("%d KiB", *fileSize>>10)
	return []*system{
		{name: fmt.Sprintf("ekm crypto API (%d B)", *itemSize), group: "crypto", ekm: true, op: ekmCrypto},
		{name: fmt.Sprintf("gocloud.dev secrets (%d B)", *itemSize), group: "crypto", op: gocloud},
		{name: fmt.Sprintf("go-kms-wrapping (%d B)", *itemSize), group: "crypto", op: kmsWrap(item)},
		{name: "ekm Files API (" + fs + ")", group: "files", ekm: true, op: ekmFiles},
		{name: "go-kms-wrapping (" + fs + ")", group: "files", op: kmsWrap(file)},
	}, nil
}

func check(got, want []byte, err error) error {
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errors.New("round trip returned other bytes")
	}
	return nil
}

// upload stores data with the Files API and returns the file id.
func upload(ctx context.Context, hc *http.Client, url, key string, data []byte) (string, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("purpose", "assistants")
	fw, _ := mw.CreateFormFile("file", "peers.bin")
	fw.Write(data)
	mw.Close()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/files", &body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	res, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return "", fmt.Errorf("upload: %s: %s", res.Status, b)
	}
	i := bytes.Index(b, []byte(`"id":"`))
	if i < 0 {
		return "", fmt.Errorf("upload: no id in %s", b)
	}
	id := b[i+6:]
	return string(id[:bytes.IndexByte(id, '"')]), nil
}

// retry retries setup calls that fail while the emulator's role
// assignments propagate.
func retry(f func() error) error {
	var err error
	for range 50 {
		if err = f(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// startProxy serves HTTP CONNECT on loopback, sending every tunnel to the
// emulator whatever host it names (TLS still verifies the named host).
func (e *env) startProxy() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go e.tunnel(conn)
		}
	}()
	return ln.Addr().String(), nil
}

func (e *env) tunnel(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		io.WriteString(conn, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", e.emu.Addr())
	if err != nil {
		io.WriteString(conn, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	e.proxyConn.Add(1)
	io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() {
		io.Copy(up, br) // anything buffered after the request, then the rest
		up.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(conn, up)
}

func printTable(cells []*cell, concs []int) {
	fmt.Printf("\nItem %d B (crypto), file %d KiB; %v per cell after a warm-up round; ops = one seal + one open.\n", *itemSize, *fileSize>>10, *duration)
	fmt.Println("ratio = ekm ops/s ÷ this system's ops/s in the same cell (crypto rows vs the ekm crypto API, files rows vs the ekm Files API).")
	var tw io.Writer = os.Stdout
	if !*markdown {
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
		defer w.Flush()
		tw = w
	}
	row := func(cells ...string) {
		if *markdown {
			fmt.Fprintf(tw, "| %s |\n", strings.Join(cells, " | "))
		} else {
			fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
		}
	}
	fmt.Println()
	row("scenario", "conc", "system", "ops/s", "p50", "p99", "KV req/op", "429s", "errors", "ekm ÷ this")
	if *markdown {
		row("---", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:")
	}
	byKey := map[string]*cell{}
	for _, c := range cells {
		if c.sys.ekm {
			byKey[fmt.Sprintf("%s/%d/%s", c.scenario, c.conc, c.sys.group)] = c
		}
	}
	last := ""
	for _, c := range cells {
		sc := ""
		if c.scenario != last {
			sc = scenarioLabel(c.scenario)
			last = c.scenario
		}
		ratio := "—"
		if ref := byKey[fmt.Sprintf("%s/%d/%s", c.scenario, c.conc, c.sys.group)]; ref != nil && !c.sys.ekm && c.ops > 0 {
			ratio = fmt.Sprintf("%.1f×", ref.opsPerSec()/c.opsPerSec())
		}
		n429 := strconv.Itoa(c.kv429)
		if c.logFull {
			n429 = "≥" + n429
		}
		row(sc, strconv.Itoa(c.conc), c.sys.name, fmt.Sprintf("%.0f", c.opsPerSec()), fmtDur(c.pct(0.5)), fmtDur(c.pct(0.99)),
			fmt.Sprintf("%.3f", float64(c.kv)/float64(max(1, c.ops+c.errs))), n429, strconv.Itoa(c.errs), ratio)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
}
