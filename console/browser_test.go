package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp/kb"
	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// probeInterval of the server under test: a revocation must show in the
// console within probeInterval + 5 s.
const probeInterval = 500 * time.Millisecond

const xssName = `<img src=x onerror=alert(1)>`

// TestConsoleInBrowser drives the console in headless Chromium against a
// whole server wired to the Azure emulator: sign in, the Azure wizard with
// a missing step and then complete (keyboard only), a project (named with
// an XSS probe) and service accounts, revocation and restoration seen in the
// console, the audit log's pages and filters, axe-core on every page, and
// sign-out.
func TestConsoleInBrowser(t *testing.T) {
	b0 := time.Now()
	exe, axe := chromiumPath(t), axeSource(t)
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o700); err != nil { // a private data dir, as ekm serve wants it
		t.Fatal(err)
	}
	env := ekmtest.Start(t, ekmtest.Options{ProbeInterval: probeInterval, DataDir: dataDir})
	b := newBrowser(t, env.URL, exe, axe)
	ctx := context.Background()
	appID := env.Emu.App().ClientID
	admin := env.Admin()

	// The customer did steps 2 and 3 (role, vault, key) but not step 1.
	cust := env.Customer(t)
	vault := "v" + strings.ReplaceAll(cust.TenantID, "-", "")[:20]
	keyName := env.OrgID + "--ekm-kek"
	roleID, err := cust.PutRole(ctx, azonboard.NewGUID(), "ekm Key Encrypt/Decrypt", azonboard.DataActions)
	if err != nil {
		t.Fatal(err)
	}
	vaultURI, err := cust.CreateVault(ctx, "ekm-rg", vault)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cust.CreateKey(ctx, vaultURI, keyName, "RSA", 2048); err != nil {
		t.Fatal(err)
	}
	var keyID, projectID, assignment string

	t.Run("SignIn", func(t *testing.T) {
		b.do(t, "open /", chromedpNavigate(env.URL+"/"))
		b.wait(t, 10*time.Second, "the sign-in form", `!!document.querySelector('input[name="admin-key"]')`)
		if got := b.str(t, `location.pathname`); got != "/console/" {
			t.Fatalf("/ redirected to %q, want /console/", got)
		}
		b.axeCheck(t, "sign-in")
		b.screenshot(t, "signin")
		b.typeInto(t, `input[name="admin-key"]`, "sk-admin-not-a-key")
		b.key(t, "\r")
		b.wait(t, 5*time.Second, "the refusal", `document.querySelector('.field .error:not([hidden])')?.textContent.includes('not accepted')`)
		b.typeInto(t, `input[name="admin-key"]`, env.AdminKey)
		b.key(t, "\r")
		b.wait(t, 10*time.Second, "the overview", `document.querySelector('#org')?.textContent.includes(`+jsq(env.OrgID)+`) && document.querySelector('main h1')?.textContent === 'Overview'`)
		// The key is in no storage the page or other scripts can read later.
		var leaks []string
		b.eval(t, `[document.cookie, JSON.stringify(Object.entries(localStorage)), JSON.stringify(Object.entries(sessionStorage)), location.href, document.documentElement.outerHTML]
		  .filter(s => s.includes(`+jsq(env.AdminKey)+`))`, &leaks)
		if len(leaks) > 0 {
			t.Fatalf("the admin key is stored or rendered: %q", leaks)
		}
		// The CSP is in force: no string reaches the DOM as HTML (Trusted
		// Types), and no inline script runs.
		if got := b.str(t, `(() => { try { document.createElement('div').innerHTML = '<b>x</b>'; return 'allowed'; } catch (e) { return e.name; } })()`); got != "TypeError" {
			t.Fatalf("assigning innerHTML: %s, want a Trusted Types TypeError", got)
		}
		if got := b.str(t, `(() => { try { document.createElement('script').src = 'data:text/javascript,1'; return 'allowed'; } catch (e) { return e.name; } })()`); got != "TypeError" {
			t.Fatalf("setting a script's src: %s, want a Trusted Types TypeError", got)
		}
		b.axeCheck(t, "overview (empty)")
	})

	t.Run("WizardMissingStep", func(t *testing.T) {
		b.goTo(t, "#/register", "Register a key")
		b.wait(t, 5*time.Second, "the key types", `document.querySelectorAll('.typecard').length >= 4`)
		var disabled []string
		b.eval(t, `[...document.querySelectorAll('.typecard')].filter(c => c.textContent.includes('Not enabled')).map(c => c.dataset.type)`, &disabled)
		if strings.Join(disabled, ",") != "aws,gcp,oci" {
			t.Fatalf("types shown as not enabled: %v, want aws, gcp, oci", disabled)
		}
		b.axeCheck(t, "register")
		b.click(t, `a[href="#/register/azure"]`)
		b.wait(t, 10*time.Second, "the Azure wizard", `document.querySelectorAll('li.step').length === 5 && !!document.querySelector('input[name="tenant_id"]')`)
		b.typeInto(t, `input[data-var="TENANT_ID"]`, cust.TenantID)
		b.typeInto(t, `input[data-var="SUB"]`, cust.SubscriptionID)
		b.typeInto(t, `input[data-var="RG"]`, "ekm-rg")
		b.typeInto(t, `input[data-var="VAULT"]`, vault)
		// The commands carry our app id, the org id and the customer's names.
		step1 := b.str(t, `document.querySelector('#step-1 pre').textContent`)
		if step1 != "az ad sp create --id "+appID {
			t.Fatalf("step 1 command = %q", step1)
		}
		step4 := b.str(t, `document.querySelector('#step-4 pre').textContent`)
		wantScope := fmt.Sprintf(`--scope "/subscriptions/%s/resourceGroups/ekm-rg/providers/Microsoft.KeyVault/vaults/%s/keys/%s"`, cust.SubscriptionID, vault, keyName)
		if !strings.Contains(step4, wantScope) || !strings.Contains(step4, "$SP_ID") {
			t.Fatalf("step 4 command = %q, want %s", step4, wantScope)
		}
		// The registration form is filled in from the values.
		var form map[string]string
		b.eval(t, `Object.fromEntries(['tenant_id', 'vault_uri', 'key_name'].map(n => [n, document.querySelector('input[name="' + n + '"]').value]))`, &form)
		if form["tenant_id"] != cust.TenantID || form["vault_uri"] != "https://"+vault+".vault.azure.net/" || form["key_name"] != keyName {
			t.Fatalf("form = %v", form)
		}
		// Live checks: a key name for another org is flagged before sending.
		b.typeInto(t, `input[name="key_name"]`, "org-someoneelse--k")
		b.eval(t, `(document.querySelector('input[name="key_name"]').blur(), true)`, nil)
		b.wait(t, 2*time.Second, "the live check", `document.querySelector('input[name="key_name"]').getAttribute('aria-invalid') === 'true'`)
		b.typeInto(t, `input[name="key_name"]`, keyName)
		b.wait(t, 2*time.Second, "the live check to clear", `!document.querySelector('input[name="key_name"]').hasAttribute('aria-invalid')`)

		b.click(t, `form button[type="submit"]`)
		b.wait(t, 30*time.Second, "the diagnosis", `!!document.querySelector('[data-outcome="failed"]')`)
		var got struct {
			Code, Step string
			Failed     []string
			Message    string
		}
		b.eval(t, `(() => { const n = document.querySelector('[data-outcome="failed"]'); return {code: n.dataset.code, step: n.dataset.step,
		  failed: [...document.querySelectorAll('li.step.step-failed')].map(li => li.dataset.step), message: n.querySelector('.server-message').textContent}; })()`, &got)
		if got.Code != "azure_service_principal_missing" || got.Step != "1" || strings.Join(got.Failed, ",") != "1" {
			t.Fatalf("diagnosis = %+v, want azure_service_principal_missing at step 1, only step 1 highlighted", got)
		}
		if !strings.Contains(b.str(t, `document.querySelector('#step-1 .step-failure').textContent`), "az ad sp create --id "+appID) {
			t.Fatal("the failed step does not show its fix with the app id")
		}
		if b.str(t, `document.activeElement.dataset.outcome || ''`) != "failed" {
			t.Fatal("focus did not move to the diagnosis")
		}
		b.eval(t, `(document.querySelector('#step-1').scrollIntoView(), true)`, nil)
		b.screenshot(t, "wizard-failed-step")
		b.axeCheck(t, "wizard with a diagnosis")
	})

	t.Run("WizardKeyboardOnly", func(t *testing.T) {
		// The customer does step 1, then step 4.
		spID, err := cust.CreateServicePrincipal(ctx, appID)
		if err != nil {
			t.Fatal(err)
		}
		if assignment, err = cust.Assign(ctx, cust.KeyScope("ekm-rg", vault, keyName), roleID, spID); err != nil {
			t.Fatal(err)
		}
		// From the page heading, Tab through the wizard to the submit
		// button: every control is reached, in order, with a visible focus.
		b.eval(t, `(document.querySelector('main h1').focus(), true)`, nil)
		var seen []string
		for i := 0; i < 80; i++ {
			b.do(t, "Tab", chromedpKey(tabKey))
			var f struct {
				Desc    string `json:"desc"`
				Outline string `json:"outline"`
				Submit  bool   `json:"submit"`
			}
			b.eval(t, `(() => { const e = document.activeElement; const s = getComputedStyle(e);
			  return {desc: e.tagName.toLowerCase() + (e.name ? '[' + e.name + ']' : '') + (e.dataset.var ? '[' + e.dataset.var + ']' : '') + (e.getAttribute('aria-label') ? '(' + e.getAttribute('aria-label') + ')' : '') + (e.tagName === 'A' || e.tagName === 'BUTTON' || e.tagName === 'SUMMARY' ? ':' + e.textContent.trim() : ''),
			    outline: s.outlineStyle + ' ' + s.outlineWidth, submit: e.type === 'submit' && e.textContent.includes('Register')}; })()`, &f)
			if f.Outline == "" || strings.HasPrefix(f.Outline, "none") || strings.HasSuffix(f.Outline, " 0px") {
				t.Fatalf("focus on %s is not visible (outline %q)", f.Desc, f.Outline)
			}
			seen = append(seen, f.Desc)
			if f.Desc == "input[name]" {
				// The name field: type its value from the keyboard.
				b.do(t, "End", chromedpKey(kb.End))
				b.do(t, "type", chromedpKey(" (kb)"))
			}
			if f.Submit {
				break
			}
		}
		joined := strings.Join(seen, " → ")
		for _, want := range []string{"input[TENANT_ID][TENANT_ID]", "input[SUB][SUB]", "input[RG][RG]", "input[VAULT][VAULT]",
			"(Copy create the service principal)", "input[name]", "input[tenant_id]", "input[vault_uri]", "input[key_name]", "button:Register and verify"} {
			if !strings.Contains(joined, want) {
				t.Fatalf("keyboard focus never reached %s; order: %s", want, joined)
			}
		}
		order := []string{"input[VAULT][VAULT]", "input[name]", "input[key_name]", "button:Register and verify"}
		for i := 1; i < len(order); i++ {
			if strings.Index(joined, order[i-1]) > strings.Index(joined, order[i]) {
				t.Fatalf("focus order: %s before %s: %s", order[i], order[i-1], joined)
			}
		}
		t.Logf("wizard tab order (%d stops): %s", len(seen), joined)
		b.key(t, "\r")
		b.wait(t, 30*time.Second, "the registration", `!!document.querySelector('[data-outcome="registered"]') && document.querySelectorAll('li.step.step-failed').length === 0`)
		keyID = b.str(t, `document.querySelector('[data-outcome="registered"]').dataset.key`)
		ek, err := admin.Admin.Organization.ExternalKeys.Get(ctx, keyID)
		if err != nil || ek.Name != "primary (kb)" || ek.KeyName != keyName {
			t.Fatalf("registered key: %v %+v", err, ek)
		}
		b.screenshot(t, "wizard-registered")
	})

	t.Run("ProjectXSSAndServiceAccounts", func(t *testing.T) {
		if keyID == "" {
			t.Skip("no key registered")
		}
		b.goTo(t, "#/projects?key="+keyID, "Projects")
		if v := b.str(t, `document.querySelector('select[name="external_key_id"]').value`); v != keyID {
			t.Fatalf("the new project form preselects %q, want %s", v, keyID)
		}
		b.typeInto(t, `input[name="name"]`, xssName)
		b.key(t, "\r")
		b.wait(t, 30*time.Second, "the project page", `document.querySelector('main h1')?.textContent === `+jsq(xssName))
		projectID = b.str(t, `decodeURIComponent(location.hash.split('/')[2])`)
		var probe struct {
			Imgs     int  `json:"imgs"`
			H1Kids   int  `json:"h1kids"`
			Alerted  bool `json:"alerted"`
			TextSeen bool `json:"textSeen"`
		}
		check := func(where string) {
			b.eval(t, `({imgs: document.querySelectorAll('img').length, h1kids: document.querySelector('main h1').children.length,
			  textSeen: document.querySelector('main').textContent.includes(`+jsq(xssName)+`)})`, &probe)
			if probe.Imgs != 0 || probe.H1Kids != 0 || !probe.TextSeen {
				t.Fatalf("%s: the project name was not rendered as text: %+v", where, probe)
			}
		}
		check("project page")
		b.screenshot(t, "project")
		// A service account: the key is shown once, with a copy button.
		b.typeInto(t, `input[name="sa-name"]`, "backend")
		b.key(t, "\r")
		b.wait(t, 10*time.Second, "the one-time key", `document.querySelector('[data-outcome="created"] code.secret-value')?.textContent.startsWith('sk-proj-')`)
		value := b.str(t, `document.querySelector('[data-outcome="created"] code.secret-value').textContent`)
		if b.str(t, `document.querySelector('[data-outcome="created"] button[aria-label="Copy API key"]')?.textContent || ''`) != "Copy" {
			t.Fatal("no copy button next to the key")
		}
		// The key works on the data plane.
		c, err := client.New(env.URL, value)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Encrypt(ctx, []byte("hello"), nil); err != nil {
			t.Fatalf("the shown project key does not work: %v", err)
		}
		b.screenshot(t, "service-account-key-once")
		b.axeCheck(t, "project with a new service account key")
		b.click(t, `[data-outcome="created"] .actions button`)
		b.wait(t, 10*time.Second, "the key to be gone", `!document.querySelector('code.secret-value') && document.querySelectorAll('tr[data-sa]').length === 1`)
		// Another one, deleted through the confirmation dialog.
		b.typeInto(t, `input[name="sa-name"]`, "temporary")
		b.key(t, "\r")
		b.wait(t, 10*time.Second, "the second account", `document.querySelectorAll('tr[data-sa]').length === 2`)
		b.click(t, `[data-outcome="created"] .actions button`)
		b.wait(t, 10*time.Second, "the list", `!document.querySelector('code.secret-value')`)
		b.click(t, `button[aria-label="Delete service account temporary"]`)
		b.wait(t, 5*time.Second, "the confirmation", `!!document.querySelector('dialog[open]')`)
		b.axeCheck(t, "confirmation dialog")
		b.click(t, `dialog[open] .btn-danger`)
		b.wait(t, 10*time.Second, "the deletion", `document.querySelectorAll('tr[data-sa]').length === 1 && document.querySelector('tr[data-sa] td').textContent === 'backend'`)
		sas, err := admin.Admin.Organization.Projects.ServiceAccounts.List(ctx, projectID, openai.AdminOrganizationProjectServiceAccountListParams{})
		if err != nil || len(sas.Data) != 1 || sas.Data[0].Name != "backend" {
			t.Fatalf("service accounts after the console's changes: %v %+v", err, sas)
		}
		// The name is text in the list too.
		b.goTo(t, "#/projects", "Projects")
		check("project list")
		b.axeCheck(t, "projects")
	})

	t.Run("RevocationSeenWithinProbeInterval", func(t *testing.T) {
		if projectID == "" {
			t.Skip("no project")
		}
		b.goTo(t, "#/", "Overview")
		row := `document.querySelector('tr[data-key="` + keyID + `"]')`
		b.wait(t, 10*time.Second, "the key healthy", row+`?.querySelector('[data-status="healthy"]')`)
		b.axeCheck(t, "overview")
		if err := cust.Unassign(ctx, assignment); err != nil {
			t.Fatal(err)
		}
		took := b.wait(t, probeInterval+5*time.Second, "the key to show revoked", row+`?.querySelector('[data-status="revoked"]') && `+row+`.textContent.includes('azure_forbidden_by_rbac')`)
		t.Logf("revocation shown in the console %v after the role assignment was removed (probe interval %v)", took.Round(time.Millisecond), probeInterval)
		b.screenshot(t, "overview-revoked")
		b.goTo(t, "#/keys/"+keyID, "primary (kb)")
		b.wait(t, 5*time.Second, "the diagnosis", `document.querySelector('.diagnosis')?.textContent.includes('azure_forbidden_by_rbac') && document.querySelector('.diagnosis').textContent.includes('Step to check') || document.querySelector('.diagnosis')?.textContent.includes('Steps to check')`)
		b.screenshot(t, "key-revoked")
		// Restored: the role assigned again.
		if _, err := cust.Assign(ctx, cust.KeyScope("ekm-rg", vault, keyName), roleID, mustSP(t, cust, appID)); err != nil {
			t.Fatal(err)
		}
		took = b.wait(t, probeInterval+5*time.Second, "the key to show healthy again", `document.querySelector('.key-status [data-status="healthy"]') && document.querySelector('table.history tr[data-state="revoked"] td.num')?.textContent.match(/^\d+(\.\d+)? s$|min/)`)
		t.Logf("restoration shown %v after the role was assigned again", took.Round(time.Millisecond))
		b.eval(t, `(document.querySelector('table.history').scrollIntoView(), true)`, nil)
		b.screenshot(t, "key-history")
		b.axeCheck(t, "key detail")
		// Validate now.
		b.click(t, `main .page-head .actions .btn:not(.btn-danger)`)
		b.wait(t, 20*time.Second, "the validation", `document.querySelector('.result .notice-ok')?.textContent.includes('The key works')`)
		// Delete is refused while a project uses the key, in the server's words.
		b.click(t, `main .page-head .btn-danger`)
		b.wait(t, 5*time.Second, "the confirmation", `!!document.querySelector('dialog[open]')`)
		b.click(t, `dialog[open] .btn-danger`)
		b.wait(t, 10*time.Second, "the refusal", `document.querySelector('.result .notice-error code')?.textContent === 'external_key_in_use'`)
		_, err := admin.Admin.Organization.ExternalKeys.Delete(ctx, keyID)
		var apiErr *openai.Error
		if !asAPIError(err, &apiErr) || apiErr.Code != "external_key_in_use" {
			t.Fatalf("delete through the API: %v", err)
		}
		if shown := b.str(t, `document.querySelector('.result .server-message').textContent`); shown != apiErr.Message {
			t.Fatalf("the console shows %q, the server says %q", shown, apiErr.Message)
		}
	})

	t.Run("AuditLogPaging", func(t *testing.T) {
		b.goTo(t, "#/audit", "Audit log")
		b.wait(t, 10*time.Second, "a full page", `document.querySelectorAll('table.events tbody tr').length === 20`)
		ids := func() string {
			return b.str(t, `[...document.querySelectorAll('table.events tbody tr')].map(r => r.dataset.id).join(',')`)
		}
		first := ids()
		if b.str(t, `String(document.querySelector('button[data-page="older"]').disabled)`) != "false" {
			t.Fatal("no older page after a full page")
		}
		b.click(t, `button[data-page="older"]`)
		b.wait(t, 10*time.Second, "the older page", `document.querySelector('main').dataset.rendered?.includes('after=') && document.querySelectorAll('table.events tbody tr').length > 0`)
		second := ids()
		for _, id := range strings.Split(second, ",") {
			if strings.Contains(first, id) {
				t.Fatalf("the older page repeats %s of the first page", id)
			}
		}
		b.click(t, `button[data-page="newer"]`)
		b.wait(t, 10*time.Second, "the newer page", `document.querySelector('main').dataset.rendered?.includes('before=')`)
		if back := ids(); back != first {
			t.Fatalf("paging back gave another page:\n%s\nwant\n%s", back, first)
		}
		// Filter kms.call: the request ids the customer finds in its logs.
		b.eval(t, `(document.querySelector('select[name="type"]').value = 'kms.call', true)`, nil)
		b.click(t, `form.filters button[type="submit"]`)
		b.wait(t, 10*time.Second, "kms.call events", `document.querySelector('main').dataset.rendered?.includes('type=kms.call') && document.querySelectorAll('table.events tbody tr').length > 0 &&
		  [...document.querySelectorAll('table.events tbody tr')].every(r => r.dataset.type === 'kms.call')`)
		b.screenshot(t, "audit-kms-calls")
		rid := b.str(t, `document.querySelector('table.events code.request-id')?.textContent || ''`)
		raw, err := getJSON(env.URL+"/v1/organization/audit_logs?event_types[]=kms.call&limit=100", env.AdminKey)
		if err != nil || rid == "" || !strings.Contains(raw, `"`+rid+`"`) {
			t.Fatalf("request id %q shown; in the API's kms.call events: %v", rid, err)
		}
		// A time window in the future has no events.
		b.eval(t, `(() => { const i = document.querySelector('input[name="from"]'); i.value = '2999-01-01T00:00'; return true; })()`, nil)
		b.click(t, `form.filters button[type="submit"]`)
		b.wait(t, 10*time.Second, "the empty window", `document.querySelector('main').dataset.rendered?.includes('from=') && document.querySelector('main .empty')?.textContent === 'No events match.'`)
		b.goTo(t, "#/audit?type=project.created", "Audit log")
		b.wait(t, 10*time.Second, "the project event", `document.querySelectorAll('table.events tbody tr').length === 1`)
		if b.str(t, `document.querySelector('table.events tbody tr td:nth-child(3) a').textContent`) != xssName {
			t.Fatal("the project name in the audit log is not shown as text")
		}
		b.screenshot(t, "audit")
		b.axeCheck(t, "audit log")
	})

	t.Run("OtherCloudWizards", func(t *testing.T) {
		// The types whose driver is not configured on this server: each
		// wizard shows its driver's steps and fields and its template's
		// commands with the customer's values and the org id filled in,
		// prefills the form, checks it live, and keeps registration off.
		for _, w := range otherClouds(env.OrgID) {
			t.Run(w.typ, func(t *testing.T) {
				tpl := readTemplate(t, w.typ)
				b.goTo(t, "#/register/"+w.typ, w.heading)
				b.wait(t, 10*time.Second, "the wizard", fmt.Sprintf(`document.querySelectorAll('li.step').length === %d && !!document.querySelector('form input[name=%q]')`, len(tpl.Steps), w.bad[0]))
				for _, in := range w.inputs {
					b.typeInto(t, `input[data-var="`+in[0]+`"]`, in[1])
				}
				var got struct {
					Steps    int               `json:"steps"`
					Cmds     int               `json:"cmds"`
					Disabled bool              `json:"disabled"`
					Commands map[string]string `json:"commands"`
					Register string            `json:"register"`
					Form     map[string]string `json:"form"`
					Invalid  []string          `json:"invalid"`
				}
				b.eval(t, `({steps: document.querySelectorAll('li.step').length, cmds: document.querySelectorAll('li.step .cmd').length,
				  disabled: document.querySelector('form button[type="submit"]').disabled,
				  commands: Object.fromEntries([...document.querySelectorAll('li.step')].map(li => [li.dataset.step, [...li.querySelectorAll('pre')].map(p => p.textContent).join('\n')])),
				  register: document.querySelector('section[aria-labelledby="w-register"] details pre')?.textContent || '',
				  form: Object.fromEntries([...document.querySelectorAll('form input')].map(i => [i.name, i.value])),
				  invalid: [...document.querySelectorAll('[aria-invalid="true"]')].map(e => e.name || e.dataset.var || e.id)})`, &got)
				cmds := 0
				for _, s := range tpl.Steps {
					cmds += len(s.Commands)
				}
				if got.Steps != len(tpl.Steps) || got.Cmds != cmds || !got.Disabled || len(got.Invalid) != 0 {
					t.Fatalf("%s wizard: %d steps, %d commands, submit disabled %v, invalid %v; want %d steps, %d commands, disabled, none invalid",
						w.typ, got.Steps, got.Cmds, got.Disabled, got.Invalid, len(tpl.Steps), cmds)
				}
				for step, wants := range w.commands {
					for _, want := range wants {
						if !strings.Contains(got.Commands[step], want) {
							t.Errorf("%s step %s commands lack %q:\n%s", w.typ, step, want, got.Commands[step])
						}
					}
				}
				if !strings.Contains(got.Register, env.URL+"/v1/organization/external_keys") {
					t.Errorf("%s register command does not name this server: %s", w.typ, got.Register)
				}
				if w.orgField != "" && !regexp.MustCompile(`\\?"`+w.orgField+`\\?":\\?"`+regexp.QuoteMeta(env.OrgID)).MatchString(got.Register) {
					t.Errorf("%s register command does not send the org id as %s: %s", w.typ, w.orgField, got.Register)
				}
				for name, want := range w.form {
					if got.Form[name] != want {
						t.Errorf("%s form %s = %q, want %q", w.typ, name, got.Form[name], want)
					}
				}
				// A live check flags a value the server would refuse.
				sel := `form input[name="` + w.bad[0] + `"]`
				b.typeInto(t, sel, w.bad[1])
				b.eval(t, `(document.querySelector('`+sel+`').blur(), true)`, nil)
				b.wait(t, 2*time.Second, "the live check on "+w.bad[0], `document.querySelector('`+sel+`').getAttribute('aria-invalid') === 'true'`)
				// Every collapsed part open, then axe on the whole wizard.
				b.eval(t, `(document.querySelectorAll('main details').forEach(d => { d.open = true; }), true)`, nil)
				b.screenshot(t, "wizard-"+w.typ)
				b.axeCheck(t, w.typ+" wizard")
			})
		}
	})

	t.Run("RekeyAndArchive", func(t *testing.T) {
		if keyID == "" {
			t.Skip("no key registered")
		}
		local, err := postJSON(env.URL+"/v1/organization/external_keys", env.AdminKey, `{"type":"local","name":"dev key"}`)
		if err != nil {
			t.Fatal(err)
		}
		p, err := admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "billing", ExternalKeyID: openai.String(keyID)})
		if err != nil {
			t.Fatal(err)
		}
		b.goTo(t, "#/projects/"+p.ID, "billing")
		b.eval(t, `(document.querySelector('select[name="external_key_id"]').value = `+jsq(local["id"].(string))+`, true)`, nil)
		b.click(t, `form[aria-labelledby="p-rekey"] button[type="submit"]`)
		b.wait(t, 5*time.Second, "the confirmation", `!!document.querySelector('dialog[open]')`)
		b.click(t, `dialog[open] .btn:not(.btn-quiet)`)
		b.wait(t, 20*time.Second, "the re-keyed project", `document.querySelector('main').dataset.rendered === location.hash && document.querySelector('section[aria-labelledby="p-key"] dd a')?.textContent === 'dev key'`)
		// Rotate the project key (POST …/rotate_key).
		b.click(t, `#p-rotate`)
		b.wait(t, 5*time.Second, "the confirmation", `!!document.querySelector('dialog[open]')`)
		b.click(t, `dialog[open] .btn:not(.btn-quiet)`)
		b.wait(t, 20*time.Second, "the rotated project", `document.querySelector('main').dataset.rendered === location.hash && [...document.querySelectorAll('section[aria-labelledby="p-key"] dt')].find((d) => d.textContent === 'Project key version')?.nextElementSibling?.textContent === '2'`)
		b.click(t, `main .page-head .btn-danger`)
		b.wait(t, 5*time.Second, "the confirmation", `!!document.querySelector('dialog[open]')`)
		b.click(t, `dialog[open] .btn-danger`)
		b.wait(t, 10*time.Second, "the archived project", `document.querySelector('main .page-head .badge')?.textContent === 'archived'`)
		got, err := admin.Admin.Organization.Projects.Get(ctx, p.ID)
		if err != nil || got.Status != "archived" || got.ExternalKeyID != local["id"] || !strings.Contains(got.RawJSON(), `"current_key_version":2`) {
			t.Fatalf("after the console's re-key and archive: %v %s", err, got.RawJSON())
		}
	})

	t.Run("LaptopScreen", func(t *testing.T) {
		// Nothing needs horizontal scrolling on a small laptop screen.
		b.do(t, "viewport", chromedpViewport(1024, 640))
		defer b.do(t, "viewport", chromedpViewport(1280, 900))
		for _, pg := range [][2]string{{"#/", "Overview"}, {"#/keys", "External keys"}, {"#/keys/" + keyID, "primary (kb)"},
			{"#/register/azure", "Register an Azure"}, {"#/register/aws", "Register an AWS"}, {"#/register/gcp", "Register a Google"},
			{"#/register/oci", "Register an OCI"}, {"#/projects", "Projects"}, {"#/projects/" + projectID, xssName}, {"#/audit", "Audit log"}} {
			b.goTo(t, pg[0], pg[1])
			var over int
			b.eval(t, `document.documentElement.scrollWidth - document.documentElement.clientWidth`, &over)
			if over > 0 {
				b.fail(t, "%s scrolls horizontally by %d px at 1024 px", pg[0], over)
			}
		}
		b.goTo(t, "#/", "Overview")
		b.screenshot(t, "overview-1024")
	})

	t.Run("SignOut", func(t *testing.T) {
		b.click(t, "#signout")
		b.wait(t, 5*time.Second, "the sign-in form", `!!document.querySelector('input[name="admin-key"]') && document.querySelector('#nav').hidden`)
		b.goTo(t, "#/keys", "Sign in")
		if strings.Contains(b.str(t, `document.documentElement.outerHTML`), env.AdminKey) {
			t.Fatal("the key is still in the page")
		}
	})

	b.checkClean(t)
	t.Logf("browser test took %v", time.Since(b0).Round(time.Millisecond))
}

func mustSP(t *testing.T, c *azonboard.Customer, appID string) string {
	t.Helper()
	id, err := c.CreateServicePrincipal(context.Background(), appID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// getJSON is a plain authenticated GET.
func getJSON(u, key string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %d %s", u, res.StatusCode, b)
	}
	return string(b), err
}

// postJSON is a plain authenticated POST answering the decoded object.
func postJSON(u, key, body string) (map[string]any, error) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return out, fmt.Errorf("POST %s: %d %v", u, res.StatusCode, out)
	}
	return out, nil
}

// otherCloud is what the browser test types into a cloud's wizard and
// expects to see: inputs (data-var, value), texts each step's commands
// must contain, prefilled form fields, the field that carries the org id
// (none for OCI, whose key carries it in a tag), and a field with a value
// its live check refuses.
type otherCloud struct {
	typ, heading string
	orgField     string
	inputs       [][2]string
	commands     map[string][]string
	form         map[string]string
	bad          [2]string
}

func otherClouds(org string) []otherCloud {
	return []otherCloud{
		{typ: "aws", heading: "Register an AWS KMS key", orgField: "external_id",
			inputs: [][2]string{{"REGION", "eu-west-1"}, {"ACCOUNT_ID", "111122223333"}},
			commands: map[string][]string{
				"1": {`aws kms create-key --region eu-west-1 --description "ekm KEK"`},
				"2": {`"Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]`, "POLICY_ARN=$(aws iam create-policy"},
				"3": {`"sts:ExternalId": "<ORGANIZATION_ID>"`, `-e "s|<ORGANIZATION_ID>|` + org + `|"`, "$EKM_PRINCIPAL_ARN"},
				"4": {"aws iam attach-role-policy --role-name ekm-kms-access --policy-arn $POLICY_ARN"},
			},
			form: map[string]string{"role_arn": "arn:aws:iam::111122223333:role/ekm-kms-access", "kms_arn": "", "external_id": org},
			bad:  [2]string{"external_id", "org-someoneelse"}},
		{typ: "gcp", heading: "Register a Google Cloud KMS key", orgField: "audience",
			inputs: [][2]string{{"PROJECT_ID", "acme-prod"}, {"PROJECT_NUMBER", "123456789012"}, {"POOL_ID", "ekm-pool"}, {"PROVIDER_ID", "ekm-oidc"},
				{"LOCATION", "us-east1"}, {"KEY_RING", "ekm"}, {"KEY", "kek"}},
			commands: map[string][]string{
				"1": {"gcloud iam workload-identity-pools create ekm-pool --project=acme-prod", `--allowed-audiences="` + org + `"`, `--issuer-uri="$EKM_ISSUER"`},
				"2": {"gcloud kms keys create kek --keyring=ekm --location=us-east1 --project=acme-prod"},
				"3": {"principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/ekm-pool/subject/$EKM_SUBJECT"},
			},
			form: map[string]string{"audience": org, "kms_project_id": "acme-prod", "kms_key_location": "us-east1", "kms_key_ring_name": "ekm", "kms_key_name": "kek",
				"workload_identity_pool_id": "ekm-pool", "workload_identity_provider_id": "ekm-oidc", "workload_identity_project_number": "123456789012"},
			bad: [2]string{"kms_project_id", "123456789012"}},
		{typ: "oci", heading: "Register an OCI Vault key",
			inputs: [][2]string{{"REGION", "us-ashburn-1"}, {"TENANCY", "ocid1.tenancy.oc1..aaaaaaaaexample"}},
			commands: map[string][]string{
				"1": {"oci iam compartment create --compartment-id ocid1.tenancy.oc1..aaaaaaaaexample --name ekm", `--freeform-tags "{\"ekm-org\":\"` + org + `\"}"`},
				"2": {"Admit group ekm_kms of tenancy ekm to use keys", "oci iam policy create --compartment-id ocid1.tenancy.oc1..aaaaaaaaexample", "$EKM_TENANCY"},
			},
			form: map[string]string{"key_ocid": "", "vault_ocid": "", "region": "us-ashburn-1"},
			bad:  [2]string{"key_ocid", "ocid1.vault.oc1.iad.aaaa.bbbb"}},
	}
}

// readTemplate reads the steps of a cloud's onboarding template.
func readTemplate(t *testing.T, typ string) (tpl struct {
	Steps map[string]struct {
		Commands []struct{ Label, Text string } `json:"commands"`
	} `json:"steps"`
}) {
	t.Helper()
	b, err := os.ReadFile("assets/clouds/" + typ + ".json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tpl); err != nil {
		t.Fatal(err)
	}
	return tpl
}
