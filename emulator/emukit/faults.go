package emukit

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as "1.5s" (a
// number is taken as seconds).
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n float64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return errors.New("duration must be a string like \"1.5s\" or a number of seconds")
		}
		*d = Duration(n * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Fault is an injected failure. A request matches when its service (or
// exact host) and operation match; then Latency is applied, and then
// either the connection is reset, or Status is returned with a
// service-shaped error body (the emulator writes it), or (neither set) the
// request proceeds normally.
type Fault struct {
	ID string `json:"id,omitempty"`
	// Host: "" (any), a service name of the emulator ("vault", "kms", ...)
	// or an exact host name.
	Host string `json:"host,omitempty"`
	// Operation: "" (any), an exact name ("kv.decrypt") or a prefix ending
	// in "*" ("kv.*"). Names are those of the emulator's counters.
	Operation string   `json:"operation,omitempty"`
	Latency   Duration `json:"latency,omitempty"`
	Status    int      `json:"status,omitempty"`
	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string `json:"retry_after,omitempty"`
	// ErrorCode overrides the error code in the service-shaped body.
	ErrorCode string `json:"error_code,omitempty"`
	Message   string `json:"message,omitempty"`
	// Reset aborts the connection without a response.
	Reset bool `json:"reset,omitempty"`
	// Probability in (0,1] applies the fault to that share of matching
	// requests; 0 means always.
	Probability float64 `json:"probability,omitempty"`
	// Count limits how many requests the fault hits; 0 means unlimited.
	Count int `json:"count,omitempty"`
}

// Validate checks the fault's fields.
func (f *Fault) Validate() error {
	switch {
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		return errors.New("status must be 400..599")
	case f.Status != 0 && f.Reset:
		return errors.New("status and reset are exclusive")
	case f.Status == 0 && !f.Reset && f.Latency <= 0:
		return errors.New("a fault needs status, reset or latency")
	case f.Latency < 0 || time.Duration(f.Latency) > 10*time.Minute:
		return errors.New("latency must be 0..10m")
	case f.Probability < 0 || f.Probability > 1:
		return errors.New("probability must be 0..1")
	case f.Count < 0:
		return errors.New("count must be >= 0")
	case len(f.Message) > 4096 || len(f.ErrorCode) > 128 || len(f.RetryAfter) > 64 || len(f.Host) > 256 || len(f.Operation) > 128:
		return errors.New("fault fields too long")
	case strings.ContainsAny(f.RetryAfter, "\r\n"):
		return errors.New("retry_after must be one header line")
	}
	return nil
}

// MaxFaults bounds the number of active faults.
const MaxFaults = 1000

// FaultEntry is an active fault with the emulator's own extra data X (for
// example an Entra error number); emulators without extras use struct{}.
type FaultEntry[X any] struct {
	Fault Fault
	Ext   X
}

// FaultSet is the list of active faults. The zero value is ready to use.
type FaultSet[X any] struct {
	mu   sync.Mutex
	list []*FaultEntry[X]
	rand *rand.Rand
}

// SetRand replaces the random source of Probability (tests seed it).
func (s *FaultSet[X]) SetRand(r *rand.Rand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rand = r
}

// Add validates f, gives it a new id and appends it.
func (s *FaultSet[X]) Add(f Fault, x X) (string, error) {
	if err := f.Validate(); err != nil {
		return "", err
	}
	f.ID = NewUUID()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.list) >= MaxFaults {
		return "", errors.New("too many faults")
	}
	s.list = append(s.list, &FaultEntry[X]{Fault: f, Ext: x})
	return f.ID, nil
}

// Match returns a copy of the first fault that applies to a request of
// service (the emulator's service name) at host for operation op, and
// consumes one use of it.
func (s *FaultSet[X]) Match(service, host, op string) (FaultEntry[X], bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range s.list {
		f := &e.Fault
		if f.Host != "" && !(service != "" && strings.EqualFold(f.Host, service)) && !strings.EqualFold(f.Host, host) {
			continue
		}
		if f.Operation != "" {
			if p, ok := strings.CutSuffix(f.Operation, "*"); ok {
				if !strings.HasPrefix(op, p) {
					continue
				}
			} else if f.Operation != op {
				continue
			}
		}
		if f.Probability > 0 && f.Probability < 1 {
			if s.rand == nil {
				s.rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			}
			if s.rand.Float64() >= f.Probability {
				continue
			}
		}
		hit := *e
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.list = append(s.list[:i:i], s.list[i+1:]...)
			}
		}
		return hit, true
	}
	return FaultEntry[X]{}, false
}

// List returns the active faults (with remaining counts).
func (s *FaultSet[X]) List() []FaultEntry[X] {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]FaultEntry[X], 0, len(s.list))
	for _, e := range s.list {
		out = append(out, *e)
	}
	return out
}

// Remove deletes one fault; it reports whether it existed.
func (s *FaultSet[X]) Remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range s.list {
		if e.Fault.ID == id {
			s.list = append(s.list[:i:i], s.list[i+1:]...)
			return true
		}
	}
	return false
}

// Clear removes all faults.
func (s *FaultSet[X]) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = nil
}

// Apply performs a matched fault's latency (real time; an abandoned
// request aborts) and reset (aborts the connection: HTTP/1 closes it,
// HTTP/2 resets the stream; both by panicking with http.ErrAbortHandler,
// which net/http handles). It reports whether the caller must now answer
// with f.Status and a service-shaped error; false means "proceed".
func Apply(r *http.Request, f Fault) (respond bool) {
	if f.Latency > 0 {
		t := time.NewTimer(time.Duration(f.Latency))
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			panic(http.ErrAbortHandler)
		}
	}
	if f.Reset {
		panic(http.ErrAbortHandler)
	}
	return f.Status != 0
}
