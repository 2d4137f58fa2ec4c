package console_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/openai/openai-go/v3"
)

// need skips the test with why, or fails it when EKM_CI is set (.ci/run
// sets it), so CI never passes a browser test that did not run.
func need(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("EKM_CI") != "" {
		t.Fatalf("%s (EKM_CI is set: .ci/run must provide it)", why)
	}
	t.Skipf("%s: skipping the browser test (.ci/run installs it; see docs/console.md)", why)
}

// chromiumPath finds Debian's Chromium (or EKM_CHROMIUM).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EKM_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			need(t, "EKM_CHROMIUM="+p+" does not exist")
		}
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	need(t, "Chromium is not installed (apt-get install chromium)")
	return ""
}

// axeSource reads axe-core from EKM_AXE_JS (.ci/run installs it with npm
// outside the repository; it is MPL-2.0 and not vendored).
func axeSource(t *testing.T) string {
	t.Helper()
	p := os.Getenv("EKM_AXE_JS")
	if p == "" {
		need(t, "EKM_AXE_JS is not set (path to axe-core's axe.min.js)")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		need(t, "EKM_AXE_JS: "+err.Error())
	}
	return string(b)
}

// browser is one headless Chromium tab and what it saw.
type browser struct {
	t       *testing.T
	ctx     context.Context
	base    string // e.g. http://127.0.0.1:1234
	shots   string // screenshot dir
	axe     string
	mu      sync.Mutex
	dialogs []string
	errors  []string
	foreign []string // requests to any other origin
}

func newBrowser(t *testing.T, base, exe, axe string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	shots := t.TempDir()
	if d := os.Getenv("EKM_CONSOLE_SCREENSHOTS"); d != "" {
		shots = d
	}
	b := &browser{t: t, ctx: ctx, base: base, shots: shots, axe: axe}
	origin, _ := url.Parse(base)
	if err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch e := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			b.dialogs = append(b.dialogs, e.Message)
			go func() { _ = chromedp.Do(ctx, dismissDialog()) }()
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.errors = append(b.errors, msg)
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.errors = append(b.errors, "console.error: "+strings.Join(parts, " "))
			}
		case *network.EventRequestWillBeSent:
			u, err := url.Parse(e.Request.URL)
			if err == nil && (u.Scheme == "data" || u.Scheme == "about" || u.Scheme == "blob") {
				return
			}
			if err != nil || u.Host != origin.Host || u.Scheme != origin.Scheme {
				b.foreign = append(b.foreign, e.Request.URL)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{})
		return err
	})); err != nil {
		t.Fatalf("starting Chromium (%s): %v", exe, err)
	}
	return b
}

func dismissDialog() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		return err
	})
}

// do runs actions with a bound on their time.
func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(t, "%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into out.
func (b *browser) eval(t *testing.T, expr string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.fail(t, "evaluating %s: %v", clip(expr), err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			b.fail(t, "evaluating %s: %v (%s)", clip(expr), err, raw)
		}
	}
}

func (b *browser) str(t *testing.T, expr string) string {
	t.Helper()
	var s string
	b.eval(t, expr, &s)
	return s
}

// wait polls a JavaScript condition until it is truthy (every 25 ms, at
// most d), and fails with what and a screenshot otherwise.
func (b *browser) wait(t *testing.T, d time.Duration, what, cond string) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, d+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		b.fail(t, "waiting %v for %s: %v", d, what, err)
	}
	return time.Since(start)
}

// fail saves a screenshot of the page and fails.
func (b *browser) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	name := "failure-" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	b.screenshot(t, name)
	t.Fatalf(format+" (screenshot %s)", append(args, filepath.Join(b.shots, name+".png"))...)
}

// screenshot saves the viewport as name.png in the screenshot dir.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", p)
}

// goTo navigates inside the console (hash route) and waits for its page.
func (b *browser) goTo(t *testing.T, hash, heading string) {
	t.Helper()
	b.eval(t, fmt.Sprintf(`(location.hash = %q, true)`, hash), nil)
	b.wait(t, 10*time.Second, "page "+hash, fmt.Sprintf(`document.querySelector('main').dataset.rendered === %q && document.querySelector('main h1')?.textContent.includes(%q)`, hash, heading))
}

func (b *browser) click(t *testing.T, sel string) {
	t.Helper()
	b.do(t, "click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// typeInto focuses the field, clears it and types text as key events.
func (b *browser) typeInto(t *testing.T, sel, text string) {
	t.Helper()
	b.eval(t, fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.focus(); e.value = ''; e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`, sel), nil)
	b.do(t, "type into "+sel, chromedp.KeyEvent(text))
}

func (b *browser) key(t *testing.T, k string) {
	t.Helper()
	b.do(t, "key", chromedp.KeyEvent(k))
}

var tabKey = kb.Tab

func chromedpNavigate(u string) chromedp.Action[chromedp.Void] { return chromedp.Navigate(u) }

func chromedpViewport(w, h int64) chromedp.Action[chromedp.Void] {
	return chromedp.EmulateViewport(w, h)
}

func chromedpKey(k string) chromedp.Action[chromedp.Void] { return chromedp.KeyEvent(k) }

// jsq quotes s as a JavaScript string literal.
func jsq(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func asAPIError(err error, target **openai.Error) bool { return errors.As(err, target) }

// axeCheck runs axe-core on the page and fails on serious or critical
// violations (WCAG 2.1 A/AA rules and best practices).
func (b *browser) axeCheck(t *testing.T, page string) {
	t.Helper()
	var loaded bool
	b.eval(t, `typeof axe === 'object'`, &loaded)
	if !loaded {
		// Runtime.evaluate runs it as the test's own script, outside the
		// page's CSP (the page itself allows no inline or eval'd script).
		b.eval(t, b.axe+"\n;true", nil)
	}
	var res []struct {
		ID     string `json:"id"`
		Impact string `json:"impact"`
		Help   string `json:"help"`
		Nodes  []any  `json:"nodes"`
	}
	b.eval(t, `axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
	  .then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)})))`, &res)
	var bad []string
	for _, v := range res {
		line := fmt.Sprintf("%s (%s): %s %v", v.ID, v.Impact, v.Help, v.Nodes)
		if v.Impact == "serious" || v.Impact == "critical" {
			bad = append(bad, line)
		} else {
			t.Logf("axe on %s, %s", page, line)
		}
	}
	if len(bad) > 0 {
		b.fail(t, "axe on %s: serious violations:\n%s", page, strings.Join(bad, "\n"))
	}
}

// checkClean fails on page errors, JavaScript dialogs and requests to any
// other origin seen so far.
func (b *browser) checkClean(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dialogs) > 0 {
		t.Errorf("JavaScript dialogs opened: %q", b.dialogs)
	}
	if len(b.errors) > 0 {
		t.Errorf("page errors: %q", b.errors)
	}
	if len(b.foreign) > 0 {
		t.Errorf("requests to other origins: %q", b.foreign)
	}
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}
