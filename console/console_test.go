package console

import (
	"encoding/json"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/aws"
	"github.com/ekm-dev/ekm/kms/azure"
	"github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/oci"
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
		"assets/clouds/azure.json": "application/json", "assets/clouds/aws.json": "application/json", "assets/clouds/gcp.json": "application/json",
		"assets/clouds/oci.json": "application/json", "assets/favicon.svg": "image/svg+xml"} {
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
	Doc    string `json:"doc"`
	Intro  string `json:"intro"`
	Inputs []struct {
		Name, Label, Help, Pattern, Message string
	} `json:"inputs"`
	Identity     map[string]string `json:"identity"`
	Placeholders map[string]string `json:"placeholders"`
	Steps        map[string]struct {
		Text     string `json:"text"`
		Commands []struct {
			Label, Text string
		} `json:"commands"`
		Links []struct {
			Label, URL string
		} `json:"links"`
	} `json:"steps"`
	Register struct{ Label, Title, Text string } `json:"register"`
	Form     map[string]string                   `json:"form"`
	Checks   map[string]struct {
		Pattern, Message string
	} `json:"checks"`
	Fixes map[string]string `json:"fixes"`
}

func loadTemplate(t *testing.T, typ string) template {
	t.Helper()
	var tpl template
	dec := json.NewDecoder(strings.NewReader(readAsset(t, "assets/clouds/"+typ+".json")))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tpl); err != nil {
		t.Fatalf("%s.json: %v", typ, err)
	}
	return tpl
}

// cloud is a key type with an onboarding template: its driver's Spec, the
// keys its driver's identity can have, the schema name of its registration
// in docs/openapi.yaml, and values its live checks must accept.
type cloud struct {
	typ      string
	spec     kms.Spec
	identity []string
	schema   string
	valid    map[string][]string
}

// testOrg is the organization id the checks' $ORG_ID stands for here.
const testOrg = "org-06h2x9q5j3k7m8n4p6r2s0t1vw"

func clouds(t *testing.T) []cloud {
	t.Helper()
	gid, err := gcp.NewMetadataIdentity(gcp.MetadataIdentityConfig{Subject: "1", ServiceAccount: "ekm-kms@vendor.iam.gserviceaccount.com"})
	if err != nil {
		t.Fatal(err)
	}
	return []cloud{
		{"azure", azure.Spec(), []string{"app_client_id"}, "ExternalKeyCreateAzure", map[string][]string{
			"tenant_id": {"72f988bf-86f1-41af-91ab-2d7cd011db47"},
			"vault_uri": {"https://contoso-kv.vault.azure.net/", "https://contoso.managedhsm.azure.net/"},
			"key_name":  {testOrg + "--ekm-kek"},
		}},
		{"aws", aws.Spec(), []string{aws.IdentityPrincipalARN, aws.IdentityAccountID}, "ExternalKeyCreateAWS", map[string][]string{
			"role_arn":    {"arn:aws:iam::111122223333:role/ekm-kms-access", "arn:aws-us-gov:iam::111122223333:role/team/ekm"},
			"kms_arn":     {"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "arn:aws:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab", "arn:aws-cn:kms:cn-north-1:111122223333:alias/ekm"},
			"external_id": {testOrg, "proj_06h2x9q5j3k7m8n4p6r2s0t1vw"},
		}},
		{"gcp", gcp.Spec(), slices.Collect(maps.Keys(gid.Describe())), "ExternalKeyCreateGCP", map[string][]string{
			"audience":                         {testOrg, "proj_06h2x9q5j3k7m8n4p6r2s0t1vw"},
			"kms_project_id":                   {"acme-prod", "example.com:acme-prod"},
			"kms_key_location":                 {"us-east1", "global", "europe", "nam4", "europe-west3"},
			"kms_key_ring_name":                {"ekm"},
			"kms_key_name":                     {"kek"},
			"workload_identity_pool_id":        {"ekm-pool"},
			"workload_identity_provider_id":    {"ekm-oidc"},
			"workload_identity_project_number": {"123456789012"},
			"service_account_email":            {"ekm-access@acme-prod.iam.gserviceaccount.com"},
		}},
		{"oci", oci.Spec(), []string{oci.IdentityTenancyOCID, oci.IdentityGroupOCID}, "ExternalKeyCreateOCI", map[string][]string{
			"key_ocid":         {"ocid1.key.oc1.iad.bbpqrs2aaaeug.abuwcljrk5eqhdpkqatlpklx3ycbjakqhbymmvlflokqgt2rqrgegqkcmpma"},
			"vault_ocid":       {"ocid1.vault.oc1.iad.bbpqrs2aaaeug.abuwcljsybxdjtvuj6vaphpl4bmgf3q6j5hmqtr4dctvdkxcx6yygw3btz4a"},
			"region":           {"us-ashburn-1", "iad", "eu-frankfurt-1"},
			"key_version_ocid": {"ocid1.keyversion.oc1.iad.bbpqrs2aaaeug.abuwcljsxxrxnr7pwsnlhkv3ijyl7ok2e4tq3adzgolzyzrrtgm7exfwlrxa"},
		}},
	}
}

// Every template in assets/clouds is tested, and every cloud has one.
func TestEveryCloudHasATemplate(t *testing.T) {
	var got, want []string
	for _, f := range assetFiles(t, ".json") {
		if path.Dir(f) == "assets/clouds" {
			got = append(got, strings.TrimSuffix(path.Base(f), ".json"))
		}
	}
	for _, c := range clouds(t) {
		want = append(want, c.typ)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("templates %v, tested clouds %v", got, want)
	}
}

// Each cloud's wizard follows its doc and its driver: the commands are
// exactly those of docs/<type>.md, the steps are the driver's, the form and
// the register command have exactly the fields of the driver's Spec and of
// the registration in docs/openapi.yaml, and every diagnosis code has the
// doc's fix.
func TestTemplatesFollowDocsAndSpec(t *testing.T) {
	apiB, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clouds(t) {
		t.Run(c.typ, func(t *testing.T) {
			checkTemplate(t, c, string(apiB))
		})
	}
}

func checkTemplate(t *testing.T, c cloud, openapi string) {
	tpl := loadTemplate(t, c.typ)
	spec := c.spec
	if tpl.Type != spec.Type || tpl.Type != c.typ {
		t.Fatalf("type %q, driver %q", tpl.Type, spec.Type)
	}
	if tpl.Doc != "docs/"+c.typ+".md" {
		t.Errorf("doc %q", tpl.Doc)
	}
	docB, err := os.ReadFile("../" + tpl.Doc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(docB)
	if tpl.Intro == "" {
		t.Error("no intro")
	}

	// Steps: one per step of the driver, each command verbatim in the doc.
	var specSteps, tplSteps []string
	for _, s := range spec.Steps {
		specSteps = append(specSteps, s.ID)
	}
	for id, s := range tpl.Steps {
		tplSteps = append(tplSteps, id)
		if s.Text == "" {
			t.Errorf("step %s has no text", id)
		}
		for _, cmd := range s.Commands {
			if cmd.Label == "" || !strings.Contains(doc, cmd.Text) {
				t.Errorf("step %s command %q (%q) is not in %s", id, cmd.Text, cmd.Label, tpl.Doc)
			}
		}
	}
	slices.Sort(specSteps)
	slices.Sort(tplSteps)
	if !slices.Equal(specSteps, tplSteps) {
		t.Errorf("template steps %v, driver steps %v", tplSteps, specSteps)
	}
	if tpl.Register.Label == "" || !strings.Contains(doc, tpl.Register.Text) {
		t.Errorf("register command %q is not in %s", tpl.Register.Text, tpl.Doc)
	}

	// Fields: the Spec's are the registration's of docs/openapi.yaml (names,
	// required, lengths); the form, the checks and the register command use
	// only those, and every required field is checked live.
	fields := map[string]kms.Field{}
	var required []string
	for _, f := range spec.Fields {
		fields[f.Name] = f
		if f.Required {
			required = append(required, f.Name)
		}
	}
	slices.Sort(required)
	apiFields, apiRequired := openapiFields(t, openapi, c.schema)
	if len(apiFields) != len(fields) {
		t.Errorf("docs/openapi.yaml %s has fields %v, the driver %v", c.schema, slices.Sorted(maps.Keys(apiFields)), slices.Sorted(maps.Keys(fields)))
	}
	for name, maxLen := range apiFields {
		if f, ok := fields[name]; !ok || f.MaxLen != maxLen {
			t.Errorf("docs/openapi.yaml %s.%s maxLength %d, the driver's %+v", c.schema, name, maxLen, f)
		}
	}
	if !slices.Equal(apiRequired, required) {
		t.Errorf("docs/openapi.yaml %s requires %v, the driver %v", c.schema, apiRequired, required)
	}
	for name := range tpl.Form {
		if _, ok := fields[name]; !ok {
			t.Errorf("form prefills %s, which %s keys do not have", name, c.typ)
		}
	}
	for _, name := range required {
		if _, ok := tpl.Checks[name]; !ok {
			t.Errorf("no live check for the required field %s", name)
		}
	}
	for name, chk := range tpl.Checks {
		if _, ok := fields[name]; !ok {
			t.Errorf("check for %s, which %s keys do not have", name, c.typ)
			continue
		}
		if chk.Message == "" {
			t.Errorf("check for %s has no message", name)
		}
		re, err := regexp.Compile(strings.ReplaceAll(chk.Pattern, "$ORG_ID", regexp.QuoteMeta(testOrg)))
		if err != nil {
			t.Errorf("check for %s: %v", name, err)
			continue
		}
		for _, v := range c.valid[name] {
			if !re.MatchString(v) {
				t.Errorf("the live check for %s refuses the valid %q", name, v)
			}
		}
	}
	var sent []string
	for _, m := range regexp.MustCompile(`\\?"([a-z_]+)\\?":`).FindAllStringSubmatch(tpl.Register.Text, -1) {
		sent = append(sent, m[1])
	}
	slices.Sort(sent)
	if want := slices.Sorted(slices.Values(append([]string{"name", "type"}, required...))); !slices.Equal(sent, want) {
		t.Errorf("the register command sends %v, want %v", sent, want)
	}
	if !regexp.MustCompile(`\\?"type\\?":\\?"` + c.typ + `\\?"`).MatchString(tpl.Register.Text) {
		t.Errorf("the register command does not register a %s key", c.typ)
	}

	// Identity: each $NAME the doc uses for one of ekm's identity values.
	for name, idField := range tpl.Identity {
		if !slices.Contains(c.identity, idField) {
			t.Errorf("identity %s → %s, which the %s driver does not describe (%v)", name, idField, c.typ, c.identity)
		}
		if !strings.Contains(doc, "$"+name) {
			t.Errorf("identity $%s is not in %s", name, tpl.Doc)
		}
	}

	// Fixes: one per code of the driver, each the doc's Fix column (the
	// last cell of the code's row). A code the doc has no row for (the
	// unsupported type of a server without the driver) must be named in
	// the doc, with a fix of the template's own.
	docFix := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| (`[a-z0-9_]+`(?:(?:, | / )`[a-z0-9_]+`)*) \\|(.*)\\|$")
	for _, m := range row.FindAllStringSubmatch(doc, -1) {
		cells := strings.Split(m[2], " | ")
		fix := strings.TrimSpace(strings.ReplaceAll(cells[len(cells)-1], "`", ""))
		for _, code := range regexp.MustCompile("`([a-z0-9_]+)`").FindAllStringSubmatch(m[1], -1) {
			docFix[code[1]] = fix
		}
	}
	for _, code := range spec.Codes {
		fix, ok := tpl.Fixes[code.Code]
		switch {
		case !ok || fix == "":
			t.Errorf("no fix for %s", code.Code)
		case docFix[code.Code] == "" && !strings.Contains(doc, "`"+code.Code+"`"):
			t.Errorf("%s is not in %s", code.Code, tpl.Doc)
		}
	}
	for code, fix := range tpl.Fixes {
		if want, ok := docFix[code]; ok && fix != want {
			t.Errorf("fix for %s:\n console %q\n doc     %q", code, fix, want)
		}
		if _, ok := docFix[code]; !ok && !slices.ContainsFunc(spec.Codes, func(c kms.Code) bool { return c.Code == code }) {
			t.Errorf("fix for %s, which is neither the driver's nor in %s", code, tpl.Doc)
		}
	}

	// Every $VARIABLE is one the console fills in (the org id, ekm's
	// identity, the customer's inputs, the placeholders), one a command of
	// the template sets (KEY_ARN=$(…), for ROLE in …), or the admin key.
	known := map[string]bool{"ORG_ID": true, "EKM_ADMIN_KEY": true}
	for name := range tpl.Identity {
		known[name] = true
	}
	for ph, name := range tpl.Placeholders {
		if name != "EKM_ORIGIN" && !slices.ContainsFunc(tpl.Inputs, func(in struct{ Name, Label, Help, Pattern, Message string }) bool { return in.Name == name }) {
			t.Errorf("placeholder %s → %s, which the console does not know", ph, name)
		}
		if !strings.Contains(doc, ph) {
			t.Errorf("placeholder %s is not in %s", ph, tpl.Doc)
		}
		if strings.HasPrefix(ph, "$") {
			known[ph[1:]] = true
		}
	}
	for _, in := range tpl.Inputs {
		known[in.Name] = true
		if in.Label == "" || in.Message == "" {
			t.Errorf("input %s has no label or message", in.Name)
		}
		if _, err := regexp.Compile(in.Pattern); err != nil {
			t.Errorf("input %s: %v", in.Name, err)
		}
	}
	sets := regexp.MustCompile(`(?m)(?:^|\bfor )([A-Z][A-Z0-9_]*)(?:=| in )`)
	for _, s := range tpl.Steps {
		for _, cmd := range s.Commands {
			for _, m := range sets.FindAllStringSubmatch(cmd.Text, -1) {
				known[m[1]] = true
			}
		}
	}
	vars := regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`)
	texts := []string{tpl.Register.Text}
	for _, s := range tpl.Steps {
		for _, cmd := range s.Commands {
			texts = append(texts, cmd.Text)
		}
		for _, l := range s.Links {
			texts = append(texts, l.URL)
		}
	}
	for _, v := range tpl.Form {
		texts = append(texts, v)
	}
	for _, v := range tpl.Fixes {
		texts = append(texts, v)
	}
	for _, text := range texts {
		for _, v := range vars.FindAllStringSubmatch(text, -1) {
			if !known[v[1]] {
				t.Errorf("%q uses $%s, which the console neither fills nor explains", clipText(text), v[1])
			}
		}
	}
}

// openapiFields reads the properties (but type) and their maxLength, and
// the required fields (but type and name), of one registration schema of
// docs/openapi.yaml.
func openapiFields(t *testing.T, doc, schema string) (map[string]int, []string) {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n    "+schema+":\n")
	if !ok {
		t.Fatalf("docs/openapi.yaml has no schema %s", schema)
	}
	if i := regexp.MustCompile(`\n {0,4}\S`).FindStringIndex(rest); i != nil {
		rest = rest[:i[0]]
	}
	fields := map[string]int{}
	var required []string
	for _, line := range strings.Split(rest, "\n") {
		if m := regexp.MustCompile(`^      required: \[(.*)\]$`).FindStringSubmatch(line); m != nil {
			required = strings.Split(m[1], ", ")
		}
		if m := regexp.MustCompile(`^        ([a-z_]+): \{(.*)\}$`).FindStringSubmatch(line); m != nil && m[1] != "type" {
			n := -1
			if l := regexp.MustCompile(`maxLength: ([0-9]+)`).FindStringSubmatch(m[2]); l != nil {
				n, _ = strconv.Atoi(l[1])
			}
			fields[m[1]] = n
		}
	}
	if len(fields) == 0 || len(required) == 0 {
		t.Fatalf("docs/openapi.yaml %s: no fields or required list found", schema)
	}
	slices.Sort(required)
	return fields, required
}

func clipText(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
