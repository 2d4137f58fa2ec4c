package kms

// Spec describes an external key type: what a customer registers, what can
// go wrong, and the onboarding steps the diagnoses point at. The Admin API
// validates registrations against Fields; the console and docs show Steps
// and Identity.
type Spec struct {
	// Type is the external key type ("azure", "aws", ...).
	Type string
	// Title names the KMS for people ("Azure Key Vault").
	Title string
	// Fields are the registration parameters, in the order the API lists them.
	Fields []Field
	// Steps are the customer's onboarding steps; Error.Step names their IDs.
	Steps []Step
	// Codes are the diagnosis codes the driver's errors carry.
	Codes []Code
	// Identity is ekm's own identity that customers grant access to, by name
	// (e.g. "app_client_id" for Azure): values the onboarding steps need.
	Identity map[string]string
	// Development marks types that do not put data under a customer-held key.
	Development bool
	// OrgBound names registration fields whose value must be the calling
	// org's id or the id of one of its projects: what the customer's trust
	// policy names (AWS sts:ExternalId, a Google provider's audience), so
	// that one org cannot register another org's role or provider through
	// ekm (the confused deputy). The lifecycle service enforces it.
	OrgBound []string
	// ProjectScoped: the customer's policy can refuse single projects (it
	// conditions on the associated data, e.g. AWS's encryption context), and
	// the driver reports such refusals with Error.Scope = ScopeProject. The
	// health probe then checks every project of a key, not one sample.
	ProjectScoped bool
	// Algorithm is the algorithm label new wraps carry (kms.Wrapped). A
	// stored wrap with another label (made before the driver changed how it
	// binds associated data) is rewrapped in the background, like one made
	// by an old KEK version.
	Algorithm string
	// Enable, optional, says how an operator enables the type when this
	// server has no driver for it (e.g. which flags of ekm serve). It comes
	// from the operator side (app), not from the driver.
	Enable string
}

// Field is one registration parameter.
type Field struct {
	Name     string
	Required bool
	// MaxLen bounds the value, in characters.
	MaxLen int
	// Description says what to put there.
	Description string
}

// Step is one onboarding step.
type Step struct {
	ID    string // "1", "2", ...
	Title string
}

// Code is one diagnosis a driver can return.
type Code struct {
	Code  string
	Class Class
	// Step is the onboarding step to fix ("" if none).
	Step string
	// Description says when it happens.
	Description string
}

// Field returns the registration field called name.
func (s Spec) Field(name string) (Field, bool) {
	for _, f := range s.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}
