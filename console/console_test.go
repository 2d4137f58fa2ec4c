package console

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/kms/azure"
)

func serve(t *testing.T, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(Prefix, Handler())
	mux.Handle("GET /{$}", Redirect())
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w
}

func checkSecurityHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: CSP %q lacks %q", what, csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-") || strings.Contains(csp, "http") || strings.Contains(csp, "*") {
		t.Errorf("%s: CSP %q allows inline or eval'd code, or another origin", what, csp)
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
		if h.Get(k) != v {
			t.Errorf("%s: %s = %q, want %q", what, k, h.Get(k), v)
		}
	}
	if h.Get("Set-Cookie") != "" {
		t.Errorf("%s sets a cookie", what)
	}
}

func TestPageAndAssetsHeaders(t *testing.T) {
	w := serve(t, "GET", "/console/", nil)
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("page: %d %v", w.Code, w.Header())
	}
	checkSecurityHeaders(t, "page", w.Header())
	if !strings.Contains(w.Body.String(), `<script type="module" src="assets/js/main.js"></script>`) {
		t.Fatal("page does not load the console module")
	}
	for file, ctype := range map[string]string{"assets/js/main.js": "text/javascript; charset=utf-8", "assets/console.css": "text/css; charset=utf-8",
		"assets/clouds/azure.json": "application/json", "assets/favicon.svg": "image/svg+xml"} {
		w := serve(t, "GET", "/console/"+file, nil)
		if w.Code != 200 || w.Header().Get("Content-Type") != ctype || w.Header().Get("Cache-Control") != "no-cache" || w.Header().Get("ETag") == "" {
			t.Fatalf("%s: %d %v", file, w.Code, w.Header())
		}
		checkSecurityHeaders(t, file, w.Header())
		again := serve(t, "GET", "/console/"+file, map[string]string{"If-None-Match": w.Header().Get("ETag")})
		if again.Code != http.StatusNotModified || again.Body.Len() != 0 {
			t.Fatalf("%s with its ETag: %d", file, again.Code)
		}
	}
	if w := serve(t, "HEAD", "/console/", nil); w.Code != 200 || w.Body.Len() != 0 {
		t.Fatalf("HEAD: %d %d bytes", w.Code, w.Body.Len())
	}
}

func TestOnlyTheEmbeddedFilesAndOnlyGET(t *testing.T) {
	for _, p := range []string{"/console/nope", "/console/assets/nope.js", "/console/assets/index.html", "/console/index.html",
		"/console/assets/../console.go", "/console/assets/js/../../console.go", "/console/assets/js/"} {
		w := serve(t, "GET", p, nil)
		// The mux redirects unclean paths to their clean form (which is
		// then refused); nothing outside assets/ is ever served.
		if w.Code != http.StatusNotFound && w.Code != http.StatusMovedPermanently && w.Code != http.StatusTemporaryRedirect {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
		if loc := w.Header().Get("Location"); loc != "" && serve(t, "GET", loc, nil).Code != http.StatusNotFound {
			t.Errorf("GET %s redirects to %s, which is served", p, loc)
		}
		if w.Code == http.StatusNotFound {
			checkSecurityHeaders(t, p, w.Header())
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		if w := serve(t, m, "/console/", nil); w.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s /console/: %d", m, w.Code)
		}
	}
}

func TestRootRedirectsToTheConsole(t *testing.T) {
	w := serve(t, "GET", "/", nil)
	if w.Code != http.StatusFound || w.Header().Get("Location") != "/console/" {
		t.Fatalf("GET /: %d %v", w.Code, w.Header())
	}
	checkSecurityHeaders(t, "redirect", w.Header())
}

func readAsset(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(assets, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func assetFiles(t *testing.T, ext string) []string {
	t.Helper()
	var out []string
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ext) {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The CSP forbids inline script and style; these checks keep the sources
// honest before a browser would refuse them, and keep every piece of data
// away from HTML parsing.
func TestNoInlineCodeNoHTMLSinksNoOtherHosts(t *testing.T) {
	page := readAsset(t, "assets/index.html")
	for _, bad := range []*regexp.Regexp{regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]+</script>`), regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`), regexp.MustCompile(`\son[a-z]+=`), regexp.MustCompile(`://`)} {
		if bad.MatchString(page) {
			t.Errorf("index.html matches %s", bad)
		}
	}
	for _, s := range regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(s, ` src="assets/`) {
			t.Errorf("script not from the console's own files: %s", s)
		}
	}
	if css := readAsset(t, "assets/console.css"); strings.Contains(css, "://") || strings.Contains(css, "@import") || strings.Contains(css, "url(") {
		t.Error("the stylesheet loads something")
	}
	sinks := regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|DOMParser|createContextualFragment|srcdoc|setAttribute\(\s*['"]on|document\.cookie|localStorage\.|sessionStorage\.`)
	js := assetFiles(t, ".js")
	if len(js) < 5 {
		t.Fatalf("found %d JavaScript files", len(js))
	}
	imports := regexp.MustCompile(`(?m)^import .* from '(\.[^']+)';$`)
	for _, f := range js {
		src := readAsset(t, f)
		if m := sinks.FindString(src); m != "" {
			t.Errorf("%s uses %s", f, m)
		}
		if strings.Contains(src, "http://") || regexp.MustCompile(`https://[a-z]`).MatchString(src) {
			t.Errorf("%s names another host", f)
		}
		// No build step: every import must resolve to an embedded file.
		for _, m := range imports.FindAllStringSubmatch(src, -1) {
			target := path.Join(path.Dir(f), m[1])
			if _, err := fs.Stat(assets, target); err != nil {
				t.Errorf("%s imports %s, which is not embedded", f, m[1])
			}
		}
	}
}

// template is assets/clouds/<type>.json.
type template struct {
	Type   string `json:"type"`
	Inputs []struct {
		Name, Label, Pattern, Message string
	} `json:"inputs"`
	Identity     map[string]string `json:"identity"`
	Placeholders map[string]string `json:"placeholders"`
	Steps        map[string]struct {
		Text     string `json:"text"`
		Commands []struct {
			Label, Text string
		} `json:"commands"`
	} `json:"steps"`
	Register struct{ Label, Text string } `json:"register"`
	Form     map[string]string            `json:"form"`
	Checks   map[string]struct {
		Pattern, Message string
	} `json:"checks"`
	Fixes map[string]string `json:"fixes"`
}

func loadAzureTemplate(t *testing.T) template {
	t.Helper()
	var tpl template
	if err := json.Unmarshal([]byte(readAsset(t, "assets/clouds/azure.json")), &tpl); err != nil {
		t.Fatal(err)
	}
	return tpl
}

// The Azure wizard's commands are exactly those of docs/azure.md, its steps
// are the driver's, and every diagnosis code has the doc's fix.
func TestAzureTemplateFollowsDocsAndSpec(t *testing.T) {
	tpl := loadAzureTemplate(t)
	docB, err := os.ReadFile("../docs/azure.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(docB)
	spec := azure.Spec()
	if tpl.Type != spec.Type {
		t.Fatalf("type %q", tpl.Type)
	}
	var specSteps, tplSteps []string
	for _, s := range spec.Steps {
		specSteps = append(specSteps, s.ID)
	}
	for id, s := range tpl.Steps {
		tplSteps = append(tplSteps, id)
		for _, c := range s.Commands {
			if !strings.Contains(doc, c.Text) {
				t.Errorf("step %s command %q is not in docs/azure.md", id, c.Text)
			}
		}
	}
	slices.Sort(tplSteps)
	if !slices.Equal(specSteps, tplSteps) {
		t.Errorf("template steps %v, driver steps %v", tplSteps, specSteps)
	}
	if !strings.Contains(doc, tpl.Register.Text) {
		t.Errorf("register command %q is not in docs/azure.md", tpl.Register.Text)
	}
	fields := map[string]bool{}
	for _, f := range spec.Fields {
		fields[f.Name] = true
	}
	for name := range tpl.Form {
		if !fields[name] {
			t.Errorf("form prefills %s, which azure keys do not have", name)
		}
	}
	for name, c := range tpl.Checks {
		if !fields[name] {
			t.Errorf("check for %s, which azure keys do not have", name)
		}
		if _, err := regexp.Compile(strings.ReplaceAll(c.Pattern, "$ORG_ID", "org-x")); err != nil {
			t.Errorf("check for %s: %v", name, err)
		}
	}
	for name, idField := range tpl.Identity {
		if name != "APP_ID" || idField != "app_client_id" {
			t.Errorf("identity %s → %s", name, idField)
		}
	}
	// Fixes: one per code of the driver, each the doc's Fix column.
	docFix := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| (`[a-z_]+`(?:(?:, | / )`[a-z_]+`)*) \\|(.*)\\|$")
	for _, m := range row.FindAllStringSubmatch(doc, -1) {
		cells := strings.Split(m[2], " | ")
		fix := strings.TrimSpace(strings.ReplaceAll(cells[len(cells)-1], "`", ""))
		for _, code := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(m[1], -1) {
			docFix[code[1]] = fix
		}
	}
	for _, c := range spec.Codes {
		fix, ok := tpl.Fixes[c.Code]
		if !ok {
			t.Errorf("no fix for %s", c.Code)
			continue
		}
		if docFix[c.Code] != fix {
			t.Errorf("fix for %s:\n console %q\n doc     %q", c.Code, fix, docFix[c.Code])
		}
	}
	// Every $VARIABLE the console fills is one it knows.
	known := map[string]bool{"APP_ID": true, "ORG_ID": true, "SP_ID": true, "EKM_ADMIN_KEY": true}
	for _, in := range tpl.Inputs {
		known[in.Name] = true
		if _, err := regexp.Compile(in.Pattern); err != nil {
			t.Errorf("input %s: %v", in.Name, err)
		}
	}
	vars := regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`)
	for _, s := range tpl.Steps {
		for _, c := range s.Commands {
			for _, v := range vars.FindAllStringSubmatch(c.Text, -1) {
				if !known[v[1]] {
					t.Errorf("command uses $%s, which the console neither fills nor explains", v[1])
				}
			}
		}
	}
}
