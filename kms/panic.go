package kms

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
)

// ErrProviderPanicked is inside the error of an operation whose provider
// (or its SDK) panicked: the call layer answers it as an outage, never as
// a revocation, and the process goes on.
var ErrProviderPanicked = errors.New("kms: the provider panicked")

// DescribePanic says what panicked without the value's contents (a value
// could hold anything, key material included): a runtime error's own
// message (fixed text and indexes), else only the value's type.
func DescribePanic(v any) string {
	if v == nil {
		return "runtime.Goexit"
	}
	if e, ok := v.(runtime.Error); ok {
		return e.Error()
	}
	return fmt.Sprintf("panic value of type %T", v)
}

// PanicStack lists the panicking goroutine's frames as function and
// file:line, without the argument words a runtime stack trace prints.
// Call it from the deferred function that recovered.
func PanicStack() string {
	var pcs [32]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	var b strings.Builder
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") {
			if b.Len() > 0 {
				b.WriteString(" < ")
			}
			fmt.Fprintf(&b, "%s (%s:%d)", f.Function, filepath.Base(f.File), f.Line)
		}
		if !more {
			break
		}
	}
	return b.String()
}
