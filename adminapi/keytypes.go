package adminapi

import (
	"net/http"

	"github.com/ekm-dev/ekm/kms"
)

// keyTypeObject describes one external key type (an ekm extension): what a
// registration needs, the customer's onboarding steps that diagnoses point
// at, every diagnosis code, and ekm's own identity the customer grants
// access to. Types this server knows but has no driver configured for are
// listed with enabled=false.
type keyTypeObject struct {
	Object      string            `json:"object"`
	Type        string            `json:"type"`
	Title       string            `json:"title"`
	Enabled     bool              `json:"enabled"`
	Development bool              `json:"development"`
	Fields      []keyTypeField    `json:"fields"`
	Steps       []keyTypeStep     `json:"onboarding_steps"`
	Codes       []keyTypeCode     `json:"codes"`
	Identity    map[string]string `json:"identity"`
}

type keyTypeField struct {
	Name        string `json:"name"`
	Required    bool   `json:"required"`
	MaxLength   int    `json:"max_length"`
	Description string `json:"description"`
}

type keyTypeStep struct {
	Step  string `json:"step"`
	Title string `json:"title"`
}

type keyTypeCode struct {
	Code        string `json:"code"`
	Class       string `json:"class"`
	Step        string `json:"step,omitempty"`
	Description string `json:"description"`
}

func keyType(s kms.Spec, enabled bool) keyTypeObject {
	o := keyTypeObject{Object: "organization.external_key_type", Type: s.Type, Title: s.Title, Enabled: enabled, Development: s.Development,
		Fields: []keyTypeField{}, Steps: []keyTypeStep{}, Codes: []keyTypeCode{}, Identity: map[string]string{}}
	for _, f := range s.Fields {
		o.Fields = append(o.Fields, keyTypeField{Name: f.Name, Required: f.Required, MaxLength: f.MaxLen, Description: f.Description})
	}
	for _, st := range s.Steps {
		o.Steps = append(o.Steps, keyTypeStep{Step: st.ID, Title: st.Title})
	}
	for _, c := range s.Codes {
		o.Codes = append(o.Codes, keyTypeCode{Code: c.Code, Class: string(c.Class), Step: c.Step, Description: c.Description})
	}
	for k, v := range s.Identity {
		o.Identity[k] = v
	}
	return o
}

// listExternalKeyTypes serves GET /external_key_types: every type, sorted.
func (a *api) listExternalKeyTypes(w http.ResponseWriter, r *http.Request) error {
	if err := onlyQuery(r.URL.Query(), nil); err != nil {
		return err
	}
	reg := a.svc.Registry()
	data := []keyTypeObject{}
	for _, t := range reg.Known() {
		s, enabled, _ := reg.Spec(t)
		data = append(data, keyType(s, enabled))
	}
	return writeJSON(w, http.StatusOK, listPage(data, false, func(o keyTypeObject) string { return o.Type }))
}
