package emukit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

const (
	// ControlPrefix is the path of every emulator's control API.
	ControlPrefix = "/_emulator"
	// ControlHost is a name for the control API besides loopback
	// addresses and "localhost" (e.g. for a hosts-file entry).
	ControlHost = "emulator.local"
)

// HostName lower-cases a Host header and strips its port, IPv6 brackets
// and a trailing dot.
func HostName(hostport string) string {
	host := strings.ToLower(hostport)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return host
}

// IsControlHost reports whether a request's Host (as given by HostName)
// may reach the control API: a loopback IP literal, "localhost" or
// ControlHost. Any other IP literal is refused: the control API is
// unauthenticated and hands out credentials, so a request that names a
// foreign address (a rebound DNS name, a forwarded request) must not get
// them.
func IsControlHost(host string) bool {
	if host == "localhost" || host == ControlHost {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckLoopbackListen refuses a listen address that is not loopback (or
// "localhost"): `ekm emulate` serves an unauthenticated control API that
// must only be reachable from this host. An empty address is allowed
// (it means 127.0.0.1:0).
func CheckLoopbackListen(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("emulator: invalid listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("emulator: refusing to listen on %s: its control API is unauthenticated; use a loopback address such as 127.0.0.1", addr)
	}
	return nil
}

// ShellQuote quotes s for a POSIX shell when needed.
func ShellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\"\\$`!*?[]{}();&|<>\t\n") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// WriteJSON answers with v as JSON ("application/json; charset=utf-8").
func WriteJSON(w http.ResponseWriter, status int, v any) {
	WriteJSONType(w, status, "application/json; charset=utf-8", v)
}

// WriteJSONType answers with v as JSON under the given content type.
func WriteJSONType(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// ErrEmptyBody is returned by ReadJSON for an empty (or blank) body.
var ErrEmptyBody = errors.New("the request body is empty")

// ReadJSON decodes a JSON body (bound it with http.MaxBytesReader first).
func ReadJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body larger than %d bytes", mbe.Limit)
		}
		return fmt.Errorf("read body: %w", err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return ErrEmptyBody
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("the request body is not valid JSON: %w", err)
	}
	return nil
}

// ControlError answers a control-API request with {"error": msg}.
func ControlError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}

// ServeClock serves the control API's clock route: GET returns
// {"now"}; POST takes {"set": RFC 3339} or {"advance": duration}.
func ServeClock(w http.ResponseWriter, r *http.Request, c *Clock) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		var req struct {
			Set     *time.Time `json:"set"`
			Advance *Duration  `json:"advance"`
		}
		if err := ReadJSON(r, &req); err != nil {
			ControlError(w, http.StatusBadRequest, err.Error())
			return
		}
		switch {
		case req.Set != nil && req.Advance == nil:
			c.Set(*req.Set)
		case req.Advance != nil && req.Set == nil:
			c.Advance(time.Duration(*req.Advance))
		default:
			ControlError(w, http.StatusBadRequest, `give exactly one of "set" (RFC 3339) or "advance" (duration)`)
			return
		}
	default:
		ControlError(w, http.StatusMethodNotAllowed, "use GET or POST")
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"now": c.Now().UTC()})
}

// StatusWriter records the response status and the operation a handler
// counted, for the request log.
type StatusWriter struct {
	http.ResponseWriter
	Status int
	Op     string
}

func (s *StatusWriter) WriteHeader(code int) {
	if s.Status == 0 {
		s.Status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *StatusWriter) Write(b []byte) (int, error) {
	if s.Status == 0 {
		s.Status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *StatusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
